package trie

import "sync/atomic"

// chunkSize is the number of subscriptions in one immutable chunk and
// blockSize the number of chunk pointers in one block. A write to a long
// list copies one chunk (chunkSize×sizeof(Sub) = 2 KiB for a pointer-sized
// subscriber), one block (512 B) and the block array (24 B per 4096
// subscriptions): a few KiB whatever the length, instead of the whole list.
const (
	chunkSize = 64
	blockSize = 64
)

// indexAbove is the list length from which a writer keeps a map from
// subscriber to position instead of scanning.
const indexAbove = 32

// subSet is an immutable snapshot of what one node holds: its ordinary
// subscriptions and its shared groups. A writer never changes a published
// subSet; it builds a new one and stores it in the node.
//
//	blocks ─► [ [*c0 *c1 … *c63] [*c64 …] … ]   chunk c: [chunkSize]Sub, immutable
//	tail   ─► [s s s s · · ·]                  len = visible entries, cap ≤ chunkSize
//	idx    ─► map[S]position                   writer-only, shared by successive snapshots
//	groups ─► *groupSet                        shared subscriptions at this node
//
// Entry i is in chunk i/chunkSize while that chunk is full, else in tail.
// Every block but the last holds blockSize chunks.
//
// Appends write in place into the spare capacity of tail, of the last
// block, or of blocks, and publish a longer slice. That is safe because no
// snapshot has ever exposed those slots, and it stays true because any change
// that rewrites a visible slot copies the slice first, and any change that
// shortens a slice also cuts its capacity (s[:n:n]) so that the next append
// reallocates instead of overwriting a slot older snapshots still read.
//
// The head is 80 bytes (its first 16 are the head entry that marks a node
// value as a subSet, see nodeVal); each subscription adds one Sub (32 bytes
// for a pointer-sized S: a shared group's members carry their Group). A
// node with a single ordinary subscriber holds a lone 16-byte entry instead
// and has no subSet at all.
type subSet[S comparable] struct {
	head   entry[S] // not a subscription: set is true (see nodeVal)
	blocks [][]*[chunkSize]Sub[S]
	tail   []Sub[S]
	idx    map[S]int32
	groups *groupSet[S]
}

// groupSet is an immutable list of the shared groups at one node.
type groupSet[S comparable] struct {
	list []*group[S]
}

// group is one $share group at one filter. Its members change by atomic
// replacement of the member list; next is the round-robin cursor.
type group[S comparable] struct {
	name    string
	members atomic.Pointer[subSet[S]]
	next    atomic.Uint32
}

// newSet returns an empty subSet, its head marked as one (see nodeVal).
func newSet[S comparable]() *subSet[S] {
	return &subSet[S]{head: entry[S]{set: true}}
}

// nfull returns the number of full chunks.
func (l *subSet[S]) nfull() int {
	if len(l.blocks) == 0 {
		return 0
	}
	return (len(l.blocks)-1)*blockSize + len(l.blocks[len(l.blocks)-1])
}

func (l *subSet[S]) len() int {
	if l == nil {
		return 0
	}
	return l.nfull()*chunkSize + len(l.tail)
}

func (l *subSet[S]) chunk(ci int) *[chunkSize]Sub[S] {
	return l.blocks[ci/blockSize][ci%blockSize]
}

func (l *subSet[S]) at(i int) *Sub[S] {
	full := l.nfull()
	if ci := i / chunkSize; ci < full {
		return &l.chunk(ci)[i%chunkSize]
	}
	return &l.tail[i-full*chunkSize]
}

// appendTo appends every subscription to dst.
func (l *subSet[S]) appendTo(dst []Sub[S]) []Sub[S] {
	for _, b := range l.blocks {
		for _, c := range b {
			dst = append(dst, c[:]...)
		}
	}
	return append(dst, l.tail...)
}

// find returns s's position or -1. Writer only.
func (l *subSet[S]) find(s S) int {
	if l == nil {
		return -1
	}
	if l.idx != nil {
		if i, ok := l.idx[s]; ok {
			return int(i)
		}
		return -1
	}
	for i, n := 0, l.len(); i < n; i++ {
		if l.at(i).Subscriber == s {
			return i
		}
	}
	return -1
}

// hasSubs reports whether the list holds any subscription.
func (l *subSet[S]) hasSubs() bool { return l != nil && (len(l.blocks) > 0 || len(l.tail) > 0) }

// clone copies a slice into a new array of exactly its length.
func clone[T any](s []T) []T {
	if len(s) == 0 {
		return nil
	}
	return append(make([]T, 0, len(s)), s...)
}

// setChunk replaces chunk ci, copying its block and the block array.
func (l *subSet[S]) setChunk(ci int, c *[chunkSize]Sub[S]) {
	l.blocks = clone(l.blocks)
	b := clone(l.blocks[ci/blockSize])
	b[ci%blockSize] = c
	l.blocks[ci/blockSize] = b
}

// pushChunk appends a full chunk.
func (l *subSet[S]) pushChunk(c *[chunkSize]Sub[S]) {
	if k := len(l.blocks) - 1; k >= 0 && len(l.blocks[k]) < blockSize {
		l.blocks = clone(l.blocks)
		l.blocks[k] = append(l.blocks[k], c)
		return
	}
	l.blocks = append(l.blocks, []*[chunkSize]Sub[S]{c})
}

// popChunk removes and returns the last full chunk.
func (l *subSet[S]) popChunk() *[chunkSize]Sub[S] {
	l.blocks = clone(l.blocks)
	k := len(l.blocks) - 1
	b := l.blocks[k]
	c := b[len(b)-1]
	if len(b) == 1 {
		l.blocks = l.blocks[:k:k]
	} else {
		l.blocks[k] = b[: len(b)-1 : len(b)-1]
	}
	return c
}

// with returns a snapshot in which sub replaces the entry of the same
// subscriber, or is appended; replaced tells which. l may be nil. Writer only.
func (l *subSet[S]) with(sub Sub[S]) (*subSet[S], bool) {
	nl := newSet[S]()
	if l != nil {
		*nl = *l
	}
	if i := nl.find(sub.Subscriber); i >= 0 {
		if ci, full := i/chunkSize, nl.nfull(); ci < full {
			c := *nl.chunk(ci)
			c[i%chunkSize] = sub
			nl.setChunk(ci, &c)
		} else {
			nl.tail = clone(nl.tail)
			nl.tail[i-full*chunkSize] = sub
		}
		return nl, true
	}
	n := nl.len()
	if len(nl.tail) == chunkSize {
		// Retire the full tail as an immutable chunk. tail always starts at
		// index 0 of its array, so this is that array.
		nl.pushChunk((*[chunkSize]Sub[S])(nl.tail))
		nl.tail = nil
	}
	if len(nl.tail) == cap(nl.tail) {
		c := min(max(2*cap(nl.tail), 1), chunkSize)
		nl.tail = append(make([]Sub[S], 0, c), nl.tail...)
	}
	nl.tail = append(nl.tail, sub)
	if nl.idx != nil {
		nl.idx[sub.Subscriber] = int32(n)
	} else if n+1 > indexAbove {
		nl.idx = make(map[S]int32, n+1)
		for i := 0; i <= n; i++ {
			nl.idx[nl.at(i).Subscriber] = int32(i)
		}
	}
	return nl, false
}

// without returns a snapshot lacking s (nil if nothing is left: no
// subscriptions and no groups) and whether s was there. The last entry moves
// into the hole. Writer only.
func (l *subSet[S]) without(s S) (*subSet[S], bool) {
	i := l.find(s)
	if i < 0 {
		return l, false
	}
	last := l.len() - 1
	if last == 0 {
		if l.groups == nil {
			return nil, true
		}
		nl := newSet[S]()
		nl.groups = l.groups
		return nl, true
	}
	moved := *l.at(last)
	nl := new(subSet[S])
	*nl = *l
	full := nl.nfull()
	if len(nl.tail) == 0 {
		// The last chunk becomes the tail.
		c := nl.popChunk()
		full--
		nl.tail = c[:]
	}
	base := full * chunkSize
	if i >= base {
		// The hole is in the tail: copy it, one shorter.
		t := clone(nl.tail[:len(nl.tail)-1])
		if i != last {
			t[i-base] = moved
		}
		nl.tail = t
	} else {
		nl.tail = nl.tail[: len(nl.tail)-1 : len(nl.tail)-1]
		c := *nl.chunk(i / chunkSize)
		c[i%chunkSize] = moved
		nl.setChunk(i/chunkSize, &c)
	}
	if nl.idx != nil {
		if i != last {
			nl.idx[moved.Subscriber] = int32(i)
		}
		delete(nl.idx, s)
	}
	return nl, true
}

// withGroups returns a copy of l (which may be nil) holding gs instead of
// its groups; nil if that leaves it empty. Writer only.
func (l *subSet[S]) withGroups(gs *groupSet[S]) *subSet[S] {
	nl := newSet[S]()
	nl.groups = gs
	if l != nil {
		nl.blocks, nl.tail, nl.idx = l.blocks, l.tail, l.idx
	}
	if !nl.hasSubs() && gs == nil {
		return nil
	}
	return nl
}

// group returns the group named name, or nil.
func (l *subSet[S]) group(name string) *group[S] {
	if l == nil || l.groups == nil {
		return nil
	}
	for _, g := range l.groups.list {
		if g.name == name {
			return g
		}
	}
	return nil
}
