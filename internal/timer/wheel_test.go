package timer

import (
	"math/rand/v2"
	"slices"
	"testing"
)

type fired struct {
	v   int
	now int64
}

// advance runs w.Advance(now) and returns what it handed out, keeping
// nothing.
func advance(w *Wheel[int], now int64) []fired {
	var got []fired
	w.Advance(now, func(v int, now int64) int64 {
		got = append(got, fired{v, now})
		return 0
	})
	return got
}

func TestWheelTable(t *testing.T) {
	type add struct {
		at int64
		v  int
	}
	for _, tc := range []struct {
		name  string
		start int64
		tick  int64
		slots int
		adds  []add
		steps []int64 // successive values of now
		want  [][]int // values handed out at each step, in order
	}{
		{"seconds", 100, 1, 8, []add{{101, 1}, {103, 3}, {102, 2}},
			[]int64{100, 101, 103, 110}, [][]int{nil, {1}, {2, 3}, nil}},
		{"past deadline is due at the next tick", 100, 1, 8, []add{{50, 1}, {100, 2}},
			[]int64{100, 101}, [][]int{nil, {1, 2}}},
		// Tick 10: 101 rounds up to tick 11 (110), so it is late, never early.
		{"round up", 100, 10, 8, []add{{101, 1}, {110, 2}, {111, 3}},
			[]int64{105, 109, 110, 119, 120}, [][]int{nil, nil, {1, 2}, nil, {3}}},
		{"beyond the span", 0, 1, 4, []add{{10, 1}, {3, 2}},
			[]int64{3, 4, 9, 10}, [][]int{{2}, nil, nil, {1}}},
		{"jump over many laps", 0, 1, 4, []add{{2, 1}, {100, 2}, {1000, 3}},
			[]int64{99, 100, 5000}, [][]int{{1}, {2}, {3}}},
		{"clock going back does nothing", 100, 1, 8, []add{{102, 1}},
			[]int64{50, 101, 102}, [][]int{nil, nil, {1}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := NewWheel[int](tc.start, tc.tick, tc.slots)
			for _, a := range tc.adds {
				w.Add(a.at, a.v)
			}
			for i, now := range tc.steps {
				var got []int
				for _, f := range advance(w, now) {
					if f.now != now {
						t.Fatalf("callback saw now %d, want %d", f.now, now)
					}
					got = append(got, f.v)
				}
				if !slices.Equal(got, tc.want[i]) {
					t.Fatalf("Advance(%d) handed out %v, want %v", now, got, tc.want[i])
				}
			}
			if w.Len() != 0 {
				t.Fatalf("Len = %d after everything fired", w.Len())
			}
		})
	}
}

func TestWheelKeep(t *testing.T) {
	w := NewWheel[int](0, 1, 8)
	w.Add(2, 1)
	var calls []int64
	keep := func(v int, now int64) int64 {
		calls = append(calls, now)
		switch len(calls) {
		case 1:
			return now + 20 // beyond the span: re-filed without a callback
		case 2:
			return now - 5 // overdue: next tick, not again in this Advance
		}
		return 0
	}
	for now := int64(1); now <= 40; now++ {
		w.Advance(now, keep)
	}
	if want := []int64{2, 22, 23}; !slices.Equal(calls, want) {
		t.Fatalf("callbacks at %v, want %v", calls, want)
	}
	if w.Len() != 0 {
		t.Fatalf("Len = %d, want 0", w.Len())
	}
	// An overdue deadline returned during a big jump waits for the next
	// Advance instead of firing again in this one.
	calls = nil
	w.Add(41, 1)
	w.Advance(1000, func(v int, now int64) int64 {
		calls = append(calls, now)
		if len(calls) == 1 {
			return 1
		}
		return 0
	})
	if len(calls) != 1 {
		t.Fatalf("handed out %d times in one Advance, want 1", len(calls))
	}
	w.Advance(1001, func(v int, now int64) int64 { calls = append(calls, now); return 0 })
	if want := []int64{1000, 1001}; !slices.Equal(calls, want) {
		t.Fatalf("callbacks at %v, want %v", calls, want)
	}
}

// TestWheelRandom checks, against a reference that knows every deadline,
// that each entry is handed out exactly at the first Advance whose tick
// reaches its due tick — its deadline rounded up to a tick, or the tick
// after the clock's when it was filed, whichever is later: never early, at
// most one tick late, never lost or repeated.
func TestWheelRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for round := 0; round < 200; round++ {
		tick := []int64{1, 7, 1000}[round%3]
		slots := []int{2, 8, 64}[round%3]
		now := rng.Int64N(1 << 20)
		w := NewWheel[int](now, tick, slots)
		span := tick * int64(slots) * 3 // deadlines up to three laps ahead
		due := map[int]int64{}          // value → deadline, while queued
		dueTick := map[int]int64{}      // value → tick it must be out by
		next := 0
		for step := 0; step < 300; step++ {
			for k := rng.IntN(4); k > 0; k-- {
				at := now - tick + rng.Int64N(span)
				w.Add(at, next)
				due[next] = at
				dueTick[next] = max(ceilDiv(at, tick), floorDiv(now, tick)+1)
				next++
			}
			switch rng.IntN(10) {
			case 0:
				now += rng.Int64N(span * 4) // a jump over several laps
			case 1:
				// the clock stands still
			default:
				now += rng.Int64N(tick * 3)
			}
			seen := map[int]bool{}
			w.Advance(now, func(v int, n int64) int64 {
				at, ok := due[v]
				switch {
				case !ok || seen[v]:
					t.Fatalf("value %d handed out twice", v)
				case at > now || dueTick[v] > floorDiv(now, tick):
					t.Fatalf("value %d due at %d (tick %d) handed out early at %d", v, at, dueTick[v], now)
				}
				seen[v] = true
				delete(due, v)
				if rng.IntN(3) == 0 { // keep it, with a new deadline
					at = n - tick + rng.Int64N(span)
					due[v] = at
					dueTick[v] = max(ceilDiv(at, tick), floorDiv(n, tick)+1)
					return at
				}
				return 0
			})
			// Everything whose rounded-up deadline was reached must be out,
			// except entries kept by this very Advance.
			for v, at := range due {
				if !seen[v] && dueTick[v] <= floorDiv(now, tick) {
					t.Fatalf("value %d due at %d still queued at %d (tick %d)", v, at, now, tick)
				}
			}
			if w.Len() != len(due) {
				t.Fatalf("Len = %d, reference holds %d", w.Len(), len(due))
			}
		}
	}
}

// TestWheelSteadyStateAllocs: entries re-filed every period reuse slot
// storage, so a warmed-up wheel allocates nothing.
func TestWheelSteadyStateAllocs(t *testing.T) {
	const period = 30
	w := NewWheel[*tracked](0, 1, 64)
	for i := 0; i < 1000; i++ {
		w.Add(int64(i%period), &tracked{id: i})
	}
	keep := func(v *tracked, now int64) int64 { return now + period }
	now := int64(0)
	for ; now < 3*64; now++ { // warm up: every slot has seen its load
		w.Advance(now, keep)
	}
	allocs := testing.AllocsPerRun(1000, func() {
		w.Advance(now, keep)
		now++
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per Advance, want 0", allocs)
	}
}

// TestWheelStormStorageReleased: the storage of a one-off burst in a
// single slot (a reconnect storm) is not pinned once the entries spread;
// what stays is storage circulating between the slots in use, within a
// small multiple of the live entries.
func TestWheelStormStorageReleased(t *testing.T) {
	const conns, period = 100000, 60
	w := NewWheel[int](0, 1, 512)
	for i := 0; i < conns; i++ {
		w.Add(1, i)
	}
	spread := func(v int, now int64) int64 { return now + int64(v%period) + 1 }
	for now := int64(1); now < 3*512; now++ {
		w.Advance(now, spread)
	}
	held, biggest := 0, 0
	for _, s := range append(slices.Clone(w.slots), w.spare...) {
		held += cap(s)
		biggest = max(biggest, cap(s))
	}
	if w.Len() != conns || biggest >= conns/4 || held > 3*conns {
		t.Fatalf("%d entries hold storage for %d, the largest slot for %d; want at most %d and %d",
			w.Len(), held, biggest, 3*conns, conns/4)
	}
}
