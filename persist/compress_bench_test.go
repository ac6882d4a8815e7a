package persist

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"testing"

	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
)

// jsonPayload builds a telemetry-like JSON document of about n bytes: the kind
// of payload IoT fleets publish (repeated keys, numeric readings, ids).
func jsonPayload(r *rand.Rand, n int) []byte {
	b := []byte(`{"device":"sensor-` + strconv.Itoa(r.IntN(100000)) + `","fw":"2.4.17","readings":[`)
	for len(b) < n-2 {
		b = fmt.Appendf(b, `{"ts":%d,"temp":%.2f,"hum":%.1f,"bat":%d,"status":"ok"},`,
			1700000000000+r.Int64N(1e9), 15+r.Float64()*20, 30+r.Float64()*50, r.IntN(100))
	}
	b = append(b[:len(b)-1], "]}"...)
	return b
}

func randomPayload(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// BenchmarkCompress compares S2 and zstd (fastest level) on the payload
// shapes the store sees; it reports the compressed/original ratio. The
// numbers chose S2 for the store: see the package doc.
func BenchmarkCompress(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 2))
	zenc, _ := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1), zstd.WithLowerEncoderMem(true))
	zdec, _ := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1))
	for _, size := range []int{1 << 10, 4 << 10, 64 << 10} {
		for _, kind := range []string{"json", "random"} {
			var src []byte
			if kind == "json" {
				src = jsonPayload(r, size)
			} else {
				src = randomPayload(r, size)
			}
			name := fmt.Sprintf("%s/%d", kind, size)
			b.Run("s2/enc/"+name, func(b *testing.B) {
				dst := make([]byte, s2.MaxEncodedLen(len(src)))
				b.SetBytes(int64(len(src)))
				var out []byte
				for b.Loop() {
					out = s2.Encode(dst, src)
				}
				b.ReportMetric(float64(len(out))/float64(len(src)), "ratio")
			})
			b.Run("s2/dec/"+name, func(b *testing.B) {
				enc := s2.Encode(nil, src)
				dst := make([]byte, len(src))
				b.SetBytes(int64(len(src)))
				for b.Loop() {
					_, _ = s2.Decode(dst, enc)
				}
			})
			b.Run("zstd/enc/"+name, func(b *testing.B) {
				dst := make([]byte, 0, len(src)+64)
				b.SetBytes(int64(len(src)))
				var out []byte
				for b.Loop() {
					out = zenc.EncodeAll(src, dst[:0])
				}
				b.ReportMetric(float64(len(out))/float64(len(src)), "ratio")
			})
			b.Run("zstd/dec/"+name, func(b *testing.B) {
				enc := zenc.EncodeAll(src, nil)
				dst := make([]byte, 0, len(src))
				b.SetBytes(int64(len(src)))
				for b.Loop() {
					_, _ = zdec.DecodeAll(enc, dst[:0])
				}
			})
		}
	}
}
