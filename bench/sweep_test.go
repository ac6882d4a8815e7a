package bench

import (
	"context"
	"fmt"
	"strings"
	"testing"
)

// Each reason a step is not sustainable, in the order judged.
func TestSweepJudgeStep(t *testing.T) {
	good := SweepStep{Offered: 1000, Expected: 2000, SendRate: 1000, RecvRate: 2000, ArrivalRate: 2000, P99Us: 900}
	cases := []struct {
		name   string
		mod    func(*SweepStep)
		ok     bool
		reason string
		short  bool
	}{
		{"sustainable", func(*SweepStep) {}, true, "", false},
		{"failed", func(s *SweepStep) { s.Failed = 1 }, false, "connections failed", false},
		{"lost", func(s *SweepStep) { s.Lost = 3 }, false, "3 messages lost", false},
		{"send-short", func(s *SweepStep) { s.SendRate = 900 }, false, "the harness sent 900/s", true},
		{"recv-short", func(s *SweepStep) { s.ArrivalRate = 1800 }, false, "delivered 1800/s of 2000/s", false},
		{"knee", func(s *SweepStep) { s.P99Us = 1001 }, false, "above the knee", false},
	}
	for _, tc := range cases {
		st := good
		tc.mod(&st)
		ok, reason, short := judgeStep(st, 1000, 0.95)
		if ok != tc.ok || !strings.Contains(reason, tc.reason) || short != tc.short {
			t.Errorf("%s: got %v %q %v", tc.name, ok, reason, short)
		}
	}
}

// The rate grows by the factor until a step fails; the knee defaults to
// KneeFactor × the first step's p99; the capacity is the last good step's.
func TestSweepSteps(t *testing.T) {
	var rates []float64
	run := func(_ context.Context, c Config) (*Report, error) {
		rates = append(rates, c.Rate)
		r := &Report{SendRate: c.Rate * float64(c.Pubs), RecvRate: c.Rate * float64(c.Pubs), ArrivalRate: c.Rate * float64(c.Pubs)}
		r.Latency.P99Us = 100
		if c.Rate > 300 || len(rates) == 2 { // the first try at 200 is an unlucky one
			r.Latency.P99Us = 1500 // past 10 × 100 µs
		}
		return r, nil
	}
	sr, err := Sweep(context.Background(), SweepOptions{Config: Config{Scenario: ScenarioP2P, Pubs: 2, Subs: 2, Rate: 100}, Factor: 2, RunFunc: run})
	if err != nil {
		t.Fatal(err)
	}
	// 200 failed once and passed its retry; 400 failed twice.
	if fmt.Sprint(rates) != "[100 200 200 400 400]" {
		t.Fatalf("rates %v", rates)
	}
	if sr.LastSustainable != 2 || sr.Capacity != 400 || sr.Knee != 1000 || !strings.Contains(sr.Stop, "step 5") ||
		!strings.Contains(sr.Stop, "knee") || !sr.Steps[2].Retry || !sr.Steps[4].Retry || sr.Steps[3].Retry {
		t.Fatalf("report %+v", sr)
	}
	if _, err := Sweep(context.Background(), SweepOptions{Config: Config{ClosedLoop: true}, RunFunc: run}); err == nil {
		t.Fatal("a closed-loop sweep was accepted")
	}
}
