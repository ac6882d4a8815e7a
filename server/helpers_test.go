package server

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/ternmq/tern/codec"
)

// startBroker runs a real broker on a loopback port for the test's lifetime.
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
		t.Fatalf("got %d messages, want exactly %d", len(got), n)
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

// rawConn is a bare TCP MQTT client for protocol-level tests.
type rawConn struct {
	t    testing.TB
	c    net.Conn
	r    *bufio.Reader
	buf  []byte
	vers byte
}

func dialRaw(t testing.TB, addr string) *rawConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawConn{t: t, c: c, r: bufio.NewReader(c), vers: codec.Version311}
}

func (r *rawConn) send(b []byte) {
	r.t.Helper()
	_ = r.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := r.c.Write(b); err != nil {
		r.t.Fatalf("write: %v", err)
	}
}

// connect sends CONNECT and expects CONNACK with the given return code.
func (r *rawConn) connect(p codec.Connect, wantCode byte) codec.Connack {
	r.t.Helper()
	if p.ProtocolVersion == 0 {
		p.ProtocolVersion = codec.Version311
	}
	if p.ProtocolName == nil {
		p.ProtocolName = []byte("MQTT")
		if p.ProtocolVersion == codec.Version31 {
			p.ProtocolName = []byte("MQIsdp")
		}
	}
	r.vers = p.ProtocolVersion
	r.send(p.Append(nil))
	h, body := r.read(5 * time.Second)
	if h.Type != codec.CONNACK {
		r.t.Fatalf("want CONNACK, got type %d", h.Type)
	}
	var ack codec.Connack
	if err := ack.Decode(h, body, r.vers); err != nil {
		r.t.Fatal(err)
	}
	if ack.ReasonCode != wantCode {
		r.t.Fatalf("CONNACK code %#x, want %#x", ack.ReasonCode, wantCode)
	}
	return ack
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

// tryRead returns the next packet, or an error (io.EOF when the broker closed).
func (r *rawConn) tryRead(d time.Duration) (codec.FixedHeader, []byte, error) {
	_ = r.c.SetReadDeadline(time.Now().Add(d))
	for {
		if len(r.buf) > 0 {
			h, body, n, err := codec.ReadPacket(r.buf, 0)
			if err == nil {
				out := append([]byte(nil), body...)
				r.buf = r.buf[n:]
				return h, out, nil
			}
			if err != codec.ErrIncomplete {
				return h, nil, err
			}
		}
		chunk := make([]byte, 4096)
		n, err := r.r.Read(chunk)
		r.buf = append(r.buf, chunk[:n]...)
		if err != nil && n == 0 {
			return codec.FixedHeader{}, nil, err
		}
	}
}

// expectClosed asserts the broker closes the connection (after optionally
// sending some packets, which are returned).
func (r *rawConn) expectClosed(d time.Duration) []codec.FixedHeader {
	r.t.Helper()
	var got []codec.FixedHeader
	for {
		h, _, err := r.tryRead(d)
		if err == nil {
			got = append(got, h)
			continue
		}
		if err == io.EOF || isReset(err) {
			return got
		}
		r.t.Fatalf("connection not closed: %v (packets seen %v)", err, got)
	}
}

func isReset(err error) bool {
	if ne, ok := err.(*net.OpError); ok {
		return !ne.Timeout()
	}
	return false
}

func (r *rawConn) publish(p codec.Publish) { r.send(p.Append(nil, r.vers)) }

func (r *rawConn) readPublish(d time.Duration) codec.Publish {
	r.t.Helper()
	h, body := r.read(d)
	if h.Type != codec.PUBLISH {
		r.t.Fatalf("want PUBLISH, got type %d", h.Type)
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
		r.t.Fatalf("want packet type %d, got %d", typ, h.Type)
	}
	var a codec.Ack
	if err := a.Decode(h, body, r.vers); err != nil {
		r.t.Fatal(err)
	}
	return a
}

func (r *rawConn) subscribe(id uint16, filter string, qos byte) []byte {
	r.t.Helper()
	s := codec.Subscribe{PacketID: id, Subscriptions: []codec.Subscription{{Filter: []byte(filter), QoS: qos}}}
	r.send(s.Append(nil, r.vers))
	h, body := r.read(5 * time.Second)
	if h.Type != codec.SUBACK {
		r.t.Fatalf("want SUBACK, got %d", h.Type)
	}
	var ack codec.Suback
	if err := ack.Decode(h, body, r.vers); err != nil {
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
