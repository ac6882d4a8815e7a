package persist

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"
	"time"
)

// Group commit: batches built on any goroutine are queued by Commit and
// merged by one committer goroutine into one engine write per group. In
// ModeSync the committer does not wait for the fsync: it hands the applied
// group to the completer goroutine (through the pipe, at most
// Options.MaxInFlightGroups groups at once) and merges the next one while
// the disk syncs; the completer waits for each group's sync in order and
// runs its done callbacks. In ModePeriodic and ModeNone the committer runs
// the callbacks itself once the group is applied, and in ModePeriodic a
// syncer goroutine fsyncs on a ticker. See "Group commit" in doc.go.

// NewBatch returns an empty batch bound to this store.
func (c *core) NewBatch() *Batch {
	b := c.pool.Get().(*Batch)
	b.c = c
	return b
}

// recycle returns b to the pool once its done callback has its result.
func (c *core) recycle(b *Batch) {
	// Do not keep huge buffers alive in the pool.
	if cap(b.buf) > 1<<20 {
		return
	}
	b.reset()
	c.pool.Put(b)
}

// Commit applies b atomically and durably according to the mode, then
// calls done exactly once; see Store.
func (c *core) Commit(b *Batch, done func(error)) {
	if b.c != c {
		done(fmt.Errorf("%w: batch belongs to another store", ErrInvalid))
		return
	}
	if b.err != nil {
		err := b.err
		c.recycle(b)
		done(err)
		return
	}
	if err := c.errUnavailable(); err != nil {
		c.failed.Add(1)
		c.recycle(b)
		done(err)
		return
	}
	c.mu.Lock()
	if c.mu.bytes > 0 && c.mu.bytes+len(b.buf) > c.opts.MaxPendingBytes && !c.mu.closed {
		// Back-pressure: the caller (an event loop) waits until groups
		// complete and free their bytes.
		c.commitWaits.Add(1)
		for c.mu.bytes > 0 && c.mu.bytes+len(b.buf) > c.opts.MaxPendingBytes && !c.mu.closed {
			c.mu.space.Wait()
		}
	}
	if c.mu.closed {
		c.mu.Unlock()
		c.recycle(b)
		done(ErrClosed)
		return
	}
	b.done = done
	c.mu.queue = append(c.mu.queue, b)
	c.mu.bytes += len(b.buf)
	c.mu.work.Signal()
	c.mu.Unlock()
}

// CommitWait commits b and waits for the result.
func (c *core) CommitWait(b *Batch) error {
	ch := make(chan error, 1)
	c.Commit(b, func(err error) { ch <- err })
	return <-ch
}

// pending is a group applied in ModeSync whose fsync the completer awaits.
type pending struct {
	batches []*Batch
	w       writer // the applied engine write; nil when err is set
	err     error  // the group failed before or while being applied
	size    int    // encoded bytes of the batches, counted in mu.bytes
	ops     int
}

// committer is the single goroutine that merges queued batches into one
// engine write per group. In ModeSync it hands each applied group to the
// completer without waiting for its fsync; otherwise it runs the group's
// done callbacks itself.
func (c *core) committer() {
	defer close(c.committerDone)
	pipelined := c.pipe != nil
	if pipelined {
		defer close(c.pipe)
	}
	var group []*Batch
	for {
		c.mu.Lock()
		for len(c.mu.queue) == 0 && !c.mu.closed {
			c.mu.work.Wait()
		}
		if len(c.mu.queue) == 0 {
			c.mu.Unlock()
			return
		}
		if pipelined {
			// A slot for the group, taken before the group is cut: what
			// queues while every slot is busy joins this group.
			select {
			case c.slots <- struct{}{}:
			default:
				c.mu.Unlock()
				c.pipelineWaits.Add(1)
				c.slots <- struct{}{}
				c.mu.Lock()
			}
		}
		n, size := 0, 0
		for n < len(c.mu.queue) && (n == 0 || size+len(c.mu.queue[n].buf) <= c.opts.MaxGroupBytes) {
			size += len(c.mu.queue[n].buf)
			n++
		}
		if pipelined {
			// The completer's from now on; slices come back through
			// c.spare, so steady state allocates none.
			select {
			case group = <-c.spare:
				group = slices.Grow(group[:0], n)[:n]
			default:
				group = make([]*Batch, n)
			}
		} else {
			group = slices.Grow(group[:0], n)[:n]
		}
		copy(group, c.mu.queue[:n])
		rest := copy(c.mu.queue, c.mu.queue[n:])
		clear(c.mu.queue[rest:])
		c.mu.queue = c.mu.queue[:rest]
		c.mu.Unlock()

		w, ops, err := c.commitGroup(group)
		if pipelined {
			if in := c.inFlight.Add(1); uint64(in) > c.maxInFlight.Load() {
				c.maxInFlight.Store(uint64(in))
			}
			c.pipe <- pending{batches: group, w: w, err: err, size: size, ops: ops}
			continue
		}
		c.finishGroup(group, size, ops, err)
		clear(group)
	}
}

// completer is the goroutine that, in ModeSync, waits for the fsync of
// each applied group in commit order and then runs its done callbacks.
// Completion is strictly ordered: a group is reported only after every
// group before it. Once a group fails, every later group fails too,
// whatever its own sync says: after a failed fsync the kernel may have
// dropped dirty pages, so a later "successful" fsync proves nothing.
func (c *core) completer() {
	defer close(c.completerDone)
	var failed error
	for p := range c.pipe {
		err := p.err
		if err == nil && failed != nil {
			err = failed
		}
		if err == nil {
			err = c.syncWait(p.w)
			if err == nil {
				p.w.release()
			}
			// On failure the engine write is abandoned, not released:
			// Pebble may still hold it.
		}
		if err != nil && failed == nil {
			failed = err
		}
		c.inFlight.Add(-1)
		c.finishGroup(p.batches, p.size, p.ops, err)
		select {
		case c.spare <- p.batches[:0]:
		default:
		}
		<-c.slots
	}
}

// syncWait waits until w, applied by commitGroup, is durable; a failure
// makes the store unavailable.
func (c *core) syncWait(w writer) (err error) {
	func() {
		defer c.catchFatal(&err)
		err = w.syncWait()
	}()
	if err != nil {
		c.degrade(err)
		return c.errUnavailable()
	}
	return nil
}

// finishGroup counts the group, frees its bytes for Commit and runs its
// done callbacks in order, with err (nil: durable as the mode promises).
func (c *core) finishGroup(group []*Batch, size, ops int, err error) {
	if err != nil {
		c.failed.Add(uint64(len(group)))
	} else {
		c.batches.Add(uint64(len(group)))
		c.ops.Add(uint64(ops))
		c.bytesIn.Add(uint64(size))
		if g := uint64(len(group)); g > c.maxGroup.Load() {
			c.maxGroup.Store(g)
		}
	}
	c.mu.Lock()
	c.mu.bytes -= size
	c.mu.space.Broadcast()
	c.mu.Unlock()
	for i, b := range group {
		done := b.done
		c.recycle(b)
		group[i] = nil
		done(err)
	}
}

// commitGroup writes the group as one engine batch and returns, in
// ModeSync, the applied write whose syncWait the completer calls (its
// fsync is requested, not awaited). Runs on the committer goroutine; a
// failure makes the store unavailable.
//
// Reference counts change here, batch by batch in group order (refs.go).
// A batch that needs to read what the batches before it wrote — a
// DeleteSession reads the client's entries, an AddRef of a message without
// a count checks that it exists — first applies what is merged so far,
// without a sync (the final apply's sync covers it). Applies are split
// only between batches, so each batch is still written atomically, and
// each carries the count records of the batches in it.
func (c *core) commitGroup(group []*Batch) (applied writer, ops int, err error) {
	if err := c.errUnavailable(); err != nil {
		return nil, 0, err
	}
	defer func() {
		if err != nil {
			c.degrade(err)
			err = c.errUnavailable()
		}
	}()
	g := &c.group
	defer func() {
		// Released here unless handed to the completer; after a failure
		// the write is abandoned, as Pebble may still hold it.
		if g.w != nil && err == nil {
			g.w.release()
		}
		g.w = nil
	}()
	defer c.catchFatal(&err)
	g.w = c.eng.newWriter()
	e := &c.elide
	if !c.opts.NoWriteAvoidance {
		e.plan(group)
	}
	defer func() {
		if e.skipped > 0 {
			c.opsAvoided.Add(uint64(e.skipped))
			c.msgsAvoided.Add(uint64(e.gone))
		}
		e.reset() // before the batches (whose buffers its keys point into) are recycled
	}()
	i := int32(0)
	for _, b := range group {
		ops += b.ops
		if b.deletesClient {
			if err := g.flush(); err != nil {
				return nil, 0, err
			}
		}
		if err := c.resolveRefs(b); err != nil {
			return nil, 0, err
		}
		w := g.w
		for rest := b.buf; len(rest) > 0; i++ {
			at := len(b.buf) - len(rest)
			var kind byte
			var k, v []byte
			kind, k, v, rest = nextOp(rest)
			switch kind {
			case opSet, opInsert:
				if !e.skip(i, k) {
					w.set(k, v)
				}
			case opDelete:
				if !e.skip(i, k) {
					w.del(k)
				}
			case opSkip:
			case opDeleteClient:
				if err := c.deleteClient(w, b.buf[:at], k); err != nil {
					return nil, 0, err
				}
			}
		}
		for _, id := range c.scratch.deletes {
			if e.skipMessage(id) {
				continue
			}
			g.key = appendMessageKey(g.key[:0], id)
			w.del(g.key)
		}
	}
	w := g.w
	c.flushRefsTo(w)
	if c.opts.Mode == ModeSync {
		if err := c.eng.applyNoSyncWait(w); err != nil {
			return nil, 0, err
		}
		g.w = nil // the completer releases it after its sync
		c.groups.Add(1)
		return w, ops, nil
	}
	if err := c.eng.apply(w, false); err != nil {
		return nil, 0, err
	}
	c.groups.Add(1)
	c.dirty.Store(true)
	return nil, ops, nil
}

// groupWriter is the committer's writer for the group being committed,
// with scratch buffers kept across groups so a commit allocates nothing
// per batch. Committer goroutine only.
type groupWriter struct {
	c        *core
	w        writer
	key, val []byte
}

// flush applies what is merged so far, with the count records that match
// it, without a sync (the group's final apply syncs), and starts a new
// writer: what the batches so far wrote becomes readable.
func (g *groupWriter) flush() error {
	if g.w.count() == 0 {
		return nil
	}
	g.c.flushRefsTo(g.w)
	if err := g.c.eng.apply(g.w, false); err != nil {
		return err
	}
	g.w.release()
	g.w = g.c.eng.newWriter()
	return nil
}

// exists reports whether message id's record is stored as of the batches
// resolved so far (flushing them first).
func (g *groupWriter) exists(id uint64) (bool, error) {
	if err := g.flush(); err != nil {
		return false, err
	}
	g.key = appendMessageKey(g.key[:0], id)
	return g.c.eng.has(g.key)
}

// deleteClient adds to w the deletion of a client's range and releases the
// message reference of every outbound entry in it: those applied (the
// caller applied every earlier batch) overlaid with the operations of the
// same batch before the deletion (before). Runs on the committer goroutine.
func (c *core) deleteClient(w writer, before, prefix []byte) error {
	lo := append(append([]byte(nil), prefix...), kindOutbound)
	hi := append(append([]byte(nil), prefix...), kindOutbound+1)
	type entry struct{ seq, id uint64 }
	var entries []entry // in sequence order
	err := c.scan(lo, hi, func(k, v []byte) error {
		if len(k) != len(lo)+8 {
			return nil
		}
		if o, err := decodeOutbound(v); err == nil {
			entries = append(entries, entry{binary.BigEndian.Uint64(k[len(lo):]), o.MessageID})
		}
		return nil
	})
	if err != nil {
		return err
	}
	cmp := func(e entry, seq uint64) int { return cmpU64(e.seq, seq) }
	for rest := before; len(rest) > 0; {
		var kind byte
		var k, v []byte
		kind, k, v, rest = nextOp(rest)
		if kind == opDeleteClient && bytes.Equal(k, prefix) {
			entries = entries[:0] // released when that deletion was applied
			continue
		}
		if len(k) != len(lo)+8 || !bytes.HasPrefix(k, lo) {
			continue
		}
		seq := binary.BigEndian.Uint64(k[len(lo):])
		i, found := slices.BinarySearchFunc(entries, seq, cmp)
		switch {
		case kind == opSet || kind == opInsert:
			o, err := decodeOutbound(v)
			if err != nil {
				continue
			}
			if found {
				entries[i].id = o.MessageID
			} else {
				entries = slices.Insert(entries, i, entry{seq, o.MessageID})
			}
		case kind == opDelete && found:
			entries = slices.Delete(entries, i, i+1)
		}
	}
	w.delRange(prefix, append(lo[:len(prefix):len(prefix)], kindEnd))
	for _, e := range entries {
		if e.id != 0 {
			c.releaseRef(w, e.id)
		}
	}
	return nil
}

// syncer fsyncs the WAL every SyncInterval in ModePeriodic.
func (c *core) syncer() {
	defer close(c.syncDone)
	t := time.NewTicker(c.opts.SyncInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			c.syncIfDirty()
		case <-c.syncStop:
			c.syncIfDirty()
			return
		}
	}
}

// syncIfDirty fsyncs the WAL if anything was applied since the last sync;
// a failure makes the store unavailable.
func (c *core) syncIfDirty() {
	if !c.dirty.Swap(false) || c.errUnavailable() != nil {
		return
	}
	var err error
	func() {
		defer c.catchFatal(&err)
		err = c.eng.syncWAL()
	}()
	if err != nil {
		c.degrade(err)
		return
	}
	c.syncs.Add(1)
}
