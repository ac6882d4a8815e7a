package persist

import (
	"fmt"
	"time"
)

// Group commit: batches built on any goroutine are queued by Commit and
// merged by one committer goroutine into one engine write (one fsync in
// ModeSync); in ModePeriodic a syncer goroutine fsyncs on a ticker.

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
	for c.mu.bytes > 0 && c.mu.bytes+len(b.buf) > c.opts.MaxPendingBytes && !c.mu.closed {
		c.mu.space.Wait()
	}
	if c.mu.closed {
		c.mu.Unlock()
		c.recycle(b)
		done(ErrClosed)
		return
	}
	// Reference counts change here, under the same lock that orders the
	// queue, so the order of count changes is the order batches are
	// applied in: the batch that takes a count to zero deletes the message,
	// after every batch that referenced it.
	c.applyRefsLocked(b)
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

// committer is the single goroutine that merges queued batches into one
// engine write (one fsync in ModeSync) and runs their done callbacks.
func (c *core) committer() {
	defer close(c.committerDone)
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
		n, size := 0, 0
		for n < len(c.mu.queue) && (n == 0 || size+len(c.mu.queue[n].buf) <= c.opts.MaxGroupBytes) {
			size += len(c.mu.queue[n].buf)
			n++
		}
		group = append(group[:0], c.mu.queue[:n]...)
		rest := copy(c.mu.queue, c.mu.queue[n:])
		clear(c.mu.queue[rest:])
		c.mu.queue = c.mu.queue[:rest]
		c.mu.bytes -= size
		c.mu.space.Broadcast()
		c.mu.Unlock()

		err := c.commitGroup(group)
		if err != nil {
			c.failed.Add(uint64(len(group)))
		} else {
			c.batches.Add(uint64(len(group)))
			if g := uint64(len(group)); g > c.maxGroup.Load() {
				c.maxGroup.Store(g)
			}
		}
		for i, b := range group {
			done := b.done
			c.recycle(b)
			group[i] = nil
			done(err)
		}
	}
}

// commitGroup writes the group as one engine batch. Runs on the committer
// goroutine; a failure makes the store unavailable.
func (c *core) commitGroup(group []*Batch) (err error) {
	if err := c.errUnavailable(); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			c.degrade(err)
			err = c.errUnavailable()
		}
	}()
	defer c.catchFatal(&err)
	w := c.eng.newWriter()
	defer func() { w.release() }()
	var ops, size int
	for _, b := range group {
		ops += b.ops
		size += len(b.buf)
		for rest := b.buf; len(rest) > 0; {
			var kind byte
			var k, v []byte
			kind, k, v, rest = nextOp(rest)
			switch kind {
			case opSet:
				w.set(k, v)
			case opDelete:
				w.del(k)
			case opSkip:
			case opDeleteClient:
				// The client's entries must be read as of everything before
				// this op: apply what is merged so far (the final write's
				// sync covers it), then read.
				if w.count() > 0 {
					if err := c.eng.apply(w, false); err != nil {
						return err
					}
					w.release()
					w = c.eng.newWriter()
				}
				if err := c.deleteClient(w, k); err != nil {
					return err
				}
			}
		}
	}
	if maxID := c.nextID.Load() - 1; maxID >= c.ceiling {
		c.ceiling = maxID + idReserve
		w.set(metaIDCeiling, appendMetaU64(nil, c.ceiling))
	}
	sync := c.opts.Mode == ModeSync
	if err := c.eng.apply(w, sync); err != nil {
		return err
	}
	c.groups.Add(1)
	c.ops.Add(uint64(ops))
	c.bytesIn.Add(uint64(size))
	if sync {
		c.syncs.Add(1)
	} else {
		c.dirty.Store(true)
	}
	return nil
}

// deleteClient adds to w the deletion of a client's range and of every
// message whose last reference was one of the client's outbound entries.
// Runs on the committer goroutine; takes c.mu to release the references.
func (c *core) deleteClient(w writer, prefix []byte) error {
	lo := append(append([]byte(nil), prefix...), kindOutbound)
	hi := append(append([]byte(nil), prefix...), kindOutbound+1)
	var ids []uint64
	err := c.scan(lo, hi, func(_, v []byte) error {
		if o, err := decodeOutbound(v); err == nil && o.MessageID != 0 {
			ids = append(ids, o.MessageID)
		}
		return nil
	})
	if err != nil {
		return err
	}
	w.delRange(prefix, append(lo[:len(prefix):len(prefix)], kindEnd))
	c.mu.Lock()
	for _, id := range ids {
		if c.releaseLocked(id) {
			w.del(appendMessageKey(nil, id))
		}
	}
	c.mu.Unlock()
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
