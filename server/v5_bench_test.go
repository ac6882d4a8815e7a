package server

import (
	"fmt"
	"testing"

	"github.com/ternmq/tern/codec"
)

// BenchmarkLoopbackPubSubV5 is BenchmarkLoopbackPubSub for 3.1.1 and 5.0
// clients side by side (and 5.0 with topic aliases both ways).
func BenchmarkLoopbackPubSubV5(b *testing.B) {
	for _, q := range []byte{0, 1} {
		for _, sc := range []loopbackScenario{{version: codec.Version311}, {version: codec.Version5}, {version: codec.Version5, alias: true}} {
			sc.qos = q
			name := fmt.Sprintf("qos%d/%s", q, versionName(sc.version))
			if sc.alias {
				name += "+alias"
			}
			b.Run(name, func(b *testing.B) {
				srv, addr := startBroker(b, nil)
				b.ReportAllocs()
				b.SetBytes(64)
				b.ResetTimer()
				el, _ := sc.run(b, srv, addr, b.N, "t")
				b.ReportMetric(float64(b.N)/el.Seconds(), "delivered/s")
			})
		}
	}
}

// BenchmarkV5VersusV311 runs the same scenario with 3.1.1 and then 5.0
// clients on one broker and reports the 5.0/3.1.1 time ratio (1.00 = as
// fast; above 1 = 5.0 slower).
func BenchmarkV5VersusV311(b *testing.B) {
	for _, q := range []byte{0, 1} {
		b.Run(fmt.Sprintf("qos%d", q), func(b *testing.B) {
			srv, addr := startBroker(b, nil)
			b.ReportAllocs()
			b.ResetTimer()
			t311, _ := loopbackScenario{version: codec.Version311, qos: q}.run(b, srv, addr, b.N, "v311")
			t5, _ := loopbackScenario{version: codec.Version5, qos: q}.run(b, srv, addr, b.N, "v5")
			b.ReportMetric(float64(t311.Nanoseconds())/float64(b.N), "ns/msg-3.1.1")
			b.ReportMetric(float64(t5.Nanoseconds())/float64(b.N), "ns/msg-5.0")
			b.ReportMetric(t5.Seconds()/t311.Seconds(), "v5/v311")
		})
	}
}
