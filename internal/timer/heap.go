package timer

// Heap is a min-heap of values ordered by deadline. The zero value is an
// empty heap ready to use. Entries with equal deadlines come out in no
// particular order.
//
// Not safe for concurrent use: the caller owns it and locks around it if
// several goroutines share it.
type Heap[T any] struct {
	items []entry[T]

	// Moved, if set, is called with a value and its new index each time the
	// value changes position (including when it is pushed), and with −1
	// when it leaves the heap. A value that stores the index can then be
	// passed to Remove or Fix. Set it before the first Push.
	Moved func(v T, i int)
}

// entry is one deadline and its value.
type entry[T any] struct {
	at int64
	v  T
}

// Len returns the number of entries.
func (h *Heap[T]) Len() int { return len(h.items) }

// Push adds v with deadline at. O(log n); allocates only when the heap
// outgrows its storage.
func (h *Heap[T]) Push(at int64, v T) {
	h.items = append(h.items, entry[T]{at: at, v: v})
	i := len(h.items) - 1
	h.moved(i)
	h.up(i)
}

// Peek returns the entry with the earliest deadline without removing it;
// ok is false when the heap is empty.
func (h *Heap[T]) Peek() (at int64, v T, ok bool) {
	if len(h.items) == 0 {
		return 0, v, false
	}
	return h.items[0].at, h.items[0].v, true
}

// Pop removes and returns the entry with the earliest deadline; ok is false
// when the heap is empty.
func (h *Heap[T]) Pop() (at int64, v T, ok bool) {
	if len(h.items) == 0 {
		return 0, v, false
	}
	at, v = h.Remove(0)
	return at, v, true
}

// PopDue removes and returns the earliest entry if its deadline is at or
// before now; ok is false when nothing is due. It is the body of the usual
// "fire everything that is due" loop.
func (h *Heap[T]) PopDue(now int64) (v T, ok bool) {
	if len(h.items) == 0 || h.items[0].at > now {
		return v, false
	}
	_, v = h.Remove(0)
	return v, true
}

// Remove removes and returns the entry at index i (as reported to Moved;
// index 0 is the earliest). O(log n). It panics if i is out of range.
func (h *Heap[T]) Remove(i int) (at int64, v T) {
	e := h.items[i]
	last := len(h.items) - 1
	if i != last {
		h.items[i] = h.items[last]
		h.moved(i)
	}
	h.items[last] = entry[T]{} // drop the reference for the garbage collector
	h.items = h.items[:last]
	if h.Moved != nil {
		h.Moved(e.v, -1)
	}
	if i != last {
		h.fix(i)
	}
	return e.at, e.v
}

// Fix sets the deadline of the entry at index i to at and restores the
// order. O(log n). It panics if i is out of range.
func (h *Heap[T]) Fix(i int, at int64) {
	h.items[i].at = at
	h.fix(i)
}

// fix moves the entry at i down or up to where its deadline belongs.
func (h *Heap[T]) fix(i int) {
	if !h.down(i) {
		h.up(i)
	}
}

func (h *Heap[T]) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if h.items[p].at <= h.items[i].at {
			return
		}
		h.swap(i, p)
		i = p
	}
}

// down sifts the entry at i towards the leaves and reports whether it moved.
func (h *Heap[T]) down(i int) bool {
	start, n := i, len(h.items)
	for {
		m, a, b := i, 2*i+1, 2*i+2
		if a < n && h.items[a].at < h.items[m].at {
			m = a
		}
		if b < n && h.items[b].at < h.items[m].at {
			m = b
		}
		if m == i {
			return i != start
		}
		h.swap(i, m)
		i = m
	}
}

func (h *Heap[T]) swap(i, j int) {
	h.items[i], h.items[j] = h.items[j], h.items[i]
	h.moved(i)
	h.moved(j)
}

func (h *Heap[T]) moved(i int) {
	if h.Moved != nil {
		h.Moved(h.items[i].v, i)
	}
}
