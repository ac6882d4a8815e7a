package timer

import (
	"math/rand/v2"
	"slices"
	"testing"
)

func TestHeapOrder(t *testing.T) {
	for _, tc := range []struct {
		name string
		push []int64
	}{
		{"empty", nil},
		{"one", []int64{7}},
		{"ascending", []int64{1, 2, 3, 4, 5}},
		{"descending", []int64{5, 4, 3, 2, 1}},
		{"ties", []int64{3, 1, 3, 1, 2, 2}},
		{"negative", []int64{0, -5, 10, -1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var h Heap[int]
			for i, at := range tc.push {
				h.Push(at, i)
			}
			if h.Len() != len(tc.push) {
				t.Fatalf("Len = %d, want %d", h.Len(), len(tc.push))
			}
			want := slices.Clone(tc.push)
			slices.Sort(want)
			for _, w := range want {
				pat, _, ok := h.Peek()
				at, v, ok2 := h.Pop()
				if !ok || !ok2 || at != w || pat != w || tc.push[v] != at {
					t.Fatalf("Pop = (%d, %d, %v), Peek said %d; want deadline %d", at, v, ok2, pat, w)
				}
			}
			if _, _, ok := h.Pop(); ok {
				t.Fatal("Pop on an empty heap reported an entry")
			}
			if _, _, ok := h.Peek(); ok {
				t.Fatal("Peek on an empty heap reported an entry")
			}
		})
	}
}

func TestHeapPopDue(t *testing.T) {
	var h Heap[string]
	h.Push(20, "b")
	h.Push(10, "a")
	h.Push(30, "c")
	for _, tc := range []struct {
		now  int64
		want []string
	}{
		{9, nil},
		{10, []string{"a"}}, // due exactly at its deadline, not after
		{29, []string{"b"}},
		{100, []string{"c"}},
		{200, nil},
	} {
		var got []string
		for {
			v, ok := h.PopDue(tc.now)
			if !ok {
				break
			}
			got = append(got, v)
		}
		if !slices.Equal(got, tc.want) {
			t.Fatalf("PopDue(%d) gave %v, want %v", tc.now, got, tc.want)
		}
	}
}

// tracked is a value that remembers its index, as bench's connections do.
type tracked struct {
	id  int
	idx int
}

func trackedHeap() *Heap[*tracked] {
	return &Heap[*tracked]{Moved: func(v *tracked, i int) { v.idx = i }}
}

// checkIndexes verifies that every value's remembered index is where it is.
func checkIndexes(t *testing.T, h *Heap[*tracked]) {
	t.Helper()
	for i, e := range h.items {
		if e.v.idx != i {
			t.Fatalf("value %d is at %d but thinks it is at %d", e.v.id, i, e.v.idx)
		}
		if p := (i - 1) / 2; i > 0 && h.items[p].at > e.at {
			t.Fatalf("heap order broken at %d", i)
		}
	}
}

func TestHeapRemoveAndFix(t *testing.T) {
	h := trackedHeap()
	vs := make([]*tracked, 8)
	for i := range vs {
		vs[i] = &tracked{id: i, idx: -1}
		h.Push(int64(10*i), vs[i])
	}
	checkIndexes(t, h)
	// Remove from the middle, the end and the root.
	for _, id := range []int{4, 7, 0} {
		at, v := h.Remove(vs[id].idx)
		if v != vs[id] || at != int64(10*id) || v.idx != -1 {
			t.Fatalf("Remove gave (%d, %d) idx %d, want value %d at %d idx -1", at, v.id, v.idx, id, 10*id)
		}
		checkIndexes(t, h)
	}
	// Move the latest to the front and the earliest to the back.
	h.Fix(vs[6].idx, -1)
	checkIndexes(t, h)
	h.Fix(vs[1].idx, 1000)
	checkIndexes(t, h)
	var order []int
	for h.Len() > 0 {
		_, v, _ := h.Pop()
		if v.idx != -1 {
			t.Fatalf("popped value %d still thinks it is at %d", v.id, v.idx)
		}
		order = append(order, v.id)
		checkIndexes(t, h)
	}
	if want := []int{6, 2, 3, 5, 1}; !slices.Equal(order, want) {
		t.Fatalf("order %v, want %v", order, want)
	}
}

// TestHeapRandom runs random pushes, pops, removals and fixes against a
// sorted slice as the reference.
func TestHeapRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for round := 0; round < 50; round++ {
		h := trackedHeap()
		ref := map[*tracked]int64{} // value → deadline
		next := 0
		for op := 0; op < 2000; op++ {
			switch r := rng.IntN(10); {
			case r < 4 || h.Len() == 0:
				v := &tracked{id: next}
				next++
				at := rng.Int64N(100) // small range: many ties
				h.Push(at, v)
				ref[v] = at
			case r < 7:
				at, v, ok := h.Pop()
				if !ok {
					t.Fatal("Pop on a non-empty heap reported none")
				}
				for _, d := range ref {
					if d < at {
						t.Fatalf("Pop gave %d while %d is queued", at, d)
					}
				}
				if ref[v] != at {
					t.Fatalf("Pop gave value %d with %d, it was queued at %d", v.id, at, ref[v])
				}
				delete(ref, v)
			case r < 9:
				i := rng.IntN(h.Len())
				v := h.items[i].v
				at, got := h.Remove(v.idx)
				if got != v || at != ref[v] {
					t.Fatalf("Remove(%d) gave value %d at %d, want %d at %d", i, got.id, at, v.id, ref[v])
				}
				delete(ref, v)
			default:
				v := h.items[rng.IntN(h.Len())].v
				at := rng.Int64N(100)
				h.Fix(v.idx, at)
				ref[v] = at
			}
			if h.Len() != len(ref) {
				t.Fatalf("Len = %d, reference has %d", h.Len(), len(ref))
			}
		}
		checkIndexes(t, h)
		want := make([]int64, 0, len(ref))
		for _, at := range ref {
			want = append(want, at)
		}
		slices.Sort(want)
		for _, w := range want {
			if at, v, _ := h.Pop(); at != w || ref[v] != at {
				t.Fatalf("drain: got %d (value queued at %d), want %d", at, ref[v], w)
			}
		}
	}
}

// TestHeapSteadyStateAllocs: once the storage has grown, pushing and
// popping allocates nothing, with or without the Moved hook.
func TestHeapSteadyStateAllocs(t *testing.T) {
	var plain Heap[*tracked]
	idx := trackedHeap()
	vs := make([]*tracked, 64)
	for i := range vs {
		vs[i] = &tracked{id: i}
		plain.Push(int64(i), vs[i])
		idx.Push(int64(i), vs[i])
	}
	at := int64(len(vs))
	allocs := testing.AllocsPerRun(1000, func() {
		_, v, _ := plain.Pop()
		plain.Push(at, v)
		_, v, _ = idx.Pop()
		idx.Push(at, v)
		idx.Fix(v.idx, at+1)
		at++
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per push/pop, want 0", allocs)
	}
}
