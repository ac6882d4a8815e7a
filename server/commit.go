package server

import (
	"sync/atomic"

	"github.com/ternmq/tern/codec"
	"github.com/ternmq/tern/persist"
)

// ticket marks the deliveries written by one batch.
type ticket struct{ submitted atomic.Bool }

// txn gathers the durable writes of one event.
type txn struct {
	b      *persist.Batch
	ticket *ticket
	wakes  []*client // owners of ticketed deliveries, woken after submission
	putIDs []uint64  // messages this batch put (a reference to them is a plain AddRef)
	// spills are sessions that got deliveries only in the store (backlog.go):
	// their owners can page them in once the batch is applied, so they are
	// woken after the commit, not after submission.
	spills []*session
	// cwait gathers the confirmations other cluster nodes owe for the
	// messages this event forwarded (cluster.go); nil without any.
	cwait *clusterWait
	// ref tags the PUBLISH being routed (packet id | QoS<<16) for the
	// cluster's outcome of it (ClusterMessage.Ref); 0 for other messages.
	ref uint64
}

func (t *txn) putHere(id uint64) bool {
	for _, x := range t.putIDs {
		if x == id {
			return true
		}
	}
	return false
}

// batch returns the txn's batch, starting one. s.store must not be nil.
func (t *txn) batch(s *Server) *persist.Batch {
	if t.b == nil {
		t.b = s.store.NewBatch()
	}
	return t.b
}

// tick returns the ticket for deliveries written by this txn.
func (t *txn) tick() *ticket {
	if t.ticket == nil {
		t.ticket = &ticket{}
	}
	return t.ticket
}

// pendingReplies are replies held back: until the commit of the event that
// produced them is durable, until the replies of earlier events went out,
// and, for the event that got its client paced (pace.go), until the client
// is released. waits counts those conditions; the replies are written when
// it reaches zero, and then next (a later event's) loses one.
type pendingReplies struct {
	out   []byte
	waits int
	next  *pendingReplies
}

// submit commits the txn's batch (if any) and calls done(err) on the loop l
// when it is durable (l nil: on the store's goroutine). It wakes the owners
// of the deliveries the batch stored once the batch is queued in the store.
func (s *Server) submit(l *loop, t *txn, done func(error)) {
	b, tk, wakes := t.b, t.ticket, t.wakes
	if t.cwait != nil { // nobody waits for these confirmations (finishEvent took its own)
		t.cwait.arm(func(*clusterWait) {})
		t.cwait = nil
	}
	var spills []*session
	if len(t.spills) > 0 {
		spills = append(spills, t.spills...)
	}
	t.b, t.ticket, t.wakes, t.putIDs, t.spills = nil, nil, t.wakes[:0], t.putIDs[:0], t.spills[:0]
	if b == nil {
		if done != nil {
			done(nil)
		}
		return
	}
	cb := func(err error) {
		if err != nil {
			s.log.Error("store commit failed", "err", err)
		}
		for _, sess := range spills {
			s.wakeOwner(sess) // the batch is applied: its spilled deliveries can be paged in
		}
		if done == nil {
			return
		}
		if l == nil {
			done(err)
			return
		}
		l.post(func() { done(err) })
	}
	s.store.Commit(b, cb)
	if tk != nil {
		tk.submitted.Store(true)
	}
	for _, c := range wakes {
		if c.wakeQueued.CompareAndSwap(false, true) {
			c.loop.schedule(c, l)
		}
	}
}

// submitWait commits the txn's batch from outside the event loops and waits
// for it (API calls, session expiry).
func (s *Server) submitWait(t *txn) error {
	if t.b == nil {
		return nil
	}
	ch := make(chan error, 1)
	s.submit(nil, t, func(err error) { ch <- err })
	return <-ch
}

// finishEvent ends a read event of c: commit its writes and send its replies
// once nothing holds them back (see pendingReplies).
func (c *client) finishEvent() {
	l, srv := c.loop, c.loop.srv
	waits := 0
	if l.tx.b != nil {
		waits++
	}
	pacedNow := c.flags.has(flagPaced) && c.cold != nil && c.cold.pacedOn > 0 && c.cold.pacedReplies == nil
	if pacedNow {
		waits++
	}
	cw := l.tx.takeClusterWait() // confirmations from other cluster nodes (cluster.go)
	if cw != nil {
		waits++
	}
	if waits == 1 && l.tx.b != nil && len(l.out) == 0 && c.lastPending == nil && !c.flags.has(flagConnackHeld) {
		// Nothing to reply and nothing held: no reply waits for this
		// batch (a subscriber's PUBACKs deleting what they acknowledge),
		// so it needs no callback on the loop. The next event's replies
		// still wait for their own batch, which completes after this one
		// (groups complete in commit order). A failure is logged by
		// submit and makes the store unavailable: later QoS 1/2 PUBLISHes
		// are refused.
		srv.submit(l, &l.tx, nil)
		return
	}
	if waits == 0 {
		if c.lastPending == nil {
			c.flush()
		} else if len(l.out) > 0 { // nothing new to wait for, but replies stay in order
			c.lastPending.out = append(c.lastPending.out, l.out...)
			l.out = l.out[:0]
		}
		srv.submit(l, &l.tx, nil) // wakes only
		return
	}
	p := &pendingReplies{out: append([]byte(nil), l.out...), waits: waits}
	l.out = l.out[:0]
	if prev := c.lastPending; prev != nil {
		p.waits++
		prev.next = p
	}
	c.lastPending = p
	if pacedNow {
		c.cold.pacedReplies = p
	}
	if cw != nil {
		c.armClusterWait(cw, p)
	}
	if l.tx.b == nil {
		srv.submit(l, &l.tx, nil)
		return
	}
	srv.submit(l, &l.tx, func(err error) { c.commitDone(p, err) })
}

// commitDone runs on c's loop when a batch of c's completed.
func (c *client) commitDone(p *pendingReplies, err error) {
	if c.state == stateClosed {
		return
	}
	if err != nil {
		// Nothing of this batch is acknowledged: the client will resend
		// what it still holds [MQTT-4.4.0-1].
		c.closeNow(codec.UnspecifiedError, "store unavailable: "+err.Error())
		return
	}
	c.releaseReplies(p)
}

// releaseReplies removes one condition from p and writes every held reply
// whose conditions are all met, in order. Runs on c's loop.
func (c *client) releaseReplies(p *pendingReplies) {
	for p != nil {
		p.waits--
		if p.waits > 0 {
			return
		}
		if c.lastPending == p {
			c.lastPending = nil
		}
		if c.state != stateClosed && len(p.out) > 0 {
			_, _ = c.conn.Write(p.out)
		}
		if c.flags.has(flagConnackHeld) { // the CONNACK that waited for the session's record is out (connect.go)
			c.flags.clear(flagConnackHeld)
			c.drain()
			c.loop.srv.submit(c.loop, &c.loop.tx, nil)
		}
		p = p.next
	}
}
