package server

import (
	"fmt"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/ternmq/tern/codec"
	"github.com/ternmq/tern/persist"
)

// restartable runs a broker on a fixed data dir and port that a test can
// stop (cleanly or not) and start again.
type restartable struct {
	t    *testing.T
	dir  string
	addr string
	srv  *Server
	errc chan error
}

func newRestartable(t *testing.T, d Durability) *restartable {
	r := &restartable{t: t, dir: t.TempDir(), addr: "127.0.0.1:0"}
	r.start(d)
	t.Cleanup(func() { r.stop() })
	return r
}

func (r *restartable) start(d Durability) {
	r.t.Helper()
	s, err := New(Options{Listeners: []string{r.addr}, DataDir: r.dir, Durability: d, EventLoops: 2,
		Logger: quietLogger()})
	if err != nil {
		r.t.Fatal(err)
	}
	r.srv, r.errc = s, make(chan error, 1)
	go func() { r.errc <- s.Serve() }()
	<-s.Ready()
	if len(s.Addrs()) == 0 {
		r.t.Fatalf("serve: %v", <-r.errc)
	}
	r.addr = s.Addrs()[0].String()
}

func (r *restartable) stop() {
	if r.srv == nil {
		return
	}
	if err := r.srv.Close(); err != nil {
		r.t.Errorf("close: %v", err)
	}
	<-r.errc
	r.srv = nil
}

// Sessions, queued QoS 1/2 messages and retained messages survive a
// restart of the broker on the same data directory.
func TestDurableRestart(t *testing.T) {
	b := newRestartable(t, DurabilitySync)
	persistent := func(o *mqtt.ClientOptions) { o.SetCleanSession(false) }
	sub := pahoClient(t, b.addr, "durable-sub", persistent)
	wait(t, sub.Subscribe("dur/#", 2, nil), "subscribe")
	sub.Disconnect(50)

	pub := pahoClient(t, b.addr, "durable-pub")
	for i := 0; i < 20; i++ {
		wait(t, pub.Publish("dur/x", byte(1+i%2), false, fmt.Sprint(i)), "publish")
	}
	wait(t, pub.Publish("dur/retained", 1, true, "kept"), "publish retained")
	pub.Disconnect(50)
	b.stop()
	b.start(DurabilitySync)

	r := newReceived()
	sub2 := pahoClient(t, b.addr, "durable-sub", persistent, func(o *mqtt.ClientOptions) { o.SetDefaultPublishHandler(r.handler) })
	// 20 numbered messages, then the retained one (it matches dur/# too).
	got := r.waitN(t, 21, 10*time.Second)
	for i, m := range got[:20] {
		if string(m.Payload()) != fmt.Sprint(i) {
			t.Fatalf("message %d: %q", i, m.Payload())
		}
	}
	if m := got[20]; m.Topic() != "dur/retained" || string(m.Payload()) != "kept" {
		t.Fatalf("message 20: %s %q", m.Topic(), m.Payload())
	}
	time.Sleep(300 * time.Millisecond)
	if all := r.snapshot(); len(all) != 21 {
		for _, m := range all {
			t.Logf("%s %q qos %d dup %v id %d", m.Topic(), m.Payload(), m.Qos(), m.Duplicate(), m.MessageID())
		}
		t.Fatalf("got %d messages, want exactly 21", len(all))
	}
	// The subscription itself came back: a new message arrives.
	pub2 := pahoClient(t, b.addr, "durable-pub2")
	wait(t, pub2.Publish("dur/y", 1, false, "after"), "publish")
	r.waitN(t, 22, 5*time.Second)
	sub2.Disconnect(50)

	r2 := newReceived()
	c := pahoClient(t, b.addr, "retained-reader")
	subscribe(t, c, "dur/retained", 1, r2)
	if m := r2.waitN(t, 1, 5*time.Second)[0]; string(m.Payload()) != "kept" || !m.Retained() {
		t.Fatalf("retained after restart: %q retain=%v", m.Payload(), m.Retained())
	}
}

// An inbound QoS 2 flow interrupted by a restart (PUBREC sent, PUBREL not
// yet) completes after it, and the message is routed exactly once.
func TestDurableInboundQoS2AcrossRestart(t *testing.T) {
	b := newRestartable(t, DurabilitySync)
	sub := dialRaw(t, b.addr)
	sub.connect(codec.Connect{ClientID: []byte("q2-sub"), KeepAlive: 60}, 0)
	sub.subscribe(1, "q2", 2)
	sub.send((&codec.Disconnect{}).Append(nil, codec.Version311))
	sub.expectClosed(5 * time.Second)

	pub := dialRaw(t, b.addr)
	pub.connect(codec.Connect{ClientID: []byte("q2-pub"), KeepAlive: 60}, 0)
	pub.publish(codec.Publish{QoS: 2, PacketID: 42, Topic: []byte("q2"), Payload: []byte("exactly-once")})
	pub.readAck(5*time.Second, codec.PUBREC)
	pub.c.Close()
	b.stop()
	b.start(DurabilitySync)

	pub2 := dialRaw(t, b.addr)
	if ack := pub2.connect(codec.Connect{ClientID: []byte("q2-pub"), KeepAlive: 60}, 0); !ack.SessionPresent {
		t.Fatal("publisher session lost")
	}
	// The client did not see PUBREC and resends the PUBLISH: not routed again.
	pub2.publish(codec.Publish{QoS: 2, PacketID: 42, Dup: true, Topic: []byte("q2"), Payload: []byte("exactly-once")})
	pub2.readAck(5*time.Second, codec.PUBREC)
	pub2.send((&codec.Ack{Type: codec.PUBREL, PacketID: 42}).Append(nil, codec.Version311))
	pub2.readAck(5*time.Second, codec.PUBCOMP)

	sub2 := dialRaw(t, b.addr)
	sub2.connect(codec.Connect{ClientID: []byte("q2-sub"), KeepAlive: 60}, 0)
	p := sub2.readPublish(5 * time.Second)
	if string(p.Payload) != "exactly-once" || p.QoS != 2 {
		t.Fatalf("got %q qos %d", p.Payload, p.QoS)
	}
	if h, _, err := sub2.tryRead(500 * time.Millisecond); err == nil {
		t.Fatalf("second packet type %d: delivered twice?", h.Type)
	}
}

// A QoS 2 delivery whose PUBREC the broker had stored is continued with
// PUBREL after a restart, not re-sent as a PUBLISH.
func TestDurableOutboundQoS2AcrossRestart(t *testing.T) {
	b := newRestartable(t, DurabilitySync)
	sub := dialRaw(t, b.addr)
	sub.connect(codec.Connect{ClientID: []byte("o2-sub"), KeepAlive: 60}, 0)
	sub.subscribe(1, "o2/#", 2)
	pub := pahoClient(t, b.addr, "o2-pub")
	wait(t, pub.Publish("o2/a", 2, false, "a"), "publish")
	wait(t, pub.Publish("o2/b", 2, false, "b"), "publish")
	pa := sub.readPublish(5 * time.Second)
	pb := sub.readPublish(5 * time.Second)
	sub.send((&codec.Ack{Type: codec.PUBREC, PacketID: pa.PacketID}).Append(nil, codec.Version311))
	if rel := sub.readAck(5*time.Second, codec.PUBREL); rel.PacketID != pa.PacketID {
		t.Fatalf("PUBREL %d", rel.PacketID)
	}
	sub.c.Close()
	pub.Disconnect(50)
	b.stop()
	b.start(DurabilitySync)

	sub2 := dialRaw(t, b.addr)
	sub2.connect(codec.Connect{ClientID: []byte("o2-sub"), KeepAlive: 60}, 0)
	var gotRel, gotB bool
	for !(gotRel && gotB) {
		h, body := sub2.read(5 * time.Second)
		switch h.Type {
		case codec.PUBREL:
			var a codec.Ack
			_ = a.Decode(h, body, codec.Version311)
			if a.PacketID != pa.PacketID {
				t.Fatalf("PUBREL for %d, want %d", a.PacketID, pa.PacketID)
			}
			gotRel = true
		case codec.PUBLISH:
			var p codec.Publish
			_ = p.Decode(h, body, codec.Version311)
			if string(p.Payload) != "b" || p.PacketID != pb.PacketID {
				t.Fatalf("re-sent %q id %d, want b id %d", p.Payload, p.PacketID, pb.PacketID)
			}
			gotB = true
		default:
			t.Fatalf("unexpected packet %d", h.Type)
		}
	}
}

// An abandoned persistent session expires (MaxSessionExpiry caps 3.1.1
// sessions) and its data — session record, queued deliveries, the messages
// only it referenced — is deleted from the store.
func TestDurableSessionExpiryDeletesData(t *testing.T) {
	st, err := persist.OpenPebble(persist.Options{Dir: t.TempDir(), Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	_, addr := startBroker(t, func(o *Options) { o.Store = st; o.MaxSessionExpiry = time.Second })
	sub := dialRaw(t, addr)
	sub.connect(codec.Connect{ClientID: []byte("abandoned"), KeepAlive: 60}, 0) // clean session 0
	sub.subscribe(1, "gone/#", 1)
	sub.send((&codec.Disconnect{}).Append(nil, codec.Version311))
	sub.expectClosed(5 * time.Second)
	pub := pahoClient(t, addr, "expiry-pub")
	for i := 0; i < 5; i++ {
		wait(t, pub.Publish("gone/x", 1, false, "queued"), "publish")
	}
	if u, _ := st.Usage(); u.Sessions.Count != 1 || u.Outbound.Count != 5 || u.Messages.Count != 5 {
		t.Fatalf("before expiry: %d sessions, %d queued, %d messages", u.Sessions.Count, u.Outbound.Count, u.Messages.Count)
	}
	deadline := time.Now().Add(6 * time.Second)
	for {
		u, _ := st.Usage()
		if u.Sessions.Count == 0 && u.Outbound.Count == 0 && u.Messages.Count == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after expiry: %d sessions, %d queued, %d messages still stored", u.Sessions.Count, u.Outbound.Count, u.Messages.Count)
		}
		time.Sleep(100 * time.Millisecond)
	}
	again := dialRaw(t, addr)
	if ack := again.connect(codec.Connect{ClientID: []byte("abandoned"), KeepAlive: 60}, 0); ack.SessionPresent {
		t.Fatal("expired session came back")
	}
}
