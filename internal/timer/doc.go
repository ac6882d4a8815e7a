// Package timer holds the two deadline structures the broker and the load
// generator share: a timing wheel for very many coarse, mostly-postponed
// deadlines, and a min-heap for fewer, exact ones.
//
// Neither has a clock, a goroutine or a lock. Time is whatever int64 the
// caller passes in (unix seconds, nanoseconds, anything monotone), which is
// what makes them deterministic to test; the caller decides which goroutine
// owns a value and guards it if it is shared.
//
// # Wheel: O(1) per deadline, at the price of one tick of lateness
//
// A [Wheel] is a ring of slots, one per tick (a caller-chosen width of
// time). Adding puts an entry in the slot of the tick its deadline rounds
// up to; [Wheel.Advance] walks the ticks that passed and hands each entry
// of their slots to a callback, which returns the entry's next deadline (to
// keep it) or 0 (to forget it). Both are O(1) per entry whatever the number
// of entries, and a tick with nothing due costs one empty-slot check.
//
// Entries are never removed or moved between ticks. That is the point for
// connection deadlines (keepalive, connect timeout): activity pushes the
// real deadline back on every packet, and moving an entry each time would
// cost work per packet; instead the callback looks at the real deadline
// when the slot comes due and re-adds the entry there, so a connection costs
// O(1) per keepalive period.
//
// A wheel never fires early: an entry due at t is handed out by the first
// Advance whose now ≥ t. Deadlines round up to the next tick boundary, so it
// may fire up to one tick late. A deadline further away than the wheel spans
// waits in the farthest slot and is re-slotted, without a callback, when
// that slot comes round; a jump of now over many laps costs at most one pass
// over the ring.
//
// # Heap: O(log n) per deadline, exact order
//
// A [Heap] is a binary min-heap of (deadline, value) pairs: Push and Pop are
// O(log n), Peek O(1). It suits deadlines that are few or must be precise
// (session expiry, delayed wills, a publisher's next send time). With the
// optional [Heap.Moved] hook a value learns its position as it moves, which
// makes [Heap.Remove] and [Heap.Fix] of an arbitrary value O(log n) too.
//
// Both store an entry as its deadline (or due tick) next to the value: 16
// bytes for a pointer value. Both keep their storage when entries leave, so
// in steady state they allocate nothing; dropped entries are zeroed so the
// garbage collector can reclaim what they pointed to.
package timer
