//go:build linux

package bench

import "time"

// Throttled subscribers (Config.SubRate, SubStopAfter). A throttled
// subscriber processes a PUBLISH only when its readLimit admits it; when
// it does not, the loop keeps the unprocessed bytes in the connection's
// input buffer, stops polling the socket for input (so the kernel's
// receive buffer and then the broker's send side fill up, as with a slow
// application), and puts the connection in the send queue keyed by the
// time its bucket has a token again. publishDue then calls resumeRead
// instead of publishing. A subscriber that stopped for good is never
// queued; only the broker closing its connection is still noticed.

// admit reports whether subscriber c may process one more PUBLISH at now;
// if not, c stops reading and is queued to resume when it may.
func (l *loop) admit(c *conn, now int64) bool {
	ok, resume := c.lim.take(now)
	if ok {
		return true
	}
	if !c.lim.paused {
		c.lim.paused = true
		l.setInterest(c, c.wantOut)
	}
	if resume > 0 && c.queueIdx < 0 {
		l.queue.Push(resume, c)
	}
	return false
}

// resumeRead runs when a paused subscriber may process again: it goes on
// with the packets it read but left, and polls its socket again.
func (l *loop) resumeRead(c *conn) {
	if c.lim == nil || c.state != stReady {
		return
	}
	c.lim.paused = false
	l.setInterest(c, c.wantOut)
	l.consume(c, nil) // may pause it again
	if c.tls != nil && c.state == stReady {
		l.tlsRead(c, nil, time.Now().UnixNano()) // records decrypted no further while paused
	}
}

// throttleSubscribers gives every ready subscriber its readLimit when the
// configuration asks for one; start is when publishing starts.
func (l *loop) throttleSubscribers(start int64) {
	cfg := &l.r.cfg
	if cfg.SubRate <= 0 && cfg.SubStopAfter <= 0 {
		return
	}
	var stop int64
	if cfg.SubStopAfter > 0 {
		stop = start + int64(cfg.SubStopAfter)
	}
	for _, c := range l.conns {
		if c != nil && c.role == roleSub && c.state == stReady {
			c.lim = newReadLimit(cfg.SubRate, start, stop)
		}
	}
}
