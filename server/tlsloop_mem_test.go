package server

import (
	"crypto/tls"
	"fmt"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/ternmq/tern/codec"
)

// BenchmarkTLSIdleConnHeap attributes the live heap of idle subscribed TLS
// connections to its owners, per connection, from an exact heap profile
// (MemProfileRate 1): the broker side of each stack only (the test's own
// TLS clients live in the same process and are left out by their stacks).
// It reports the broker's bytes per connection for each engine; with
// loops, once the idle sweep dropped the connections' AEADs (~45 s).
//
//	go test ./server -run '^$' -bench BenchmarkTLSIdleConnHeap -benchtime 1x
func BenchmarkTLSIdleConnHeap(b *testing.B) {
	for _, engine := range []string{TLSEngineStdnet, TLSEngineLoops} {
		b.Run(engine, func(b *testing.B) {
			const n = 1000
			old := runtime.MemProfileRate
			runtime.MemProfileRate = 1
			defer func() { runtime.MemProfileRate = old }()
			cfg, pool := selfSigned(b)
			srv, _ := startBroker(b, func(o *Options) {
				o.TLSEngine = engine
				o.Durability = DurabilityNone
				o.TLSListeners = []TLSListener{{Addr: "127.0.0.1:0", Config: cfg}}
			})
			addr := srv.TLSAddrs()[0].String()
			for range b.N {
				var conns []*tls.Conn
				for i := range n {
					mc, tc := dialTLSRaw(b, addr, pool)
					if _, err := mc.Connect(codec.Connect{ClientID: []byte(topicN("heap", i)), CleanStart: true}); err != nil {
						b.Fatal(err)
					}
					if _, err := mc.Subscribe(1, nil, codec.Subscription{Filter: []byte(topicN("heap", i)), QoS: 1}); err != nil {
						b.Fatal(err)
					}
					conns = append(conns, tc)
				}
				settledGoroutines()
				if engine == TLSEngineLoops {
					// Idle means idle: wait for the record layer's sweep to drop
					// the AEADs of the connections (tlsloop IdleKeysAfter, 30 s).
					deadline := time.Now().Add(90 * time.Second)
					for srv.tlsL.Stats().IdleKeyDrops < n && time.Now().Before(deadline) {
						time.Sleep(100 * time.Millisecond)
					}
				}
				runtime.GC()
				runtime.GC()
				parts, total := brokerHeapByOwner()
				b.ReportMetric(float64(total)/n, "B/conn")
				keys := make([]string, 0, len(parts))
				for k := range parts {
					keys = append(keys, k)
				}
				sort.Slice(keys, func(i, j int) bool { return parts[keys[i]] > parts[keys[j]] })
				var sb strings.Builder
				for _, k := range keys {
					if per := parts[k] / n; per >= 8 {
						fmt.Fprintf(&sb, "\n  %6d B  %s", per, k)
					}
				}
				b.Logf("%s: broker heap per idle subscribed TLS connection %d B:%s", engine, total/n, sb.String())
				for _, c := range conns {
					_ = c.Close()
				}
			}
		})
	}
}

// brokerHeapByOwner sums the in-use heap by owner, over the allocations
// made on the broker's side: stacks through the transports or the broker,
// not through the test's TLS clients.
func brokerHeapByOwner() (map[string]int64, int64) {
	var recs []runtime.MemProfileRecord
	n, _ := runtime.MemProfile(nil, false)
	for {
		recs = make([]runtime.MemProfileRecord, n+100)
		var ok bool
		if n, ok = runtime.MemProfile(recs, false); ok {
			recs = recs[:n]
			break
		}
	}
	parts := map[string]int64{}
	var total int64
	for _, r := range recs {
		inuse := r.InUseBytes()
		if inuse <= 0 {
			continue
		}
		frames := runtime.CallersFrames(r.Stack())
		var names []string
		for {
			f, more := frames.Next()
			names = append(names, f.Function)
			if !more {
				break
			}
		}
		stack := strings.Join(names, " ")
		if strings.Contains(stack, "tls.Dial") || strings.Contains(stack, "clientHandshake") ||
			strings.Contains(stack, "dialTLSRaw") || strings.Contains(stack, "mqtttest") ||
			!(strings.Contains(stack, "tern/server") || strings.Contains(stack, "gnet")) ||
			strings.Contains(stack, "BenchmarkTLSIdleConnHeap") || strings.Contains(stack, "persist") ||
			strings.Contains(stack, "startBroker") || strings.Contains(stack, "pebble") {
			continue
		}
		parts[owner(names)] += inuse
		total += inuse
	}
	return parts, total
}

// owner names the allocation: the first frame of interest from the top.
func owner(names []string) string {
	for _, n := range names {
		switch {
		case strings.Contains(n, "crypto/internal/fips140/aes"), strings.Contains(n, "crypto/cipher"), strings.Contains(n, "crypto/aes"):
			return "AES-GCM state (crypto)"
		case strings.HasPrefix(n, "crypto/tls.(*Conn).readFromUntil"), strings.HasPrefix(n, "bytes.(*Buffer)") && strings.Contains(strings.Join(names, " "), "crypto/tls"):
			return "crypto/tls input/handshake buffers"
		case strings.HasPrefix(n, "crypto/tls.Server"), strings.HasPrefix(n, "crypto/tls."):
			return "crypto/tls: " + strings.TrimPrefix(n, "crypto/tls.")
		case strings.Contains(n, "tlsloop."):
			return "tlsloop: " + n[strings.LastIndex(n, "/")+1:]
		case strings.Contains(n, "stdnet."):
			return "stdnet: " + n[strings.LastIndex(n, "/")+1:]
		case strings.Contains(n, "panjf2000/gnet"):
			return "gnet: " + n[strings.LastIndex(n, "/")+1:]
		case strings.Contains(n, "ternmq/tern/server."):
			return "broker: " + n[strings.LastIndex(n, "/")+1:]
		}
	}
	return "other"
}
