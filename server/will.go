package server

import (
	"sync"
	"sync/atomic"

	"github.com/ternmq/tern/codec"
	"github.com/ternmq/tern/internal/timer"
)

// Will delay (MQTT 5.0 §3.1.3.2.2). A connection that ends without a
// normal DISCONNECT has its will published, but a 5.0 client may ask for a
// Will Delay Interval: the will then waits that long, and is dropped if a
// new connection resumes the session first [MQTT-3.1.3-9]. If the session
// ends before the delay passes (session expiry shorter than the delay, a
// clean-start reconnect discarding it), the will is published then.
//
//	close ──delay 0, or session already ended──▶ publish now
//	  │
//	  └─delay d──▶ pending[id] (min-heap by min(d, session expiry))
//	                 ├─ CONNECT resumes the session ──▶ dropped
//	                 ├─ CONNECT with clean start  ────▶ published (session ended)
//	                 └─ deadline (1 s ticker) ────────▶ published unless resumed
//
// Pending wills are kept in a min-heap checked once a second by the
// server's ticker, the same clock as session expiry; the cost is O(log n)
// per delayed will, nothing per connected client.

// delayedWill is one will waiting for its delay.
type delayedWill struct {
	m         *message
	id        string
	sess      *session
	offlineAt int64 // the session's offlineAt when the will was queued
	done      bool  // published or dropped
}

// willTimers holds the pending delayed wills of a server. mu is a leaf
// lock: released before any session.mu is taken.
type willTimers struct {
	mu      sync.Mutex
	heap    timer.Heap[*delayedWill] // by unix nanosecond due
	pending map[string]*delayedWill  // by client id
	// waiting mirrors len(pending) so that CONNECTs, which all look for a
	// pending will, take no lock while there is none.
	waiting atomic.Int64
}

// publishWill handles the will of a connection that closed without a
// normal DISCONNECT: now, later, or never. It runs on c's loop, in onClose,
// after the session was detached from c.
func (s *Server) publishWill(l *loop, c *client) {
	delay := c.willDelaySecs()
	if c.version != codec.Version5 || delay == 0 {
		s.publishWillNow(l, c.id, c.will)
		return
	}
	sess := c.sess
	sess.mu.Lock()
	resumed := sess.owner != nil && sess.owner != c && !sess.dead
	ended := sess.dead || !sess.persistent
	expiry, offlineAt := sess.expiry, sess.offlineAt
	sess.mu.Unlock()
	switch {
	case resumed:
		// A new connection took the session over before the delay
		// passed: the will is not sent [MQTT-3.1.3-9].
		return
	case ended:
		s.publishWillNow(l, c.id, c.will)
		return
	}
	// Due in nanoseconds from the moment the connection closed, so the will
	// never goes out before its delay has fully passed (the ticker looks
	// once a second: at most a second late).
	at := l.now + int64(min(delay, expiry))*1e9
	w := &delayedWill{m: c.will, id: c.id, sess: sess, offlineAt: offlineAt}
	t := &s.wills
	t.mu.Lock()
	if t.pending == nil {
		t.pending = make(map[string]*delayedWill)
	}
	if old := t.pending[c.id]; old != nil {
		old.done = true
	} else {
		t.waiting.Add(1)
	}
	t.pending[c.id] = w
	t.heap.Push(at, w)
	t.mu.Unlock()
}

// resolveDelayedWill runs when a CONNECT attached client id to a session:
// a pending will of the previous connection is dropped if the session was
// resumed, and published at once if it was discarded (clean start ended
// the session it belonged to).
func (s *Server) resolveDelayedWill(l *loop, id string, resumed bool) {
	t := &s.wills
	if t.waiting.Load() == 0 {
		return
	}
	t.mu.Lock()
	w := t.pending[id]
	if w != nil {
		delete(t.pending, id)
		t.waiting.Add(-1)
		w.done = true
	}
	t.mu.Unlock()
	if w != nil && !resumed {
		s.publishWillNow(l, id, w.m)
	}
}

// fireDelayedWills publishes the delayed wills due by now (unix
// nanoseconds). It runs on the server's ticker goroutine.
func (s *Server) fireDelayedWills(now int64) {
	t := &s.wills
	for {
		t.mu.Lock()
		w, ok := t.heap.PopDue(now)
		if !ok {
			t.mu.Unlock()
			return
		}
		if w.done {
			t.mu.Unlock()
			continue
		}
		w.done = true
		if t.pending[w.id] == w {
			delete(t.pending, w.id)
			t.waiting.Add(-1)
		}
		t.mu.Unlock()
		sess := w.sess
		sess.mu.Lock()
		resumed := sess.owner != nil || (!sess.dead && sess.offlineAt != w.offlineAt)
		sess.mu.Unlock()
		if !resumed {
			s.publishWillNow(nil, w.id, w.m)
		}
	}
}

// publishWillNow publishes a will. Its Message Expiry Interval counts from
// now, when it is published, not from the CONNECT that carried it.
// id is the client whose will it is (for OnWillSent).
func (s *Server) publishWillNow(l *loop, id string, m *message) {
	if s.hooks.onWillSent != nil {
		var hm HookMessage
		for _, f := range s.hooks.onWillSent {
			f(id, hookMessageOf(&hm, m, m.qos))
		}
	}
	if m.props != nil && m.props.Has(codec.PropMessageExpiry) {
		cp := *m
		cp.expiresAt = nanotime() + int64(m.props.MessageExpiry)*1e9
		m = &cp
	}
	if l != nil {
		if why := s.publishMessage(l, &l.tx, m); why != 0 { // committed with the loop's event
			s.refuse(why, "", "", "", "will on "+string(m.topic))
		}
		return
	}
	var t txn
	if why := s.publishMessage(nil, &t, m); why != 0 {
		s.refuse(why, "", "", "", "delayed will on "+string(m.topic))
	}
	if err := s.submitWait(&t); err != nil {
		s.log.Error("storing a delayed will failed", "err", err)
	}
}
