package bench

import "testing"

func TestScheduleOpenLoopNoDrift(t *testing.T) {
	s := NewSchedule(1_000, 1000, 0) // 1 ms interval from t=1000ns
	if n := s.Due(999, 0); n != 0 {
		t.Fatalf("due before start = %d", n)
	}
	if n := s.Due(1_000, 0); n != 1 {
		t.Fatalf("due at start = %d", n)
	}
	// Send on time for 10 messages: intended times are exact multiples,
	// whatever the time the loop actually woke.
	for k := 0; k < 10; k++ {
		seq, at, ok := s.Next()
		if !ok || seq != uint64(k) || at != 1_000+int64(k)*1_000_000 {
			t.Fatalf("k=%d: seq=%d at=%d ok=%v", k, seq, at, ok)
		}
		s.Advance()
	}
	if s.Sent() != 10 {
		t.Fatalf("sent = %d", s.Sent())
	}
}

func TestScheduleStallIsNotOmitted(t *testing.T) {
	// The loop stalls for 50 ms: all 50 overdue messages are still due, with
	// their original intended times, so the stall shows as latency.
	s := NewSchedule(0, 1000, 0)
	now := int64(50_000_000)
	if n := s.Due(now, 0); n != 51 {
		t.Fatalf("due after stall = %d, want 51", n)
	}
	if n := s.Due(now, 8); n != 8 {
		t.Fatalf("capped due = %d, want 8", n)
	}
	_, at, _ := s.Next()
	if now-at != 50_000_000 {
		t.Fatalf("first overdue message latency %d", now-at)
	}
}

func TestSchedulePhaseLimitStop(t *testing.T) {
	a := NewSchedule(0, 100, 0)
	b := NewSchedule(0, 100, 0.5)
	_, ta, _ := a.Next()
	_, tb, _ := b.Next()
	if tb-ta != 5_000_000 {
		t.Fatalf("phase offset = %d, want half of 10ms", tb-ta)
	}
	a.Limit = 3
	if n := a.Due(1e12, 0); n != 3 {
		t.Fatalf("limited due = %d", n)
	}
	a.Advance()
	a.Stop()
	if _, _, ok := a.Next(); ok || a.Due(1e12, 0) != 0 {
		t.Fatal("stopped schedule still due")
	}
	never := NewSchedule(0, 0, 0)
	if _, _, ok := never.Next(); ok {
		t.Fatal("rate 0 must never send")
	}
}

func TestScheduleStopBeforeFirst(t *testing.T) {
	s := NewSchedule(0, 10, 0)
	s.Stop()
	if _, _, ok := s.Next(); ok {
		t.Fatal("a schedule stopped before its first message still sends")
	}
}
