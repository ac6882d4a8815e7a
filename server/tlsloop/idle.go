package tlsloop

// Idle connections give their AEADs back: an AES-GCM key schedule and
// its tables are ~770 B per direction, half of what an idle handed-over
// connection holds. Each event loop keeps a list of its record-layer
// connections; a sweep every IdleKeysAfter/2 visits them on their loop,
// a batch at a time, and drops the AEADs of those not used since the
// previous sweep. The next record builds them again from the kept keys
// (two allocations and well under a microsecond, once per idle period).
//
// # Fresh connections
//
// A device typically connects, subscribes and goes quiet; after a
// reconnect storm all of them do at once. With only the sweep above, each
// would hold its AEADs for 15–30 s, and the garbage collector, which
// sizes the heap at twice what is live when it last ran (GOGC 100), would
// size it during the storm by connections holding 3 KB instead of 1.6 KB:
// the process keeps that heap (RSS) long after the storm. So a connection
// also goes on its loop's fresh list at the hand-over: every
// FreshKeysAfter a tick on the loop drops the AEADs of the connections
// that went on the list the tick before and have been quiet since (no
// record sealed or opened for a whole FreshKeysAfter), and clears the
// mark of those that went on since. A connection leaves the list at its
// second tick either way: it costs at most one extra rebuild of its
// AEADs, and the tick's work is proportional to the connects per second,
// not to the connections.

import (
	"context"
	"maps"
	"slices"
	"time"

	"github.com/panjf2000/gnet/v2"
)

// idleSweepBatch bounds how many connections one task on a loop visits,
// so a sweep of a million connections does not hold a loop for long.
const idleSweepBatch = 4096

// Bits of conn.used, set by every record sealed or opened and cleared by
// the sweep and by the fresh tick respectively.
const (
	usedSweep = 1 << iota
	usedFresh
	usedAll = usedSweep | usedFresh
)

// freshKeep is the capacity of a fresh list kept across ticks; a larger
// one (left by a storm) goes to the GC once empty.
const freshKeep = 1024

// idleList is one event loop's record-layer connections. Loop only.
type idleList struct {
	loop     gnet.EventLoop
	head     *conn
	cursor   *conn // the next connection the sweep in progress visits
	sweeping bool
	// fresh went on the list since the last fresh tick; settling at the
	// tick before it (their usedFresh cleared then).
	fresh, settling []*conn
}

// listFor returns loop's list. Any goroutine.
func (e *Engine) listFor(loop gnet.EventLoop) *idleList {
	e.idleMu.Lock()
	defer e.idleMu.Unlock()
	if l := e.idle[loop]; l != nil {
		return l
	}
	if e.idle == nil {
		e.idle = map[gnet.EventLoop]*idleList{}
	}
	l := &idleList{loop: loop}
	e.idle[loop] = l
	return l
}

func (l *idleList) add(c *conn, fresh bool) {
	if fresh {
		l.fresh = append(l.fresh, c)
	}
	c.il, c.prev, c.next = l, nil, l.head
	if l.head != nil {
		l.head.prev = c
	}
	l.head = c
}

func (l *idleList) remove(c *conn) {
	if l.cursor == c {
		l.cursor = c.next
	}
	if c.prev != nil {
		c.prev.next = c.next
	} else {
		l.head = c.next
	}
	if c.next != nil {
		c.next.prev = c.prev
	}
	c.il, c.prev, c.next = nil, nil, nil
}

// sweep visits up to idleSweepBatch connections; true if more remain.
func (l *idleList) sweep(e *Engine) bool {
	if !l.sweeping {
		l.cursor, l.sweeping = l.head, true
	}
	for n := 0; l.cursor != nil && n < idleSweepBatch; n++ {
		c := l.cursor
		l.cursor = c.next
		if c.used&usedSweep != 0 {
			c.used &^= usedSweep
			continue
		}
		c.dropKeys(e)
	}
	if l.cursor == nil {
		l.sweeping = false
		return false
	}
	return true
}

// dropKeys drops c's AEADs, if built; true if it did. Loop only.
func (c *conn) dropKeys(e *Engine) bool {
	if c.rl == nil || (c.rl.in.aead == nil && c.rl.out.aead == nil) {
		return false
	}
	c.rl.in.aead, c.rl.out.aead = nil, nil
	e.keysDropped.Add(1)
	return true
}

// freshTick is one fresh tick (see "Fresh connections"). Loop only.
func (l *idleList) freshTick(e *Engine) {
	for i, c := range l.settling {
		// c.il is nil once c closed; a closed one stays here until now.
		if c.il == l && c.used&usedFresh == 0 && c.dropKeys(e) {
			e.freshDropped.Add(1)
		}
		l.settling[i] = nil
	}
	for _, c := range l.fresh {
		c.used &^= usedFresh
	}
	l.fresh, l.settling = l.settling[:0], l.fresh
	if cap(l.fresh) > freshKeep {
		l.fresh = nil
	}
}

// sweepIdle runs the sweeps and the fresh ticks until done is closed
// (Stop).
func (e *Engine) sweepIdle(done <-chan struct{}) {
	t := time.NewTicker(e.cfg.IdleKeysAfter / 2)
	defer t.Stop()
	var fresh <-chan time.Time
	if e.cfg.FreshKeysAfter > 0 {
		ft := time.NewTicker(e.cfg.FreshKeysAfter)
		defer ft.Stop()
		fresh = ft.C
	}
	for {
		var sweep bool
		select {
		case <-done:
			return
		case <-t.C:
			sweep = true
		case <-fresh:
		}
		e.idleMu.Lock()
		lists := slices.Collect(maps.Values(e.idle))
		e.idleMu.Unlock()
		for _, l := range lists {
			if sweep {
				e.runSweep(l)
				continue
			}
			_ = l.loop.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
				l.freshTick(e)
				return nil
			}))
		}
	}
}

// runSweep queues a sweep batch on l's loop, and the next batch from
// there: other events run in between.
func (e *Engine) runSweep(l *idleList) {
	_ = l.loop.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
		if l.sweep(e) {
			e.runSweep(l)
		}
		return nil
	}))
}
