package server

import (
	"bufio"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/ternmq/tern/codec"
	"github.com/ternmq/tern/internal/mqtttest"
)

// startBroker runs a real broker on a loopback port for the test's lifetime.
// testTLSEngine is the TLS engine startBroker gives every broker
// (TERN_TEST_TLS_ENGINE=loops runs the whole suite on server/tlsloop);
// tests that compare the engines set Options.TLSEngine themselves.
var testTLSEngine = os.Getenv("TERN_TEST_TLS_ENGINE")

// testWSEngine is the WebSocket engine startBroker gives every broker
// (TERN_TEST_WS_ENGINE=stdnet runs the whole suite on server/stdnet's
// WebSocket path; the default is loops).
var testWSEngine = os.Getenv("TERN_TEST_WS_ENGINE")

func startBroker(t testing.TB, tweak func(*Options)) (*Server, string) {
	t.Helper()
	level := slog.LevelWarn
	if os.Getenv("TERN_TEST_LOG") != "" {
		level = slog.LevelDebug
	}
	opts := Options{
		Listeners:  []string{"127.0.0.1:0"},
		DataDir:    t.TempDir(),
		EventLoops: 2,
		Logger:     slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})),
	}
	opts.TLSEngine = testTLSEngine
	opts.WebSocketEngine = testWSEngine
	if tweak != nil {
		tweak(&opts)
	}
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- s.Serve() }()
	liveMu.Lock()
	live[s] = true
	liveMu.Unlock()
	select {
	case <-s.Ready():
	case <-time.After(5 * time.Second):
		t.Fatal("broker did not start")
	}
	if len(s.Addrs()) == 0 {
		t.Fatalf("broker has no address: %v", <-errc)
	}
	t.Cleanup(func() {
		liveMu.Lock()
		delete(live, s)
		liveMu.Unlock()
		if err := s.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
		select {
		case err := <-errc:
			if err != nil {
				t.Errorf("serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return after Close")
		}
	})
	return s, s.Addrs()[0].String()
}

// received collects messages delivered to a paho client.
type received struct {
	mu   sync.Mutex
	msgs []mqtt.Message
	ch   chan struct{}
}

func newReceived() *received { return &received{ch: make(chan struct{}, 1<<16)} }

func (r *received) handler(_ mqtt.Client, m mqtt.Message) {
	r.mu.Lock()
	r.msgs = append(r.msgs, m)
	r.mu.Unlock()
	select {
	case r.ch <- struct{}{}:
	default:
	}
}

func (r *received) snapshot() []mqtt.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]mqtt.Message(nil), r.msgs...)
}

// waitN waits until at least n messages arrived.
func (r *received) waitN(t testing.TB, n int, d time.Duration) []mqtt.Message {
	t.Helper()
	deadline := time.After(d)
	for {
		if got := r.snapshot(); len(got) >= n {
			return got
		}
		select {
		case <-r.ch:
		case <-deadline:
			got := r.snapshot()
			t.Fatalf("got %d messages, want %d", len(got), n)
			return got
		}
	}
}

// quiet asserts that no further message arrives for d beyond the n already seen.
func (r *received) quiet(t testing.TB, n int, d time.Duration) {
	t.Helper()
	time.Sleep(d)
	if got := r.snapshot(); len(got) != n {
		var extra []string
		for _, m := range got[min(n, len(got)):] {
			extra = append(extra, fmt.Sprintf("%s %q qos %d dup %v id %d", m.Topic(), m.Payload(), m.Qos(), m.Duplicate(), m.MessageID()))
		}
		t.Fatalf("got %d messages, want exactly %d; after the first %d: %v", len(got), n, n, extra)
	}
}

type pahoOpt func(*mqtt.ClientOptions)

// pahoClient connects a paho 3.1.1 client.
func pahoClient(t testing.TB, addr, id string, opts ...pahoOpt) mqtt.Client {
	t.Helper()
	o := mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).
		SetAutoReconnect(false).SetConnectRetry(false).SetProtocolVersion(4).
		SetConnectTimeout(5 * time.Second).SetWriteTimeout(5 * time.Second)
	for _, f := range opts {
		f(o)
	}
	c := mqtt.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("connect %s: %v", id, tok.Error())
	}
	t.Cleanup(func() {
		if c.IsConnected() {
			c.Disconnect(50)
		}
	})
	return c
}

func wait(t testing.TB, tok mqtt.Token, what string) {
	t.Helper()
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("%s: %v (timed out: %v)", what, tok.Error(), !tok.WaitTimeout(0))
	}
}

func subscribe(t testing.TB, c mqtt.Client, filter string, qos byte, r *received) {
	t.Helper()
	wait(t, c.Subscribe(filter, qos, r.handler), "subscribe "+filter)
}

// rawConn is a bare MQTT client for protocol-level tests: a
// mqtttest.Conn (which does the framing, deadlines and decoding) bound to
// the test, so every helper fails the test instead of returning an error.
type rawConn struct {
	t    testing.TB
	c    net.Conn
	r    *bufio.Reader // unused: reads go through mc; kept until tls_test.go uses rawOver
	vers byte          // protocol level; connect sets it, tests may set it before a hand-made CONNECT
	mc   *mqtttest.Conn
}

func dialRaw(t testing.TB, addr string) *rawConn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, mqtttest.DefaultTimeout)
	if err != nil {
		t.Fatal(err)
	}
	return rawOver(t, nc)
}

// rawOver wraps an established connection (TLS, WebSocket…) as a rawConn.
func rawOver(t testing.TB, nc net.Conn) *rawConn {
	mc := mqtttest.New(nc)
	t.Cleanup(func() { _ = mc.Close() })
	return &rawConn{t: t, c: nc, vers: codec.Version311, mc: mc}
}

// conn returns the mqtttest.Conn over r.c (creating it for a rawConn built
// as a literal around an existing connection) with r.vers as its version.
func (r *rawConn) conn() *mqtttest.Conn {
	if r.mc == nil {
		r.mc = mqtttest.New(r.c)
	}
	r.mc.Version = r.vers
	return r.mc
}

func (r *rawConn) send(b []byte) {
	r.t.Helper()
	if err := r.conn().Write(b); err != nil {
		r.t.Fatalf("write: %v", err)
	}
}

// connect sends CONNECT and expects CONNACK with the given return code.
func (r *rawConn) connect(p codec.Connect, wantCode codec.ReasonCode) codec.Connack {
	r.t.Helper()
	ack, err := r.conn().Connect(p)
	if err != nil {
		r.t.Fatal(err)
	}
	r.vers = r.mc.Version
	if ack.ReasonCode != wantCode {
		r.t.Fatalf("CONNACK code %#x, want %#x", ack.ReasonCode, wantCode)
	}
	return *ack
}

// read returns the next packet or fails the test.
func (r *rawConn) read(d time.Duration) (codec.FixedHeader, []byte) {
	r.t.Helper()
	h, body, err := r.tryRead(d)
	if err != nil {
		r.t.Fatalf("read: %v", err)
	}
	return h, body
}

// tryRead returns the next packet, or an error (mqtttest.IsClosed when the
// broker closed, mqtttest.ErrTimeout after d).
func (r *rawConn) tryRead(d time.Duration) (codec.FixedHeader, []byte, error) {
	p, err := r.conn().ReadPacket(time.Now().Add(d))
	return p.Header, p.Body, err
}

// expectClosed asserts the broker closes the connection within d (after
// optionally sending some packets, whose headers are returned).
func (r *rawConn) expectClosed(d time.Duration) []codec.FixedHeader {
	r.t.Helper()
	var got []codec.FixedHeader
	for _, p := range r.untilClosed(d) {
		got = append(got, p.h)
	}
	return got
}

func (r *rawConn) publish(p codec.Publish) { r.send(p.Append(nil, r.vers)) }

func (r *rawConn) readPublish(d time.Duration) codec.Publish {
	r.t.Helper()
	h, body := r.read(d)
	if h.Type != codec.PUBLISH {
		r.t.Fatalf("want PUBLISH, got %s", mqtttest.TypeName(h.Type))
	}
	var p codec.Publish
	if err := p.Decode(h, body, r.vers); err != nil {
		r.t.Fatal(err)
	}
	return p
}

func (r *rawConn) readAck(d time.Duration, typ codec.PacketType) codec.Ack {
	r.t.Helper()
	h, body := r.read(d)
	if h.Type != typ {
		r.t.Fatalf("want %s, got %s", mqtttest.TypeName(typ), mqtttest.TypeName(h.Type))
	}
	var a codec.Ack
	if err := a.Decode(h, body, r.vers); err != nil {
		r.t.Fatal(err)
	}
	return a
}

// subscribe subscribes to one filter and returns the SUBACK's codes; the
// SUBACK must be the next packet.
func (r *rawConn) subscribe(id uint16, filter string, qos byte) []codec.ReasonCode {
	r.t.Helper()
	ack, err := r.conn().Subscribe(id, nil, codec.Subscription{Filter: []byte(filter), QoS: qos})
	if err != nil {
		r.t.Fatal(err)
	}
	return ack.ReasonCodes
}

func topicN(prefix string, i int) string { return fmt.Sprintf("%s/%d", prefix, i) }

var (
	liveMu sync.Mutex
	live   = map[*Server]bool{}
)

func liveServers() []*Server {
	liveMu.Lock()
	defer liveMu.Unlock()
	var out []*Server
	for s := range live {
		out = append(out, s)
	}
	return out
}

func quietLogger() *slog.Logger {
	level := slog.LevelWarn
	if os.Getenv("TERN_TEST_LOG") != "" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

// waitOffline waits until the broker has processed the end of clientID's
// connection (its session has no owner). A client's DISCONNECT is handled on
// its own loop: a test that publishes right after disconnecting would
// otherwise race it and may see the message sent (in flight) before the
// session went offline.
func waitOffline(t testing.TB, srv *Server, clientID string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		s := srv.sessions.get(clientID)
		if s == nil {
			return
		}
		s.mu.Lock()
		offline := s.owner == nil
		s.mu.Unlock()
		if offline {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("session %q still connected after 5 s", clientID)
}
