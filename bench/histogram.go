package bench

import (
	"math"
	"math/bits"
)

// Histogram precision. Values below 2^histSubBits are counted exactly; above,
// every power-of-two range is split into histHalf linear sub-buckets, so the
// value reported for a bucket is within 1/histHalf (0.8 %) of every value
// counted in it — the layout of HdrHistogram with 2 significant digits.
const (
	histSubBits = 8
	histSub     = 1 << histSubBits // sub-buckets in the first range
	histHalf    = histSub / 2      // sub-buckets in every later range
	// histMaxExp bounds the recorded range at 2^histMaxExp ns (about 36 minutes);
	// larger values are clamped and still counted, so Max stays honest about
	// the clamp rather than growing the array.
	histMaxExp  = 41
	histBuckets = histSub + (histMaxExp-histSubBits)*histHalf
)

// Histogram counts non-negative int64 values (nanoseconds here) in
// logarithmic-linear buckets of bounded relative error, like HdrHistogram.
// Record is O(1) and allocation-free; the whole histogram is a fixed ~34 KiB
// array, so one per event loop costs nothing worth pooling.
//
// A Histogram is not safe for concurrent use: each event loop owns one and
// they are merged (Merge) when read.
type Histogram struct {
	counts [histBuckets]uint64
	n      uint64
	sum    float64
	min    int64
	max    int64
}

// NewHistogram returns an empty histogram.
func NewHistogram() *Histogram { return &Histogram{min: math.MaxInt64} }

// bucketOf returns the bucket index of v ≥ 0.
func bucketOf(v int64) int {
	u := uint64(v)
	if u < histSub {
		return int(u)
	}
	// e ≥ 1 is how many times the range doubled past the first one.
	e := bits.Len64(u) - histSubBits
	if e > histMaxExp-histSubBits {
		return histBuckets - 1
	}
	// The top histSubBits bits of u select the sub-bucket; the leading one
	// bit is implied, leaving histHalf choices per range.
	sub := int(u>>uint(e)) - histHalf
	return histSub + (e-1)*histHalf + sub
}

// bucketHigh returns the largest value counted in bucket i: quantiles report
// it so that they never understate a latency.
func bucketHigh(i int) int64 {
	if i < histSub {
		return int64(i)
	}
	e := (i-histSub)/histHalf + 1
	sub := (i-histSub)%histHalf + histHalf
	return int64(sub+1)<<uint(e) - 1
}

// Record counts one value; negative values count as 0 (a clock step, not a
// time travel).
func (h *Histogram) Record(v int64) {
	if v < 0 {
		v = 0
	}
	h.counts[bucketOf(v)]++
	h.n++
	h.sum += float64(v)
	if v < h.min {
		h.min = v
	}
	if v > h.max {
		h.max = v
	}
}

// Count returns the number of recorded values.
func (h *Histogram) Count() uint64 { return h.n }

// Max returns the largest recorded value exactly (0 when empty).
func (h *Histogram) Max() int64 { return h.max }

// Min returns the smallest recorded value exactly (0 when empty).
func (h *Histogram) Min() int64 {
	if h.n == 0 {
		return 0
	}
	return h.min
}

// Mean returns the arithmetic mean (0 when empty).
func (h *Histogram) Mean() float64 {
	if h.n == 0 {
		return 0
	}
	return h.sum / float64(h.n)
}

// Quantile returns the value at quantile q in [0, 1]: the upper bound of the
// bucket holding the ⌈q·n⌉-th smallest value, capped at Max. It returns 0 for
// an empty histogram.
func (h *Histogram) Quantile(q float64) int64 {
	if h.n == 0 {
		return 0
	}
	if q <= 0 {
		return h.Min()
	}
	if q >= 1 {
		return h.max
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	if rank == 0 {
		rank = 1
	}
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			v := bucketHigh(i)
			if v > h.max {
				v = h.max
			}
			if v < h.min {
				v = h.min
			}
			return v
		}
	}
	return h.max
}

// Merge adds every value counted in o to h.
func (h *Histogram) Merge(o *Histogram) {
	if o.n == 0 {
		return
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.sum += o.sum
	if o.min < h.min {
		h.min = o.min
	}
	if o.max > h.max {
		h.max = o.max
	}
}

// Reset empties h.
func (h *Histogram) Reset() { *h = Histogram{min: math.MaxInt64} }

// Summary is a histogram of durations reduced to the numbers reports print,
// in microseconds (JSON field names carry the unit).
type Summary struct {
	Count  uint64  `json:"count"`
	MinUs  float64 `json:"min_us"`
	MeanUs float64 `json:"mean_us"`
	P50Us  float64 `json:"p50_us"`
	P90Us  float64 `json:"p90_us"`
	P99Us  float64 `json:"p99_us"`
	P999Us float64 `json:"p999_us"`
	MaxUs  float64 `json:"max_us"`
}

// Summarize reduces a histogram of nanoseconds to a Summary.
func (h *Histogram) Summarize() Summary {
	us := func(ns int64) float64 { return float64(ns) / 1e3 }
	return Summary{
		Count:  h.n,
		MinUs:  us(h.Min()),
		MeanUs: h.Mean() / 1e3,
		P50Us:  us(h.Quantile(0.50)),
		P90Us:  us(h.Quantile(0.90)),
		P99Us:  us(h.Quantile(0.99)),
		P999Us: us(h.Quantile(0.999)),
		MaxUs:  us(h.max),
	}
}
