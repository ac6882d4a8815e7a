package bench

import (
	"math/rand/v2"
	"slices"
	"testing"
)

func TestHistogramBucketsRoundTrip(t *testing.T) {
	// Every value must fall in a bucket whose upper bound is ≥ it and within
	// the promised relative error.
	vals := []int64{0, 1, 2, 127, 255, 256, 257, 511, 512, 1000, 1 << 20, 123456789, 1<<40 + 5}
	for i := 0; i < 10000; i++ {
		vals = append(vals, rand.Int64N(1<<40))
	}
	for _, v := range vals {
		b := bucketOf(v)
		hi := bucketHigh(b)
		if hi < v {
			t.Fatalf("value %d in bucket %d with upper bound %d", v, b, hi)
		}
		if b > 0 && bucketHigh(b-1) >= v {
			t.Fatalf("value %d belongs below bucket %d", v, b)
		}
		if v >= histSub && float64(hi-v) > float64(v)/histHalf {
			t.Fatalf("value %d reported as %d: error above 1/%d", v, hi, histHalf)
		}
	}
}

func TestHistogramQuantilesAgainstSort(t *testing.T) {
	h := NewHistogram()
	var all []int64
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 100000; i++ {
		// A long-tailed distribution, like latencies.
		v := int64(r.ExpFloat64()*50_000) + 10_000
		if i%1000 == 0 {
			v *= 100
		}
		h.Record(v)
		all = append(all, v)
	}
	slices.Sort(all)
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
		exact := all[int(q*float64(len(all)))-1]
		got := h.Quantile(q)
		if got < exact || float64(got-exact) > float64(exact)/histHalf+1 {
			t.Errorf("q%.3f = %d, exact %d", q, got, exact)
		}
	}
	if h.Max() != all[len(all)-1] || h.Min() != all[0] {
		t.Errorf("min/max = %d/%d, want %d/%d", h.Min(), h.Max(), all[0], all[len(all)-1])
	}
	if h.Quantile(1) != h.Max() {
		t.Errorf("q1 != max")
	}
}

func TestHistogramMergeAndEdges(t *testing.T) {
	a, b := NewHistogram(), NewHistogram()
	if a.Quantile(0.99) != 0 || a.Min() != 0 || a.Mean() != 0 {
		t.Fatal("empty histogram must read as zeros")
	}
	a.Record(100)
	b.Record(1_000_000)
	b.Record(-5)      // clock step: counted as 0
	b.Record(1 << 60) // beyond range: clamped into the last bucket, max exact
	a.Merge(b)
	if a.Count() != 4 || a.Min() != 0 || a.Max() != 1<<60 {
		t.Fatalf("merged count/min/max = %d/%d/%d", a.Count(), a.Min(), a.Max())
	}
	if q := a.Quantile(0.5); q != 100 {
		t.Errorf("p50 = %d, want 100", q)
	}
	s := a.Summarize()
	if s.Count != 4 || s.MaxUs != float64(int64(1)<<60)/1e3 {
		t.Errorf("summary %+v", s)
	}
	a.Reset()
	if a.Count() != 0 {
		t.Error("reset")
	}
}

func BenchmarkHistogramRecord(b *testing.B) {
	h := NewHistogram()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		h.Record(int64(i*7919) & (1<<30 - 1))
	}
}
