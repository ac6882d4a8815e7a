package server

// Tests of the promise that nothing acknowledged is ever dropped, on a real
// broker with a real Pebble store: persistent sessions keep their backlog on
// disk (backlog.go) — offline, online but slow, across restarts, for QoS 1
// and 2 — and never pace their publishers; clean sessions pace the
// publishers feeding them instead of dropping (pace.go), and a subscriber
// that stops altogether is disconnected after SlowConsumerTimeout; a message
// a persistent session's quota cannot take is refused as a whole before any
// delivery (route.go), never accepted and lost.
//
// Every message carries its sequence number as its payload ("%08d"), so
// a receiver checks order, loss and duplication in one pass (wantSeq).
//
// Over 600 lines on purpose: the helpers these tests share (a broker that
// restarts on its own data dir with the test's options, a raw subscriber
// whose acknowledgements the test switches on and off, a windowed paho
// publisher) are used by nothing else and are read together with them.

import (
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/ternmq/tern/codec"
	"github.com/ternmq/tern/internal/mqtttest"
)

// qbroker is a broker on a data dir of its own that a test can stop and
// start again, with the same options and port.
type qbroker struct {
	t    *testing.T
	opts Options
	srv  *Server
	errc chan error
	addr string
}

func newQBroker(t *testing.T, tweak func(*Options)) *qbroker {
	t.Helper()
	b := &qbroker{t: t, opts: Options{Listeners: []string{"127.0.0.1:0"}, DataDir: t.TempDir(), EventLoops: 2, Logger: quietLogger()}}
	if tweak != nil {
		tweak(&b.opts)
	}
	b.start()
	t.Cleanup(b.stop)
	return b
}

func (b *qbroker) start() {
	b.t.Helper()
	s, err := New(b.opts)
	if err != nil {
		b.t.Fatal(err)
	}
	b.srv, b.errc = s, make(chan error, 1)
	go func() { b.errc <- s.Serve() }()
	select {
	case <-s.Ready():
	case <-time.After(10 * time.Second):
		b.t.Fatal("broker did not start")
	}
	if len(s.Addrs()) == 0 {
		b.t.Fatalf("serve: %v", <-b.errc)
	}
	b.addr = s.Addrs()[0].String()
	b.opts.Listeners = []string{b.addr} // a restart listens on the same port
}

func (b *qbroker) stop() {
	if b.srv == nil {
		return
	}
	if err := b.srv.Close(); err != nil {
		b.t.Errorf("close: %v", err)
	}
	<-b.errc
	b.srv = nil
}

// restart closes the broker and opens it again on the same data dir.
func (b *qbroker) restart() { b.stop(); b.start() }

// waitConnected waits until the broker counts n connected clients (a
// DISCONNECT or a closed socket is processed asynchronously).
func waitConnected(t testing.TB, s *Server, n int64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for s.Stats().Connected != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d clients connected, want %d", s.Stats().Connected, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitUntil polls cond every 10 ms for at most d.
func waitUntil(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func seqPayload(i int) []byte { return fmt.Appendf(nil, "%08d", i) }

func seqOf(payload []byte) int {
	if len(payload) < 8 {
		return -1
	}
	n, err := strconv.Atoi(string(payload[:8]))
	if err != nil {
		return -1
	}
	return n
}

// wantSeq checks that got holds exactly the sequence numbers from..from+n-1
// in order; dup(i) reports the DUP flag of got[i], which must be false:
// a run without a dropped connection re-delivers nothing.
func wantSeq(t testing.TB, seqs []int, dups []bool, from, n int) {
	t.Helper()
	if len(seqs) != n {
		t.Fatalf("got %d messages, want %d", len(seqs), n)
	}
	for i, s := range seqs {
		if s != from+i {
			t.Fatalf("message %d has sequence %d, want %d (lost, reordered or duplicated)", i, s, from+i)
		}
		if dups[i] {
			t.Fatalf("message %d (sequence %d) has DUP set in a run that re-delivered nothing", i, s)
		}
	}
}

// publishSeq publishes messages from..from+n-1 to topic at qos from a paho
// client, with at most window unacknowledged at once (the broker accepts
// MaxInboundQoS2 QoS 2 flows per client), and fails unless every one is
// acknowledged. acked, when not nil, is called with each sequence number
// acknowledged, in order.
func publishSeq(t testing.TB, c mqtt.Client, topic string, qos byte, from, n, window int, acked func(int)) {
	t.Helper()
	if err := tryPublishSeq(c, topic, qos, from, n, window, acked); err != nil {
		t.Fatal(err)
	}
}

// tryPublishSeq is publishSeq returning its error, for a goroutine other
// than the test's.
func tryPublishSeq(c mqtt.Client, topic string, qos byte, from, n, window int, acked func(int)) error {
	toks := make([]mqtt.Token, 0, window)
	waitOldest := func(seq int) error {
		if !toks[0].WaitTimeout(60*time.Second) || toks[0].Error() != nil {
			return fmt.Errorf("publish %d: not acknowledged (%v)", seq, toks[0].Error())
		}
		toks = toks[1:]
		if acked != nil {
			acked(seq)
		}
		return nil
	}
	for i := from; i < from+n; i++ {
		if len(toks) == window {
			if err := waitOldest(i - window); err != nil {
				return err
			}
		}
		toks = append(toks, c.Publish(topic, qos, false, seqPayload(i)))
	}
	for k := from + n - len(toks); len(toks) > 0; k++ {
		if err := waitOldest(k); err != nil {
			return err
		}
	}
	return nil
}

// bigBacklog is the size of the large offline backlogs: 20,000 messages,
// 40 memory windows. Under -race, 5,000 (still ten windows): the race run
// looks for data races, and paho's 3.1.1 client drains only a few hundred
// messages a second there (40 s for 20,000).
func bigBacklog() int {
	if raceEnabled {
		return 5000
	}
	return 20000
}

// liveHeap returns the heap in use after a full collection.
func liveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// rawSub is a raw subscriber whose goroutine reads every packet and, while
// ack is set, completes the deliveries: PUBACK, or PUBREC and PUBCOMP on
// PUBREL. Deliveries read while ack is clear are acknowledged once it is
// set. All writes happen on that goroutine (mqtttest's one-writer rule);
// the test only reads the recorded deliveries and closes the connection.
type rawSub struct {
	c     *mqtttest.Conn
	ack   atomic.Bool
	delay time.Duration // a pause after each PUBLISH read: a slow reader

	mu      sync.Mutex
	pubs    []codec.Publish // in arrival order
	pending []codec.Publish // read while ack was clear
	closed  bool            // the broker closed the connection
	err     error           // anything else that stopped the reader
	done    chan struct{}
}

// startRawSub connects a 3.1.1 raw client (persistent unless clean), and
// subscribes to filter at qos if filter is not empty.
func startRawSub(t testing.TB, addr, id string, clean bool, filter string, qos byte, ack bool, delay time.Duration) (*rawSub, codec.Connack) {
	t.Helper()
	r := dialRaw(t, addr)
	ca := r.connect(codec.Connect{ClientID: []byte(id), CleanStart: clean, KeepAlive: 60}, 0)
	if filter != "" {
		if codes := r.subscribe(1, filter, qos); len(codes) != 1 || byte(codes[0]) != qos {
			t.Fatalf("SUBACK %v, want QoS %d", codes, qos)
		}
	}
	s := &rawSub{c: r.conn(), delay: delay, done: make(chan struct{})}
	s.ack.Store(ack)
	go s.run()
	t.Cleanup(func() { s.close() })
	return s, ca
}

func (s *rawSub) run() {
	defer close(s.done)
	for {
		p, err := s.c.ReadPacket(time.Now().Add(50 * time.Millisecond))
		if errors.Is(err, mqtttest.ErrTimeout) {
			err = s.flush()
		} else if err == nil {
			err = s.handle(p)
		}
		if err != nil {
			s.mu.Lock()
			s.closed, s.err = mqtttest.IsClosed(err), err
			s.mu.Unlock()
			return
		}
	}
}

func (s *rawSub) handle(p mqtttest.Packet) error {
	switch p.Header.Type {
	case codec.PUBLISH:
		var pub codec.Publish
		if err := pub.Decode(p.Header, p.Body, s.c.Version); err != nil {
			return err
		}
		pub.Topic, pub.Payload = append([]byte(nil), pub.Topic...), append([]byte(nil), pub.Payload...)
		s.mu.Lock()
		s.pubs = append(s.pubs, pub)
		if !s.ack.Load() && pub.QoS > 0 {
			s.pending = append(s.pending, pub)
		}
		s.mu.Unlock()
		if s.delay > 0 {
			time.Sleep(s.delay)
		}
		if s.ack.Load() {
			if err := s.flush(); err != nil {
				return err
			}
			return s.complete(pub)
		}
	case codec.PUBREL:
		var a codec.Ack
		if err := a.Decode(p.Header, p.Body, s.c.Version); err != nil {
			return err
		}
		return s.c.Ack(codec.PUBCOMP, a.PacketID)
	}
	return nil
}

// complete sends the first acknowledgement of a delivery.
func (s *rawSub) complete(p codec.Publish) error {
	switch p.QoS {
	case 1:
		return s.c.Ack(codec.PUBACK, p.PacketID)
	case 2:
		return s.c.Ack(codec.PUBREC, p.PacketID)
	}
	return nil
}

// flush acknowledges what was read while ack was clear, once it is set.
func (s *rawSub) flush() error {
	if !s.ack.Load() {
		return nil
	}
	s.mu.Lock()
	pending := s.pending
	s.pending = nil
	s.mu.Unlock()
	for _, p := range pending {
		if err := s.complete(p); err != nil {
			return err
		}
	}
	return nil
}

func (s *rawSub) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.pubs)
}

// seqs returns the sequence numbers and DUP flags received so far.
func (s *rawSub) seqs() ([]int, []bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	seqs, dups := make([]int, len(s.pubs)), make([]bool, len(s.pubs))
	for i, p := range s.pubs {
		seqs[i], dups[i] = seqOf(p.Payload), p.Dup
	}
	return seqs, dups
}

func (s *rawSub) waitN(t testing.TB, n int, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for s.count() < n {
		s.mu.Lock()
		err := s.err
		s.mu.Unlock()
		if err != nil {
			t.Fatalf("subscriber stopped after %d of %d messages: %v", s.count(), n, err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("subscriber got %d messages within %v, want %d", s.count(), d, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// close drops the connection without DISCONNECT and waits for the reader.
func (s *rawSub) close() {
	_ = s.c.Close()
	<-s.done
}

// A persistent 3.1.1 session that is offline while 20,000 QoS 1 messages
// (bigBacklog)
// are published keeps every one [MQTT-3.1.2-5] and gets them all on return,
// in order [MQTT-4.6.0-6], once each. Its backlog waits in the store, not
// in the broker's heap: the live heap grows by at most 64 B per queued
// message (measured: ~20 B). The bound is generous on purpose — the
// store's memtable and block cache are C memory (cgo), the per-session
// bookkeeping is constant, so the only per-message Go memory allowed is
// noise; an in-memory queue (message struct, payload, queue slot: ~150 B
// and up) fails it. Not checked under -race, where Pebble allocates its
// memtables on the Go heap (~200 B per message here, all of it Pebble's).
// Not parallel: the heap is the process's.
func TestQueuesOfflineBacklog_MQTT_3_1_2_5(t *testing.T) {
	n := bigBacklog()
	srv, addr := startBroker(t, nil)
	persistent := func(o *mqtt.ClientOptions) { o.SetCleanSession(false) }
	sub := pahoClient(t, addr, "ob-sub", persistent)
	wait(t, sub.Subscribe("ob/t", 1, nil), "subscribe")
	sub.Disconnect(50)
	waitConnected(t, srv, 0)

	before := liveHeap()
	start := time.Now()
	pub := pahoClient(t, addr, "ob-pub")
	publishSeq(t, pub, "ob/t", 1, 0, n, 64, nil)
	pub.Disconnect(50)
	waitConnected(t, srv, 0)
	published := time.Since(start)
	after := liveHeap()
	perMsg := (float64(after) - float64(before)) / float64(n)
	t.Logf("published %d QoS 1 to an offline session in %v; live heap %d -> %d (%.1f B/message)", n, published, before, after, perMsg)
	if perMsg > 64 && !raceEnabled {
		t.Errorf("live heap grew by %.1f B per queued message, want at most 64: the offline backlog is held in memory", perMsg)
	}

	r := newReceived()
	start = time.Now()
	pahoClient(t, addr, "ob-sub", persistent, func(o *mqtt.ClientOptions) { o.SetDefaultPublishHandler(r.handler) })
	r.waitN(t, n, 120*time.Second)
	t.Logf("drained %d in %v", n, time.Since(start))
	r.quiet(t, n, 300*time.Millisecond)
	checkPaho(t, r.snapshot(), n)
	if d := srv.Stats().MessagesDropped; d != 0 {
		t.Errorf("MessagesDropped = %d, want 0", d)
	}
}

func checkPaho(t testing.TB, got []mqtt.Message, n int) {
	t.Helper()
	seqs, dups := make([]int, len(got)), make([]bool, len(got))
	for i, m := range got {
		seqs[i], dups[i] = seqOf(m.Payload()), m.Duplicate()
	}
	wantSeq(t, seqs, dups, 0, n)
}

// The same across a restart of the broker on its data dir, for a 3.1.1
// session [MQTT-3.1.2-5] and a 5.0 one with Session Expiry 3600
// [MQTT-3.1.2-23]: only the backlog bounds are read at startup, the
// messages are paged in as the returning client drains them. The 3.1.1
// subscriber is the raw client (paho's 3.1.1 client, at a few thousand
// messages a second, is what TestQueuesOfflineBacklog already covers); the
// 5.0 one is paho.golang with 5,000 messages, ten memory windows.
func TestQueuesOfflineBacklogAcrossRestart_MQTT_3_1_2_5(t *testing.T) {
	t.Parallel()
	t.Run("3.1.1", func(t *testing.T) {
		n := bigBacklog()
		b := newQBroker(t, nil)
		off, _ := startRawSub(t, b.addr, "rb-sub", false, "rb/t", 1, true, 0)
		off.close()
		waitConnected(t, b.srv, 0)
		pub := pahoClient(t, b.addr, "rb-pub")
		publishSeq(t, pub, "rb/t", 1, 0, n, 64, nil)
		pub.Disconnect(50)
		start := time.Now()
		b.restart()
		t.Logf("restart with a %d-message backlog: %v", n, time.Since(start))

		start = time.Now()
		back, ca := startRawSub(t, b.addr, "rb-sub", false, "", 0, true, 0)
		if !ca.SessionPresent {
			t.Fatal("persistent session lost in the restart")
		}
		back.waitN(t, n, 60*time.Second)
		t.Logf("drained %d in %v", n, time.Since(start))
		time.Sleep(300 * time.Millisecond)
		seqs, dups := back.seqs()
		wantSeq(t, seqs, dups, 0, n)
	})
	t.Run("5.0", func(t *testing.T) {
		const n = 5000
		b := newQBroker(t, nil)
		expiry := &paho.ConnectProperties{SessionExpiryInterval: u32(3600)}
		c, _, _, err := dial5(t, b.addr, &paho.Connect{ClientID: "rb5-sub", CleanStart: true, Properties: expiry}, nil)
		if err != nil {
			t.Fatal(err)
		}
		sub5(t, c, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "rb5/t", QoS: 1}}})
		_ = c.Disconnect(&paho.Disconnect{})
		waitConnected(t, b.srv, 0)
		pub := pahoClient(t, b.addr, "rb5-pub")
		publishSeq(t, pub, "rb5/t", 1, 0, n, 64, nil)
		pub.Disconnect(50)
		b.restart()

		start := time.Now()
		_, ca, r, err := dial5(t, b.addr, &paho.Connect{ClientID: "rb5-sub", Properties: expiry}, nil)
		if err != nil || !ca.SessionPresent {
			t.Fatalf("reconnect: %v, session present %v", err, ca != nil && ca.SessionPresent)
		}
		r.waitN(t, n, 60*time.Second)
		t.Logf("drained %d in %v", n, time.Since(start))
		r.quiet(t, n, 300*time.Millisecond)
		got := r.snapshot()
		seqs, dups := make([]int, len(got)), make([]bool, len(got))
		for i, p := range got {
			seqs[i], dups[i] = seqOf(p.Payload), p.Duplicate()
		}
		wantSeq(t, seqs, dups, 0, n)
	})
}

// A persistent subscriber that is online but does not acknowledge keeps
// its inflight window full; its publisher is not held back (the backlog
// spills to the store: persistent sessions never pace), nothing is
// dropped, and once the subscriber acknowledges it gets every message, in
// order [MQTT-4.6.0-6], the inflight ones not re-sent.
func TestQueuesSlowOnlinePersistent_MQTT_4_6_0_6(t *testing.T) {
	t.Parallel()
	const n = 5000
	srv, addr := startBroker(t, nil)
	sub, _ := startRawSub(t, addr, "so-sub", false, "so/t", 1, false, 0)
	pub := pahoClient(t, addr, "so-pub")
	start := time.Now()
	publishSeq(t, pub, "so/t", 1, 0, n, 64, nil)
	took := time.Since(start)
	t.Logf("%d QoS 1 acknowledged in %v while the subscriber held its window", n, took)
	time.Sleep(100 * time.Millisecond)
	if got, window := sub.count(), srv.opts.ReceiveMaximum; got != window {
		t.Errorf("unacknowledging subscriber got %d messages, want its inflight window %d", got, window)
	}
	if p := srv.stats.paced.Load(); p != 0 {
		t.Errorf("publisher paced %d times by a persistent session, want 0", p)
	}
	if d := srv.Stats().MessagesDropped; d != 0 {
		t.Errorf("MessagesDropped = %d, want 0", d)
	}

	sub.ack.Store(true)
	sub.waitN(t, n, 60*time.Second)
	time.Sleep(200 * time.Millisecond)
	seqs, dups := sub.seqs()
	wantSeq(t, seqs, dups, 0, n)
	if d := srv.Stats().MessagesDropped; d != 0 {
		t.Errorf("MessagesDropped = %d, want 0", d)
	}
}

// A clean subscriber slower than its publisher paces it (MaxQueuedMessages
// 100): the publisher's acknowledgements are held while the subscriber's
// queue is over the limit, so it cannot finish before the subscriber has
// read nearly everything; nothing is lost or dropped, every
// acknowledgement arrives, for QoS 1 and QoS 2.
func TestQueuesPacedCleanSubscriber(t *testing.T) {
	t.Parallel()
	for _, q := range []byte{1, 2} {
		t.Run(fmt.Sprintf("qos%d", q), func(t *testing.T) {
			const n, window = 2000, 32
			srv, addr := startBroker(t, func(o *Options) { o.MaxQueuedMessages = 100 })
			sub, _ := startRawSub(t, addr, "pc-sub", true, "pc/t", q, true, time.Millisecond)
			pub := pahoClient(t, addr, "pc-pub")
			start := time.Now()
			publishSeq(t, pub, "pc/t", q, 0, n, window, nil)
			read := sub.count()
			t.Logf("publisher finished in %v; the subscriber had read %d of %d; paced %d times",
				time.Since(start), read, n, srv.stats.paced.Load())
			// At the last acknowledgement the queue is at most at its soft
			// limit (100) and the inflight window (64) is in flight:
			// everything else was read.
			if min := n - 100 - srv.opts.ReceiveMaximum - window; read < min {
				t.Errorf("publisher finished when the subscriber had read %d, want at least %d: it was not held back", read, min)
			}
			if srv.stats.paced.Load() == 0 {
				t.Error("publisher never paced")
			}
			sub.waitN(t, n, 60*time.Second)
			time.Sleep(200 * time.Millisecond)
			seqs, dups := sub.seqs()
			wantSeq(t, seqs, dups, 0, n)
			if d := srv.Stats().MessagesDropped; d != 0 {
				t.Errorf("MessagesDropped = %d, want 0", d)
			}
			if r := srv.Refused(); r["paced_input"] != 0 || r["slow_consumer_timeout"] != 0 {
				t.Errorf("refused %v: a slow but reading subscriber must not be cut off", r)
			}
		})
	}
}

// A clean subscriber that stops reading while it holds a publisher back
// is disconnected after SlowConsumerTimeout (2 s, checked once a second),
// counted as slow_consumer_timeout; the publisher then gets its held
// acknowledgements and goes on publishing.
func TestQueuesSlowConsumerTimeout(t *testing.T) {
	t.Parallel()
	const n, window = 600, 32
	srv, addr := startBroker(t, func(o *Options) {
		o.MaxQueuedMessages = 50
		o.SlowConsumerTimeout = 2 * time.Second
	})
	stuck := dialRaw(t, addr) // reads nothing after its SUBACK, acknowledges nothing
	stuck.connect(codec.Connect{ClientID: []byte("sc-sub"), CleanStart: true, KeepAlive: 60}, 0)
	stuck.subscribe(1, "sc/t", 1)
	pub := pahoClient(t, addr, "sc-pub")

	var acked atomic.Int64
	done := make(chan error, 1)
	go func() { done <- tryPublishSeq(pub, "sc/t", 1, 0, n, window, func(int) { acked.Add(1) }) }()
	waitUntil(t, 5*time.Second, "the publisher to be paced", func() bool { return srv.stats.paced.Load() > 0 })
	pacedAt := time.Now()
	time.Sleep(time.Second)
	if a := acked.Load(); a >= n {
		t.Fatalf("all %d acknowledged while the subscriber read nothing", a)
	}
	waitUntil(t, 6*time.Second, "the slow consumer to be disconnected", func() bool {
		return srv.Refused()["slow_consumer_timeout"] >= 1
	})
	cut := time.Since(pacedAt)
	t.Logf("paced after %d acknowledgements; slow consumer cut after %v", acked.Load(), cut)
	if cut < 1800*time.Millisecond || cut > 4500*time.Millisecond {
		t.Errorf("slow consumer disconnected %v after pacing began, want 2-4 s (timeout 2 s, checked each second)", cut)
	}
	stuck.expectClosed(5 * time.Second)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("publisher still held back after the slow consumer went: %d of %d acknowledged", acked.Load(), n)
	}
	if acked.Load() != n {
		t.Fatalf("%d of %d acknowledged", acked.Load(), n)
	}
	publishSeq(t, pub, "sc/t", 1, n, 100, window, nil) // and it keeps publishing
	if !pub.IsConnected() {
		t.Error("publisher was disconnected")
	}
}

// Publishers that give up while paced: each connects, publishes one QoS 1
// message to a clean subscriber that acknowledges nothing, and closes once
// it sees no PUBACK. Each left one message past the soft limit, and the
// subscriber never drains to half, so without a bound its queue would grow
// by one message per round for as long as they keep coming. Once it holds
// more abandoned waiters than MaxQueuedMessages it is disconnected as a
// slow consumer (slow_consumer_abandoned), after about ReceiveMaximum +
// 2 × the soft limit rounds, not 500.
func TestQueuesAbandonedPacedPublishersBounded(t *testing.T) {
	t.Parallel()
	const soft = 10
	srv, addr := startBroker(t, func(o *Options) {
		o.MaxQueuedMessages = soft
		o.SlowConsumerTimeout = time.Hour // only the abandoned-waiter bound may cut it
	})
	stuck := dialRaw(t, addr) // reads nothing after its SUBACK, acknowledges nothing
	stuck.connect(codec.Connect{ClientID: []byte("ab-sub"), CleanStart: true, KeepAlive: 60}, 0)
	stuck.subscribe(1, "ab/t", 1)
	cut := func() bool { return srv.Refused()["slow_consumer_abandoned"] > 0 }
	rounds, paced := 0, 0
	for ; rounds < 500; rounds++ {
		// Drops before the cut would be acknowledged messages lost. The
		// cut itself ends the clean session, and a delivery racing with
		// its end may be dropped (counted): the refusal is counted before
		// that, so a drop read before a refusal is one from before the cut.
		dropped := srv.Stats().MessagesDropped
		if cut() {
			break
		}
		if dropped != 0 {
			t.Fatalf("round %d: %d messages dropped before the subscriber was cut off", rounds, dropped)
		}
		c, err := mqtttest.Dial(addr)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Connect(codec.Connect{ProtocolVersion: codec.Version311, CleanStart: true, ClientID: []byte(fmt.Sprint("ab-pub-", rounds))}); err != nil {
			t.Fatal(err)
		}
		if err := c.Send(&codec.Publish{Topic: []byte("ab/t"), QoS: 1, PacketID: 1, Payload: []byte("x")}); err != nil {
			t.Fatal(err)
		}
		// Read the PUBACK if it comes, so the close is a FIN, not a reset
		// that could discard the PUBLISH unread.
		if _, err := c.ReadPacket(time.Now().Add(100 * time.Millisecond)); errors.Is(err, mqtttest.ErrTimeout) {
			paced++
		}
		_ = c.Close()
	}
	waitUntil(t, 5*time.Second, "the subscriber to be cut off", cut)
	t.Logf("cut off after %d rounds, %d of them paced", rounds, paced)
	if max := srv.opts.ReceiveMaximum + 3*soft; rounds > max {
		t.Errorf("cut off after %d rounds, want at most %d (inflight window + 3 × the soft limit)", rounds, max)
	}
	stuck.expectClosed(5 * time.Second)
}

// MaxSessionBacklogBytes: once an offline persistent session's stored
// backlog is at its quota, a message for it is refused as a whole before
// any delivery — a 5.0 publisher gets PUBACK/PUBREC 0x97 and no subscriber
// (not even a clean one on the same topic) gets it; a 3.1.1 publisher,
// which cannot be told, gets no PUBACK and is disconnected; Server.Publish
// returns ErrQuotaExceeded. Everything accepted reaches the session.
func TestQueuesSessionBacklogQuota(t *testing.T) {
	t.Parallel()
	const quota = 64 << 10
	srv, addr := startBroker(t, func(o *Options) { o.MaxSessionBacklogBytes = quota })
	off, _ := startRawSub(t, addr, "sq-sub", false, "sq/t", 1, true, 0)
	off.close()
	waitConnected(t, srv, 0)
	clean := newReceived()
	subscribe(t, pahoClient(t, addr, "sq-clean"), "sq/t", 1, clean)

	pub, _ := dialRaw5(t, addr, codec.Connect{ClientID: []byte("sq-pub5"), CleanStart: true})
	pad := make([]byte, 1000)
	send := func(seq int, q byte) codec.Ack {
		id := uint16(seq%60000 + 1)
		pub.publish(codec.Publish{QoS: q, PacketID: id, Topic: []byte("sq/t"), Payload: append(seqPayload(seq), pad...)})
		typ := codec.PUBACK
		if q == 2 {
			typ = codec.PUBREC
		}
		a := pub.readAck(5*time.Second, typ)
		if a.PacketID != id {
			t.Fatalf("ack for %d, want %d", a.PacketID, id)
		}
		return a
	}
	accepted := 0
	for ; ; accepted++ {
		a := send(accepted, 1)
		if a.ReasonCode == codec.QuotaExceeded {
			break
		}
		if a.ReasonCode != 0 {
			t.Fatalf("PUBACK %d: reason %#x", accepted, a.ReasonCode)
		}
		if accepted > 2*quota/1000 {
			t.Fatalf("%d messages of 1 KB accepted for a %d-byte quota", accepted, quota)
		}
	}
	t.Logf("accepted %d messages of ~1 KB before the %d-byte quota refused one", accepted, quota)
	if accepted < quota/1200 {
		t.Errorf("quota refused after %d messages of ~1 KB, want about %d", accepted, quota/1100)
	}
	if a := send(accepted+1, 1); a.ReasonCode != codec.QuotaExceeded {
		t.Errorf("second message over the quota: PUBACK %#x, want 0x97", a.ReasonCode)
	}
	if a := send(accepted+2, 2); a.ReasonCode != codec.QuotaExceeded { // a failed PUBREC ends the flow: no PUBREL
		t.Errorf("QoS 2 over the quota: PUBREC %#x, want 0x97", a.ReasonCode)
	}
	if err := srv.Publish("sq/t", append(seqPayload(accepted+3), pad...), 1, false); !errors.Is(err, ErrQuotaExceeded) {
		t.Errorf("Server.Publish over the quota: %v, want ErrQuotaExceeded", err)
	}
	pub3 := dialRaw(t, addr)
	pub3.connect(codec.Connect{ClientID: []byte("sq-pub3"), CleanStart: true, KeepAlive: 60}, 0)
	pub3.publish(codec.Publish{QoS: 1, PacketID: 7, Topic: []byte("sq/t"), Payload: append(seqPayload(accepted+4), pad...)})
	for _, h := range pub3.expectClosed(5 * time.Second) {
		t.Errorf("3.1.1 publisher over the quota got %s before the disconnect, want nothing", mqtttest.TypeName(h.Type))
	}
	if r := srv.Refused()["max_session_backlog_bytes"]; r < 5 {
		t.Errorf("Refused()[max_session_backlog_bytes] = %d, want at least 5", r)
	}

	// The clean subscriber got the accepted messages and none of the refused.
	clean.waitN(t, accepted, 10*time.Second)
	clean.quiet(t, accepted, 300*time.Millisecond)
	checkPaho(t, clean.snapshot(), accepted)

	// The persistent session gets everything that was accepted.
	back, ca := startRawSub(t, addr, "sq-sub", false, "", 0, true, 0)
	if !ca.SessionPresent {
		t.Fatal("persistent session lost")
	}
	back.waitN(t, accepted, 10*time.Second)
	time.Sleep(300 * time.Millisecond)
	seqs, dups := back.seqs()
	wantSeq(t, seqs, dups, 0, accepted)
}

// Acknowledged deliveries leave the store, so they no longer count
// against MaxSessionBacklogBytes: after the session drains its backlog,
// messages for it are accepted again.
func TestQueuesSessionBacklogQuotaFreedByAcks(t *testing.T) {
	t.Parallel()
	const quota = 16 << 10
	srv, addr := startBroker(t, func(o *Options) { o.MaxSessionBacklogBytes = quota })
	off, _ := startRawSub(t, addr, "sf-sub", false, "sf/t", 1, true, 0)
	off.close()
	waitConnected(t, srv, 0)
	pub, _ := dialRaw5(t, addr, codec.Connect{ClientID: []byte("sf-pub"), CleanStart: true})
	pad := make([]byte, 1000)
	next := 0
	fill := func() int {
		t.Helper()
		for n := 0; ; n++ {
			id := uint16(next%60000 + 1)
			pub.publish(codec.Publish{QoS: 1, PacketID: id, Topic: []byte("sf/t"), Payload: append(seqPayload(next), pad...)})
			a := pub.readAck(5*time.Second, codec.PUBACK)
			if a.ReasonCode == codec.QuotaExceeded {
				return n
			}
			if a.ReasonCode != 0 || n > 2*quota/1000 {
				t.Fatalf("PUBACK %#x after %d messages", a.ReasonCode, n)
			}
			next++
		}
	}
	first := fill()
	back, _ := startRawSub(t, addr, "sf-sub", false, "", 0, true, 0)
	back.waitN(t, first, 10*time.Second)
	time.Sleep(200 * time.Millisecond) // the PUBACKs reach the broker
	back.close()
	waitConnected(t, srv, 1)
	second := fill()
	if second < first/2 {
		t.Fatalf("after draining %d acknowledged deliveries the session took only %d more before the quota: acknowledged deliveries still count against max_session_backlog_bytes", first, second)
	}
}

// MinFreeDiskBytes far above the disk's free space: within the ticker's
// second, messages for persistent sessions are refused with 0x97 and
// counted as store_full, while messages that only clean sessions receive
// still flow (they are not stored).
func TestQueuesStoreFull(t *testing.T) {
	t.Parallel()
	srv, addr := startBroker(t, func(o *Options) { o.MinFreeDiskBytes = 1 << 62 })
	off, _ := startRawSub(t, addr, "full-sub", false, "full/p", 1, true, 0)
	off.close()
	waitConnected(t, srv, 0)
	clean := newReceived()
	subscribe(t, pahoClient(t, addr, "full-clean"), "full/c", 1, clean)
	pub, _ := dialRaw5(t, addr, codec.Connect{ClientID: []byte("full-pub"), CleanStart: true})

	start, id := time.Now(), uint16(0)
	for {
		id++
		pub.publish(codec.Publish{QoS: 1, PacketID: id, Topic: []byte("full/p"), Payload: seqPayload(int(id))})
		a := pub.readAck(5*time.Second, codec.PUBACK)
		if a.ReasonCode == codec.QuotaExceeded {
			break
		}
		if time.Since(start) > 3*time.Second {
			t.Fatalf("messages for a persistent session still accepted %v after start with min_free_disk_bytes 1<<62", time.Since(start))
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("store full detected after %v", time.Since(start))
	if r := srv.Refused()["store_full"]; r < 1 {
		t.Errorf("Refused()[store_full] = %d, want at least 1", r)
	}
	for i := 0; i < 10; i++ {
		id++
		pub.publish(codec.Publish{QoS: 1, PacketID: id, Topic: []byte("full/c"), Payload: seqPayload(i)})
		if a := pub.readAck(5*time.Second, codec.PUBACK); a.ReasonCode != 0 {
			t.Fatalf("message for a clean session refused while the store is full: %#x", a.ReasonCode)
		}
	}
	clean.waitN(t, 10, 5*time.Second)
	checkPaho(t, clean.snapshot(), 10)
}

// QoS 2 deliveries to an offline persistent session, more than its memory
// window, survive a restart and arrive exactly once each [MQTT-4.3.3-1],
// in order, none marked DUP (none was sent before).
func TestQueuesQoS2BacklogAcrossRestart_MQTT_4_3_3_1(t *testing.T) {
	t.Parallel()
	const n = 2000
	b := newQBroker(t, nil)
	off, _ := startRawSub(t, b.addr, "q2b-sub", false, "q2b/t", 2, true, 0)
	off.close()
	pub := pahoClient(t, b.addr, "q2b-pub")
	publishSeq(t, pub, "q2b/t", 2, 0, n, 32, nil)
	pub.Disconnect(50)
	b.restart()

	back, ca := startRawSub(t, b.addr, "q2b-sub", false, "", 0, true, 0)
	if !ca.SessionPresent {
		t.Fatal("persistent session lost in the restart")
	}
	back.waitN(t, n, 60*time.Second)
	time.Sleep(500 * time.Millisecond)
	seqs, dups := back.seqs()
	wantSeq(t, seqs, dups, 0, n)
	back.mu.Lock()
	defer back.mu.Unlock()
	for i, p := range back.pubs {
		if p.QoS != 2 {
			t.Fatalf("message %d delivered at QoS %d, want 2", i, p.QoS)
		}
	}
}

// A persistent subscriber that drops its connection with a full inflight
// window (sent, unacknowledged) and 1,000 more queued behind it gets, on
// reconnect, the inflight ones first, re-sent with DUP and their original
// packet identifiers [MQTT-4.4.0-1] [MQTT-3.3.1-1], then the rest in order
// with DUP 0 — whether the broker ran on or restarted meanwhile.
func TestQueuesInflightThenBacklog_MQTT_4_4_0_1(t *testing.T) {
	t.Parallel()
	for _, restart := range []bool{false, true} {
		t.Run(fmt.Sprintf("restart=%v", restart), func(t *testing.T) {
			const queued = 1000
			b := newQBroker(t, nil)
			window := b.srv.opts.ReceiveMaximum
			n := window + queued
			sub, _ := startRawSub(t, b.addr, "ib-sub", false, "ib/t", 1, false, 0)
			pub := pahoClient(t, b.addr, "ib-pub")
			publishSeq(t, pub, "ib/t", 1, 0, n, 64, nil)
			pub.Disconnect(50)
			sub.waitN(t, window, 5*time.Second)
			time.Sleep(100 * time.Millisecond)
			if c := sub.count(); c != window {
				t.Fatalf("unacknowledging subscriber got %d, want its window %d", c, window)
			}
			sub.mu.Lock()
			first := append([]codec.Publish(nil), sub.pubs...)
			sub.mu.Unlock()
			sub.close()
			waitConnected(t, b.srv, 0)
			if restart {
				b.restart()
			}

			back, ca := startRawSub(t, b.addr, "ib-sub", false, "", 0, true, 0)
			if !ca.SessionPresent {
				t.Fatal("persistent session lost")
			}
			back.waitN(t, n, 30*time.Second)
			time.Sleep(300 * time.Millisecond)
			seqs, dups := back.seqs()
			if len(seqs) != n {
				t.Fatalf("got %d messages after reconnect, want %d", len(seqs), n)
			}
			back.mu.Lock()
			pubs := back.pubs
			back.mu.Unlock()
			for i := 0; i < window; i++ {
				if seqs[i] != i || !dups[i] || pubs[i].PacketID != first[i].PacketID {
					t.Fatalf("re-sent %d: sequence %d dup %v id %d, want sequence %d dup true id %d",
						i, seqs[i], dups[i], pubs[i].PacketID, i, first[i].PacketID)
				}
			}
			wantSeq(t, seqs[window:], dups[window:], window, queued)
		})
	}
}

// A persistent subscriber that keeps dropping its connection while a
// publisher keeps publishing, its backlog moving between memory and the
// store, loses nothing: every connection gets its deliveries in order,
// the first sending of each message is in order across connections
// [MQTT-4.6.0-6], a message seen again is marked DUP [MQTT-3.3.1-1], and
// once the publisher is done the subscriber ends up with all of them.
func TestQueuesReconnectWhilePublishing_MQTT_4_4_0_1(t *testing.T) {
	t.Parallel()
	const n = 6000
	srv, addr := startBroker(t, nil)
	first, _ := startRawSub(t, addr, "rw-sub", false, "rw/t", 1, true, 0)
	pub := pahoClient(t, addr, "rw-pub")
	done := make(chan error, 1)
	go func() { done <- tryPublishSeq(pub, "rw/t", 1, 0, n, 64, nil) }()

	seen := make([]int, n)  // deliveries of each message
	lastNew, conns := -1, 0 // the highest message delivered once so far
	collect := func(s *rawSub) {
		conns++
		s.close()
		seqs, dups := s.seqs()
		prev := -1
		for i, q := range seqs {
			if q < 0 || q >= n || q <= prev {
				t.Fatalf("connection %d: delivery %d is sequence %d after %d: out of order", conns, i, q, prev)
			}
			prev = q
			if seen[q]++; seen[q] > 1 && !dups[i] {
				t.Fatalf("connection %d: sequence %d delivered again without DUP [MQTT-3.3.1-1]", conns, q)
			}
			if seen[q] == 1 {
				if q != lastNew+1 {
					t.Fatalf("connection %d: first delivery of %d follows %d: lost or reordered", conns, q, lastNew)
				}
				lastNew = q
			}
		}
	}
	cur := first
	published := false
	for !published {
		time.Sleep(150 * time.Millisecond)
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			published = true
		default:
		}
		collect(cur)
		waitUntil(t, 5*time.Second, "the session to go offline", func() bool { return srv.Stats().Connected == 1 || published })
		var ca codec.Connack
		cur, ca = startRawSub(t, addr, "rw-sub", false, "", 0, true, 0)
		if !ca.SessionPresent {
			t.Fatal("persistent session lost")
		}
	}
	waitUntil(t, 30*time.Second, "the rest of the backlog", func() bool {
		seqs, _ := cur.seqs() // the last message may have gone to an earlier connection
		return lastNew == n-1 || len(seqs) > 0 && seqs[len(seqs)-1] == n-1
	})
	time.Sleep(200 * time.Millisecond)
	collect(cur)
	t.Logf("%d messages over %d connections", n, conns)
	if lastNew != n-1 {
		t.Fatalf("last message delivered is %d, want %d", lastNew, n-1)
	}
	if d := srv.Stats().MessagesDropped; d != 0 {
		t.Errorf("MessagesDropped = %d, want 0", d)
	}
}

// A persistent subscriber that catches up with its spilled backlog while
// the publisher is still publishing gets every message, in order
// [MQTT-4.6.0-6]: its page-ins reach the store's tail while the newest
// deliveries are still on their way to the store.
func TestQueuesSpilledCatchUp_MQTT_4_6_0_6(t *testing.T) {
	t.Parallel()
	const n = 6000
	srv, addr := startBroker(t, nil)
	sub, _ := startRawSub(t, addr, "cu-sub", false, "cu/t", 1, false, 0)
	pub := pahoClient(t, addr, "cu-pub")
	done := make(chan error, 1)
	go func() { done <- tryPublishSeq(pub, "cu/t", 1, 0, n, 64, nil) }()
	time.Sleep(300 * time.Millisecond) // a backlog spills behind the full window
	sub.ack.Store(true)                // and the subscriber catches up while publishing goes on
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 30*time.Second, "the last message", func() bool {
		seqs, _ := sub.seqs()
		return len(seqs) > 0 && seqs[len(seqs)-1] == n-1
	})
	time.Sleep(200 * time.Millisecond)
	seqs, dups := sub.seqs()
	for i, q := range seqs {
		if q != i {
			t.Fatalf("delivery %d is sequence %d: %d lost", i, q, q-i)
		}
	}
	wantSeq(t, seqs, dups, 0, n)
	if d := srv.Stats().MessagesDropped; d != 0 {
		t.Errorf("MessagesDropped = %d, want 0", d)
	}
}
