package server

import (
	"fmt"
	"io"
	"net"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/ternmq/tern/codec"
)

// BenchmarkIdleConnHeapByOwner attributes the live heap of idle plain-TCP
// connections, each subscribed to its own topic, to the allocation sites
// that hold it, per connection, from an exact heap profile
// (MemProfileRate 1). Only the broker's side is counted: the test's own
// client sockets live in the same process and are left out by their
// stacks (they run on the benchmark's goroutine). Allocations made before
// the first connection (the store, the loops, listeners) are left out by
// taking the difference of two profiles.
//
//	go test ./server -run '^$' -bench BenchmarkIdleConnHeapByOwner -benchtime 1x -v
//
// It reports the broker's bytes per connection (B/conn) and logs each
// site's bytes and objects per connection, largest first.
func BenchmarkIdleConnHeapByOwner(b *testing.B) {
	const n = 4000
	old := runtime.MemProfileRate
	runtime.MemProfileRate = 1
	defer func() { runtime.MemProfileRate = old }()
	_, addr := startBroker(b, func(o *Options) { o.Durability = DurabilityNone })
	for range b.N {
		runtime.GC()
		runtime.GC()
		before := heapBySite()
		conns := dialIdleSubscribed(b, addr, n, "idle")
		settledGoroutines()
		runtime.GC()
		runtime.GC()
		after := heapBySite()
		var total int64
		type row struct {
			site         string
			bytes, count int64
		}
		var rows []row
		for k, a := range after {
			d := a.bytes - before[k].bytes
			c := a.count - before[k].count
			if d == 0 {
				continue
			}
			total += d
			rows = append(rows, row{k, d, c})
		}
		sort.Slice(rows, func(i, j int) bool { return rows[i].bytes > rows[j].bytes })
		var sb strings.Builder
		for _, r := range rows {
			if per := float64(r.bytes) / n; per >= 1 {
				fmt.Fprintf(&sb, "\n  %7.1f B %5.2f obj  %s", per, float64(r.count)/n, r.site)
			}
		}
		b.ReportMetric(float64(total)/n, "B/conn")
		b.Logf("broker heap per idle subscribed plain-TCP connection: %.1f B (n=%d)%s", float64(total)/n, n, sb.String())
		for _, c := range conns {
			_ = c.Close()
		}
	}
}

// dialIdleSubscribed opens n 3.1.1 connections to addr, each CONNECTed
// (clean session, keepalive 600 s) and SUBSCRIBEd at QoS 1 to its own
// topic, as tern bench conn --subscribe does, and returns them.
func dialIdleSubscribed(tb testing.TB, addr string, n int, prefix string) []net.Conn {
	tb.Helper()
	conns := make([]net.Conn, 0, n)
	reply := make([]byte, 9) // CONNACK (4) + SUBACK (5)
	for k := range n {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			tb.Fatal(err)
		}
		p := codec.Connect{ProtocolName: []byte("MQTT"), ProtocolVersion: 4, CleanStart: true, KeepAlive: 600,
			ClientID: fmt.Appendf(nil, "%s-%06d", prefix, k)}
		s := codec.Subscribe{PacketID: 1, Subscriptions: []codec.Subscription{{Filter: fmt.Appendf(nil, "devices/%06d/cmd", k), QoS: 1}}}
		if _, err := c.Write(s.Append(p.Append(nil), 4)); err != nil {
			tb.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		for got := 0; got < len(reply); {
			m, err := c.Read(reply[got:])
			if err != nil {
				tb.Fatal(err)
			}
			got += m
		}
		conns = append(conns, c)
	}
	return conns
}

type siteUse struct{ bytes, count int64 }

// heapBySite sums the in-use heap by allocation site: the innermost frame
// of Tern or gnet, prefixed by what the runtime allocated there (a map's
// table, a slice's growth, a string) when the allocation happened inside
// the runtime. Allocations on stacks that run through a test function
// (the test's own clients) are left out.
func heapBySite() map[string]siteUse {
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
	out := map[string]siteUse{}
	for _, r := range recs {
		if r.InUseBytes() == 0 && r.InUseObjects() == 0 {
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
		if strings.Contains(stack, "testing.") || strings.Contains(stack, "pebble") {
			continue
		}
		site := "other"
		how := ""
		for _, fn := range names {
			switch {
			case strings.HasPrefix(fn, "runtime.") || strings.HasPrefix(fn, "internal/runtime/"):
				if how == "" {
					switch {
					case strings.Contains(fn, "map") || strings.Contains(fn, "maps."):
						how = "map "
					case strings.Contains(fn, "growslice"):
						how = "slice growth "
					case strings.Contains(fn, "string") || strings.Contains(fn, "concat"):
						how = "string "
					}
				}
				continue
			case strings.Contains(fn, "github.com/ternmq/tern/"), strings.Contains(fn, "panjf2000/gnet"):
				site = fn[strings.LastIndex(fn, "/")+1:]
			default:
				continue
			}
			break
		}
		size := int64(0)
		if r.InUseObjects() > 0 {
			size = r.InUseBytes() / r.InUseObjects()
		}
		key := fmt.Sprintf("%s%s (%d B objects)", how, site, size)
		u := out[key]
		u.bytes += r.InUseBytes()
		u.count += r.InUseObjects()
		out[key] = u
	}
	return out
}

// TestClientStructSize pins the per-connection structs at their
// allocator size classes: a field added to client or session costs every
// idle device of a fleet the next size class (client 112 → 128 bytes,
// session 112 → 128), so such a change should be deliberate — move the
// field behind client.cold or session.f instead.
func TestClientStructSize(t *testing.T) {
	if unsafe.Sizeof(uintptr(0)) != 8 {
		t.Skip("sizes are for 64-bit platforms")
	}
	if n := unsafe.Sizeof(client{}); n > 112 {
		t.Errorf("client is %d bytes, over the 112-byte size class", n)
	}
	if n := unsafe.Sizeof(session{}); n > 112 {
		t.Errorf("session is %d bytes, over the 112-byte size class", n)
	}
}

// BenchmarkConnectStorm connects b.N clients (3.1.1, clean session, each
// subscribing to its own topic), 256 at a time, to an in-process broker
// and reports connects/s and the CONNACK latency p99 (from the dial). The
// clients run in the same process, so the rate is the pair's; its use is a
// CPU profile of the broker's connect path:
//
//	go test ./server -run '^$' -bench BenchmarkConnectStorm -benchtime 5000x -cpuprofile cpu.out
//
// tools/quietbench/storm.sh measures a broker in its own process against
// mosquitto.
func BenchmarkConnectStorm(b *testing.B) {
	_, addr := startBroker(b, func(o *Options) { o.Durability = DurabilityNone })
	const parallel = 256
	lat := make([]time.Duration, b.N)
	conns := make([]net.Conn, b.N)
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for range parallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			reply := make([]byte, 9)
			for {
				k := int(next.Add(1) - 1)
				if k >= b.N {
					return
				}
				t0 := time.Now()
				c, err := net.Dial("tcp", addr)
				if err != nil {
					b.Error(err)
					return
				}
				p := codec.Connect{ProtocolName: []byte("MQTT"), ProtocolVersion: 4, CleanStart: true, KeepAlive: 600,
					ClientID: fmt.Appendf(nil, "storm-%06d", k)}
				s := codec.Subscribe{PacketID: 1, Subscriptions: []codec.Subscription{{Filter: fmt.Appendf(nil, "storm/%06d", k), QoS: 1}}}
				_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
				if _, err := c.Write(s.Append(p.Append(nil), 4)); err != nil {
					b.Error(err)
					return
				}
				if _, err := io.ReadFull(c, reply); err != nil {
					b.Error(err)
					return
				}
				lat[k] = time.Since(t0)
				conns[k] = c
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "connects/s")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
	for _, c := range conns {
		if c != nil {
			_ = c.Close()
		}
	}
}
