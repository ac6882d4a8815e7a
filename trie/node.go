package trie

import (
	"hash/maphash"
	"sync/atomic"
	"unsafe"
)

// node is one topic level. P is what a node holds: an entry (a lone
// subscription or the head of a subSet, see nodeVal) for the subscription
// trie, an rentry for the
// retained index. Every field is read without a lock; writers (holding their
// shard's mutex) change a node only through atomic stores, and only ever
// publish objects they will not modify again in a way readers can observe.
//
// 32 bytes on 64-bit platforms. The '+' and '#' children are children like
// any other, named "+" and "#", so a node needs no pointer for them.
//
// kids points at the only child itself when there is one, else at a table
// (see table for how a reader tells them apart); kids must stay the first
// field for that.
type node[P any] struct {
	kids atomic.Pointer[table[P]] // nil, the only child (a *node[P]), or a table
	val  atomic.Pointer[P]
	name string // the level; a substring of the first filter that created the node
}

// kidsOf returns n's only child, or the table of its children (both nil if
// it has none).
//
// The first word of a table is its n, between 1 and maxTableN; the first
// word of a node is its kids pointer, nil or a heap address, never that
// small. So one atomic load of that word tells which kids points at.
//
// Pointing a *table at a node is safe: the collector scans an object by its
// own type, whatever the pointer's type, and table is a single word, so no
// conversion claims more memory than the object has (checkptr agrees).
func (n *node[P]) kidsOf() (only *node[P], t *table[P]) {
	t = n.kids.Load()
	if t == nil {
		return nil, nil
	}
	if w := atomic.LoadUintptr((*uintptr)(unsafe.Pointer(t))); w-1 < maxTableN {
		return nil, t
	}
	return (*node[P])(unsafe.Pointer(t)), nil
}

// setOnly makes c n's only child. Writer only.
func (n *node[P]) setOnly(c *node[P]) { n.kids.Store((*table[P])(unsafe.Pointer(c))) }

// empty reports whether n holds nothing and can be unlinked. Writer only.
func (n *node[P]) empty() bool {
	return n.val.Load() == nil && n.kids.Load() == nil
}

// isWild reports whether a child name is a wildcard level.
func isWild(name string) bool { return len(name) == 1 && (name[0] == '+' || name[0] == '#') }

// smallTable is the largest table scanned linearly instead of hashed: for
// the many nodes with a handful of children a short scan of pointers beats
// hashing the key.
const smallTable = 9

// table is a node's set of children: atomic pointers that readers probe
// without a lock. It is one of two shapes, told apart by n, which never
// changes once the table is published:
//
//	small (n = 2…9 slots, one object)          hashed (n = hashedN, a hashTable)
//	┌───┬────┬────┬────┐                       ┌───┬──────┬──────┬──────┬──────┬──────────┐
//	│ n │ *a │nil │ *+ │  scan every slot      │64 │ *"+" │ *"#" │ tags │slots │live, dead│
//	└───┴────┴────┴────┘  ('+', '#' included)  └───┴──────┴──────┴──────┴──────┴──────────┘
//	 8 B + 8 B per slot                               │
//	                                     tags  ┌────┬────┬────┬────┬────┬─ ─
//	                                           │ 0  │ t1 │ 1  │ t2 │ 0  │ …   0 empty, 1 deleted,
//	                                           ├────┼────┼────┼────┼────┼─ ─  else hash tag
//	                                     slots │nil │ *x │nil │ *y │nil │ …
//	                                           └────┴────┴────┴────┴────┴─ ─
//	                                           start at hash(name)&mask, probe
//	                                           linearly until tag 0
//
// A node with a single child needs no table: its kids points at the child
// (see node.kidsOf), and a small table left with one child is dropped for
// it. A small table keeps its slots in the same allocation as its header, so
// a lookup touches one object; its capacities (2, 3, 5, 7, 9) fill the
// allocator's size classes (24, 32, 48, 64, 80 bytes) exactly. A hashed table keeps its wildcard children in their own fields,
// so that matching a level stays one probe plus two pointer loads.
//
// In a hashed table a probe compares one-byte tags (high hash bits, 64 to
// a cache line) and dereferences a child only when its tag matches, so a
// collision costs no cache miss on the colliding node. A writer inserts by
// storing the pointer and then the tag into an empty slot (or a deleted one
// once the probe has proven the name absent), and deletes by storing tag 1:
// a concurrent reader sees the child or not, never a broken chain. Entries
// never move inside a table. When a table must grow or shrink the writer
// builds a new one and publishes it with one atomic store on the node; the
// old table is never written again, so readers still holding it see a
// consistent (slightly old) set. Inserts keep live+dead ≤ ¾ of the slots,
// so every probe reaches a nil slot.
type table[P any] struct {
	n uintptr // small: the number of slots that follow; hashed: hashedN
}

const (
	hashedN   = 64   // table.n of a hashed table
	maxTableN = 4095 // table.n is below the lowest address Go ever gives a heap object
)

// hashTable is the hashed shape of a table; hdr.n is hashedN.
type hashTable[P any] struct {
	hdr   table[P]
	plus  atomic.Pointer[node[P]] // the "+" child
	hash  atomic.Pointer[node[P]] // the "#" child
	tags  []atomic.Uint32         // one byte per slot, four to a word (see tag)
	slots []atomic.Pointer[node[P]]
	live  int // literal children; writer only
	dead  int // writer only
}

// small returns the slots of a small table, nil for a hashed one.
func (t *table[P]) small() []atomic.Pointer[node[P]] {
	if t.n == hashedN {
		return nil
	}
	return unsafe.Slice((*atomic.Pointer[node[P]])(unsafe.Add(unsafe.Pointer(t), unsafe.Sizeof(*t))), t.n)
}

// hashed returns the hashed shape of t; t.n must be hashedN.
func (t *table[P]) hashed() *hashTable[P] { return (*hashTable[P])(unsafe.Pointer(t)) }

const (
	tagEmpty   = 0
	tagDeleted = 1
)

// tagOf derives a slot tag from the high hash bits (the index uses the low
// ones), never tagEmpty or tagDeleted.
func tagOf(h uint64) uint8 {
	if t := uint8(h >> 56); t > tagDeleted {
		return t
	}
	return uint8(h>>48) | 2
}

// tag returns slot i's tag. Tags are bytes packed into 32-bit words because
// sync/atomic has no byte operations: a table pays 9 bytes per slot, not 12.
func (ht *hashTable[P]) tag(i uint64) uint8 { return uint8(ht.tags[i/4].Load() >> (i % 4 * 8)) }

// setTag stores slot i's tag. Writer only: the read-modify-write of the
// word is safe because writers are serialized, and a reader loads the word
// whole, so it sees each neighbour's tag either before or after.
func (ht *hashTable[P]) setTag(i uint64, tg uint8) {
	w, shift := &ht.tags[i/4], i%4*8
	w.Store(w.Load()&^(0xff<<shift) | uint32(tg)<<shift)
}

var seed = maphash.MakeSeed()

// hashString and hashBytes give equal results for equal contents.
func hashString(s string) uint64 { return maphash.String(seed, s) }
func hashBytes(b []byte) uint64  { return maphash.Bytes(seed, b) }

// probe finds the literal child named key in a hashed table, h being its
// hash.
func (ht *hashTable[P]) probe(key string, h uint64) *node[P] {
	s, want := ht.slots, tagOf(h)
	mask := uint64(len(s) - 1)
	for i := h & mask; ; i = (i + 1) & mask {
		switch ht.tag(i) {
		case tagEmpty:
			return nil
		case want:
			if n := s[i].Load(); n != nil && n.name == key {
				return n
			}
		}
	}
}

// lookup returns, for one topic level key, the literal child named key (if
// lit) and the '+' and '#' children. h is hashBytes(key) if the caller has
// it, or 0 to compute it on demand. A topic level "+" or "#" (invalid)
// matches no literal child.
func (t *table[P]) lookup(key []byte, h uint64, lit bool) (c, plus, hash *node[P]) {
	if s := t.small(); s != nil {
		for i := range s {
			n := s[i].Load()
			if n == nil {
				continue
			}
			switch name := n.name; {
			case isWild(name):
				if name[0] == '+' {
					plus = n
				} else {
					hash = n
				}
			case lit && name == string(key):
				c = n
			}
		}
		return c, plus, hash
	}
	ht := t.hashed()
	if lit && !isWild(string(key)) {
		if h == 0 {
			h = hashBytes(key)
		}
		c = ht.probe(string(key), h)
	}
	return c, ht.plus.Load(), ht.hash.Load()
}

// classify is lookup for a node's only child c.
func classify[P any](c *node[P], key []byte, lit bool) (lc, plus, hash *node[P]) {
	switch name := c.name; {
	case isWild(name):
		if name[0] == '+' {
			return nil, c, nil
		}
		return nil, nil, c
	case lit && name == string(key):
		return c, nil, nil
	}
	return nil, nil, nil
}

// lookup is table.lookup for n's children; ok is false if n has none.
func (n *node[P]) lookup(key []byte, h uint64, lit bool) (c, plus, hash *node[P], ok bool) {
	only, t := n.kidsOf()
	if only != nil {
		c, plus, hash = classify(only, key, lit)
		return c, plus, hash, true
	}
	if t == nil {
		return nil, nil, nil, false
	}
	c, plus, hash = t.lookup(key, h, lit)
	return c, plus, hash, true
}

// eachChild calls fn for every child of n until fn returns false; it
// reports whether it ran to the end.
func (n *node[P]) eachChild(fn func(*node[P]) bool) bool {
	only, t := n.kidsOf()
	if only != nil {
		return fn(only)
	}
	if t == nil {
		return true
	}
	return t.each(fn)
}

// get finds the child named key ("+" and "#" name the wildcard children).
func (t *table[P]) get(key string) *node[P] {
	if s := t.small(); s != nil {
		for i := range s {
			if n := s[i].Load(); n != nil && n.name == key {
				return n
			}
		}
		return nil
	}
	ht := t.hashed()
	switch key {
	case "+":
		return ht.plus.Load()
	case "#":
		return ht.hash.Load()
	}
	return ht.probe(key, hashString(key))
}

// each calls fn for every child until fn returns false; it reports whether
// it ran to the end.
func (t *table[P]) each(fn func(*node[P]) bool) bool {
	s := t.small()
	if s == nil {
		ht := t.hashed()
		if n := ht.plus.Load(); n != nil && !fn(n) {
			return false
		}
		if n := ht.hash.Load(); n != nil && !fn(n) {
			return false
		}
		s = ht.slots
	}
	for i := range s {
		if n := s[i].Load(); n != nil {
			if !fn(n) {
				return false
			}
		}
	}
	return true
}

// count returns the number of children. Writer only.
func (t *table[P]) count() int {
	if s := t.small(); s != nil {
		k := 0
		for i := range s {
			if s[i].Load() != nil {
				k++
			}
		}
		return k
	}
	ht := t.hashed()
	k := ht.live
	if ht.plus.Load() != nil {
		k++
	}
	if ht.hash.Load() != nil {
		k++
	}
	return k
}

// child returns n's child named name ("+" and "#" included), or nil.
func (n *node[P]) child(name string) *node[P] {
	only, t := n.kidsOf()
	if only != nil {
		if only.name == name {
			return only
		}
		return nil
	}
	if t != nil {
		return t.get(name)
	}
	return nil
}

// addChild links c (whose name must not be present) under n. Writer only.
func (n *node[P]) addChild(c *node[P]) {
	only, t := n.kidsOf()
	if only == nil && t == nil {
		n.setOnly(c)
		return
	}
	if only != nil {
		t = newSmall[P](2)
		s := t.small()
		s[0].Store(only)
		s[1].Store(c)
		n.kids.Store(t)
		return
	}
	if s := t.small(); s != nil {
		for i := range s {
			if s[i].Load() == nil {
				s[i].Store(c)
				return
			}
		}
		n.kids.Store(rebuild(t, len(s)+1, c))
		return
	}
	ht := t.hashed()
	switch c.name {
	case "+":
		ht.plus.Store(c)
		return
	case "#":
		ht.hash.Store(c)
		return
	}
	if (ht.live+ht.dead+1)*4 > len(ht.slots)*3 {
		n.kids.Store(rebuild(t, t.count()+1, c))
		return
	}
	h := hashString(c.name)
	mask := uint64(len(ht.slots) - 1)
	i := h & mask
	free := -1
	for ; ; i = (i + 1) & mask {
		tg := ht.tag(i)
		if tg == tagEmpty {
			break
		}
		if tg == tagDeleted && free < 0 {
			free = int(i)
		}
	}
	if free >= 0 {
		i = uint64(free)
		ht.dead--
	}
	// Pointer first: a reader that sees the tag must find the node.
	ht.slots[i].Store(c)
	ht.setTag(i, tagOf(h))
	ht.live++
}

// removeChild unlinks c from n. Writer only.
func (n *node[P]) removeChild(c *node[P]) {
	only, t := n.kidsOf()
	if only != nil {
		if only == c {
			n.kids.Store(nil)
		}
		return
	}
	if t == nil {
		return
	}
	if s := t.small(); s != nil {
		var last *node[P]
		left := 0
		for i := range s {
			switch x := s[i].Load(); x {
			case c:
				s[i].Store(nil)
			case nil:
			default:
				last = x
				left++
			}
		}
		switch left {
		case 0:
			n.kids.Store(nil)
		case 1:
			// Back to no table at all. A reader still holding the table finds
			// the same child there.
			n.setOnly(last)
		}
		return
	}
	ht := t.hashed()
	switch c {
	case ht.plus.Load():
		ht.plus.Store(nil)
	case ht.hash.Load():
		ht.hash.Store(nil)
	default:
		mask := uint64(len(ht.slots) - 1)
		for i := hashString(c.name) & mask; ; i = (i + 1) & mask {
			tg := ht.tag(i)
			if tg == tagEmpty {
				return // not present
			}
			if tg != tagDeleted && ht.slots[i].Load() == c {
				ht.setTag(i, tagDeleted)
				ht.slots[i].Store(nil)
				ht.live--
				ht.dead++
				break
			}
		}
	}
	if ht.live*8 < len(ht.slots) {
		switch k := t.count(); k {
		case 0:
			n.kids.Store(nil)
		case 1:
			var last *node[P]
			t.each(func(x *node[P]) bool { last = x; return false })
			n.setOnly(last)
		default:
			n.kids.Store(rebuild(t, k, nil))
		}
	}
}

// smallCaps are the small-table capacities: 8+8·cap fills a size class
// (24, 32, 48, 64, 80 bytes). One child needs no table.
var smallCaps = [...]int{2, 3, 5, 7, smallTable}

// rebuild returns a fresh table holding t's children plus extra (if not
// nil), sized for k children in all; nil if there are none.
func rebuild[P any](t *table[P], k int, extra *node[P]) *table[P] {
	if k == 0 {
		return nil
	}
	if k <= smallTable {
		size := smallTable
		for _, c := range smallCaps {
			if c >= k {
				size = c
				break
			}
		}
		nt := newSmall[P](size)
		s := nt.small()
		i := 0
		put := func(c *node[P]) bool {
			s[i].Store(c)
			i++
			return true
		}
		t.each(put)
		if extra != nil {
			put(extra)
		}
		return nt
	}
	size := 32
	for size < k*2 {
		size <<= 1
	}
	ht := &hashTable[P]{hdr: table[P]{n: hashedN}, slots: make([]atomic.Pointer[node[P]], size), tags: make([]atomic.Uint32, size/4)}
	mask := uint64(size - 1)
	put := func(c *node[P]) bool {
		switch c.name {
		case "+":
			ht.plus.Store(c)
			return true
		case "#":
			ht.hash.Store(c)
			return true
		}
		h := hashString(c.name)
		i := h & mask
		for ht.tag(i) != tagEmpty {
			i = (i + 1) & mask
		}
		ht.slots[i].Store(c)
		ht.setTag(i, tagOf(h))
		ht.live++
		return true
	}
	t.each(put)
	if extra != nil {
		put(extra)
	}
	return &ht.hdr
}

// smallOf is a small table of N slots in one object. The slots start right
// after the header, where table.small finds them. They are reached only
// through that pointer arithmetic, never by name, so the field is blank: it
// reserves the memory (and its GC pointer bitmap) without a name that looks
// unused.
type smallOf[P any, A any] struct {
	t table[P]
	_ A
}

// newSmall allocates a small table of size (one of smallCaps) slots.
func newSmall[P any](size int) *table[P] {
	type slot = atomic.Pointer[node[P]]
	var t *table[P]
	switch size {
	case 2:
		t = &(&smallOf[P, [2]slot]{}).t
	case 3:
		t = &(&smallOf[P, [3]slot]{}).t
	case 5:
		t = &(&smallOf[P, [5]slot]{}).t
	case 7:
		t = &(&smallOf[P, [7]slot]{}).t
	default:
		t = &(&smallOf[P, [smallTable]slot]{}).t
		size = smallTable
	}
	t.n = uintptr(size)
	return t
}
