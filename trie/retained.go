package trie

import (
	"sync"
	"sync/atomic"
)

// rentry is one retained value with the topic it was set under, so that
// Match can report the topic without rebuilding it from the path.
type rentry[V any] struct {
	topic string
	v     V
}

// Retained is the retained-message index: at most one value per topic name,
// in a trie of the same lock-free nodes as the subscription index (literal
// levels only). It is safe for concurrent use: Get and Match take no lock;
// Set and Delete serialize on one mutex.
type Retained[V any] struct {
	mu    sync.Mutex
	root  node[rentry[V]]
	count atomic.Int64
}

// NewRetained returns an empty index.
func NewRetained[V any]() *Retained[V] { return &Retained[V]{} }

// Len returns the number of retained topics.
func (r *Retained[V]) Len() int { return int(r.count.Load()) }

// Set stores v for topic, replacing any previous value. The topic should
// have passed ValidateTopic; an empty one is ignored.
func (r *Retained[V]) Set(topic string, v V) {
	if topic == "" {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	n := &r.root
	for rest, more := topic, true; more; {
		var lvl string
		lvl, rest, more = cut(rest)
		c := n.child(lvl)
		if c == nil {
			c = &node[rentry[V]]{name: lvl}
			n.addChild(c)
		}
		n = c
	}
	if n.val.Swap(&rentry[V]{topic: topic, v: v}) == nil {
		r.count.Add(1)
	}
}

// Delete removes topic's value and reports whether there was one.
func (r *Retained[V]) Delete(topic string) bool {
	if topic == "" {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	var stack [16]*node[rentry[V]]
	path := append(stack[:0], &r.root)
	n := &r.root
	for rest, more := topic, true; more; {
		var lvl string
		lvl, rest, more = cut(rest)
		if n = n.child(lvl); n == nil {
			return false
		}
		path = append(path, n)
	}
	if n.val.Swap(nil) == nil {
		return false
	}
	r.count.Add(-1)
	prune(path)
	return true
}

// Get returns topic's value.
func (r *Retained[V]) Get(topic string) (V, bool) {
	n := &r.root
	for rest, more := topic, true; more && n != nil; {
		var lvl string
		lvl, rest, more = cut(rest)
		n = n.child(lvl)
	}
	if n != nil && n != &r.root {
		if e := n.val.Load(); e != nil {
			return e.v, true
		}
	}
	var zero V
	return zero, false
}

// Match calls fn for every retained topic that filter matches, with '+',
// '#' (including "sport/#" matching "sport" [MQTT-4.7.1-2]) and the
// '$' rule [MQTT-4.7.2-1] as for subscriptions, until fn returns false. It
// visits only the subtrees the filter can match and holds no lock while fn
// runs (fn may call Set or Delete). Values set or deleted concurrently may or
// may not be seen. filter should have passed ValidateFilter and must not be
// a "$share/" filter (call SplitShared first).
func (r *Retained[V]) Match(filter string, fn func(topic string, v V) bool) {
	if filter == "" {
		return
	}
	rmatch(&r.root, filter, true, fn)
}

// rmatch matches the filter levels in rest against n's subtree; root says
// n is the root, where wildcards skip '$' topics.
func rmatch[V any](n *node[rentry[V]], rest string, root bool, fn func(string, V) bool) bool {
	lvl, rest, more := cut(rest)
	switch lvl {
	case "#":
		if !root && !visit(n, fn) {
			return false
		}
		return n.eachChild(func(c *node[rentry[V]]) bool {
			if root && c.name != "" && c.name[0] == '$' {
				return true
			}
			return visitAll(c, fn)
		})
	case "+":
		return n.eachChild(func(c *node[rentry[V]]) bool {
			if root && c.name != "" && c.name[0] == '$' {
				return true
			}
			return rnext(c, rest, more, fn)
		})
	default:
		if c := n.child(lvl); c != nil {
			return rnext(c, rest, more, fn)
		}
		return true
	}
}

// rnext continues rmatch at c, which matched one filter level.
func rnext[V any](c *node[rentry[V]], rest string, more bool, fn func(string, V) bool) bool {
	if !more {
		return visit(c, fn)
	}
	return rmatch(c, rest, false, fn)
}

// visit reports n's own value to fn, if it has one.
func visit[V any](n *node[rentry[V]], fn func(string, V) bool) bool {
	if e := n.val.Load(); e != nil {
		return fn(e.topic, e.v)
	}
	return true
}

// Each calls fn with every retained topic, '$' topics included, until fn
// returns false; like Match it holds no lock while fn runs.
func (r *Retained[V]) Each(fn func(topic string, v V) bool) {
	r.root.eachChild(func(c *node[rentry[V]]) bool { return visitAll(c, fn) })
}

// visitAll reports n's value and its whole subtree.
func visitAll[V any](n *node[rentry[V]], fn func(string, V) bool) bool {
	if !visit(n, fn) {
		return false
	}
	return n.eachChild(func(c *node[rentry[V]]) bool { return visitAll(c, fn) })
}
