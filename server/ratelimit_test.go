package server

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/ternmq/tern/codec"
)

func TestGate(t *testing.T) {
	g := newGate(10, 3) // 100ms a unit, 3 at once
	var tat int64
	now := int64(time.Hour)
	for i := range 3 {
		if w := g.take(&tat, now, 1); w != 0 {
			t.Fatalf("burst unit %d refused (wait %v)", i, w)
		}
	}
	w := g.take(&tat, now, 1)
	if w < 99*time.Millisecond || w > 101*time.Millisecond {
		t.Fatalf("fourth unit: wait %v, want 100ms", w)
	}
	if w := g.take(&tat, now+int64(w), 1); w != 0 {
		t.Fatalf("after the wait: refused again (%v)", w)
	}
	// A request larger than the burst passes on a full bucket only.
	g = newGate(100, 100)
	tat = 0
	if w := g.take(&tat, now, 500); w != 0 {
		t.Fatalf("oversized on a full bucket: wait %v", w)
	}
	if w := g.take(&tat, now, 1); w == 0 {
		t.Fatal("the oversized request was not charged")
	}
	if (gate{}).on() || !g.on() {
		t.Fatal("on()")
	}
}

// dialUntilRefused opens n raw connections and reports how many the broker
// closed before any CONNECT.
func dialCount(t *testing.T, addr string, n int) (open []net.Conn, closed int) {
	t.Helper()
	for range n {
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { nc.Close() })
		open = append(open, nc)
	}
	kept := open[:0]
	for _, nc := range open {
		_ = nc.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		if _, err := nc.Read(make([]byte, 1)); err != nil && !isTimeout(err) {
			closed++
			continue
		}
		kept = append(kept, nc)
	}
	return kept, closed
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// Over a listener's max_connection_rate, new connections are closed at
// once (before CONNECT) and counted; another listener is not affected.
func TestListenerConnectionRate(t *testing.T) {
	srv, addr := startBroker(t, func(o *Options) {
		o.Listeners = []string{"127.0.0.1:0", "127.0.0.2:0"}
		o.ListenerSettings = map[string]ListenerSettings{"127.0.0.1:0": {MaxConnectionRate: 0.5, ConnectionBurst: 2}}
	})
	_, closed := dialCount(t, addr, 5)
	if closed != 3 {
		t.Fatalf("%d of 5 connections closed, want 3 (burst 2, then one per 2s)", closed)
	}
	if n := srv.Refused()["max_connection_rate"]; n != 3 {
		t.Errorf("max_connection_rate refusals: %d, want 3", n)
	}
	other := srv.Addrs()[1].String()
	if _, closed := dialCount(t, other, 5); closed != 0 {
		t.Errorf("the listener without settings closed %d connections", closed)
	}
	// Still usable by a real client once the bucket refills.
	time.Sleep(2100 * time.Millisecond)
	pahoClient(t, addr, "after-rate")
}

// A listener's max_connections closes connections over it; closing one
// makes room again.
func TestListenerMaxConnections(t *testing.T) {
	srv, addr := startBroker(t, func(o *Options) {
		o.ListenerSettings = map[string]ListenerSettings{"127.0.0.1:0": {MaxConnections: 2}}
	})
	open, closed := dialCount(t, addr, 4)
	if closed != 2 || len(open) != 2 {
		t.Fatalf("%d closed, %d open; want 2 and 2", closed, len(open))
	}
	if n := srv.Refused()["listener_max_connections"]; n != 2 {
		t.Errorf("listener_max_connections refusals: %d, want 2", n)
	}
	open[0].Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, closed := dialCount(t, addr, 1); closed == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no room after a connection closed")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestListenerSettingsValidation(t *testing.T) {
	o := Options{
		Listeners:          []string{"127.0.0.1:1883"},
		WebSocketListeners: []WebSocketListener{{Addr: "127.0.0.1:8080"}},
		ListenerSettings: map[string]ListenerSettings{
			"127.0.0.1:9999": {},
			"127.0.0.1:8080": {ProxyProtocol: true},
			"127.0.0.1:1883": {MaxConnections: -1, MaxConnectionRate: -2, ConnectionBurst: -3},
		},
		Limits: Limits{MaxPublishRate: -1, MaxPublishBytesRate: -1},
	}
	o.EnsureDefaults()
	err := o.Validate()
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{
		`listener_settings["127.0.0.1:9999"]: names no configured listener`,
		`.max_connections: must not be negative`, `.max_connection_rate:`, `.connection_burst:`,
		`limits.max_publish_rate:`, `limits.max_publish_bytes_rate:`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in:\n%v", want, err)
		}
	}
	if strings.Contains(err.Error(), "proxy_protocol") { // allowed on a WebSocket listener
		t.Errorf("proxy_protocol refused on a WebSocket listener:\n%v", err)
	}
}

// Over limits.max_publish_rate a QoS 1 publisher is paced, not dropped:
// every message arrives, at the configured rate, and the pauses are
// counted.
func TestPublishRatePacesClient(t *testing.T) {
	const rate, n = 20, 60
	srv, addr := startBroker(t, func(o *Options) { o.Limits.MaxPublishRate = rate })
	got := newReceived()
	subscribe(t, pahoClient(t, addr, "rate-sub"), "rate/#", 1, got)
	var lost atomic.Bool
	pub := pahoClient(t, addr, "rate-pub", func(o *mqtt.ClientOptions) {
		o.SetConnectionLostHandler(func(mqtt.Client, error) { lost.Store(true) })
	})
	start := time.Now()
	toks := make([]mqtt.Token, n)
	for i := range n {
		toks[i] = pub.Publish("rate/x", 1, false, fmt.Sprint(i))
	}
	for i, tok := range toks {
		if !tok.WaitTimeout(20*time.Second) || tok.Error() != nil {
			t.Fatalf("publish %d: %v", i, tok.Error())
		}
	}
	took := time.Since(start)
	got.waitN(t, n, 10*time.Second)
	// Burst of 20, then 40 more at 20/s: at least 2s.
	if min := time.Duration(n-rate) * time.Second / rate; took < min*9/10 {
		t.Errorf("%d messages took %v, want at least %v at %d/s", n, took, min, rate)
	}
	if lost.Load() {
		t.Error("the paced publisher was disconnected")
	}
	if srv.Refused()["max_publish_rate"] == 0 {
		t.Error("pauses not counted")
	}
	t.Logf("%d QoS 1 messages in %v at max_publish_rate %d", n, took.Round(time.Millisecond), rate)
}

// limits.max_publish_bytes_rate paces by PUBLISH bytes.
func TestPublishBytesRatePacesClient(t *testing.T) {
	const bps, size, n = 20000, 1000, 40 // 40 KB at 20 KB/s after a 20 KB burst: ≥ 1s
	_, addr := startBroker(t, func(o *Options) { o.Limits.MaxPublishBytesRate = bps })
	got := newReceived()
	subscribe(t, pahoClient(t, addr, "bytes-sub"), "bytes/#", 1, got)
	pub := pahoClient(t, addr, "bytes-pub")
	payload := strings.Repeat("x", size)
	start := time.Now()
	for i := range n {
		wait(t, pub.Publish("bytes/x", 1, false, payload), fmt.Sprint("publish ", i))
	}
	took := time.Since(start)
	got.waitN(t, n, 10*time.Second)
	if took < 900*time.Millisecond {
		t.Errorf("%d×%d bytes took %v at %d bytes/s: not paced", n, size, took, bps)
	}
}

// The publish-rate check and per-listener settings add no allocation per
// message (the buckets are two integers on the connection).
func TestAllocsPerMessageWithRateLimits(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	per := allocsPerMessage(t, 1, 1, 500, 5000, func(o *Options) {
		o.Limits.MaxPublishRate = 1e9 // checked on every PUBLISH, never reached
		o.Limits.MaxPublishBytesRate = 1 << 50
		o.ListenerSettings = map[string]ListenerSettings{"127.0.0.1:0": {MaxConnections: 100, MaxConnectionRate: 1000}}
	})
	t.Logf("%.3f allocations per message with publish rate limits on", per)
	if per > maxAllocsPerMessage+allocSlack {
		t.Fatalf("%.3f allocations per message, budget %d", per, maxAllocsPerMessage)
	}
}

func BenchmarkGateTake(b *testing.B) {
	g := newGate(1e9, 1e9)
	var tat int64
	now := time.Now().UnixNano()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if g.take(&tat, now+int64(i), 100) != 0 {
			tat = 0
		}
	}
}

// Listener settings apply to WebSocket listeners too (they run on the
// standard-library transport): the second connection over max_connections
// is closed before it can CONNECT.
func TestListenerMaxConnectionsWebSocket(t *testing.T) {
	srv, _ := startBroker(t, func(o *Options) {
		o.WebSocketListeners = []WebSocketListener{{Addr: "127.0.0.1:0"}}
		o.ListenerSettings = map[string]ListenerSettings{"127.0.0.1:0": {MaxConnections: 1}}
	})
	ws := srv.WebSocketAddrs()[0].String()
	first, _, err := dialWS(t, ws, "/mqtt", nil)
	if err != nil {
		t.Fatal(err)
	}
	rawOver(t, first).connect(codec.Connect{ClientID: []byte("ws-1"), CleanStart: true, KeepAlive: 30}, 0)
	second, _, err := dialWS(t, ws, "/mqtt", nil)
	if err == nil {
		_ = second.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.Copy(io.Discard, second); err == nil {
			t.Fatal("second connection still open")
		}
	}
	if n := srv.Refused()["listener_max_connections"]; n != 1 {
		t.Fatalf("listener_max_connections refusals: %d, want 1", n)
	}
}

// A 5.0 client that keeps flooding QoS 0 while paced by the publish rate
// is disconnected with 0x96 Message rate too high once it has buffered
// what a paced publisher may.
func TestPublishRateFlooderGets0x96(t *testing.T) {
	_, addr := startBroker(t, func(o *Options) { o.Limits.MaxPublishRate = 10 })
	r, _ := dialRaw5(t, addr, codec.Connect{ClientID: []byte("flood"), CleanStart: true})
	one := (&codec.Publish{Topic: []byte("flood/x"), Payload: make([]byte, 4000)}).Append(nil, codec.Version5)
	blob := make([]byte, 0, 3<<20)
	for len(blob)+len(one) <= cap(blob) {
		blob = append(blob, one...)
	}
	go func() { _, _ = r.c.Write(blob) }() // 3 MiB: more than the 2 MiB a paced client may buffer
	r.expectDisconnect(codec.MessageRateTooHigh)
}

// Listener settings apply to TLS listeners on both TLS engines: over the
// listener's max_connections a TLS connection is closed before CONNECT.
func TestListenerMaxConnectionsTLS(t *testing.T) {
	forEachTLSEngine(t, func(t *testing.T, engine string) {
		cfg, pool := selfSigned(t)
		srv, _ := startBroker(t, func(o *Options) {
			o.TLSEngine = engine
			o.TLSListeners = []TLSListener{{Addr: "127.0.0.1:0", Config: cfg}}
			o.ListenerSettings = map[string]ListenerSettings{"127.0.0.1:0": {MaxConnections: 1}}
		})
		tlsAddr := srv.TLSAddrs()[0].String()
		dial := func(id string) (code byte, closed bool) {
			tc, err := tls.Dial("tcp", tlsAddr, &tls.Config{RootCAs: pool})
			if err != nil {
				return 0, true // refused during the handshake
			}
			t.Cleanup(func() { tc.Close() })
			p := codec.Connect{ProtocolName: []byte("MQTT"), ProtocolVersion: codec.Version311, ClientID: []byte(id), CleanStart: true, KeepAlive: 30}
			if _, err := tc.Write(p.Append(nil)); err != nil {
				return 0, true
			}
			return readConnack(t, tc)
		}
		if code, closed := dial("tls-1"); closed || code != 0 {
			t.Fatalf("first TLS connection: CONNACK %d closed %v", code, closed)
		}
		if _, closed := dial("tls-2"); !closed {
			t.Fatal("second TLS connection accepted over max_connections 1")
		}
		if n := srv.Refused()["listener_max_connections"]; n != 1 {
			t.Fatalf("listener_max_connections refusals: %d, want 1", n)
		}
	})
}
