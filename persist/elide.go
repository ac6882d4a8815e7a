package persist

import (
	"encoding/binary"
	"slices"
	"unsafe"
)

// Write avoidance (package doc, "Write avoidance"): within one group that
// is applied as ONE engine write, only the last operation on a key
// matters, and a key the group created and then deleted need not be
// written at all. A QoS 1 message delivered and acknowledged within one
// group (message record, outbound entry, its "sent" rewrite, the entry's
// deletion and the message's) then costs the engine nothing.
//
// It is only done for groups the committer cannot split into several
// applies (no DeleteSession, no AddRefOrPut, no AddRef of a message put by
// another batch: those read what the batches before them wrote, and a
// crash between two applies of one group would otherwise expose a state
// no unelided run could have had). For such a group a crash leaves all of
// it or none of it on disk, and with all of it the keys hold exactly what
// they would have held without elision; with none of it, nothing of the
// group was acknowledged. So the states a crash can leave are a subset of
// those possible without elision, for any QoS.

// keyFate is what one group does to one key.
type keyFate struct {
	last        int32 // index (in the group's op order) of the last op on the key
	lastDelete  bool  // that op is a deletion
	firstInsert bool  // the first op on the key is an insert: it did not exist before
}

// elider is the committer's per-group elision state, reused across groups.
// Committer goroutine only.
type elider struct {
	on bool
	// keys maps every key the group sets or deletes to its fate. The map
	// keys point into the batches' buffers (no copy); the map is cleared
	// before the batches are recycled.
	keys map[string]*keyFate
	// fates backs the map's values (reused).
	fates []keyFate
	// drop[i] says op i of the group is not written.
	drop []bool
	// refs[id-base] is the net reference count over the group of message
	// id if the group put it, notPut otherwise; a message put and at zero
	// is never written (gone). The ids a group puts come from one counter
	// and are nearly contiguous, so a slice indexed from the lowest one
	// replaces the two maps (counts, gone) the committer used to update
	// and look up several times per message. Ids beyond maxRefWindow of
	// the lowest are not tracked: their records are written as without
	// avoidance, which is always correct, only not cheaper.
	refs []int32
	base uint64
	// gone counts the messages at zero (Stats.MessagesAvoided).
	gone int
	// skipped counts elided engine operations of the current group.
	skipped int
}

// notPut marks an id in elider.refs that the group did not put.
const notPut = -1

// maxRefWindow bounds elider.refs for a group that puts n messages: ids
// beyond it (a batch built long before the others of its group) are not
// elided. Plenty for the ids a group's batches draw from the counter while
// it queues, and never more than a few KiB per group.
func maxRefWindow(n int) uint64 { return uint64(4*n + 1024) }

// bytesKey views b as a string without copying; b must not change while
// the string is in use.
func bytesKey(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

// elidable reports whether group is applied as one engine write, the
// condition for write avoidance.
func elidable(group []*Batch) bool {
	for _, b := range group {
		// An AddRef of a message another batch put may read whether the
		// message exists.
		if b.deletesClient || len(b.conds) > 0 || b.foreignRef {
			return false
		}
	}
	return true
}

// plan decides what group may leave out. Committer goroutine only.
func (e *elider) plan(group []*Batch) {
	e.reset()
	if len(group) < 2 || !elidable(group) {
		return
	}
	if e.keys == nil {
		e.keys = make(map[string]*keyFate)
	}
	n, puts := 0, 0
	e.base = ^uint64(0)
	for _, b := range group {
		n += b.ops
		puts += len(b.puts)
		if len(b.puts) > 0 {
			e.base = min(e.base, b.puts[0]) // puts are in increasing order
		}
	}
	if puts > 0 {
		hi := e.base
		for _, b := range group {
			if len(b.puts) > 0 {
				hi = max(hi, b.puts[len(b.puts)-1])
			}
		}
		w := int(min(hi-e.base+1, maxRefWindow(puts)))
		e.refs = slices.Grow(e.refs[:0], w)[:w]
		for i := range e.refs {
			e.refs[i] = notPut
		}
	}
	e.drop = slices.Grow(e.drop[:0], n)[:n]
	clear(e.drop)
	e.fates = slices.Grow(e.fates[:0], n)
	i := int32(0)
	for _, b := range group {
		for rest := b.buf; len(rest) > 0; i++ {
			var kind byte
			var k []byte
			kind, k, _, rest = nextOp(rest)
			if kind != opSet && kind != opInsert && kind != opDelete {
				continue
			}
			if isMessageKey(k) {
				continue // decided by the reference counts below
			}
			s := bytesKey(k)
			f := e.keys[s]
			if f == nil {
				// fates has room for every op: no reallocation moves f.
				e.fates = append(e.fates, keyFate{firstInsert: kind == opInsert})
				f = &e.fates[len(e.fates)-1]
				e.keys[s] = f
			} else {
				e.drop[f.last] = true // only the last op on a key counts
			}
			f.last, f.lastDelete = i, kind == opDelete
		}
		for _, id := range b.puts {
			if r := e.ref(id); r != nil {
				*r = 0
			}
		}
		// The same arithmetic resolveRefs does, restricted to the ids put
		// by this group: none of them can be read or counted before.
		for _, op := range b.refs {
			r := e.ref(op.id)
			switch {
			case r == nil || *r == notPut:
			case op.add:
				*r++
			case *r > 0:
				*r--
			}
		}
	}
	for _, n := range e.refs {
		if n == 0 {
			e.gone++
		}
	}
	// A key the group inserted and last deleted is not written at all.
	for i := range e.fates {
		if f := &e.fates[i]; f.lastDelete && f.firstInsert {
			e.drop[f.last] = true
		}
	}
	e.on = true
}

// ref returns id's slot in e.refs, nil if id is outside the window.
func (e *elider) ref(id uint64) *int32 {
	if id < e.base || id-e.base >= uint64(len(e.refs)) {
		return nil
	}
	return &e.refs[id-e.base]
}

// isGone reports whether the group put message id and released it.
func (e *elider) isGone(id uint64) bool {
	r := e.ref(id)
	return r != nil && *r == 0
}

func (e *elider) reset() {
	if e.on {
		clear(e.keys)
		clear(e.fates)
		e.fates = e.fates[:0]
	}
	e.on, e.skipped, e.gone, e.refs = false, 0, 0, e.refs[:0]
}

// skip reports whether op number i of the group, of kind on key k, need
// not be written, and counts it.
func (e *elider) skip(i int32, k []byte) bool {
	if !e.on {
		return false
	}
	drop := e.drop[i]
	if isMessageKey(k) {
		drop = e.isGone(binary.BigEndian.Uint64(k[1:]))
	}
	if drop {
		e.skipped++
	}
	return drop
}

// skipMessage reports whether the deletion (or count record) of message
// id need not be written: the group put it and released it.
func (e *elider) skipMessage(id uint64) bool {
	if !e.on {
		return false
	}
	drop := e.isGone(id)
	if drop {
		e.skipped++
	}
	return drop
}

// isMessageKey reports whether k is a message record's key.
func isMessageKey(k []byte) bool { return len(k) == 9 && k[0] == prefixMessage }
