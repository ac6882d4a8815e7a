package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ternmq/tern/codec"
)

// TestHookAuthenticateRefusals: an Authenticate hook that accepts after
// blocking, refuses, panics or hangs past the timeout. Each refusal is a
// clear CONNACK (5.0 reason code / 3.1.1 return code) [MQTT-3.2.2-6]
// [MQTT-3.2.2-7], the broker stays up, and timeouts and panics are
// counted as refusals.
func TestHookAuthenticateRefusals(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	srv, addr := startBroker(t, func(o *Options) {
		o.HookOptions = HookOptions{Timeout: 300 * time.Millisecond, Workers: 4, CacheTTL: -1}
		o.Hooks = []Hooks{{Authenticate: func(ctx context.Context, r AuthRequest) (AuthResult, error) {
			switch r.Username {
			case "slow":
				time.Sleep(100 * time.Millisecond)
				return AuthResult{}, nil
			case "bad":
				return AuthResult{}, errors.New("wrong password")
			case "banned":
				return AuthResult{}, codec.Errf(codec.Banned, "", "banned")
			case "panic":
				panic("database driver bug")
			case "hang":
				<-release // ignores ctx: the timeout must still answer the client
			}
			return AuthResult{}, nil
		}}}
	})
	for _, tc := range []struct {
		user      string
		want5     codec.ReasonCode
		want311   codec.ReasonCode
		refusedAs string
	}{
		{"slow", codec.Success, 0, ""},
		{"bad", codec.BadUsernameOrPassword, codec.ConnRefusedBadUserPass311, ""},
		{"banned", codec.Banned, codec.ConnRefusedNotAuthorized311, ""},
		{"panic", codec.UnspecifiedError, codec.ConnRefusedUnavailable311, "hook_panic"},
		{"hang", codec.ServerUnavailable, codec.ConnRefusedUnavailable311, "hook_timeout"},
	} {
		for _, v := range []byte{codec.Version5, codec.Version311} {
			t.Run(fmt.Sprintf("%s/v%d", tc.user, v), func(t *testing.T) {
				before := srv.Refused()[tc.refusedAs]
				want := tc.want5
				if v == codec.Version311 {
					want = tc.want311
				}
				r := dialRaw(t, addr)
				defer r.c.Close()
				r.connect(codec.Connect{ProtocolVersion: v, ClientID: []byte("a-" + tc.user), CleanStart: true,
					UsernameFlag: true, Username: []byte(tc.user), PasswordFlag: true, Password: []byte("pw")}, want)
				if tc.refusedAs != "" && srv.Refused()[tc.refusedAs] <= before {
					t.Fatalf("refusal not counted under %s", tc.refusedAs)
				}
			})
		}
	}
	// Still up: a healthy client connects and round-trips a message.
	r := dialRaw(t, addr)
	r.connect(codec.Connect{ProtocolVersion: codec.Version5, ClientID: []byte("after"), CleanStart: true,
		UsernameFlag: true, Username: []byte("ok")}, 0)
	r.subscribe(1, "t", 1)
	r.publish(codec.Publish{Topic: []byte("t"), Payload: []byte("x"), QoS: 0})
	if p := r.readPublish(5 * time.Second); string(p.Payload) != "x" {
		t.Fatalf("got %q", p.Payload)
	}
}

// TestHookAuthenticateCacheAndIdentity: verdicts are cached per
// credentials; AuthResult.Identity becomes the client's identity (what
// Authorize sees).
func TestHookAuthenticateCacheAndIdentity(t *testing.T) {
	var calls atomic.Int64
	var seen sync.Map
	srv, addr := startBroker(t, func(o *Options) {
		o.Hooks = []Hooks{{
			Authenticate: func(_ context.Context, r AuthRequest) (AuthResult, error) {
				calls.Add(1)
				if string(r.Password) != "token-1" {
					return AuthResult{}, errors.New("bad token")
				}
				return AuthResult{Identity: "account-7"}, nil
			},
			Authorize: func(_ context.Context, r AuthzRequest) bool {
				seen.Store(r.Username, true)
				return true
			},
		}}
	})
	_ = srv
	conn := func(pw string, want codec.ReasonCode) {
		r := dialRaw(t, addr)
		defer r.c.Close()
		r.connect(codec.Connect{ProtocolVersion: codec.Version5, ClientID: []byte("dev"), CleanStart: true,
			UsernameFlag: true, Username: []byte("dev"), PasswordFlag: true, Password: []byte(pw)}, want)
		if want == 0 {
			r.subscribe(1, "x", 0)
		}
	}
	conn("token-1", 0)
	conn("token-1", 0)
	if n := calls.Load(); n != 1 {
		t.Fatalf("Authenticate called %d times for the same credentials, want 1 (cached)", n)
	}
	conn("token-2", codec.BadUsernameOrPassword)
	conn("token-2", codec.BadUsernameOrPassword)
	if n := calls.Load(); n != 2 {
		t.Fatalf("Authenticate called %d times, want 2 (refusals are cached too)", n)
	}
	if _, ok := seen.Load("account-7"); !ok {
		t.Fatal("Authorize did not see the identity Authenticate returned")
	}
}

// TestHookAuthorize: a blocking Authorize hook decides PUBLISH and
// SUBSCRIBE off the loop; denied is PUBACK/SUBACK 0x87 (5.0) and the
// message is not routed; a hook that panics or times out denies and the
// broker stays up; a client waiting for a verdict does not stall another.
func TestHookAuthorize(t *testing.T) {
	slowGate := make(chan struct{})
	var slowOnce sync.Once
	defer slowOnce.Do(func() { close(slowGate) })
	srv, addr := startBroker(t, func(o *Options) {
		o.HookOptions = HookOptions{Timeout: time.Second, Workers: 4}
		o.Hooks = []Hooks{{Authorize: func(ctx context.Context, r AuthzRequest) bool {
			switch r.Topic {
			case "panic":
				panic("boom")
			case "hang":
				<-ctx.Done()
				time.Sleep(50 * time.Millisecond)
				return true // too late: already denied
			case "slow":
				if r.Action == AuthzPublish {
					<-slowGate // until the test saw another client's publish go through
				}
				return true
			}
			return !bytes.HasPrefix([]byte(r.Topic), []byte("deny"))
		}}}
	})
	sub := dialRaw(t, addr)
	sub.connect(codec.Connect{ProtocolVersion: codec.Version5, ClientID: []byte("sub"), CleanStart: true}, 0)
	if codes := sub.subscribe(1, "deny/x", 1); codes[0] != codec.NotAuthorized {
		t.Fatalf("SUBACK for a denied filter: %#x", codes[0])
	}
	for i, f := range []string{"#", "slow"} {
		if codes := sub.subscribe(uint16(2+i), f, 1); codes[0] != 1 {
			t.Fatalf("SUBACK for %s: %#x", f, codes[0])
		}
	}
	pub := dialRaw(t, addr)
	pub.connect(codec.Connect{ProtocolVersion: codec.Version5, ClientID: []byte("pub"), CleanStart: true}, 0)
	for i, topic := range []string{"deny/a", "panic", "hang"} {
		pub.publish(codec.Publish{Topic: []byte(topic), Payload: []byte("x"), QoS: 1, PacketID: uint16(10 + i)})
		if a := pub.readAck(5*time.Second, codec.PUBACK); a.ReasonCode != codec.NotAuthorized {
			t.Fatalf("PUBACK for %s: %#x, want 0x87", topic, a.ReasonCode)
		}
	}
	if srv.Refused()["hook_panic"] == 0 || srv.Refused()["hook_timeout"] == 0 {
		t.Fatalf("refusals: %v", srv.Refused())
	}
	// A publisher waiting on a verdict does not hold another back: the
	// other's publish is acknowledged and delivered while the verdict is
	// still pending.
	slow := dialRaw(t, addr)
	slow.connect(codec.Connect{ProtocolVersion: codec.Version5, ClientID: []byte("slowpub"), CleanStart: true}, 0)
	slow.publish(codec.Publish{Topic: []byte("slow"), Payload: []byte("s"), QoS: 1, PacketID: 1})
	pub.publish(codec.Publish{Topic: []byte("ok/1"), Payload: []byte("o"), QoS: 1, PacketID: 20})
	pub.readAck(5*time.Second, codec.PUBACK)
	if p := sub.readPublish(5 * time.Second); string(p.Topic) != "ok/1" {
		t.Fatalf("first delivery %s, want ok/1 (nothing denied may be routed)", p.Topic)
	}
	slowOnce.Do(func() { close(slowGate) })
	slow.readAck(5*time.Second, codec.PUBACK)
	if p := sub.readPublish(5 * time.Second); string(p.Topic) != "slow" {
		t.Fatalf("delivery %s, want slow", p.Topic)
	}
}

// TestHookOnPublishComposed: two hook sets compose in order; OnPublish
// rewrites topic and payload or drops before routing; Server.Publish and
// in-process clients go through it too.
func TestHookOnPublishComposed(t *testing.T) {
	srv, addr := startBroker(t, func(o *Options) {
		o.Hooks = []Hooks{
			{OnPublish: func(m *HookMessage) PublishAction {
				if string(m.Topic) == "drop" {
					return Drop
				}
				if bytes.HasPrefix(m.Topic, []byte("raw/")) {
					m.Topic = append([]byte("cooked/"), m.Topic[4:]...)
				}
				m.Payload = append(append([]byte(nil), m.Payload...), 'a')
				return Keep
			}},
			{OnPublish: func(m *HookMessage) PublishAction {
				m.Payload = append(m.Payload, 'b')
				if string(m.Topic) == "bad" {
					m.Topic = []byte("bad/+") // not a topic name: dropped
				}
				return Keep
			}},
		}
	})
	sub := dialRaw(t, addr)
	sub.connect(codec.Connect{ProtocolVersion: codec.Version311, ClientID: []byte("sub"), CleanStart: true}, 0)
	sub.subscribe(1, "#", 0)
	pub := dialRaw(t, addr)
	pub.connect(codec.Connect{ProtocolVersion: codec.Version311, ClientID: []byte("pub"), CleanStart: true}, 0)
	pub.publish(codec.Publish{Topic: []byte("drop"), Payload: []byte("x")})
	pub.publish(codec.Publish{Topic: []byte("bad"), Payload: []byte("x")})
	pub.publish(codec.Publish{Topic: []byte("raw/1"), Payload: []byte("x")})
	if p := sub.readPublish(5 * time.Second); string(p.Topic) != "cooked/1" || string(p.Payload) != "xab" {
		t.Fatalf("got %s %q, want cooked/1 \"xab\"", p.Topic, p.Payload)
	}
	if err := srv.Publish("raw/2", []byte("y"), 0, false); err != nil {
		t.Fatal(err)
	}
	if p := sub.readPublish(5 * time.Second); string(p.Topic) != "cooked/2" || string(p.Payload) != "yab" {
		t.Fatalf("Server.Publish: got %s %q", p.Topic, p.Payload)
	}
	c := mustClient(t, srv, "ip", ClientOptions{})
	if err := c.Publish("raw/3", []byte("z"), 1, false); err != nil {
		t.Fatal(err)
	}
	if p := sub.readPublish(5 * time.Second); string(p.Topic) != "cooked/3" || string(p.Payload) != "zab" {
		t.Fatalf("in-process: got %s %q", p.Topic, p.Payload)
	}
}

// hookLog records hook calls by name.
type hookLog struct {
	mu    sync.Mutex
	calls []string
}

func (h *hookLog) add(s string) {
	h.mu.Lock()
	h.calls = append(h.calls, s)
	h.mu.Unlock()
}

func (h *hookLog) waitFor(t *testing.T, want string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		h.mu.Lock()
		for _, c := range h.calls {
			if c == want {
				h.mu.Unlock()
				return
			}
		}
		h.mu.Unlock()
		time.Sleep(10 * time.Millisecond)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	t.Fatalf("hook call %q not seen; calls: %q", want, h.calls)
}

// TestHookLifecycle: connect/disconnect (with reason), session created,
// resumed and expired, subscribe/unsubscribe, delivered, dropped (full
// queue), expired (Message Expiry [MQTT-3.3.2-5]) and will sent.
func TestHookLifecycle(t *testing.T) {
	var log hookLog
	srv, addr := startBroker(t, func(o *Options) {
		o.Durability = DurabilityNone // queues in memory: a full one drops
		o.MaxQueuedMessages = 2
		o.Hooks = []Hooks{{
			OnConnect: func(c HookClient) { log.add("connect " + c.ClientID) },
			OnDisconnect: func(c HookClient, err error) {
				log.add(fmt.Sprintf("disconnect %s %v", c.ClientID, err != nil))
			},
			OnSubscribe:      func(c HookClient, f string, q byte) { log.add(fmt.Sprintf("sub %s %s %d", c.ClientID, f, q)) },
			OnUnsubscribe:    func(c HookClient, f string) { log.add("unsub " + c.ClientID + " " + f) },
			OnSessionCreated: func(c HookClient) { log.add("created " + c.ClientID) },
			OnSessionResumed: func(c HookClient) { log.add("resumed " + c.ClientID) },
			OnSessionExpired: func(id string) { log.add("expired-session " + id) },
			OnDelivered:      func(id string, m *HookMessage) { log.add("delivered " + id + " " + string(m.Topic)) },
			OnDropped:        func(id string, m *HookMessage, why string) { log.add("dropped " + id + " " + why) },
			OnExpired:        func(id string, m *HookMessage) { log.add("expired " + id + " " + string(m.Topic)) },
			OnWillSent:       func(id string, m *HookMessage) { log.add("will " + id + " " + string(m.Topic)) },
		}}
	})
	sub := dialRaw(t, addr)
	sub.connect(codec.Connect{ProtocolVersion: codec.Version5, ClientID: []byte("s"), CleanStart: true}, 0)
	log.waitFor(t, "connect s", 5*time.Second)
	log.waitFor(t, "created s", time.Second)
	sub.subscribe(1, "a/#", 1)
	log.waitFor(t, "sub s a/# 1", time.Second)
	_ = srv.Publish("a/1", []byte("x"), 1, false)
	sub.readPublish(5 * time.Second)
	log.waitFor(t, "delivered s a/1", time.Second)
	sub.send((&codec.Unsubscribe{PacketID: 2, Filters: [][]byte{[]byte("a/#")}}).Append(nil, codec.Version5))
	log.waitFor(t, "unsub s a/#", 5*time.Second)
	sub.send((&codec.Disconnect{}).Append(nil, codec.Version5))
	log.waitFor(t, "disconnect s false", 5*time.Second)

	// A persistent in-process subscriber offline: its queue of 2 fills
	// (third message dropped), then one message expires while it waits.
	got := newInprocCollector()
	p, err := srv.Client("p", ClientOptions{SessionExpiry: 2 * time.Second,
		Subscriptions: []Subscription{{Filter: "q/#", QoS: 1, Handler: got.handle}}})
	if err != nil {
		t.Fatal(err)
	}
	_ = p.Close()
	pub := mustClient(t, srv, "pub", ClientOptions{})
	if err := pub.PublishMessage(context.Background(), &Message{Topic: "q/short", QoS: 1, Expiry: time.Second}); err != nil {
		t.Fatal(err)
	}
	for _, topic := range []string{"q/1", "q/2"} {
		if err := pub.Publish(topic, nil, 1, false); err != nil {
			t.Fatal(err)
		}
	}
	log.waitFor(t, "dropped p session queue full", 5*time.Second)
	time.Sleep(1100 * time.Millisecond)
	p2 := mustClient(t, srv, "p", ClientOptions{SessionExpiry: 1 * time.Second,
		Subscriptions: []Subscription{{Filter: "q/#", QoS: 1, Handler: got.handle}}})
	log.waitFor(t, "resumed p", 5*time.Second)
	log.waitFor(t, "expired p q/short", 5*time.Second)
	got.waitN(t, 1, 5*time.Second)
	_ = p2.Close()
	log.waitFor(t, "expired-session p", 5*time.Second)

	// A will: the connection drops without DISCONNECT.
	w := dialRaw(t, addr)
	w.connect(codec.Connect{ProtocolVersion: codec.Version311, ClientID: []byte("w"), CleanStart: true,
		WillFlag: true, WillTopic: []byte("wills/w"), WillPayload: []byte("gone")}, 0)
	_ = w.c.Close()
	log.waitFor(t, "will w wills/w", 5*time.Second)
	log.waitFor(t, "disconnect w true", 5*time.Second)
}

// TestHookBlockingAuthenticatorThroughput: with an Authenticate hook
// that takes 50 ms, 1,000 connects finish in about 1,000 × 50 ms /
// Workers (the test allows 4× for a loaded machine: a pool that ran
// one hook at a time would take 50 s). It logs a connected network
// client's QoS 1 round trips before and during the storm for
// BENCHMARKS.md; that the hook never holds a loop is asserted, without
// timing, by TestHookAuthenticateOffLoop.
func TestHookBlockingAuthenticatorThroughput(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("timing: not under -short or the race detector")
	}
	const workers, n = 32, 1000
	storm := func(hooked bool) (el time.Duration, idle, busy int) {
		_, addr := startBroker(t, func(o *Options) {
			o.HookOptions = HookOptions{Workers: workers, CacheTTL: -1}
			o.Hooks = []Hooks{{Authenticate: func(context.Context, AuthRequest) (AuthResult, error) {
				time.Sleep(50 * time.Millisecond)
				return AuthResult{}, nil
			}}}
		})
		meter := dialRaw(t, addr)
		meter.connect(codec.Connect{ProtocolVersion: codec.Version311, ClientID: []byte("meter"), CleanStart: true,
			UsernameFlag: true, Username: []byte("m"), PasswordFlag: true, Password: []byte("m")}, 0)
		rtt := func(d time.Duration) int {
			k := 0
			for end := time.Now().Add(d); time.Now().Before(end); k++ {
				meter.publish(codec.Publish{Topic: []byte("m"), Payload: []byte("x"), QoS: 1, PacketID: uint16(k%60000 + 1)})
				if _, _, err := meter.tryRead(5 * time.Second); err != nil {
					t.Error(err)
					return k
				}
			}
			return k
		}
		idle = rtt(300 * time.Millisecond)
		var wg sync.WaitGroup
		start := time.Now()
		busyCh := make(chan int, 1)
		go func() { busyCh <- rtt(300 * time.Millisecond) }()
		// At most 64 dial at once: the broker's listen backlog (fd_reserve/4
		// = 64) would otherwise drop SYNs and the kernel retry them a
		// second later, measuring TCP, not the hook pool.
		gate := make(chan struct{}, 64)
		for i := range n {
			wg.Add(1)
			gate <- struct{}{}
			go func() {
				defer func() { <-gate; wg.Done() }()
				r := dialRaw(t, addr)
				defer r.c.Close()
				r.connect(codec.Connect{ProtocolVersion: codec.Version311, ClientID: []byte(fmt.Sprint("c", i)), CleanStart: true,
					UsernameFlag: true, Username: []byte("u"), PasswordFlag: true, Password: []byte(fmt.Sprint(i))}, 0)
			}()
		}
		wg.Wait()
		return time.Since(start), idle, <-busyCh
	}
	el, idle, busy := storm(true)
	ideal := time.Duration(n) * 50 * time.Millisecond / workers
	t.Logf("%d connects with a 50 ms hook on %d workers: %v (ideal %v); a network client's QoS 1 round trips in 300 ms: idle %d, during the storm %d",
		n, workers, el, ideal, idle, busy)
	if el > 4*ideal {
		t.Fatalf("connects took %v, over 4× the ideal %v", el, ideal)
	}
	_, _ = idle, busy
}

// TestHookAuthenticateOffLoop: with one event loop, a CONNECT whose
// Authenticate hook blocks until released does not hold that loop: a
// client connected on the same loop completes 100 QoS 1 round trips
// meanwhile, and the held CONNECT completes once released.
func TestHookAuthenticateOffLoop(t *testing.T) {
	release := make(chan struct{})
	_, addr := startBroker(t, func(o *Options) {
		o.EventLoops = 1
		o.Hooks = []Hooks{{Authenticate: func(_ context.Context, r AuthRequest) (AuthResult, error) {
			if r.Username == "slow" {
				<-release
			}
			return AuthResult{}, nil
		}}}
	})
	meter := dialRaw(t, addr)
	meter.connect(codec.Connect{ProtocolVersion: codec.Version311, ClientID: []byte("meter"), CleanStart: true,
		UsernameFlag: true, Username: []byte("m")}, 0)
	slow := dialRaw(t, addr)
	slow.send((&codec.Connect{ProtocolVersion: codec.Version311, ClientID: []byte("slow"), CleanStart: true,
		UsernameFlag: true, Username: []byte("slow")}).Append(nil))
	time.Sleep(50 * time.Millisecond) // the slow CONNECT is with the hook
	for i := range 100 {
		meter.publish(codec.Publish{Topic: []byte("m"), Payload: []byte("x"), QoS: 1, PacketID: uint16(i + 1)})
		meter.readAck(5*time.Second, codec.PUBACK)
	}
	if _, _, err := slow.tryRead(50 * time.Millisecond); err == nil {
		t.Fatal("the held CONNECT was answered before its hook returned")
	}
	close(release)
	if h, _ := slow.read(5 * time.Second); h.Type != codec.CONNACK {
		t.Fatalf("held CONNECT answered with packet type %d", h.Type)
	}
}

// BenchmarkHookPublish is BenchmarkLoopbackPubSub (one raw publisher →
// broker → one raw subscriber over loopback TCP) without hooks and with a
// no-op OnPublish hook: what an unset hook costs (a nil check) against
// what a set one costs (one call per message, no allocation).
func BenchmarkHookPublish(b *testing.B) {
	noop := []Hooks{{OnPublish: func(*HookMessage) PublishAction { return Keep }}}
	for _, q := range []byte{0, 1} {
		for _, hooked := range []bool{false, true} {
			b.Run(fmt.Sprintf("qos%d/hook=%v", q, hooked), func(b *testing.B) {
				srv, addr := startBroker(b, func(o *Options) {
					if hooked {
						o.Hooks = noop
					}
				})
				b.ReportAllocs()
				b.SetBytes(64)
				b.ResetTimer()
				el, d := loopbackScenario{version: codec.Version311, qos: q, window: 256}.run(b, srv, addr, b.N, "h")
				b.ReportMetric(float64(b.N-d)/el.Seconds(), "delivered/s")
			})
		}
	}
}

// BenchmarkHookOnPublishCall isolates what handlePublish adds per
// message for OnPublish: a nil check when no hook is set; with a no-op
// hook, filling the loop's HookMessage and calling it.
func BenchmarkHookOnPublishCall(b *testing.B) {
	for _, set := range []bool{false, true} {
		b.Run(fmt.Sprintf("hook=%v", set), func(b *testing.B) {
			var sets []Hooks
			if set {
				sets = []Hooks{{OnPublish: func(*HookMessage) PublishAction { return Keep }}}
			}
			s := &Server{hooks: newHookChain(sets, HookOptions{}), opts: Options{MaxTopicLevels: DefaultMaxTopicLevels}}
			var hm HookMessage
			topic, payload := []byte("devices/dev1/temperature"), make([]byte, 64)
			dropped := 0
			b.ReportAllocs()
			for b.Loop() {
				if s.hooks.onPublish != nil {
					hm = HookMessage{ClientID: "dev1", Topic: topic, Payload: payload, QoS: 1}
					if s.hookPublish(&hm) {
						dropped++
					}
				}
			}
			if dropped != 0 {
				b.Fatal("a no-op hook dropped a message")
			}
		})
	}
}
