package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/ternmq/tern/codec"
)

// inprocCollector gathers what an in-process handler receives.
type inprocCollector struct {
	mu   sync.Mutex
	msgs []Message
	ch   chan struct{}
}

func newInprocCollector() *inprocCollector { return &inprocCollector{ch: make(chan struct{}, 1)} }

func (r *inprocCollector) handle(m *Message) {
	cp := *m
	cp.Payload = append([]byte(nil), m.Payload...)
	cp.CorrelationData = append([]byte(nil), m.CorrelationData...)
	r.mu.Lock()
	r.msgs = append(r.msgs, cp)
	r.mu.Unlock()
	select {
	case r.ch <- struct{}{}:
	default:
	}
}

func (r *inprocCollector) waitN(t testing.TB, n int, d time.Duration) []Message {
	t.Helper()
	deadline := time.After(d)
	for {
		r.mu.Lock()
		got := append([]Message(nil), r.msgs...)
		r.mu.Unlock()
		if len(got) >= n {
			return got
		}
		select {
		case <-r.ch:
		case <-deadline:
			t.Fatalf("in-process handler got %d messages, want %d", len(got), n)
		}
	}
}

func mustClient(t testing.TB, srv *Server, id string, o ClientOptions) *Client {
	t.Helper()
	c, err := srv.Client(id, o)
	if err != nil {
		t.Fatalf("Client(%q): %v", id, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// TestInprocQoS: an in-process client publishes at QoS 0, 1 and 2 to a
// network subscriber (paho) and receives a network publisher's messages at
// each QoS; QoS 2 arrives exactly once [MQTT-4.3.3-1].
func TestInprocQoS(t *testing.T) {
	srv, addr := startBroker(t, nil)
	for _, q := range []byte{0, 1, 2} {
		t.Run(fmt.Sprintf("qos%d", q), func(t *testing.T) {
			got := newInprocCollector()
			c := mustClient(t, srv, fmt.Sprintf("ip-%d", q), ClientOptions{})
			if err := c.Subscribe(fmt.Sprintf("in/%d/#", q), q, got.handle); err != nil {
				t.Fatal(err)
			}
			net := newReceived()
			p := pahoClient(t, addr, fmt.Sprintf("net-%d", q))
			subscribe(t, p, fmt.Sprintf("out/%d", q), q, net)

			for i := range 20 {
				if err := c.Publish(fmt.Sprintf("out/%d", q), []byte{byte(i)}, q, false); err != nil {
					t.Fatalf("publish %d: %v", i, err)
				}
				wait(t, p.Publish(fmt.Sprintf("in/%d/x", q), q, false, []byte{byte(i)}), "paho publish")
			}
			msgs := net.waitN(t, 20, 5*time.Second)
			in := got.waitN(t, 20, 5*time.Second)
			time.Sleep(100 * time.Millisecond)
			if q > 0 { // in order, none lost, none twice
				for i, m := range msgs {
					if m.Payload()[0] != byte(i) || m.Qos() != q {
						t.Fatalf("network message %d: payload %v qos %d", i, m.Payload(), m.Qos())
					}
				}
				for i, m := range got.waitN(t, 20, time.Second) {
					if m.Payload[0] != byte(i) || m.QoS != q || m.Topic != fmt.Sprintf("in/%d/x", q) {
						t.Fatalf("in-process message %d: %+v", i, m)
					}
				}
				if len(got.msgs) != 20 || len(net.snapshot()) != 20 {
					t.Fatalf("duplicates: in-process %d, network %d", len(got.msgs), len(net.snapshot()))
				}
			}
			_ = in
		})
	}
}

// TestInprocPublishAckAfterSync: a QoS 1 Publish returns only once the
// message for a persistent subscriber is in the store: after Publish
// returns, the broker is closed and reopened on the same directory and
// the subscriber resumes and gets every message.
func TestInprocPersistentAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	opts := func(o *Options) { o.DataDir = dir }
	srv, _ := startBrokerNoCleanup(t, opts)

	got := newInprocCollector()
	sub, err := srv.Client("durable-sub", ClientOptions{SessionExpiry: time.Hour,
		Subscriptions: []Subscription{{Filter: "cmd/#", QoS: 2, Handler: got.handle}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.Close(); err != nil { // offline: its queue fills in the store
		t.Fatal(err)
	}
	pub := mustClient(t, srv, "pub", ClientOptions{})
	for i := range 30 {
		q := byte(1 + i%2)
		if err := pub.Publish("cmd/dev", []byte{byte(i)}, q, false); err != nil {
			t.Fatal(err)
		}
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	srv2, _ := startBroker(t, opts)
	got2 := newInprocCollector()
	c := mustClient(t, srv2, "durable-sub", ClientOptions{SessionExpiry: time.Hour,
		Subscriptions: []Subscription{{Filter: "cmd/#", QoS: 2, Handler: got2.handle}}})
	msgs := got2.waitN(t, 30, 10*time.Second)
	for i, m := range msgs {
		if m.Payload[0] != byte(i) {
			t.Fatalf("message %d after restart has payload %d", i, m.Payload[0])
		}
	}
	time.Sleep(200 * time.Millisecond)
	if n := len(got2.waitN(t, 30, time.Second)); n != 30 {
		t.Fatalf("got %d messages after restart, want exactly 30 (QoS 2 never twice)", n)
	}
	if len(got.msgs) != 0 {
		t.Fatalf("the first incarnation got %d messages while offline", len(got.msgs))
	}
	_ = c
}

// startBrokerNoCleanup starts a broker the test closes itself.
func startBrokerNoCleanup(t testing.TB, tweak func(*Options)) (*Server, string) {
	t.Helper()
	opts := Options{Listeners: []string{"127.0.0.1:0"}, DataDir: t.TempDir(), EventLoops: 2,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if os.Getenv("TERN_TEST_LOG") != "" {
		opts.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if tweak != nil {
		tweak(&opts)
	}
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.Serve() }()
	<-s.Ready()
	return s, s.Addrs()[0].String()
}

// TestInprocSlowHandlerBackPressure: a handler that blocks holds the
// broker's deliveries within the client's Receive Maximum and the
// session's queue; the publisher (in-process, QoS 1, clean sessions) is
// paced once the queue is over its soft limit instead of anything
// growing without bound, and everything arrives once the handler goes on.
func TestInprocSlowHandlerBackPressure(t *testing.T) {
	srv, _ := startBroker(t, func(o *Options) {
		o.MaxQueuedMessages = 50
		o.Durability = DurabilityNone
	})
	release := make(chan struct{})
	var handled atomic.Int64
	_ = mustClient(t, srv, "slow", ClientOptions{ReceiveMaximum: 4,
		Subscriptions: []Subscription{{Filter: "load", QoS: 1, Handler: func(*Message) {
			<-release
			handled.Add(1)
		}}}})
	pub := mustClient(t, srv, "fast", ClientOptions{})
	const n = 400
	var sent atomic.Int64
	pubDone := make(chan error, 1)
	go func() {
		for range n {
			if err := pub.Publish("load", make([]byte, 100), 1, false); err != nil {
				pubDone <- err
				return
			}
			sent.Add(1)
		}
		pubDone <- nil
	}()
	time.Sleep(500 * time.Millisecond)
	s := sent.Load()
	if s >= n {
		t.Fatalf("publisher finished %d publishes with the handler blocked: not paced", s)
	}
	// Bounded: handler holds 1, the window 4, the queue at most its hard
	// bound (2 × 50), the publisher's own window (64) at most.
	if s > 1+4+2*50+64 {
		t.Fatalf("%d publishes acknowledged while the handler was blocked", s)
	}
	srv.sessions.shard("slow").mu.Lock()
	sess := srv.sessions.shard("slow").m.get("slow")
	srv.sessions.shard("slow").mu.Unlock()
	sess.mu.Lock()
	queued := sess.f.queue.Len()
	sess.mu.Unlock()
	if queued > 2*50 {
		t.Fatalf("subscriber queue holds %d, over its hard bound", queued)
	}
	close(release)
	if err := <-pubDone; err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for handled.Load() < n && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if handled.Load() != n {
		t.Fatalf("handled %d of %d", handled.Load(), n)
	}
}

// TestInprocRequestResponse: MQTT 5.0 request/response between a network
// client and an in-process responder — the response topic and
// correlation data survive both ways.
func TestInprocRequestResponse(t *testing.T) {
	srv, _ := startBroker(t, nil)
	var responder *Client
	responder = mustClient(t, srv, "svc", ClientOptions{Subscriptions: []Subscription{{Filter: "req/+", QoS: 1,
		Handler: func(m *Message) {
			_ = responder.PublishMessage(context.Background(), &Message{Topic: m.ResponseTopic,
				Payload: append([]byte("re:"), m.Payload...), QoS: 1, CorrelationData: m.CorrelationData})
		}}}})
	got := newInprocCollector()
	req := mustClient(t, srv, "caller", ClientOptions{Subscriptions: []Subscription{{Filter: "resp/caller", QoS: 1, Handler: got.handle}}})
	if err := req.PublishMessage(context.Background(), &Message{Topic: "req/ping", Payload: []byte("x"), QoS: 1,
		ResponseTopic: "resp/caller", CorrelationData: []byte{7, 7}}); err != nil {
		t.Fatal(err)
	}
	m := got.waitN(t, 1, 5*time.Second)[0]
	if string(m.Payload) != "re:x" || string(m.CorrelationData) != "\x07\x07" {
		t.Fatalf("response %+v", m)
	}
}

// TestInprocACLAndRefusals: the Authorizer sees the in-process client's
// Username; a refused publish is an error with the reason code 0x87
// [MQTT-3.4.2-1 reason codes], a refused subscription too; closing the
// client makes later calls fail with ErrClientClosed.
func TestInprocACLAndRefusals(t *testing.T) {
	srv, _ := startBroker(t, func(o *Options) { o.Authorizer = denyTopic{"secret"} })
	c := mustClient(t, srv, "acl", ClientOptions{Username: "svc"})
	err := c.Publish("secret", []byte("x"), 1, false)
	if codec.CodeOf(err, 0) != codec.NotAuthorized {
		t.Fatalf("publish to a denied topic: %v", err)
	}
	if err := c.Subscribe("secret", 1, func(*Message) {}); codec.CodeOf(err, 0) != codec.NotAuthorized {
		t.Fatalf("subscribe to a denied filter: %v", err)
	}
	if err := c.Publish("open", []byte("x"), 1, false); err != nil {
		t.Fatal(err)
	}
	_ = c.Close()
	if err := c.Publish("open", nil, 1, false); !errors.Is(err, ErrClientClosed) {
		t.Fatalf("publish after Close: %v", err)
	}
}

type denyTopic struct{ topic string }

func (d denyTopic) CanPublish(_, user, topic string) bool { return topic != d.topic && user == "svc" }
func (d denyTopic) CanSubscribe(_, user, filter string) bool {
	return filter != d.topic && user == "svc"
}

// TestInprocSubscribeChanAndTakeover: SubscribeChan delivers copies; a
// second Client with the same id takes the session over and the first
// one's Done closes with the reason.
func TestInprocSubscribeChanAndTakeover(t *testing.T) {
	srv, addr := startBroker(t, nil)
	c := mustClient(t, srv, "chan", ClientOptions{})
	ch, err := c.SubscribeChan("bridge/#", 1, 16)
	if err != nil {
		t.Fatal(err)
	}
	p := pahoClient(t, addr, "dev")
	wait(t, p.Publish("bridge/a", 1, false, "hello"), "publish")
	select {
	case m := <-ch:
		if m.Topic != "bridge/a" || string(m.Payload) != "hello" {
			t.Fatalf("got %+v", m)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no message on the channel")
	}
	c2 := mustClient(t, srv, "chan", ClientOptions{})
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the taken-over client was not closed")
	}
	if c.Err() == nil || codec.CodeOf(c.Err(), 0) != codec.SessionTakenOver {
		t.Fatalf("taken-over client's Err: %v", c.Err())
	}
	if _, ok := <-ch; ok {
		t.Fatal("channel not closed after the client ended")
	}
	_ = c2
	_ = mqtt.ErrNotConnected
}

// TestInprocConcurrentPublishers: 64 goroutines publish QoS 1 on one
// Client (the broker's Receive Maximum) to a network subscriber; every
// Publish returns (each acknowledgement reaches its own caller) and every
// message arrives once.
func TestInprocConcurrentPublishers(t *testing.T) {
	srv, addr := startBroker(t, nil)
	sub := dialRaw(t, addr)
	sub.connect(codec.Connect{ProtocolVersion: codec.Version311, ClientID: []byte("sub"), CleanStart: true}, 0)
	sub.subscribe(1, "many", 1)
	pub := mustClient(t, srv, "pub", ClientOptions{})
	const n = 20000
	done := make(chan error, 1)
	go func() { done <- drainSubscriber(sub.c, sub.mc.Buffered(), n, 1, func() int { return 0 }) }()
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= n {
				if err := pub.Publish("many", []byte("x"), 1, false); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	select {
	case <-finished:
	case <-time.After(30 * time.Second):
		t.Fatalf("publishers stuck; %d free packet ids of %d", len(pub.slots), cap(pub.slots))
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestInprocPublishContextAbandoned: publishes whose context ends before
// their acknowledgement give their packet id back when it arrives: after
// many abandoned waits, every id is free again and Publish still works.
func TestInprocPublishContextAbandoned(t *testing.T) {
	srv, _ := startBroker(t, func(o *Options) { o.MaxQueuedMessages = 10 })
	release := make(chan struct{})
	_ = mustClient(t, srv, "slow", ClientOptions{ReceiveMaximum: 1,
		Subscriptions: []Subscription{{Filter: "t", QoS: 1, Handler: func(*Message) { <-release }}}})
	pub := mustClient(t, srv, "pub", ClientOptions{})
	abandoned := 0
	for range 200 {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Millisecond)
		if err := pub.PublishMessage(ctx, &Message{Topic: "t", QoS: 1}); errors.Is(err, context.DeadlineExceeded) {
			abandoned++
		}
		cancel()
	}
	if abandoned == 0 {
		t.Fatal("no publish was abandoned: the subscriber did not hold the publisher back")
	}
	close(release)
	deadline := time.Now().Add(10 * time.Second)
	for len(pub.slots) != cap(pub.slots) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if len(pub.slots) != cap(pub.slots) {
		t.Fatalf("%d of %d packet ids free after %d abandoned publishes", len(pub.slots), cap(pub.slots), abandoned)
	}
	if err := pub.Publish("t", nil, 1, false); err != nil {
		t.Fatal(err)
	}
}

// TestInprocPublishAsync: PublishAsync keeps a window in flight from one
// goroutine; every done is called once, nil for accepted messages and
// with 0x87 for one the Authorizer refuses; all accepted ones arrive.
func TestInprocPublishAsync(t *testing.T) {
	srv, _ := startBroker(t, func(o *Options) { o.Authorizer = denyTopic{"secret"} })
	got := newInprocCollector()
	_ = mustClient(t, srv, "sub", ClientOptions{Username: "svc", Subscriptions: []Subscription{{Filter: "async/#", QoS: 2, Handler: got.handle}}})
	pub := mustClient(t, srv, "pub", ClientOptions{Username: "svc"})
	const n = 3000
	var ok, refused atomic.Int64
	var wg sync.WaitGroup
	for i := range n {
		topic, q := "async/x", byte(1+i%2)
		if i == n/2 {
			topic = "secret"
		}
		wg.Add(1)
		if err := pub.PublishAsync(&Message{Topic: topic, Payload: []byte{byte(i)}, QoS: q}, func(err error) {
			if err == nil {
				ok.Add(1)
			} else if codec.CodeOf(err, 0) == codec.NotAuthorized {
				refused.Add(1)
			}
			wg.Done()
		}); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	if ok.Load() != n-1 || refused.Load() != 1 {
		t.Fatalf("done: %d nil, %d refused; want %d and 1", ok.Load(), refused.Load(), n-1)
	}
	got.waitN(t, n-1, 10*time.Second)
}

// TestInprocPacketTooLarge: a publish over max_packet_size is refused
// before it is sent (ErrPacketTooLarge); the client stays connected, and a
// payload just under the limit still goes through.
func TestInprocPacketTooLarge(t *testing.T) {
	srv, _ := startBroker(t, func(o *Options) { o.MaxPacketSize = 4096 })
	got := newInprocCollector()
	c := mustClient(t, srv, "big", ClientOptions{Subscriptions: []Subscription{{Filter: "big", QoS: 1, Handler: got.handle}}})
	if err := c.Publish("big", make([]byte, 5000), 1, false); !errors.Is(err, ErrPacketTooLarge) {
		t.Fatalf("oversized publish: %v", err)
	}
	if err := c.Publish("big", make([]byte, 3000), 1, false); err != nil {
		t.Fatal(err)
	}
	if m := got.waitN(t, 1, 5*time.Second)[0]; len(m.Payload) != 3000 {
		t.Fatalf("payload of %d bytes", len(m.Payload))
	}
}
