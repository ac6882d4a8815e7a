package persist

import (
	"slices"
)

// Reference counts of stored messages (see the package doc, "Store-once
// and reference counts"). A message with exactly one reference has no
// count anywhere: releasing that reference deletes it. Only messages with
// two or more references are counted, in c.shared and in a count record
// each (key 0x05 | id), so memory and open time grow with the number of
// shared messages, not with the number stored.
//
// Everything here runs on the committer goroutine, batch by batch in
// commit order; the map needs no lock. Counts cannot change at submit
// time: DeleteSession releases the references of the entries it finds
// when it is applied, so the count a message has after a batch is only
// known once every batch before it has been applied.

// refState is what the committer knows about one message while it
// processes one batch: the references before the batch and now.
type refState struct {
	id uint64
	// was is the reference count before the batch: 0 for a record put by
	// this batch (or rewritten by AddRefOrPut), 1 for a live message
	// without a count, the count of a shared message.
	was uint32
	// n is the count now.
	n uint32
	// put: the batch writes the record (PutMessage or a rewrite).
	put bool
	// gone: the count fell to zero in this batch; the record is deleted.
	gone bool
	// added: the batch added a reference (for Stats.Unreferenced).
	added bool
}

// refScratch is the committer's per-batch working state, reused.
type refScratch struct {
	states []refState
	// nPut is how many states come from the batch's puts: they are first
	// and sorted by id (a batch's ids increase), so they are found by
	// binary search; the others by a linear scan, or through idx once
	// there are many.
	nPut int
	idx  map[uint64]int
	// deletes are the message records this batch deletes.
	deletes []uint64
}

// refIdxAt is the number of non-put states above which lookups use a map.
const refIdxAt = 16

func (r *refScratch) reset() {
	clear(r.states)
	r.states = r.states[:0]
	r.nPut = 0
	clear(r.idx)
	r.deletes = r.deletes[:0]
}

// find returns the state of id in this batch, or nil.
func (r *refScratch) find(id uint64) *refState {
	if i, ok := slices.BinarySearchFunc(r.states[:r.nPut], id, func(s refState, id uint64) int {
		return cmpU64(s.id, id)
	}); ok {
		return &r.states[i]
	}
	if len(r.states)-r.nPut > refIdxAt {
		if i, ok := r.idx[id]; ok {
			return &r.states[i]
		}
		return nil
	}
	for i := len(r.states) - 1; i >= r.nPut; i-- {
		if r.states[i].id == id {
			return &r.states[i]
		}
	}
	return nil
}

// add appends the state of a message the batch touches without having put it.
func (r *refScratch) add(s refState) *refState {
	r.states = append(r.states, s)
	if n := len(r.states) - r.nPut; n > refIdxAt {
		if r.idx == nil {
			r.idx = make(map[uint64]int)
		}
		if n == refIdxAt+1 { // index the ones scanned linearly so far
			for i := r.nPut; i < len(r.states); i++ {
				r.idx[r.states[i].id] = i
			}
		} else {
			r.idx[s.id] = len(r.states) - 1
		}
	}
	return &r.states[len(r.states)-1]
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// known returns the state of message id in the batch being resolved,
// reading the count of a message the batch did not put; a message without
// a count is live with one reference if verify is false or its record
// exists as of the batches before (the committer reads it), otherwise gone
// (nil). Committer goroutine only.
func (c *core) known(id uint64, verify bool) (*refState, error) {
	r := &c.scratch
	if s := r.find(id); s != nil {
		return s, nil
	}
	if n, ok := c.shared[id]; ok {
		return r.add(refState{id: id, was: n, n: n}), nil
	}
	if verify {
		ok, err := c.group.exists(id)
		if err != nil || !ok {
			return nil, err
		}
	}
	return r.add(refState{id: id, was: 1, n: 1}), nil
}

// resolveRefs decides the reference changes of b before its operations are
// written: AddRefOrPut writes become a put or a no-op, counts move, and
// the message records whose count fell to zero are listed in
// c.scratch.deletes. It then folds the result into c.shared and marks the
// count records to rewrite. Runs on the committer goroutine, with
// c.group holding the writer of the batches before b.
func (c *core) resolveRefs(b *Batch) error {
	r := &c.scratch
	r.reset()
	for _, id := range b.puts {
		r.states = append(r.states, refState{id: id, put: true})
	}
	r.nPut = len(r.states)
	// Conditional puts first: a Release of the same id in this batch must
	// see the reference they add, or the record would be deleted under it.
	for _, cp := range b.conds {
		s, err := c.known(cp.id, true)
		if err != nil {
			return err
		}
		if s == nil || s.gone {
			// Gone: write it again under its id, with this one reference.
			if s == nil {
				s = r.add(refState{id: cp.id})
			}
			s.put, s.gone, s.added, s.n = true, false, true, 1
			b.buf[cp.off] = opSet
			c.rewritten.Add(1)
			continue
		}
		b.buf[cp.off] = opSkip
		s.added = true
		s.n++
	}
	for _, op := range b.refs {
		// An AddRef of a message without a count checks that it exists
		// (it may have lost its last reference in an earlier batch); a
		// Release does not: the store cannot tell a live message with one
		// reference from a deleted one without reading, and releasing what
		// the caller holds is the common path.
		s, err := c.known(op.id, op.add)
		if err != nil {
			return err
		}
		switch {
		case s == nil, op.add && s.gone, !op.add && s.n == 0:
			// AddRef of a message that is gone, or Release of one without
			// references: a caller bug, ignored.
			c.refErrors.Add(1)
		case op.add && s.n == 1<<32-1:
			c.refErrors.Add(1) // 4 billion entries cannot be queued
		case op.add:
			s.n++
			s.added = true
		default:
			s.n--
			s.gone = s.n == 0
		}
	}
	// Fold into c.shared; the count records are written from it when the
	// writer is applied (flushRefs).
	for i := range r.states {
		s := &r.states[i]
		switch {
		case s.n == 0:
			if s.put || s.was > 0 {
				r.deletes = append(r.deletes, s.id)
			}
			if s.put && !s.added {
				c.unreferenced.Add(1)
			}
			if s.was > 0 {
				c.live--
			}
		case s.was == 0:
			c.live++
		}
		if s.n >= 2 {
			if s.n != s.was {
				c.shared[s.id] = s.n
				c.dirtyRefs = append(c.dirtyRefs, s.id)
			}
		} else if s.was >= 2 {
			delete(c.shared, s.id)
			c.dirtyRefs = append(c.dirtyRefs, s.id)
		}
	}
	return nil
}

// releaseRef drops one reference of message id for an outbound entry that
// DeleteSession removes, appending the deletion of the record to w when
// it was the last. Runs on the committer goroutine.
func (c *core) releaseRef(w writer, id uint64) {
	n, ok := c.shared[id]
	switch {
	case !ok:
		w.del(appendMessageKey(nil, id))
		c.live--
	case n == 2:
		delete(c.shared, id)
		c.dirtyRefs = append(c.dirtyRefs, id)
	default:
		c.shared[id] = n - 1
		c.dirtyRefs = append(c.dirtyRefs, id)
	}
}

// flushRefsTo appends to w the count records changed since the last
// flush, the live-message count and the id ceiling, so that every apply
// carries the counts that match the batches in it. Runs on the committer
// goroutine.
func (c *core) flushRefsTo(w writer) {
	g := &c.group
	if len(c.dirtyRefs) > 0 {
		slices.Sort(c.dirtyRefs)
		for i, id := range c.dirtyRefs {
			if i > 0 && c.dirtyRefs[i-1] == id || c.elide.skipMessage(id) {
				continue // a message put and gone in this group never had a count record
			}
			g.key = appendRefsKey(g.key[:0], id)
			if n, ok := c.shared[id]; ok {
				g.val = appendRefs(g.val[:0], n)
				w.set(g.key, g.val)
			} else {
				w.del(g.key)
			}
		}
		c.dirtyRefs = c.dirtyRefs[:0]
	}
	c.live = max(c.live, 0) // only a caller bug (releasing twice) goes below
	if c.live != c.liveWritten {
		g.val = appendMetaU64(g.val[:0], uint64(c.live))
		w.set(metaLive, g.val)
		c.liveWritten = c.live
	}
	if maxID := c.nextID.Load() - 1; maxID >= c.ceiling {
		c.ceiling = maxID + idReserve
		g.val = appendMetaU64(g.val[:0], c.ceiling)
		w.set(metaIDCeiling, g.val)
	}
	c.sharedN.Store(int64(len(c.shared)))
	c.liveN.Store(c.live)
}
