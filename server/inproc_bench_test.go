package server

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ternmq/tern/codec"
)

// BenchmarkInproc compares the in-process client with the network path
// (raw 3.1.1 clients over loopback TCP, BenchmarkLoopbackPubSub's scenario), in
// one run so the machine's noise hits both alike:
//
//	net→net       raw publisher (256 in flight) → raw subscriber
//	inproc→net    Client.Publish from 64 goroutines (one Client) → raw subscriber
//	async→net     Client.PublishAsync from one goroutine (window 64) → raw subscriber
//	net→inproc    raw publisher (256 in flight) → Client handler
//
// allocs/op counts the whole process: broker, and the benchmark's clients.
func BenchmarkInproc(b *testing.B) {
	for _, q := range []byte{0, 1} {
		b.Run(fmt.Sprintf("qos%d/net-net", q), func(b *testing.B) {
			srv, addr := startBroker(b, nil)
			b.ReportAllocs()
			b.SetBytes(64)
			b.ResetTimer()
			el, d := loopbackScenario{version: codec.Version311, qos: q, window: 256}.run(b, srv, addr, b.N, "nn")
			b.ReportMetric(float64(b.N-d)/el.Seconds(), "delivered/s")
		})
		for _, async := range []bool{false, true} {
			name := "inproc-net"
			if async {
				name = "async-net"
			}
			b.Run(fmt.Sprintf("qos%d/%s", q, name), func(b *testing.B) {
				srv, addr := startBroker(b, nil)
				sub := dialRaw(b, addr)
				sub.connect(codec.Connect{ProtocolVersion: codec.Version311, ClientID: []byte("bsub"), CleanStart: true}, 0)
				sub.subscribe(1, "bench/in", q)
				defer sub.c.Close()
				pub := mustClient(b, srv, "bpub", ClientOptions{})
				base := srv.Stats().MessagesDropped
				dropped := func() int { return int(srv.Stats().MessagesDropped - base) }
				done := make(chan error, 1)
				n := b.N
				go func() { done <- drainSubscriber(sub.c, sub.mc.Buffered(), n, q, dropped) }()
				payload := make([]byte, 64)
				b.ReportAllocs()
				b.SetBytes(64)
				b.ResetTimer()
				start := time.Now()
				g := 1
				if q > 0 && !async {
					g = 64 // as many as the broker's Receive Maximum: the window a network publisher fills
				}
				var next atomic.Int64
				var wg sync.WaitGroup
				for range g {
					wg.Add(1)
					go func() {
						defer wg.Done()
						m := &Message{Topic: "bench/in", Payload: payload, QoS: q}
						for next.Add(1) <= int64(n) {
							var err error
							if async {
								err = pub.PublishAsync(m, nil)
							} else {
								err = pub.Publish("bench/in", payload, q, false)
							}
							if err != nil {
								b.Error(err)
								return
							}
						}
					}()
				}
				wg.Wait()
				if err := <-done; err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(float64(n-dropped())/time.Since(start).Seconds(), "delivered/s")
			})
		}
		b.Run(fmt.Sprintf("qos%d/net-inproc", q), func(b *testing.B) {
			srv, addr := startBroker(b, nil)
			var got atomic.Int64
			n := int64(b.N)
			_ = mustClient(b, srv, "bsub", ClientOptions{ReceiveMaximum: 256, Subscriptions: []Subscription{{Filter: "bench/out", QoS: q,
				Handler: func(*Message) { got.Add(1) }}}})
			base := srv.Stats().MessagesDropped
			pub := dialRaw(b, addr)
			pub.connect(codec.Connect{ProtocolVersion: codec.Version311, ClientID: []byte("bpub"), CleanStart: true}, 0)
			defer pub.c.Close()
			b.ReportAllocs()
			b.SetBytes(64)
			b.ResetTimer()
			start := time.Now()
			pipelinePublish(b, pub, "bench/out", codec.Version311, q, b.N, 256, false, nil)
			// QoS 0 beyond max_outbound_bytes is dropped (and counted), as
			// for a network subscriber that does not keep up.
			for deadline := time.Now().Add(60 * time.Second); got.Load()+int64(srv.Stats().MessagesDropped-base) < n; {
				if time.Now().After(deadline) {
					b.Fatalf("handler got %d of %d", got.Load(), n)
				}
				time.Sleep(100 * time.Microsecond)
			}
			b.ReportMetric(float64(got.Load())/time.Since(start).Seconds(), "delivered/s")
		})
	}
}
