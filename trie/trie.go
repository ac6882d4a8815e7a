package trie

import (
	"sync"
	"sync/atomic"
	"unsafe"
)

// Sub is one subscription as stored: who, at what QoS, with which options.
type Sub[S comparable] struct {
	Subscriber S
	// QoS is the granted maximum QoS.
	QoS byte
	// Options is opaque to the trie: the server keeps the 5.0 subscription
	// options byte (No Local, Retain As Published, Retain Handling) here.
	Options byte
	// ID is the 5.0 subscription identifier, 0 for none.
	ID uint32
	// Group is the ShareName of a $share subscription, "" for an ordinary
	// one. The trie sets it; a value passed to Subscribe is ignored.
	Group string
}

// numShards is the number of literal-first-level shards (a power of two).
const numShards = 32

// maxProbes bounds how many unavailable members of a shared group one Match
// skips before it gives up looking for a connected one.
const maxProbes = 1024

type shard[S comparable] struct {
	mu   sync.Mutex
	root node[entry[S]]
	_    [64]byte // keep neighbouring shards' mutexes off one cache line
}

// Trie is the subscription index. It is safe for concurrent use by any
// number of goroutines. Match takes no lock; Subscribe and Unsubscribe take
// the mutex of the one shard that owns the filter's first level.
//
// A Match result reflects each node as it was at some instant during the
// call: a subscription added or removed concurrently may or may not be in
// it, but every Sub returned is one that was stored, whole.
type Trie[S comparable] struct {
	available func(S) bool
	shards    [numShards]shard[S]
	wild      shard[S] // filters whose first level is '+' or '#'
	count     atomic.Int64
}

// New returns an empty trie. available reports whether a shared-subscription
// member can take a message now (is connected); nil means always. It is
// called from Match, concurrently, so it must be cheap and safe for that.
func New[S comparable](available func(S) bool) *Trie[S] {
	return &Trie[S]{available: available}
}

// Len returns the number of stored subscriptions, shared-group members
// included.
func (t *Trie[S]) Len() int { return int(t.count.Load()) }

// shardFor returns the shard owning filter f (not "$share/…").
func (t *Trie[S]) shardFor(f string) *shard[S] {
	first, _, _ := cut(f)
	if first == "+" || first == "#" {
		return &t.wild
	}
	return &t.shards[hashString(first)&(numShards-1)]
}

// Subscribe adds sub under filter, which may be "$share/<group>/<filter>".
// A subscription of the same Subscriber to the same filter (and group) is
// replaced; replaced reports whether there was one. The filter should have
// passed ValidateFilter: anything else is stored literally, except that a
// filter with nothing after the ShareName, or an empty ShareName, is ignored
// (false). The trie keeps substrings of filter as node names.
func (t *Trie[S]) Subscribe(filter string, sub Sub[S]) (replaced bool) {
	gname, f, shared := SplitShared(filter)
	if f == "" || (shared && gname == "") {
		return false
	}
	sh := t.shardFor(f)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	n := descend(&sh.root, f)
	one, cur := nodeVal(n.val.Load())
	if !shared {
		sub.Group = ""
		if cur == nil && (one == nil || one.Subscriber == sub.Subscriber) {
			// The common case: the only subscriber of this filter.
			n.val.Store(loneOf(sub))
			replaced = one != nil
		} else {
			if one != nil {
				cur, _ = cur.with(one.sub())
			}
			var ns *subSet[S]
			ns, replaced = cur.with(sub)
			n.val.Store(&ns.head)
		}
	} else {
		sub.Group = gname
		if one != nil {
			cur, _ = cur.with(one.sub())
		}
		g := cur.group(gname)
		if g == nil {
			g = &group[S]{name: gname}
			ms, _ := (*subSet[S])(nil).with(sub)
			g.members.Store(ms)
			gs := &groupSet[S]{}
			if cur != nil && cur.groups != nil {
				gs.list = append(clone(cur.groups.list), g)
			} else {
				gs.list = []*group[S]{g}
			}
			ns := cur.withGroups(gs)
			n.val.Store(&ns.head)
		} else {
			var ms *subSet[S]
			ms, replaced = g.members.Load().with(sub)
			g.members.Store(ms)
		}
	}
	if !replaced {
		t.count.Add(1)
	}
	return replaced
}

// Unsubscribe removes s's subscription to filter (which may be
// "$share/<group>/<filter>") and reports whether it existed. Nodes left
// empty are unlinked.
func (t *Trie[S]) Unsubscribe(filter string, s S) (existed bool) {
	gname, f, shared := SplitShared(filter)
	if f == "" {
		return false
	}
	sh := t.shardFor(f)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	var stack [16]*node[entry[S]]
	path := stack[:0]
	n := &sh.root
	path = append(path, n)
	for rest, more := f, true; more; {
		var lvl string
		lvl, rest, more = cut(rest)
		if n = n.step(lvl); n == nil {
			return false
		}
		path = append(path, n)
	}
	one, cur := nodeVal(n.val.Load())
	var ns *subSet[S]
	switch {
	case one != nil:
		if shared || one.Subscriber != s {
			return false
		}
		n.val.Store(nil)
	case cur == nil:
		return false
	case !shared:
		if ns, existed = cur.without(s); !existed {
			return false
		}
	default:
		g := cur.group(gname)
		if g == nil {
			return false
		}
		ms, ok := g.members.Load().without(s)
		if !ok {
			return false
		}
		existed = true
		if ms.hasSubs() {
			g.members.Store(ms)
			ns = cur
		} else {
			// Last member gone: drop the group.
			var gs *groupSet[S]
			if len(cur.groups.list) > 1 {
				gs = &groupSet[S]{list: make([]*group[S], 0, len(cur.groups.list)-1)}
				for _, o := range cur.groups.list {
					if o != g {
						gs.list = append(gs.list, o)
					}
				}
			}
			g.members.Store(nil)
			ns = cur.withGroups(gs)
		}
	}
	t.count.Add(-1)
	if cur != nil && ns != cur {
		n.val.Store(setVal(ns))
	}
	prune(path)
	return true
}

// step follows one filter level from n without creating anything.
func (n *node[P]) step(lvl string) *node[P] { return n.child(lvl) }

// descend returns the node for filter f under root, creating missing
// levels. Writer only.
func descend[P any](root *node[P], f string) *node[P] {
	n := root
	for rest, more := f, true; more; {
		var lvl string
		lvl, rest, more = cut(rest)
		c := n.child(lvl)
		if c == nil {
			c = &node[P]{name: lvl}
			n.addChild(c)
		}
		n = c
	}
	return n
}

// prune unlinks empty nodes from the end of path (root first) upwards.
// Writer only.
func prune[P any](path []*node[P]) {
	for i := len(path) - 1; i > 0; i-- {
		c, parent := path[i], path[i-1]
		if !c.empty() {
			return
		}
		parent.removeChild(c)
	}
}

// Match appends to dst every subscription whose filter matches topic: every
// ordinary one, and for each matching shared group exactly one member,
// chosen round-robin among available members (among all members if none is
// available, so that a persistent offline member queues the message).
// Topics starting with '$' are not matched by filters starting with '+' or
// '#' [MQTT-4.7.2-1]. A subscriber appears once per matching filter; the
// caller dedupes. The topic should have passed ValidateTopic.
//
// Match takes no lock and does not allocate when dst has room. The returned
// Subs are copies; topic is not retained.
func (t *Trie[S]) Match(topic []byte, dst []Sub[S]) []Sub[S] {
	if len(topic) == 0 {
		return dst
	}
	first, rest, more := cutBytes(topic)
	h := hashBytes(first)
	if c, _, _, _ := t.shards[h&(numShards-1)].root.lookup(first, h, true); c != nil {
		dst = t.walk(c, rest, more, dst)
	}
	if topic[0] != '$' {
		_, plus, hash, _ := t.wild.root.lookup(nil, 0, false)
		if hash != nil {
			dst = t.collect(hash, dst)
		}
		if plus != nil {
			dst = t.walk(plus, rest, more, dst)
		}
	}
	return dst
}

// walk collects the matches at and below n, which matched the levels of
// the topic before rest. more says whether rest holds another level (it may
// be an empty one).
func (t *Trie[S]) walk(n *node[entry[S]], rest []byte, more bool, dst []Sub[S]) []Sub[S] {
	var lvl []byte
	last := !more
	if more {
		lvl, rest, more = cutBytes(rest)
	}
	c, plus, hash, ok := n.lookup(lvl, 0, !last)
	if !ok {
		if last {
			return t.collect(n, dst)
		}
		return dst
	}
	// "#" also matches the parent level: "sport/#" matches "sport".
	if hash != nil {
		dst = t.collect(hash, dst)
	}
	if last {
		return t.collect(n, dst)
	}
	if c != nil {
		dst = t.walk(c, rest, more, dst)
	}
	if plus != nil {
		dst = t.walk(plus, rest, more, dst)
	}
	return dst
}

// collect appends n's subscriptions and one member per shared group.
func (t *Trie[S]) collect(n *node[entry[S]], dst []Sub[S]) []Sub[S] {
	one, l := nodeVal(n.val.Load())
	if one != nil {
		return append(dst, one.sub())
	}
	if l == nil {
		return dst
	}
	dst = l.appendTo(dst)
	if l.groups != nil {
		for _, g := range l.groups.list {
			if s := t.pick(g); s != nil {
				dst = append(dst, *s)
			}
		}
	}
	return dst
}

// pick chooses the next member of g round-robin, skipping unavailable
// members (up to maxProbes of them).
func (t *Trie[S]) pick(g *group[S]) *Sub[S] {
	m := g.members.Load()
	n := uint32(m.len())
	if n == 0 {
		return nil
	}
	start := g.next.Add(1) - 1
	if t.available == nil {
		return m.at(int(start % n))
	}
	probes := min(n, maxProbes)
	for i := uint32(0); i < probes; i++ {
		s := m.at(int((start + i) % n))
		if t.available(s.Subscriber) {
			if i > 0 {
				// Move the cursor past the skipped members so the one after a
				// gap is not favoured.
				g.next.Add(i)
			}
			return s
		}
	}
	return m.at(int(start % n))
}

// entry is a node's value in the subscription trie: one of two things,
// told apart by set:
//
//	set == false  a lone ordinary subscription: the whole value, 16 bytes
//	              for a pointer-sized S (the common fleet case, one device
//	              per filter), where a Sub would take 32 (its Group string
//	              is always "" here)
//	set == true   the head field of a subSet: several subscriptions, or
//	              shared groups
//
// Both are immutable once stored, so a reader needs one atomic load.
type entry[S comparable] struct {
	Subscriber S
	QoS        byte
	Options    byte
	set        bool // the head of a subSet, not a subscription
	ID         uint32
}

// loneOf returns a new lone entry holding the ordinary subscription s.
func loneOf[S comparable](s Sub[S]) *entry[S] {
	return &entry[S]{Subscriber: s.Subscriber, QoS: s.QoS, Options: s.Options, ID: s.ID}
}

// sub returns the lone subscription e as a Sub (Group "").
func (e *entry[S]) sub() Sub[S] {
	return Sub[S]{Subscriber: e.Subscriber, QoS: e.QoS, Options: e.Options, ID: e.ID}
}

// nodeVal returns what a node value is: a lone subscription or a subSet.
func nodeVal[S comparable](p *entry[S]) (one *entry[S], set *subSet[S]) {
	if p == nil {
		return nil, nil
	}
	if !p.set {
		return p, nil
	}
	// p is the first field of a subSet, so this is the subSet's address.
	return nil, (*subSet[S])(unsafe.Pointer(p))
}

// setVal returns the node value for l (nil if l is): a lone subscription
// when l holds exactly one ordinary subscription and no groups.
func setVal[S comparable](l *subSet[S]) *entry[S] {
	switch {
	case l == nil:
		return nil
	case l.groups == nil && l.len() == 1:
		return loneOf(*l.at(0))
	}
	return &l.head
}
