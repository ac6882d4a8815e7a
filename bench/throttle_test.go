package bench

import "testing"

func TestReadLimitRate(t *testing.T) {
	const rate = 1000 // packets per second: one per ms, burst 10
	r := newReadLimit(rate, 0, 0)
	taken := 0
	for {
		ok, _ := r.take(0)
		if !ok {
			break
		}
		taken++
	}
	if taken != 10 {
		t.Fatalf("burst = %d, want 10 (10 ms of the rate)", taken)
	}
	ok, resume := r.take(0)
	if ok || resume != 1_000_000 {
		t.Fatalf("empty bucket: ok=%v resume=%d, want false at 1 ms", ok, resume)
	}
	// Over one simulated second, asking every 100 µs, exactly the rate (plus
	// the initial burst already spent) goes through.
	taken = 0
	for now := int64(100_000); now <= 1_000_000_000; now += 100_000 {
		if ok, _ := r.take(now); ok {
			taken++
		}
	}
	if taken < rate-1 || taken > rate+1 {
		t.Fatalf("took %d in one second at %d/s", taken, rate)
	}
}

func TestReadLimitStop(t *testing.T) {
	r := newReadLimit(0, 0, 5_000) // unlimited rate, stops at t=5000 ns
	for now := int64(0); now < 5_000; now += 1_000 {
		if ok, _ := r.take(now); !ok {
			t.Fatalf("refused at %d, before the stop", now)
		}
	}
	if ok, resume := r.take(5_000); ok || resume != 0 {
		t.Fatalf("after the stop: ok=%v resume=%d, want false and never", ok, resume)
	}
}
