package server

import (
	"fmt"
	"net"
	"os"
	"runtime"
	"runtime/pprof"
	"testing"
	"time"

	"github.com/ternmq/tern/codec"
)

// BenchmarkIdleConnectionHeap opens idle connections, each subscribed to its
// own topic, and reports the broker's live heap per connection (after GC).
// Client sockets live in the same process, so kernel socket memory and
// process RSS are not what this measures: use tern bench conn for RSS.
func BenchmarkIdleConnectionHeap(b *testing.B) {
	const n = 5000
	for i := 0; i < b.N; i++ {
		_, addr := startBroker(b, nil)
		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		conns := make([]net.Conn, 0, n)
		reply := make([]byte, 9)
		for k := 0; k < n; k++ {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				b.Fatal(err)
			}
			p := codec.Connect{ProtocolName: []byte("MQTT"), ProtocolVersion: 4, CleanStart: true, KeepAlive: 600,
				ClientID: []byte(fmt.Sprintf("idle-%06d", k))}
			s := codec.Subscribe{PacketID: 1, Subscriptions: []codec.Subscription{{Filter: []byte(fmt.Sprintf("devices/%06d/cmd", k)), QoS: 1}}}
			if _, err := c.Write(s.Append(p.Append(nil), 4)); err != nil {
				b.Fatal(err)
			}
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			for got := 0; got < len(reply); {
				m, err := c.Read(reply[got:])
				if err != nil {
					b.Fatal(err)
				}
				got += m
			}
			conns = append(conns, c)
		}
		runtime.GC()
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "heapB/conn")
		if path := os.Getenv("TERN_HEAP_PROFILE"); path != "" {
			if f, err := os.Create(path); err == nil {
				_ = pprof.WriteHeapProfile(f)
				f.Close()
			}
		}
		for _, c := range conns {
			c.Close()
		}
	}
}
