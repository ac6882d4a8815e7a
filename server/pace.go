package server

import (
	"slices"
	"sync"

	"github.com/panjf2000/gnet/v2"

	"github.com/ternmq/tern/codec"
)

// Flow control for clean sessions: a subscriber that is slower than its
// publishers paces them instead of losing what they sent.
//
// A clean session's queue has a soft limit (Options.MaxQueuedMessages and
// MaxQueuedBytes) and a hard bound of twice that. A QoS 1/2 delivery that
// leaves the queue at or over the soft limit marks the publishing client for
// pacing (deliver appends the session to loop.paceOn). At the end of that
// PUBLISH the publisher registers as a waiter on every such session and
// stops: it reads no further packet from its connection, and the replies of
// that read event (its PUBACK/PUBREC among them) are held back. Its client
// therefore stops sending once its own inflight window is full, so the
// broker holds at most one window per publisher beyond the soft limit.
// For the QoS 1/2 deliveries of such a PUBLISH (deliver, loop.paced) the
// hard bound grows by one message per publisher waiting on the session
// plus the one publishing: it will be acknowledged, and each publishing
// connection adds at most one message past the soft limit before it
// waits, so it is never dropped. For what cannot be paced (Server.Publish,
// wills, cluster deliveries, a client's own messages to itself) the hard
// bound is twice the soft limit. Before, with more publishers than the
// soft limit on one subscriber, the hard bound dropped acknowledged
// messages (TestLossPacedPublishersOneCleanSubscriber_MQTT_4_6_0_6).
// A paced publisher that disconnects stays a waiter until the queue drains
// to half (its message is in the queue, so the hard bound keeps room for
// it) and counts as abandoned; one that reconnects and publishes in a loop
// while the subscriber never drains to half would grow the waiters and the
// queue by one message per round, so once a subscriber holds more
// abandoned waiters than MaxQueuedMessages it is disconnected as a slow
// consumer (abandonPacing, limit slow_consumer_abandoned): the queue stays
// under 3× the soft limit plus one message per live publisher.
//
// When the subscriber's queue drains to half the soft limit (drain), or its
// session ends, every waiter is released on its own loop: the held replies
// go out and the input it left unread is processed.
//
// Bounds: a paced publisher that keeps sending (QoS 0, or a client without
// an inflight window) may buffer at most pacedInputLimit unread bytes, then
// it is disconnected. A subscriber that makes no progress (sends nothing,
// gets nothing acknowledged) for Options.SlowConsumerTimeout while it holds
// publishers back is disconnected: its clean session ends, as MQTT allows,
// and its publishers resume. QoS 0 never paces: it is dropped first.
// Persistent sessions never pace either: their backlog goes to the store
// (backlog.go). Server.Publish cannot be paced; its deliveries count
// against the hard bound.

// pacedInputLimit bounds the unread input of a paced publisher.
func (o *Options) pacedInputLimit() int { return max(1<<20, 2*o.MaxPacketSize) }

// overSoftLocked reports whether s's queue is at or over its soft limit.
// s.mu held.
func (s *session) overSoftLocked(o *Options) bool {
	f := s.f
	return f != nil && (f.queue.Len() >= o.MaxQueuedMessages || f.queue.Bytes() >= o.MaxQueuedBytes)
}

// drainedLocked reports whether s's queue is down to half its soft limit,
// where paced publishers are released. s.mu held.
func (s *session) drainedLocked(o *Options) bool {
	f := s.f
	return f == nil || (f.queue.Len() <= o.MaxQueuedMessages/2 && f.queue.Bytes() <= o.MaxQueuedBytes/2)
}

// pacingSet is the set of sessions holding publishers back, for the
// slow-consumer check. mu is a leaf lock.
type pacingSet struct {
	mu sync.Mutex
	m  map[*session]struct{}
}

// startPacing registers c as a waiter on each session its PUBLISH left over
// the soft limit, and pauses c if any still is. Runs on c's loop, inside
// the read event (handlePublish).
func (c *client) startPacing() {
	l, srv := c.loop, c.loop.srv
	o := &srv.opts
	n := 0
	for i, t := range l.paceOn {
		l.paceOn[i] = nil
		first := false
		t.mu.Lock()
		if !t.dead && t.owner != nil && t.owner != c && t.overSoftLocked(o) {
			f := t.f
			first = len(f.waiters) == 0
			f.waiters = append(f.waiters, c)
			if first {
				f.lastProgress = l.now
			}
			c.coldState().pacedBy = append(c.cold.pacedBy, t)
			n++
		}
		t.mu.Unlock()
		if first {
			srv.pacing.mu.Lock()
			if srv.pacing.m == nil {
				srv.pacing.m = make(map[*session]struct{})
			}
			srv.pacing.m[t] = struct{}{}
			srv.pacing.mu.Unlock()
		}
	}
	l.paceOn = l.paceOn[:0]
	if n > 0 {
		c.coldState().pacedOn += n
		c.flags.set(flagPaced)
		srv.stats.paced.Add(1)
	}
}

// takeWaitersLocked returns and clears s's paced publishers. s.mu held.
func (s *session) takeWaitersLocked() []*client {
	if s.f == nil || len(s.f.waiters) == 0 {
		return nil
	}
	w := s.f.waiters
	s.f.waiters, s.f.abandoned = nil, 0
	return w
}

// abandonPacing runs when a paced publisher's connection ends: it stays a
// waiter of every session still holding it back (the one message it added
// past the soft limit stays in that queue and is still delivered, so the
// hard bound keeps room for it), and counts as abandoned there. A subscriber left with more
// abandoned waiters than its queue limit — publishers that reconnect and
// publish again while it never drains to half would otherwise grow its
// queue by one message per round, without bound — is a slow consumer:
// it is disconnected, its clean session ends (as MQTT allows), and its
// waiters are released. Runs on c's loop, from end.
func (c *client) abandonPacing() {
	if c.cold == nil || c.cold.pacedOn == 0 {
		return
	}
	srv := c.loop.srv
	limit := srv.opts.MaxQueuedMessages
	for i, s := range c.cold.pacedBy {
		c.cold.pacedBy[i] = nil
		s.mu.Lock()
		over, owner := false, s.owner
		if f := s.f; f != nil && slices.Contains(f.waiters, c) {
			f.abandoned++
			over = f.abandoned > limit && f.abandoned-1 <= limit // once, when crossed
		}
		s.mu.Unlock()
		if over && owner != nil {
			srv.refuse(limitSlowConsumerAbandoned, s.id, "", "",
				"more paced publishers gave up than max_queued_messages while the queue never drained to half")
			owner.loop.post(func() {
				owner.closeNow(codec.QuotaExceeded, "slow consumer: its queue holds the messages of too many publishers that gave up waiting")
			})
		}
	}
	c.cold.pacedBy = c.cold.pacedBy[:0]
}

// releasePaced lets publishers go, each on its own loop. Safe from any
// goroutine; no session lock may be held.
func (srv *Server) releasePaced(waiters []*client) {
	for _, w := range waiters {
		w.loop.post(w.unpaceOne)
	}
}

// unpaceOne runs on c's loop when one session that held c back released
// it; when none holds it any more, its held replies go out and its unread
// input is processed.
func (c *client) unpaceOne() {
	if c.state != stateConnected || c.cold == nil || c.cold.pacedOn == 0 {
		return
	}
	c.cold.pacedOn--
	if c.cold.pacedOn > 0 {
		return
	}
	c.flags.clear(flagPaced)
	clear(c.cold.pacedBy)
	c.cold.pacedBy = c.cold.pacedBy[:0]
	if p := c.cold.pacedReplies; p != nil {
		c.cold.pacedReplies = nil
		c.releaseReplies(p)
	}
	if c.conn.InboundBuffered() > 0 {
		if c.onTraffic() == gnet.Close {
			_ = closeConn(c.loop.el, c.conn)
		}
	}
}

// pacedInputOver reports whether a paced c buffered more unread input than
// allowed; the caller closes it. Runs on c's loop.
func (c *client) pacedInputOver() bool {
	srv := c.loop.srv
	if c.conn.InboundBuffered() <= srv.opts.pacedInputLimit() {
		return false
	}
	srv.refuse(limitPacedInput, c.id, c.username(), remoteString(c.conn), "paced publisher kept sending")
	return true
}

// checkSlowConsumers disconnects subscribers that hold publishers back and
// made no progress for SlowConsumerTimeout. Runs on the ticker goroutine.
func (srv *Server) checkSlowConsumers(now int64) {
	timeout := int64(srv.opts.SlowConsumerTimeout)
	srv.pacing.mu.Lock()
	list := make([]*session, 0, len(srv.pacing.m))
	for s := range srv.pacing.m {
		list = append(list, s)
	}
	srv.pacing.mu.Unlock()
	for _, s := range list {
		s.mu.Lock()
		idle := s.f == nil || len(s.f.waiters) == 0
		stuck := !idle && timeout > 0 && now-s.f.lastProgress > timeout
		owner := s.owner
		s.mu.Unlock()
		if idle {
			srv.pacing.mu.Lock()
			delete(srv.pacing.m, s)
			srv.pacing.mu.Unlock()
			continue
		}
		if stuck && owner != nil {
			srv.refuse(limitSlowConsumer, s.id, "", "", "no progress while holding publishers back")
			owner.loop.post(func() {
				owner.closeNow(codec.QuotaExceeded, "slow consumer: no progress within the slow consumer timeout")
			})
		}
	}
}
