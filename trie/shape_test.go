package trie

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"unsafe"
)

// The memory figures in the package doc rest on these sizes (64-bit).
func TestSizes(t *testing.T) {
	if unsafe.Sizeof(uintptr(0)) != 8 {
		t.Skip("sizes are documented for 64-bit platforms")
	}
	for _, c := range []struct {
		what      string
		got, want uintptr
	}{
		{"node", unsafe.Sizeof(node[entry[*benchSub]]{}), 32},
		{"lone entry (pointer subscriber)", unsafe.Sizeof(entry[*benchSub]{}), 16},
		{"subSet head (pointer subscriber)", unsafe.Sizeof(subSet[*benchSub]{}), 80},
		{"small table of 2", unsafe.Sizeof(smallOf[int, [2]atomic.Pointer[node[int]]]{}), 24},
		{"small table of 9", unsafe.Sizeof(smallOf[int, [smallTable]atomic.Pointer[node[int]]]{}), 80},
	} {
		if c.got != c.want {
			t.Errorf("%s: %d bytes, documented %d", c.what, c.got, c.want)
		}
	}
	if unsafe.Offsetof(node[int]{}.kids) != 0 {
		t.Error("node.kids must be the first field (see node.kidsOf)")
	}
}

// nodeAt returns the node for filter f (not shared), or nil.
func nodeAt(tr *Trie[int], f string) *node[entry[int]] {
	n := &tr.shardFor(f).root
	for rest, more := f, true; more && n != nil; {
		var lvl string
		lvl, rest, more = cut(rest)
		n = n.step(lvl)
	}
	return n
}

// shape names the form of a node's value: "none", "lone" or "set".
func shape(n *node[entry[int]]) string {
	one, set := nodeVal(n.val.Load())
	switch {
	case one != nil:
		return "lone"
	case set != nil:
		return "set"
	}
	return "none"
}

// TestTrieLoneSubscriber walks one filter's value through its forms: a lone
// entry for one ordinary subscriber, the chunked subSet from the second one or
// from the first shared group, and back to a lone entry when only one ordinary
// subscriber is left. Match must agree with a model at every step.
func TestTrieLoneSubscriber(t *testing.T) {
	tr := New[int](nil)
	const f = "devices/42/cmd"
	topic := []byte(f)
	step := func(what, wantShape string, want ...int) {
		t.Helper()
		n := nodeAt(tr, f)
		got := "unlinked"
		if n != nil {
			got = shape(n)
		}
		if got != wantShape {
			t.Fatalf("%s: value is %s, want %s", what, got, wantShape)
		}
		if got := subscribers(tr.Match(topic, nil)); !slices.Equal(got, want) {
			t.Fatalf("%s: Match %v, want %v", what, got, want)
		}
	}
	step("empty", "unlinked")
	if tr.Subscribe(f, Sub[int]{Subscriber: 1, QoS: 1, Group: "ignored"}) {
		t.Fatal("first subscribe reported a replacement")
	}
	step("one subscriber", "lone", 1)
	if g := tr.Match(topic, nil)[0]; g.QoS != 1 || g.Group != "" {
		t.Fatalf("lone entry stored as %+v", g)
	}
	if !tr.Subscribe(f, Sub[int]{Subscriber: 1, QoS: 2}) {
		t.Fatal("resubscribe of the lone subscriber not reported as a replacement")
	}
	step("lone replaced", "lone", 1)
	if q := tr.Match(topic, nil)[0].QoS; q != 2 {
		t.Fatalf("replacement not stored: QoS %d", q)
	}
	tr.Subscribe(f, Sub[int]{Subscriber: 2})
	step("second subscriber", "set", 1, 2)
	if tr.Unsubscribe(f, 3) {
		t.Fatal("Unsubscribe of a stranger succeeded")
	}
	tr.Unsubscribe(f, 1)
	step("back to one", "lone", 2)
	if tr.Unsubscribe(f, 1) || tr.Unsubscribe("$share/g/"+f, 2) {
		t.Fatal("Unsubscribe of something absent succeeded")
	}
	// A shared group needs the subSet even next to a single subscriber.
	tr.Subscribe("$share/g/"+f, Sub[int]{Subscriber: 7})
	step("lone plus a group", "set", 2, 7)
	tr.Unsubscribe("$share/g/"+f, 7)
	step("group gone", "lone", 2)
	tr.Subscribe("$share/g/"+f, Sub[int]{Subscriber: 7})
	tr.Unsubscribe(f, 2)
	step("group only", "set", 7)
	tr.Subscribe(f, Sub[int]{Subscriber: 2})
	step("group and one", "set", 2, 7)
	tr.Unsubscribe("$share/g/"+f, 7)
	step("group gone again", "lone", 2)
	// Through a full chunk and back.
	for s := 10; s < 10+2*chunkSize; s++ {
		tr.Subscribe(f, Sub[int]{Subscriber: s})
	}
	for s := 10; s < 10+2*chunkSize; s++ {
		tr.Unsubscribe(f, s)
	}
	step("after a crowd", "lone", 2)
	if tr.Len() != 1 {
		t.Fatalf("Len %d, want 1", tr.Len())
	}
	tr.Unsubscribe(f, 2)
	step("all gone", "unlinked")
	assertPruned(t, tr)
}

// kidShape names the form of a node's children: "none", "only", "small"
// or "hashed".
func kidShape[P any](n *node[P]) string {
	only, t := n.kidsOf()
	switch {
	case only != nil:
		return "only"
	case t == nil:
		return "none"
	case t.small() != nil:
		return "small"
	}
	return "hashed"
}

// TestNodeChildShapes grows one node's children, wildcards among them,
// from none through a lone child, small tables of every capacity and a
// hashed table, then shrinks it back, checking lookups at every size.
func TestNodeChildShapes(t *testing.T) {
	var root node[int]
	names := []string{"+", "a", "#"}
	for i := range 40 {
		names = append(names, strconv.Itoa(i))
	}
	kids := map[string]*node[int]{}
	check := func(when string) {
		t.Helper()
		want := "hashed"
		switch {
		case len(kids) == 0:
			want = "none"
		case len(kids) == 1:
			want = "only"
		case len(kids) <= smallTable:
			want = "small"
		}
		got := kidShape(&root)
		// Shrinking keeps a hashed table until it is ⅛ full.
		if got != want && !(got == "hashed" && want == "small") {
			t.Fatalf("%s with %d children: shape %s, want %s", when, len(kids), got, want)
		}
		n := 0
		root.eachChild(func(c *node[int]) bool {
			if kids[c.name] != c {
				t.Fatalf("%s: each visited stray child %q", when, c.name)
			}
			n++
			return true
		})
		if n != len(kids) {
			t.Fatalf("%s: each visited %d of %d", when, n, len(kids))
		}
		for _, name := range names {
			if got := root.child(name); got != kids[name] {
				t.Fatalf("%s: child(%q) = %p, want %p", when, name, got, kids[name])
			}
			c, plus, hash, ok := root.lookup([]byte(name), 0, true)
			if ok != (len(kids) > 0) || plus != kids["+"] || hash != kids["#"] {
				t.Fatalf("%s: lookup(%q) wildcards %p %p ok=%v", when, name, plus, hash, ok)
			}
			// A topic level "+" or "#" is no literal: it never finds the
			// wildcard child as one.
			if want := kids[name]; isWild(name) && c != nil || !isWild(name) && c != want {
				t.Fatalf("%s: lookup(%q) literal %p, want %p", when, name, c, want)
			}
		}
	}
	check("empty")
	for _, name := range names {
		c := &node[int]{name: name}
		root.addChild(c)
		kids[name] = c
		check("adding " + name)
	}
	rng := rand.New(rand.NewPCG(7, 7))
	order := slices.Clone(names)
	rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
	for _, name := range order {
		root.removeChild(kids[name])
		delete(kids, name)
		check("removing " + name)
	}
	if !root.empty() {
		t.Fatal("root not empty after removing every child")
	}
}

// TestTrieWildcardTopicLevel: an (invalid) topic level "+" or "#" is not a
// literal, whatever the shape of the table holding the wildcard children.
func TestTrieWildcardTopicLevel(t *testing.T) {
	for _, extra := range []int{0, 1, 30} {
		tr := New[int](nil)
		tr.Subscribe("a/+", Sub[int]{Subscriber: 1})
		tr.Subscribe("a/#", Sub[int]{Subscriber: 2})
		for i := range extra {
			tr.Subscribe("a/"+strconv.Itoa(i), Sub[int]{Subscriber: 100 + i})
		}
		for _, topic := range []string{"a/+", "a/#"} {
			if got := subscribers(tr.Match([]byte(topic), nil)); !slices.Equal(got, []int{1, 2}) {
				t.Fatalf("%d extra children, topic %q: %v, want [1 2]", extra, topic, got)
			}
		}
	}
}

// TestTrieConcurrentShapes matches while writers push nodes back and forth
// between every form (lone child ↔ table ↔ hashed table, lone entry ↔ subSet).
// The stable subscriptions must be in every result exactly once.
func TestTrieConcurrentShapes(t *testing.T) {
	tr := New[int](nil)
	tr.Subscribe("s/x/t", Sub[int]{Subscriber: 1})
	tr.Subscribe("s/+/t", Sub[int]{Subscriber: 2})
	tr.Subscribe("s/#", Sub[int]{Subscriber: 3})
	var stop atomic.Bool
	var writers sync.WaitGroup
	for w := range 2 {
		writers.Add(1)
		go func() {
			defer writers.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 3))
			for !stop.Load() {
				var f string
				switch rng.IntN(4) {
				case 0:
					f = "s/x/t" // lone entry ↔ subSet at the stable node
				case 1:
					f = "s/x/" + strconv.Itoa(rng.IntN(3)) // siblings of "t"
				case 2:
					f = "s/" + strconv.Itoa(rng.IntN(24)) + "/t" // siblings of "x" and "+": small ↔ hashed
				default:
					f = "$share/g/s/x/t"
				}
				s := 10 + w*1000 + rng.IntN(3)
				if rng.IntN(2) == 0 {
					tr.Subscribe(f, Sub[int]{Subscriber: s})
				} else {
					tr.Unsubscribe(f, s)
				}
			}
		}()
	}
	buf := make([]Sub[int], 0, 64)
	for i := range 100000 {
		got := tr.Match([]byte("s/x/t"), buf[:0])
		var seen [4]int
		for _, s := range got {
			if s.Subscriber < 4 {
				seen[s.Subscriber]++
			}
		}
		if seen[1] != 1 || seen[2] != 1 || seen[3] != 1 {
			stop.Store(true)
			writers.Wait()
			t.Fatalf("match %d: stable subscribers seen %v, want once each", i, seen[1:])
		}
	}
	stop.Store(true)
	writers.Wait()
}

// TestRetainedShapes drives the retained index through the same child forms.
func TestRetainedShapes(t *testing.T) {
	r := NewRetained[int]()
	for i := range 30 {
		r.Set(fmt.Sprintf("t/%d/v", i), i)
		if got := retainedCount(r, "t/+/v"); got != i+1 {
			t.Fatalf("after %d sets: %d matched", i+1, got)
		}
	}
	for i := range 30 {
		if !r.Delete(fmt.Sprintf("t/%d/v", i)) {
			t.Fatalf("Delete %d found nothing", i)
		}
		if got := retainedCount(r, "t/#"); got != 29-i {
			t.Fatalf("after %d deletes: %d matched", i+1, got)
		}
		if v, ok := r.Get(fmt.Sprintf("t/%d/v", 29)); i < 29 && (!ok || v != 29) {
			t.Fatalf("Get lost the last topic after %d deletes", i+1)
		}
	}
	if !r.root.empty() {
		t.Fatal("retained root not empty after deleting everything")
	}
}

func retainedCount(r *Retained[int], filter string) int {
	n := 0
	r.Match(filter, func(string, int) bool { n++; return true })
	return n
}
