package server

import (
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ternmq/tern/codec"
	"github.com/ternmq/tern/internal/mqtttest"
)

// wsBenchConns is how many idle connections BenchmarkWSIdleConnHeap
// opens: TERN_BENCH_WS_CONNS, default 1,000.
func wsBenchConns() int {
	if n, err := strconv.Atoi(os.Getenv("TERN_BENCH_WS_CONNS")); err == nil && n > 0 {
		return n
	}
	return 1000
}

// BenchmarkWSIdleConnHeap measures what an idle, subscribed MQTT-over-
// WebSocket connection costs on each engine: the broker's live heap per
// connection from an exact heap profile (the test's raw-socket clients
// left out by their stacks), goroutines per connection, and the process's
// RSS growth per connection (both ends of the sockets, so an upper bound).
//
//	go test ./server -run '^$' -bench BenchmarkWSIdleConnHeap -benchtime 1x
//	TERN_BENCH_WS_CONNS=5000 go test ./server -run '^$' -bench BenchmarkWSIdleConnHeap -benchtime 1x
func BenchmarkWSIdleConnHeap(b *testing.B) {
	for _, engine := range []string{WebSocketEngineStdnet, WebSocketEngineLoops} {
		b.Run(engine, func(b *testing.B) {
			n := wsBenchConns()
			old := runtime.MemProfileRate
			runtime.MemProfileRate = 1
			defer func() { runtime.MemProfileRate = old }()
			srv, _ := startBroker(b, func(o *Options) {
				o.WebSocketEngine = engine
				o.Durability = DurabilityNone
				o.WebSocketListeners = []WebSocketListener{{Addr: "127.0.0.1:0"}}
			})
			addr := srv.WebSocketAddrs()[0].String()
			for range b.N {
				settledGoroutines()
				runtime.GC()
				g0, rss0 := runtime.NumGoroutine(), rssBytes()
				conns := make([]*rawWS, 0, n)
				for i := range n {
					w, _ := dialRawWS(b, addr, nil, "")
					mc := mqtttest.New(w)
					if _, err := mc.Connect(codec.Connect{ClientID: []byte(topicN("wsheap", i)), CleanStart: true}); err != nil {
						b.Fatal(err)
					}
					if _, err := mc.Subscribe(1, nil, codec.Subscription{Filter: []byte(topicN("wsheap", i)), QoS: 1}); err != nil {
						b.Fatal(err)
					}
					w.br.Reset(w.Conn) // the test's read buffer is not the broker's
					conns = append(conns, w)
				}
				settledGoroutines()
				runtime.GC()
				runtime.GC()
				heap := wsBrokerHeap()
				goroutines := runtime.NumGoroutine() - g0
				rss := rssBytes() - rss0
				b.ReportMetric(float64(heap)/float64(n), "heap-B/conn")
				b.ReportMetric(float64(goroutines)/float64(n), "goroutines/conn")
				b.ReportMetric(float64(rss)/float64(n), "RSS-B/conn")
				b.Logf("%s, %d idle subscribed WebSocket connections: broker heap %d B/conn, %.2f goroutines/conn, process RSS +%d B/conn (both ends)",
					engine, n, heap/int64(n), float64(goroutines)/float64(n), rss/int64(n))
				for _, c := range conns {
					_ = c.Close()
				}
			}
		})
	}
}

// wsBrokerHeap sums the in-use heap allocated on the broker's side: stacks
// through the transports, gnet, net/http or the broker, not through the
// test's clients or the store.
func wsBrokerHeap() int64 {
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
	var total int64
	for _, r := range recs {
		inuse := r.InUseBytes()
		if inuse <= 0 {
			continue
		}
		frames := runtime.CallersFrames(r.Stack())
		var sb strings.Builder
		for {
			f, more := frames.Next()
			sb.WriteString(f.Function)
			sb.WriteByte(' ')
			if !more {
				break
			}
		}
		stack := sb.String()
		if strings.Contains(stack, "dialRawWS") || strings.Contains(stack, "mqtttest") || strings.Contains(stack, "BenchmarkWS") ||
			strings.Contains(stack, "startBroker") || strings.Contains(stack, "persist") || strings.Contains(stack, "pebble") ||
			!(strings.Contains(stack, "tern/server") || strings.Contains(stack, "gnet") || strings.Contains(stack, "net/http") ||
				strings.Contains(stack, "gorilla")) {
			continue
		}
		total += inuse
	}
	return total
}

// rssBytes is the process's resident set (Linux; 0 elsewhere).
func rssBytes() int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, _ := strconv.ParseInt(f[1], 10, 64)
	return pages * int64(os.Getpagesize())
}

// BenchmarkWSP2PQoS0 is point-to-point QoS 0 throughput, one publisher and
// one subscriber with 64-byte payloads, over plain TCP and over WebSocket
// on each engine (each PUBLISH in its own frame, as MQTT.js sends them).
// The clients are raw sockets writing pre-built bytes and counting packets
// in place, so allocs/op are the broker's (and the kernel's) per message.
//
//	go test ./server -run '^$' -bench BenchmarkWSP2PQoS0 -benchmem -benchtime 200000x
func BenchmarkWSP2PQoS0(b *testing.B) {
	for _, tr := range []string{"tcp", "ws-" + WebSocketEngineStdnet, "ws-" + WebSocketEngineLoops} {
		b.Run(tr, func(b *testing.B) {
			engine, ws := strings.CutPrefix(tr, "ws-")
			srv, addr := startBroker(b, func(o *Options) {
				o.Durability = DurabilityNone
				if ws {
					o.WebSocketEngine = engine
					o.WebSocketListeners = []WebSocketListener{{Addr: "127.0.0.1:0"}}
				}
			})
			dial := func(id string) net.Conn {
				if !ws {
					mc, err := mqtttest.Dial(addr)
					if err != nil {
						b.Fatal(err)
					}
					if _, err := mc.Connect(codec.Connect{ClientID: []byte(id), CleanStart: true}); err != nil {
						b.Fatal(err)
					}
					b.Cleanup(func() { mc.Close() })
					return mc.NetConn()
				}
				w, _ := dialRawWS(b, srv.WebSocketAddrs()[0].String(), nil, "")
				if _, err := mqtttest.New(w).Connect(codec.Connect{ClientID: []byte(id), CleanStart: true}); err != nil {
					b.Fatal(err)
				}
				return w.Conn
			}
			subC, pubC := dial("p2p-sub"), dial("p2p-pub")
			sub := subC
			if _, err := sub.Write(maybeFrame(ws, (&codec.Subscribe{PacketID: 1, Subscriptions: []codec.Subscription{{Filter: []byte("p2p"), QoS: 0}}}).Append(nil, codec.Version311))); err != nil {
				b.Fatal(err)
			}
			cnt := &packetCounter{ws: ws, buf: make([]byte, 0, 1<<20), mq: make([]byte, 0, 1<<20)}
			_ = sub.SetReadDeadline(time.Now().Add(5 * time.Second))
			for cnt.packets < 1 { // the SUBACK
				if err := cnt.read(sub); err != nil {
					b.Fatal(err)
				}
			}
			one := maybeFrame(ws, (&codec.Publish{Topic: []byte("p2p"), Payload: make([]byte, 64)}).Append(nil, codec.Version311))
			const batch = 100
			burst := make([]byte, 0, batch*len(one))
			for range batch {
				burst = append(burst, one...)
			}
			pub := pubC
			errc := make(chan error, 1)
			var got atomic.Int64
			const window = 20000 // in flight at most: QoS 0 is not dropped for want of flow control
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			go func() {
				defer close(errc)
				for s := 0; s < b.N; s += batch {
					for int64(s)-got.Load() > window {
						time.Sleep(20 * time.Microsecond)
					}
					k := min(batch, b.N-s)
					if _, err := pub.Write(burst[:k*len(one)]); err != nil {
						errc <- err
						return
					}
				}
			}()
			deadline := time.Now().Add(20 * time.Second)
			dropped := 0
			for int(got.Load())+dropped < b.N {
				_ = sub.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
				if err := cnt.read(sub); err != nil {
					// QoS 0 the broker dropped (stdnet: no back-pressure
					// between its reader goroutines and the loops) never comes.
					dropped = int(srv.Stats().MessagesDropped)
					if ne, ok := err.(net.Error); !ok || !ne.Timeout() || time.Now().After(deadline) {
						b.Fatalf("after %d of %d: %v (dropped %d)", got.Load(), b.N, err, dropped)
					}
				}
				got.Store(int64(cnt.packets - 1))
			}
			el := time.Since(start)
			b.StopTimer()
			if err := <-errc; err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(got.Load())/el.Seconds(), "msgs/s")
			b.ReportMetric(float64(dropped), "dropped")
		})
	}
}

// maybeFrame wraps p in one masked binary frame for WebSocket.
func maybeFrame(ws bool, p []byte) []byte {
	if !ws {
		return p
	}
	return wsFrame(0x2, true, false, false, p)
}

// packetCounter counts MQTT packets in a socket's bytes, unframing the
// broker's WebSocket frames first, without allocating once its buffers
// are large enough.
type packetCounter struct {
	ws      bool
	buf     []byte // raw bytes not yet unframed
	mq      []byte // MQTT bytes not yet counted
	packets int
}

func (p *packetCounter) read(c net.Conn) error {
	if len(p.buf) == cap(p.buf) {
		return fmt.Errorf("counter buffer full")
	}
	n, err := c.Read(p.buf[len(p.buf):cap(p.buf)])
	p.buf = p.buf[:len(p.buf)+n]
	if err != nil {
		return err
	}
	if !p.ws {
		p.mq, p.buf = append(p.mq, p.buf...), p.buf[:0]
	} else {
		off := 0
		for {
			b := p.buf[off:]
			if len(b) < 2 {
				break
			}
			h, l := 2, int(b[1]&0x7F)
			switch l {
			case 126:
				if len(b) < 4 {
					break
				}
				h, l = 4, int(binary.BigEndian.Uint16(b[2:]))
			case 127:
				if len(b) < 10 {
					break
				}
				h, l = 10, int(binary.BigEndian.Uint64(b[2:]))
			}
			if len(b) < h+l || (l >= 126 && h == 2) {
				break
			}
			p.mq = append(p.mq, b[h:h+l]...)
			off += h + l
		}
		p.buf = p.buf[:copy(p.buf, p.buf[off:])]
	}
	off := 0
	for {
		need := packetSize(p.mq[off:])
		if need == 0 || len(p.mq)-off < need {
			break
		}
		off += need
		p.packets++
	}
	p.mq = p.mq[:copy(p.mq, p.mq[off:])]
	return nil
}
