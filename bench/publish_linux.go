//go:build linux

package bench

import (
	"time"

	"golang.org/x/sys/unix"

	"github.com/ternmq/tern/codec"
)

// Publishing: the send queue, a min-heap of a loop's publishers by the
// intended time of their next message. A publisher is in the queue exactly
// when it has a message to send and nothing stops it from sending; one
// that is blocked (QoS window full, socket buffer over MaxOutbound) leaves
// the queue and is put back by whatever unblocks it (an acknowledgement,
// the socket draining). The loop's timerfd is armed to the queue's
// earliest time, so an idle publisher costs nothing between sends.
//
// A queued publisher's deadline is its schedule's next intended time when
// it was queued; the schedule only moves (Advance, Stop, a new Schedule)
// while the publisher is out of the queue, so the two never disagree.

// setQueueIdx is the send queue's Moved hook: a conn knows where it is in
// the queue, so closing it or stopping its schedule removes it in
// O(log n).
func setQueueIdx(c *conn, i int) { c.queueIdx = int32(i) }

// enqueue puts publisher c in the send queue at its next intended time,
// unless it is queued already or its schedule has nothing left to send.
func (l *loop) enqueue(c *conn) {
	if c.queueIdx >= 0 {
		return
	}
	if _, at, ok := c.sched.Next(); ok {
		l.queue.Push(at, c)
	}
}

// dequeue takes c out of the send queue if it is in it.
func (l *loop) dequeue(c *conn) {
	if c.queueIdx >= 0 {
		l.queue.Remove(int(c.queueIdx))
	}
}

// publishDue sends every publication whose intended time has come, then
// arms the timer for the next one. Throttled subscribers share the queue:
// for them the time is when they may read again (throttle_linux.go).
//
// A closed-loop publisher is always due, so it goes back into the queue
// only after the pass: each turn of the loop it sends at most one burst,
// then the loop reads acknowledgements and deliveries before sending more.
// (With a schedule, an overdue publisher is served again in the same pass,
// in intended-time order, as before.)
func (l *loop) publishDue(now int64) {
	closed := l.r.cfg.ClosedLoop
	for {
		at, c, ok := l.queue.Peek()
		if !ok || at > now {
			break
		}
		l.queue.Pop()
		if c.role == roleSub {
			l.resumeRead(c)
			continue
		}
		l.publish(c, now)
		if c.state == stReady && !c.blocked {
			if closed {
				l.requeue = append(l.requeue, c)
			} else {
				l.enqueue(c)
			}
		}
	}
	for i, c := range l.requeue {
		if c.state == stReady && !c.blocked {
			l.enqueue(c)
		}
		l.requeue[i] = nil
	}
	l.requeue = l.requeue[:0]
	l.arm(now)
}

// outFull reports whether publisher c has too much output buffered to send
// more: over MaxOutbound with a schedule; anything at all in closed loop,
// where a message is stamped when it is handed to the socket and must not
// then wait in the harness's own buffer.
func (l *loop) outFull(c *conn) bool {
	if l.r.cfg.ClosedLoop {
		return c.wantOut
	}
	return len(c.out) > l.r.cfg.MaxOutbound
}

// publish queues up to burstMax due messages of c, written with the rest
// of c's output at the end of the turn.
func (l *loop) publish(c *conn, now int64) {
	cfg := &l.r.cfg
	n0 := len(c.out)
	due := c.sched.Due(now, burstMax)
	for i := 0; i < due; i++ {
		if c.role != rolePub || c.state != stReady {
			break
		}
		if cfg.QoS > 0 && c.inflt >= c.window {
			c.blocked = true
			break
		}
		if l.outFull(c) {
			c.blocked = true
			break
		}
		seq, at, _ := c.sched.Next()
		if cfg.ClosedLoop {
			at = now // latency from the actual send (see Config.ClosedLoop)
		}
		c.sched.Advance()
		if at >= l.measureLo && at < l.measureHi {
			l.sentIn++
		}
		l.stats.sent.Add(1)
		if cfg.DropEvery > 0 && seq%uint64(cfg.DropEvery) == uint64(cfg.DropEvery-1) {
			continue // deliberately never written: must show up as lost
		}
		l.stats.written.Add(1)
		PutHeader(l.pay, l.r.runID, c.pubID, seq, at)
		p := codec.Publish{QoS: cfg.QoS, Topic: c.topic, Payload: l.pay}
		if cfg.QoS > 0 {
			p.PacketID = c.takeID()
			c.inflt++
		}
		c.out = p.Append(c.out, cfg.Protocol) // encoded in place: no copy
		l.lag.Record(now - at)
	}
	if len(c.out) > n0 {
		l.markDirty(c, now)
	}
}

// arm sets the timerfd to the next due publication (absolute, realtime).
// When that is already due at now (a closed-loop publisher always is), the
// timer is left alone and the loop polls without waiting instead
// (loop.due): reprogramming the timerfd every turn cost a syscall per turn.
func (l *loop) arm(now int64) {
	at, _, _ := l.queue.Peek() // 0 when empty: disarms
	l.due = at > 0 && at <= now
	if l.due || at == l.armedAt {
		return
	}
	l.armedAt = at
	var spec unix.ItimerSpec // zero disarms
	if at > 0 {
		spec.Value = unix.NsecToTimespec(at)
	}
	unix.TimerfdSettime(l.tfd, unix.TFD_TIMER_ABSTIME, &spec, nil)
}

// startPublishing is posted to every loop: publishers get their schedules
// (closed loop: one that is always due, a nanosecond per message, which no
// publisher outruns), throttled subscribers their read limits.
func (l *loop) startPublishing(start int64, lo, hi int64) {
	cfg := &l.r.cfg
	l.measureLo, l.measureHi = lo, hi
	l.throttleSubscribers(start)
	for _, c := range l.conns {
		if c == nil || c.role != rolePub || c.state != stReady {
			continue
		}
		l.dequeue(c) // the schedule changes: never while queued
		if cfg.ClosedLoop {
			c.sched = NewSchedule(start, 1e9, 0)
		} else {
			c.sched = NewSchedule(start, cfg.Rate, float64(c.pubID%1024)/1024)
		}
		l.enqueue(c)
	}
	l.arm(time.Now().UnixNano())
}

// stopPublishing freezes every schedule and records what was sent.
func (l *loop) stopPublishing() {
	for _, c := range l.conns {
		if c == nil || c.role != rolePub {
			continue
		}
		l.dequeue(c)
		c.sched.Stop()
		l.recordSent(c)
	}
	l.pubsDone = true
	l.arm(time.Now().UnixNano())
}

// recordSent remembers how many sequence numbers publisher c spent.
func (l *loop) recordSent(c *conn) {
	if int(c.pubID) < len(l.sentBy) && c.sched.Sent() > l.sentBy[c.pubID] {
		l.sentBy[c.pubID] = c.sched.Sent()
	}
}
