package timer

// Wheel is a timing wheel: a ring of slots, one per tick, each holding the
// entries due in that tick. See the package doc for when to prefer it to a
// [Heap].
//
// Not safe for concurrent use: the caller owns it (in the broker, one event
// loop) and locks around it if several goroutines share it.
type Wheel[T any] struct {
	slots [][]entry[T] // entry.at holds the due tick, not a time
	mask  int64        // len(slots) − 1; len(slots) is a power of two
	tick  int64        // width of a tick, in the caller's time unit
	cur   int64        // the tick the wheel has advanced to: ⌊now/tick⌋
	n     int          // entries filed
	// spare holds the storage of processed slots for the next slot to be
	// filled, so that entries moving from slot to slot reuse storage
	// instead of every slot of the ring keeping its own.
	spare [][]entry[T]
}

// Storage reuse. A processed slot's storage goes to the spare list (at most
// spareMax of them) for the next empty slot to be filled. Storage up to
// reuseMax entries is always kept; larger storage only if it was at least
// half used this time round, so that the storage of a one-off burst (a
// reconnect storm) is given back, while steadily large slots allocate
// nothing.
const (
	reuseMax = 1024
	spareMax = 4
)

// NewWheel returns an empty wheel whose clock reads now, with ticks of
// width tick (> 0, in the caller's unit of time) and at least slots slots
// (rounded up to a power of two, minimum 2). It spans slots−1 ticks; later
// deadlines are accepted and cost one extra re-slotting per lap.
func NewWheel[T any](now, tick int64, slots int) *Wheel[T] {
	if tick <= 0 {
		panic("timer: NewWheel with tick ≤ 0")
	}
	n := 2
	for n < slots {
		n *= 2
	}
	return &Wheel[T]{slots: make([][]entry[T], n), mask: int64(n - 1), tick: tick, cur: floorDiv(now, tick)}
}

// Len returns the number of entries in the wheel.
func (w *Wheel[T]) Len() int { return w.n }

// Add schedules v to be handed out at the first Advance whose now ≥ at. A
// deadline in the current tick or earlier is due at the next tick. O(1);
// allocates only when a slot outgrows its storage. Safe to call from inside
// Advance's callback.
func (w *Wheel[T]) Add(at int64, v T) {
	w.n++
	w.put(ceilDiv(at, w.tick), v)
}

// put files v under due tick k (at least the next tick), in k's slot or, if
// k is more than a lap away, in the farthest slot to be re-filed from there.
func (w *Wheel[T]) put(k int64, v T) {
	k = max(k, w.cur+1)
	s := min(k, w.cur+w.mask) & w.mask
	if w.slots[s] == nil && len(w.spare) > 0 {
		w.slots[s] = w.spare[len(w.spare)-1]
		w.spare[len(w.spare)-1] = nil
		w.spare = w.spare[:len(w.spare)-1]
	}
	w.slots[s] = append(w.slots[s], entry[T]{at: k, v: v})
}

// Advance moves the wheel's clock to now and calls due, in tick order, for
// every entry whose deadline is at or before now. due receives the entry
// and now, and returns the entry's next deadline to keep it, or 0 to drop
// it. A next deadline at or before now is due at the next tick: an entry is
// handed out at most once per Advance. A now earlier than the wheel's clock
// does nothing.
//
// Cost: O(1) per entry handed out or re-filed from a far slot, plus one
// check per tick passed, capped at one pass over the slots however far now
// jumps.
func (w *Wheel[T]) Advance(now int64, due func(v T, now int64) int64) {
	target := floorDiv(now, w.tick)
	if target-w.cur > w.mask+1 {
		// Every slot is visited once in the last lap; skipping the laps
		// before it changes nothing, as no entry is filed more than a lap
		// ahead of the clock.
		w.cur = target - w.mask - 1
	}
	for w.cur < target {
		w.cur++
		s := w.cur & w.mask
		list := w.slots[s]
		if len(list) == 0 {
			continue
		}
		w.slots[s] = nil
		for _, e := range list {
			if e.at > w.cur { // parked a lap or more ahead: not due yet
				w.put(e.at, e.v)
				continue
			}
			w.n--
			if next := due(e.v, now); next != 0 {
				w.n++
				w.put(max(ceilDiv(next, w.tick), target+1), e.v)
			}
		}
		// put never files into the slot being processed (it files from the
		// next tick to a lap minus one ahead), so the storage is free again.
		if len(w.spare) < spareMax && (cap(list) <= reuseMax || len(list) >= cap(list)/2) {
			clear(list)
			w.spare = append(w.spare, list[:0])
		}
	}
}

// ceilDiv returns ⌈a/b⌉ for b > 0.
func ceilDiv(a, b int64) int64 {
	q := a / b
	if a%b > 0 {
		q++
	}
	return q
}

// floorDiv returns ⌊a/b⌋ for b > 0.
func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b < 0 {
		q--
	}
	return q
}
