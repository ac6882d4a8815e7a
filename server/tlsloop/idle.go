package tlsloop

// Idle connections give their AEADs back: an AES-GCM key schedule and
// its tables are ~770 B per direction, half of what an idle handed-over
// connection holds. Each event loop keeps a list of its record-layer
// connections; a sweep every IdleKeysAfter/2 visits them on their loop,
// a batch at a time, and drops the AEADs of those not used since the
// previous sweep. The next record builds them again from the kept keys
// (two allocations and well under a microsecond, once per idle period).

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

// idleList is one event loop's record-layer connections. Loop only.
type idleList struct {
	loop     gnet.EventLoop
	head     *conn
	cursor   *conn // the next connection the sweep in progress visits
	sweeping bool
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

func (l *idleList) add(c *conn) {
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
		if c.used {
			c.used = false
			continue
		}
		if c.rl != nil && (c.rl.in.aead != nil || c.rl.out.aead != nil) {
			c.rl.in.aead, c.rl.out.aead = nil, nil
			e.keysDropped.Add(1)
		}
	}
	if l.cursor == nil {
		l.sweeping = false
		return false
	}
	return true
}

// sweepIdle runs the sweeps until Stop.
func (e *Engine) sweepIdle() {
	defer e.wg.Done()
	t := time.NewTicker(e.cfg.IdleKeysAfter / 2)
	defer t.Stop()
	for {
		select {
		case <-e.done:
			return
		case <-t.C:
		}
		e.idleMu.Lock()
		lists := slices.Collect(maps.Values(e.idle))
		e.idleMu.Unlock()
		for _, l := range lists {
			e.runSweep(l)
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
