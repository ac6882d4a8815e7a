package persist

// Reference counts of stored messages, in memory only: changed when a
// batch is submitted, under c.mu, so that count order is commit order (see
// the package doc, "Store-once and reference counts").

// applyRefsLocked applies the reference changes of b, which is being
// queued: messages it puts start at zero, conditional puts become a write
// or a no-op, AddRef and Release move counts, and the deletion of every
// message whose count reached zero (or that was put unreferenced) is
// appended to b. c.mu must be held.
func (c *core) applyRefsLocked(b *Batch) {
	refs := c.mu.refs
	for _, id := range b.puts {
		refs[id] = 0
	}
	// Conditional puts first: a Release of the same id in this batch must
	// see the reference they add, or its delete would follow the rewrite.
	for _, cp := range b.conds {
		if _, ok := refs[cp.id]; ok {
			refs[cp.id]++
			b.buf[cp.off] = opSkip
		} else {
			refs[cp.id] = 1
			b.buf[cp.off] = opSet
			c.mu.rewritten++
		}
	}
	for _, r := range b.refs {
		if r.add {
			if _, ok := refs[r.id]; !ok {
				c.mu.refErrors++
				continue
			}
			refs[r.id]++
		} else if c.releaseLocked(r.id) {
			b.deleteKey(opDelete, func(dst []byte) []byte { return appendMessageKey(dst, r.id) })
		}
	}
	for _, id := range b.puts {
		if n, ok := refs[id]; ok && n == 0 {
			delete(refs, id)
			c.mu.unreferenced++
			b.deleteKey(opDelete, func(dst []byte) []byte { return appendMessageKey(dst, id) })
		}
	}
}

// releaseLocked drops one reference and reports whether it was the last.
// c.mu must be held.
func (c *core) releaseLocked(id uint64) bool {
	n, ok := c.mu.refs[id]
	if !ok || n == 0 {
		c.mu.refErrors++
		return false
	}
	if n == 1 {
		delete(c.mu.refs, id)
		return true
	}
	c.mu.refs[id] = n - 1
	return false
}

// hasMessage reports whether message id has a live record. Takes c.mu.
func (c *core) hasMessage(id uint64) bool {
	c.mu.Lock()
	_, ok := c.mu.refs[id]
	c.mu.Unlock()
	return ok
}
