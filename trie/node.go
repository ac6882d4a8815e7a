package trie

import (
	"hash/maphash"
	"sync/atomic"
)

// node is one topic level. P is what a node holds: *subSet for the
// subscription trie, an *rentry for the retained index. Every field is read
// without a lock; writers (holding their shard's mutex) change a node only
// through atomic stores, and only ever publish objects they will not modify
// again in a way readers can observe.
//
// 48 bytes on 64-bit platforms.
type node[P any] struct {
	name string // the level; a substring of the first filter that created the node
	kids atomic.Pointer[table[P]]
	plus atomic.Pointer[node[P]] // the "+" child (subscription trie only)
	hash atomic.Pointer[node[P]] // the "#" child (subscription trie only)
	val  atomic.Pointer[P]
}

// empty reports whether n holds nothing and can be unlinked. Writer only.
func (n *node[P]) empty() bool {
	return n.val.Load() == nil && n.kids.Load() == nil && n.plus.Load() == nil && n.hash.Load() == nil
}

// smallTable is the largest table scanned linearly instead of hashed: for
// the many nodes with a handful of children a short scan of pointers beats
// hashing the key.
const smallTable = 8

// table is a node's set of literal children: an array of atomic pointers
// that readers probe without a lock.
//
//	small (≤ 8 slots, meta == nil)     hashed (≥ 32 slots, power of two)
//	┌────┬────┬────┬────┐        tags  ┌────┬────┬────┬────┬────┬─ ─
//	│ *a │nil │ *c │ *b │              │ 0  │ t1 │ 1  │ t2 │ 0  │ …   0 empty, 1 deleted,
//	└────┴────┴────┴────┘              ├────┼────┼────┼────┼────┼─ ─  else hash tag
//	scan every slot              slots │nil │ *x │nil │ *y │nil │ …
//	                                   └────┴────┴────┴────┴────┴─ ─
//	                                   start at hash(name)&mask, probe
//	                                   linearly until tag 0
//
// In a hashed table a probe compares 32-bit tags (high hash bits, 16 to a
// cache line) and dereferences a child only when its tag matches, so a
// collision costs no cache miss on the colliding node. A writer inserts by
// storing the pointer and then the tag into an empty slot (or a deleted one
// once the probe has proven the name absent), and deletes by storing tag 1:
// a concurrent reader sees the child or not, never a broken chain. Entries never move inside a table. When a table must grow or
// shrink the writer builds a new one and publishes it with one atomic store
// on the node; the old table is never written again, so readers still
// holding it see a consistent (slightly old) set. Inserts keep
// live+dead ≤ ¾ of the slots, so every probe reaches a nil slot.
type table[P any] struct {
	slots []atomic.Pointer[node[P]]
	meta  *tableMeta // nil for small tables
}

// tableMeta is the tag array and writer bookkeeping of a hashed table.
type tableMeta struct {
	tags []atomic.Uint32
	live int // writer only
	dead int // writer only
}

const (
	tagEmpty   = 0
	tagDeleted = 1
)

// tagOf derives a slot tag from the high hash bits (the index uses the low
// ones); bit 1 is forced so a tag is never tagEmpty or tagDeleted.
func tagOf(h uint64) uint32 { return uint32(h>>32) | 2 }

var seed = maphash.MakeSeed()

// hashString and hashBytes give equal results for equal contents.
func hashString(s string) uint64 { return maphash.String(seed, s) }
func hashBytes(b []byte) uint64  { return maphash.Bytes(seed, b) }

// getBytes finds the child named key. h is hashBytes(key) if the caller has
// it, or 0 to compute it on demand.
func (t *table[P]) getBytes(key []byte, h uint64) *node[P] {
	s := t.slots
	if t.meta == nil {
		for i := range s {
			if n := s[i].Load(); n != nil && n.name == string(key) {
				return n
			}
		}
		return nil
	}
	if h == 0 {
		h = hashBytes(key)
	}
	tags, want := t.meta.tags, tagOf(h)
	mask := uint64(len(s) - 1)
	for i := h & mask; ; i = (i + 1) & mask {
		switch tags[i].Load() {
		case tagEmpty:
			return nil
		case want:
			if n := s[i].Load(); n != nil && n.name == string(key) {
				return n
			}
		}
	}
}

// get finds the child named key.
func (t *table[P]) get(key string) *node[P] {
	s := t.slots
	if t.meta == nil {
		for i := range s {
			if n := s[i].Load(); n != nil && n.name == key {
				return n
			}
		}
		return nil
	}
	h := hashString(key)
	tags, want := t.meta.tags, tagOf(h)
	mask := uint64(len(s) - 1)
	for i := h & mask; ; i = (i + 1) & mask {
		switch tags[i].Load() {
		case tagEmpty:
			return nil
		case want:
			if n := s[i].Load(); n != nil && n.name == key {
				return n
			}
		}
	}
}

// each calls fn for every child until fn returns false; it reports whether
// it ran to the end.
func (t *table[P]) each(fn func(*node[P]) bool) bool {
	for i := range t.slots {
		if n := t.slots[i].Load(); n != nil {
			if !fn(n) {
				return false
			}
		}
	}
	return true
}

// child returns n's literal child named name, or nil.
func (n *node[P]) child(name string) *node[P] {
	if t := n.kids.Load(); t != nil {
		return t.get(name)
	}
	return nil
}

// addChild links c (whose name must not be present) under n. Writer only.
func (n *node[P]) addChild(c *node[P]) {
	t := n.kids.Load()
	if t == nil {
		t = newSmall[P](1)
		t.slots[0].Store(c)
		n.kids.Store(t)
		return
	}
	if t.meta == nil {
		for i := range t.slots {
			if t.slots[i].Load() == nil {
				t.slots[i].Store(c)
				return
			}
		}
		n.kids.Store(rebuild(t, len(t.slots)+1, c))
		return
	}
	m := t.meta
	if (m.live+m.dead+1)*4 > len(t.slots)*3 {
		n.kids.Store(rebuild(t, m.live+1, c))
		return
	}
	h := hashString(c.name)
	mask := uint64(len(t.slots) - 1)
	i := h & mask
	free := -1
	for ; ; i = (i + 1) & mask {
		tg := m.tags[i].Load()
		if tg == tagEmpty {
			break
		}
		if tg == tagDeleted && free < 0 {
			free = int(i)
		}
	}
	if free >= 0 {
		i = uint64(free)
		m.dead--
	}
	// Pointer first: a reader that sees the tag must find the node.
	t.slots[i].Store(c)
	m.tags[i].Store(tagOf(h))
	m.live++
}

// removeChild unlinks c from n. Writer only.
func (n *node[P]) removeChild(c *node[P]) {
	t := n.kids.Load()
	if t == nil {
		return
	}
	if t.meta == nil {
		left := 0
		for i := range t.slots {
			switch t.slots[i].Load() {
			case c:
				t.slots[i].Store(nil)
			case nil:
			default:
				left++
			}
		}
		if left == 0 {
			n.kids.Store(nil)
		}
		return
	}
	m := t.meta
	mask := uint64(len(t.slots) - 1)
	for i := hashString(c.name) & mask; ; i = (i + 1) & mask {
		tg := m.tags[i].Load()
		if tg == tagEmpty {
			return // not present
		}
		if tg != tagDeleted && t.slots[i].Load() == c {
			m.tags[i].Store(tagDeleted)
			t.slots[i].Store(nil)
			m.live--
			m.dead++
			break
		}
	}
	if m.live*8 < len(t.slots) {
		n.kids.Store(rebuild(t, m.live, nil))
	}
}

// rebuild returns a fresh table holding t's children plus extra (if not
// nil), sized for live children; nil if there are none.
func rebuild[P any](t *table[P], live int, extra *node[P]) *table[P] {
	if live == 0 {
		return nil
	}
	size := 1
	if live <= smallTable {
		for size < live {
			size <<= 1
		}
		nt := newSmall[P](size)
		i := 0
		put := func(c *node[P]) bool {
			nt.slots[i].Store(c)
			i++
			return true
		}
		t.each(put)
		if extra != nil {
			put(extra)
		}
		return nt
	}
	for size < live*2 {
		size <<= 1
	}
	nt := &table[P]{slots: make([]atomic.Pointer[node[P]], size), meta: &tableMeta{tags: make([]atomic.Uint32, size)}}
	mask := uint64(size - 1)
	put := func(c *node[P]) bool {
		h := hashString(c.name)
		i := h & mask
		for nt.meta.tags[i].Load() != tagEmpty {
			i = (i + 1) & mask
		}
		nt.slots[i].Store(c)
		nt.meta.tags[i].Store(tagOf(h))
		nt.meta.live++
		return true
	}
	t.each(put)
	if extra != nil {
		put(extra)
	}
	return nt
}

// newSmall allocates a small table with its slots in the same object, so
// that a lookup touches one allocation rather than a header and an array.
func newSmall[P any](size int) *table[P] {
	switch size {
	case 1:
		x := &struct {
			t table[P]
			a [1]atomic.Pointer[node[P]]
		}{}
		x.t.slots = x.a[:]
		return &x.t
	case 2:
		x := &struct {
			t table[P]
			a [2]atomic.Pointer[node[P]]
		}{}
		x.t.slots = x.a[:]
		return &x.t
	case 4:
		x := &struct {
			t table[P]
			a [4]atomic.Pointer[node[P]]
		}{}
		x.t.slots = x.a[:]
		return &x.t
	}
	return &table[P]{slots: make([]atomic.Pointer[node[P]], size)}
}
