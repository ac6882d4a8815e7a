package server

// Longer than 600 lines on purpose: the MQTT 5.0 feature tests, one per
// feature in the order of the spec, read as one checklist of §3 and §4.

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/ternmq/tern/codec"
)

// MQTT 5.0 features, each driven by paho.golang (or a raw 5.0 client
// where the wire itself is the point) against the real broker.

// CONNACK advertises what the broker does, truthfully: Receive Maximum,
// Maximum Packet Size, Topic Alias Maximum, and Wildcard / Subscription
// Identifier / Shared Subscription Available [MQTT-3.2.2-3].
func TestV5ConnackCapabilities_MQTT_3_2_2(t *testing.T) {
	_, addr := startBroker(t, func(o *Options) { o.ReceiveMaximum = 50 })
	_, ca, _ := paho5(t, addr, "caps", nil)
	p := ca.Properties
	if p == nil || p.ReceiveMaximum == nil || *p.ReceiveMaximum != 50 {
		t.Fatalf("Receive Maximum: %+v", p)
	}
	if p.MaximumPacketSize == nil || *p.MaximumPacketSize != 1<<20 {
		t.Errorf("Maximum Packet Size %v", p.MaximumPacketSize)
	}
	if p.TopicAliasMaximum == nil || *p.TopicAliasMaximum != 10 {
		t.Errorf("Topic Alias Maximum %v, want 10", p.TopicAliasMaximum)
	}
	if !p.WildcardSubAvailable || !p.SubIDAvailable || !p.SharedSubAvailable || !p.RetainAvailable {
		t.Errorf("availability flags %+v", p)
	}
	if p.MaximumQoS != nil {
		t.Errorf("Maximum QoS %d advertised; the broker supports QoS 2", *p.MaximumQoS)
	}
	// Topic aliases can be turned off: then none is advertised.
	_, addr2 := startBroker(t, func(o *Options) { o.TopicAliasMaximum = -1 })
	_, ca2, _ := paho5(t, addr2, "caps2", nil)
	if ca2.Properties.TopicAliasMaximum != nil {
		t.Errorf("Topic Alias Maximum %d advertised with aliases disabled", *ca2.Properties.TopicAliasMaximum)
	}
}

// An empty client id is given one in CONNACK [MQTT-3.2.2-16]; a keepalive
// above the broker's maximum is replaced by Server Keep Alive [MQTT-3.2.2-21].
func TestV5AssignedClientIDAndServerKeepAlive_MQTT_3_2_2_16(t *testing.T) {
	_, addr := startBroker(t, func(o *Options) { o.MaxKeepAlive = 20 })
	c, ca, _, err := dial5(t, addr, &paho.Connect{CleanStart: true, KeepAlive: 60}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if ca.Properties.AssignedClientID == "" || c.ClientID() != ca.Properties.AssignedClientID {
		t.Errorf("assigned client id %q, client uses %q", ca.Properties.AssignedClientID, c.ClientID())
	}
	if ca.Properties.ServerKeepAlive == nil || *ca.Properties.ServerKeepAlive != 20 {
		t.Errorf("Server Keep Alive %v, want 20", ca.Properties.ServerKeepAlive)
	}
}

// Session Expiry Interval: a session outlives its connection for the
// interval [MQTT-3.1.2-23], can be shortened to 0 on DISCONNECT
// [MQTT-3.14.2], and is gone once expired.
func TestV5SessionExpiry_MQTT_3_1_2_23(t *testing.T) {
	t.Parallel()
	_, addr := startBroker(t, nil)
	connect := func(id string, clean bool, expiry uint32) (*paho.Client, *paho.Connack, *recv5) {
		c, ca, r, err := dial5(t, addr, &paho.Connect{ClientID: id, CleanStart: clean,
			Properties: &paho.ConnectProperties{SessionExpiryInterval: u32(expiry)}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return c, ca, r
	}
	pub, _, _ := paho5(t, addr, "se-pub", nil)

	// Kept for 60 s: a message published while offline is there on return.
	c, _, _ := connect("se-keep", true, 60)
	sub5(t, c, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "se/keep", QoS: 1}}})
	_ = c.Disconnect(&paho.Disconnect{})
	pub5(t, pub, &paho.Publish{Topic: "se/keep", QoS: 1, Payload: []byte("kept")})
	_, ca, r := connect("se-keep", false, 60)
	if !ca.SessionPresent {
		t.Fatal("session not present after reconnect within its expiry")
	}
	if got := r.waitN(t, 1, 5*time.Second); string(got[0].Payload) != "kept" {
		t.Fatalf("got %q", got[0].Payload)
	}

	// DISCONNECT with Session Expiry 0 ends the session at once.
	c, _, _ = connect("se-drop", true, 60)
	sub5(t, c, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "se/drop", QoS: 1}}})
	_ = c.Disconnect(&paho.Disconnect{Properties: &paho.DisconnectProperties{SessionExpiryInterval: u32(0)}})
	time.Sleep(100 * time.Millisecond)
	if _, ca, _ = connect("se-drop", false, 60); ca.SessionPresent {
		t.Error("session present after DISCONNECT set its expiry to 0")
	}

	// Expiry 1 s: gone after it passes.
	c, _, _ = connect("se-short", true, 1)
	sub5(t, c, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "se/short", QoS: 1}}})
	_ = c.Disconnect(&paho.Disconnect{})
	time.Sleep(2500 * time.Millisecond)
	if _, ca, _ = connect("se-short", false, 60); ca.SessionPresent {
		t.Error("session present after its expiry interval passed")
	}

	// Expiry 0 in CONNECT then non-zero in DISCONNECT is a Protocol Error [MQTT-3.14.2-2].
	raw, _ := dialRaw5(t, addr, codec.Connect{ClientID: []byte("se-zero"), CleanStart: true})
	d := codec.Disconnect{}
	d.Props.SessionExpiry = 30
	d.Props.Set(codec.PropSessionExpiry)
	raw.send(d.Append(nil, codec.Version5))
	raw.expectDisconnect(codec.ProtocolError)
}

// Message Expiry Interval: an expired message is never delivered
// [MQTT-3.3.2-5] and a delivered one carries the remaining lifetime
// [MQTT-3.3.2-6].
func TestV5MessageExpiry_MQTT_3_3_2_5(t *testing.T) {
	t.Parallel()
	srv, addr := startBroker(t, nil)
	props := &paho.ConnectProperties{SessionExpiryInterval: u32(60)}
	c, _, _, err := dial5(t, addr, &paho.Connect{ClientID: "me-sub", CleanStart: true, Properties: props}, nil)
	if err != nil {
		t.Fatal(err)
	}
	sub5(t, c, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "me/#", QoS: 1}}})
	_ = c.Disconnect(&paho.Disconnect{})
	// Onward delivery must not have started: a message already in flight
	// is completed even past its expiry, which is what the spec allows.
	waitOffline(t, srv, "me-sub")

	pub, _, _ := paho5(t, addr, "me-pub", nil)
	pub5(t, pub, &paho.Publish{Topic: "me/short", QoS: 1, Payload: []byte("short"),
		Properties: &paho.PublishProperties{MessageExpiry: u32(1)}})
	pub5(t, pub, &paho.Publish{Topic: "me/long", QoS: 1, Payload: []byte("long"),
		Properties: &paho.PublishProperties{MessageExpiry: u32(60)}})
	time.Sleep(2100 * time.Millisecond)

	_, ca, r, err := dial5(t, addr, &paho.Connect{ClientID: "me-sub", Properties: props}, nil)
	if err != nil || !ca.SessionPresent {
		t.Fatalf("reconnect: %v present=%v", err, ca.SessionPresent)
	}
	got := r.waitN(t, 1, 5*time.Second)
	r.quiet(t, 1, 300*time.Millisecond)
	if string(got[0].Payload) != "long" {
		t.Fatalf("delivered %q; the expired message must not be", got[0].Payload)
	}
	left := got[0].Properties.MessageExpiry
	if left == nil || *left >= 60 || *left < 55 {
		t.Errorf("Message Expiry forwarded as %v, want the remaining ~58 s", left)
	}
}

// Will Delay Interval [MQTT-3.1.3-9]: the will waits for its delay, is not
// sent if the session resumes first, and is sent when the session ends
// before the delay; will properties are forwarded.
func TestV5WillDelay_MQTT_3_1_3_9(t *testing.T) {
	t.Parallel()
	_, addr := startBroker(t, nil)
	watcher, _, wr := paho5(t, addr, "wd-watcher", nil)
	sub5(t, watcher, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "wd/#", QoS: 1}}})

	willConn := func(id, topic string, delay, expiry uint32) *rawConn {
		c := codec.Connect{ClientID: []byte(id), CleanStart: true, WillFlag: true, WillQoS: 1,
			WillTopic: []byte(topic), WillPayload: []byte(id)}
		c.Props.SessionExpiry = expiry
		c.Props.Set(codec.PropSessionExpiry)
		c.WillProps.WillDelay = delay
		c.WillProps.Set(codec.PropWillDelay)
		c.WillProps.ContentType = []byte("text/plain")
		c.WillProps.Set(codec.PropContentType)
		c.WillProps.User = []codec.UserProperty{{Key: []byte("k"), Value: []byte("v")}}
		raw, _ := dialRaw5(t, addr, c)
		return raw
	}

	// Delayed 2 s: not there after 0.5 s, there after the delay.
	start := time.Now()
	a := willConn("wd-delayed", "wd/delayed", 2, 60)
	a.c.Close()
	wr.quiet(t, 0, 700*time.Millisecond)
	got := wr.waitN(t, 1, 4*time.Second)
	if el := time.Since(start); el < 1500*time.Millisecond {
		t.Errorf("will published after %v, before its 2 s delay", el)
	}
	m := got[0]
	if m.Topic != "wd/delayed" || m.Properties.ContentType != "text/plain" || m.Properties.User.Get("k") != "v" {
		t.Errorf("will %s %+v", m.Topic, m.Properties)
	}

	// Resumed within the delay: no will.
	b := willConn("wd-resumed", "wd/resumed", 2, 60)
	b.c.Close()
	time.Sleep(200 * time.Millisecond)
	resume := codec.Connect{ClientID: []byte("wd-resumed")}
	resume.Props.SessionExpiry = 60
	resume.Props.Set(codec.PropSessionExpiry)
	dialRaw5(t, addr, resume)

	// Session expiry 1 s, will delay 30 s: published when the session ends.
	start = time.Now()
	cc := willConn("wd-session-end", "wd/session-end", 30, 1)
	cc.c.Close()
	got = wr.waitN(t, 2, 4*time.Second)
	if got[1].Topic != "wd/session-end" {
		t.Fatalf("second will on %s", got[1].Topic)
	}
	if el := time.Since(start); el > 3500*time.Millisecond {
		t.Errorf("will published %v after close; the session ended after 1 s", el)
	}
	wr.quiet(t, 2, 1500*time.Millisecond) // the resumed session's will never comes

	// A normal DISCONNECT discards the will whatever its delay [MQTT-3.1.2-10].
	d := willConn("wd-clean", "wd/clean", 1, 60)
	d.send((&codec.Disconnect{}).Append(nil, codec.Version5))
	d.untilClosed(5 * time.Second)
	wr.quiet(t, 2, 1500*time.Millisecond)
}

// Receive Maximum, broker → client: no more unacknowledged QoS 1/2
// PUBLISHes than the client's Receive Maximum [MQTT-3.3.4-9].
func TestV5ReceiveMaximumOutbound_MQTT_3_3_4_9(t *testing.T) {
	_, addr := startBroker(t, nil)
	c := codec.Connect{ClientID: []byte("rm-sub"), CleanStart: true}
	c.Props.ReceiveMaximum = 2
	c.Props.Set(codec.PropReceiveMaximum)
	sub, _ := dialRaw5(t, addr, c)
	sub.subscribe(1, "rm", 1)
	pub, _, _ := paho5(t, addr, "rm-pub", nil)
	for i := 0; i < 5; i++ {
		pub5(t, pub, &paho.Publish{Topic: "rm", QoS: 1, Payload: []byte{'a' + byte(i)}})
	}
	a, b := sub.readPublish(5*time.Second), sub.readPublish(5*time.Second)
	if _, _, err := sub.tryRead(300 * time.Millisecond); err == nil {
		t.Fatal("a third PUBLISH sent with Receive Maximum 2")
	}
	var got []byte
	for _, p := range []codec.Publish{a, b} {
		got = append(got, p.Payload...)
		sub.send((&codec.Ack{Type: codec.PUBACK, PacketID: p.PacketID}).Append(nil, codec.Version5))
	}
	for len(got) < 5 {
		p := sub.readPublish(5 * time.Second)
		got = append(got, p.Payload...)
		sub.send((&codec.Ack{Type: codec.PUBACK, PacketID: p.PacketID}).Append(nil, codec.Version5))
	}
	if string(got) != "abcde" {
		t.Fatalf("got %q", got)
	}
}

// Receive Maximum, client → broker: exceeding the broker's is DISCONNECT
// 0x93 [MQTT-3.3.4-7], for QoS 1 and for QoS 2.
func TestV5ReceiveMaximumInbound_MQTT_3_3_4_7(t *testing.T) {
	_, addr := startBroker(t, func(o *Options) { o.ReceiveMaximum = 8 })
	for _, q := range []byte{1, 2} {
		t.Run(fmt.Sprintf("qos%d", q), func(t *testing.T) {
			raw, ack := dialRaw5(t, addr, codec.Connect{ClientID: []byte(fmt.Sprint("rm-in-", q)), CleanStart: true})
			if ack.Props.ReceiveMaximum != 8 {
				t.Fatalf("advertised Receive Maximum %d", ack.Props.ReceiveMaximum)
			}
			var burst []byte
			for i := 1; i <= 9; i++ {
				p := codec.Publish{QoS: q, PacketID: uint16(i), Topic: []byte("rm/in"), Payload: []byte("x")}
				burst = p.Append(burst, codec.Version5)
			}
			raw.send(burst)
			raw.expectDisconnect(codec.ReceiveMaximumExceeded)
		})
	}
	// Within the limit, a QoS 1 publisher is served normally.
	pub, _, _ := paho5(t, addr, "rm-in-ok", nil)
	for i := 0; i < 20; i++ {
		pub5(t, pub, &paho.Publish{Topic: "rm/in", QoS: 1, Payload: []byte("ok")})
	}
}

// Maximum Packet Size, broker → client: a message larger than the
// client's maximum is not sent to it [MQTT-3.1.2-24]; client → broker: a
// packet over the broker's is DISCONNECT 0x95.
func TestV5MaximumPacketSize_MQTT_3_1_2_24(t *testing.T) {
	_, addr := startBroker(t, func(o *Options) { o.MaxPacketSize = 4096 })
	c, _, r := paho5(t, addr, "mps-sub", &paho.ConnectProperties{MaximumPacketSize: u32(200)})
	sub5(t, c, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "mps", QoS: 1}}})
	pub, _, _ := paho5(t, addr, "mps-pub", nil)
	pub5(t, pub, &paho.Publish{Topic: "mps", QoS: 1, Payload: bytes.Repeat([]byte("x"), 500)})
	pub5(t, pub, &paho.Publish{Topic: "mps", QoS: 1, Payload: []byte("small")})
	got := r.waitN(t, 1, 5*time.Second)
	r.quiet(t, 1, 300*time.Millisecond)
	if string(got[0].Payload) != "small" {
		t.Fatalf("got %d bytes", len(got[0].Payload))
	}

	raw, _ := dialRaw5(t, addr, codec.Connect{ClientID: []byte("mps-big"), CleanStart: true})
	raw.publish(codec.Publish{Topic: []byte("mps"), Payload: bytes.Repeat([]byte("y"), 5000)})
	raw.expectDisconnect(codec.PacketTooLarge)
}

// Topic aliases client → broker: an alias defined with a topic stands for
// it on later PUBLISHes of the connection [MQTT-3.3.2-12].
func TestV5TopicAliasInbound_MQTT_3_3_2_12(t *testing.T) {
	_, addr := startBroker(t, nil)
	sub, _, r := paho5(t, addr, "ta-sub", nil)
	sub5(t, sub, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "ta/#", QoS: 1}}})
	pub, _, _ := paho5(t, addr, "ta-pub", nil)
	pub5(t, pub, &paho.Publish{Topic: "ta/one", QoS: 1, Payload: []byte("1"), Properties: &paho.PublishProperties{TopicAlias: u16(1)}})
	pub5(t, pub, &paho.Publish{QoS: 1, Payload: []byte("2"), Properties: &paho.PublishProperties{TopicAlias: u16(1)}})
	pub5(t, pub, &paho.Publish{Topic: "ta/ten", QoS: 0, Payload: []byte("3"), Properties: &paho.PublishProperties{TopicAlias: u16(10)}})
	pub5(t, pub, &paho.Publish{QoS: 1, Payload: []byte("4"), Properties: &paho.PublishProperties{TopicAlias: u16(10)}})
	// Redefining an alias replaces its topic.
	pub5(t, pub, &paho.Publish{Topic: "ta/two", QoS: 1, Payload: []byte("5"), Properties: &paho.PublishProperties{TopicAlias: u16(1)}})
	pub5(t, pub, &paho.Publish{QoS: 1, Payload: []byte("6"), Properties: &paho.PublishProperties{TopicAlias: u16(1)}})
	got := r.waitN(t, 6, 5*time.Second)
	want := []string{"ta/one", "ta/one", "ta/ten", "ta/ten", "ta/two", "ta/two"}
	for i, m := range got {
		if m.Topic != want[i] || m.Properties.TopicAlias != nil {
			t.Errorf("message %d on %q alias %v, want %q without alias", i, m.Topic, m.Properties.TopicAlias, want[i])
		}
	}
}

// Topic aliases client → broker, refused: above the maximum is DISCONNECT
// 0x94 [MQTT-3.3.2-9]; an alias never defined, 0x82; a new connection does
// not inherit the old one's aliases [MQTT-3.3.2-7].
func TestV5TopicAliasInvalid_MQTT_3_3_2_9(t *testing.T) {
	_, addr := startBroker(t, nil)
	withAlias := func(topic string, alias uint16) codec.Publish {
		p := codec.Publish{Topic: []byte(topic), Payload: []byte("x")}
		p.Props.TopicAlias = alias
		p.Props.Set(codec.PropTopicAlias)
		return p
	}
	raw, _ := dialRaw5(t, addr, codec.Connect{ClientID: []byte("tai-1"), CleanStart: true})
	raw.publish(withAlias("a", 11))
	raw.expectDisconnect(codec.TopicAliasInvalid)

	raw, _ = dialRaw5(t, addr, codec.Connect{ClientID: []byte("tai-2"), CleanStart: true})
	raw.publish(withAlias("a", 3))
	raw.c.Close()
	raw, _ = dialRaw5(t, addr, codec.Connect{ClientID: []byte("tai-2"), CleanStart: true})
	raw.publish(withAlias("", 3))
	raw.expectDisconnect(codec.ProtocolError)
}

// Topic aliases broker → client: assigned when the client allows them,
// never above its maximum [MQTT-3.3.2-11]; the topic is sent with the
// alias the first time and left empty afterwards.
func TestV5TopicAliasOutbound_MQTT_3_3_2_11(t *testing.T) {
	_, addr := startBroker(t, nil)
	c := codec.Connect{ClientID: []byte("tao-raw"), CleanStart: true}
	c.Props.TopicAliasMaximum = 2
	c.Props.Set(codec.PropTopicAliasMaximum)
	raw, _ := dialRaw5(t, addr, c)
	raw.subscribe(1, "tao/#", 0)
	pub, _, _ := paho5(t, addr, "tao-pub", nil)
	topics := []string{"tao/a", "tao/a", "tao/b", "tao/b", "tao/c", "tao/c", "tao/a"}
	for _, tp := range topics {
		pub5(t, pub, &paho.Publish{Topic: tp, QoS: 0, Payload: []byte(tp)})
	}
	known := map[uint16]string{}
	for i, want := range topics {
		p := raw.readPublish(5 * time.Second)
		if !p.Props.Has(codec.PropTopicAlias) || p.Props.TopicAlias == 0 || p.Props.TopicAlias > 2 {
			t.Fatalf("delivery %d: alias %d (present %v), want 1..2", i, p.Props.TopicAlias, p.Props.Has(codec.PropTopicAlias))
		}
		topic := string(p.Topic)
		if topic == "" {
			topic = known[p.Props.TopicAlias]
		} else {
			known[p.Props.TopicAlias] = topic
		}
		if topic != want || string(p.Payload) != want {
			t.Fatalf("delivery %d resolves to %q (payload %q), want %q", i, topic, p.Payload, want)
		}
		if i == 1 && len(p.Topic) != 0 {
			t.Errorf("second delivery on %s still carries the topic", want)
		}
	}

	// paho.golang's router routes by the aliases the broker assigns (it
	// hands the handler the packet as received: empty topic + alias).
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 10)
	router := paho.NewStandardRouter()
	router.RegisterHandler("tao/#", func(p *paho.Publish) { got <- string(p.Payload) })
	pc := paho.NewClient(paho.ClientConfig{ClientID: "tao-paho", Conn: conn, Router: router})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := pc.Connect(ctx, &paho.Connect{ClientID: "tao-paho", CleanStart: true, KeepAlive: 30,
		Properties: &paho.ConnectProperties{TopicAliasMaximum: u16(5)}}); err != nil {
		t.Fatal(err)
	}
	defer pc.Disconnect(&paho.Disconnect{})
	sub5(t, pc, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "tao/#", QoS: 1}}})
	for _, tp := range []string{"tao/x", "tao/x", "tao/y"} {
		pub5(t, pub, &paho.Publish{Topic: tp, QoS: 1, Payload: []byte(tp)})
	}
	for _, want := range []string{"tao/x", "tao/x", "tao/y"} {
		select {
		case tp := <-got:
			if tp != want {
				t.Errorf("paho routed %q, want %q", tp, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("paho received nothing")
		}
	}
}

// Subscription options: No Local [MQTT-3.8.3-3], Retain As Published
// [MQTT-3.3.1-12] [MQTT-3.3.1-13], Retain Handling 0/1/2 [MQTT-3.3.1-9]
// [MQTT-3.3.1-10] [MQTT-3.3.1-11].
func TestV5SubscriptionOptions_MQTT_3_8_3_3(t *testing.T) {
	_, addr := startBroker(t, nil)
	c, _, r := paho5(t, addr, "so-self", nil)
	sub5(t, c, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "so/local", QoS: 1, NoLocal: true}}})
	pub5(t, c, &paho.Publish{Topic: "so/local", QoS: 1, Payload: []byte("mine")})
	other, _, _ := paho5(t, addr, "so-other", nil)
	pub5(t, other, &paho.Publish{Topic: "so/local", QoS: 1, Payload: []byte("theirs")})
	got := r.waitN(t, 1, 5*time.Second)
	r.quiet(t, 1, 200*time.Millisecond)
	if string(got[0].Payload) != "theirs" {
		t.Errorf("No Local delivered %q", got[0].Payload)
	}

	pub5(t, other, &paho.Publish{Topic: "so/ret", QoS: 1, Retain: true, Payload: []byte("r")})
	check := func(name string, opts paho.SubscribeOptions, wantRetained int, wantFlag bool) {
		t.Run(name, func(t *testing.T) {
			s, _, rr := paho5(t, addr, "so-"+name, nil)
			opts.Topic, opts.QoS = "so/ret", 1
			sub5(t, s, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{opts}})
			sub5(t, s, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{opts}}) // again: RH 1 sends nothing new
			time.Sleep(200 * time.Millisecond)
			if n := len(rr.snapshot()); n != wantRetained {
				t.Fatalf("%d retained deliveries, want %d", n, wantRetained)
			}
			pub5(t, other, &paho.Publish{Topic: "so/ret", QoS: 1, Retain: true, Payload: []byte("r")})
			got := rr.waitN(t, wantRetained+1, 5*time.Second)
			live := got[wantRetained]
			if live.Retain != wantFlag {
				t.Errorf("live retained message forwarded with RETAIN %v, want %v", live.Retain, wantFlag)
			}
		})
	}
	check("rh0", paho.SubscribeOptions{RetainHandling: 0}, 2, false)
	check("rh1", paho.SubscribeOptions{RetainHandling: 1}, 1, false)
	check("rh2", paho.SubscribeOptions{RetainHandling: 2}, 0, false)
	check("rap", paho.SubscribeOptions{RetainHandling: 2, RetainAsPublished: true}, 0, true)
}

// Subscription Identifiers: a delivery carries the identifiers of every
// matching subscription of the session, in one PUBLISH [MQTT-3.3.4-3]
// [MQTT-3.3.4-4]; paho sees the identifier of its single subscription.
func TestV5SubscriptionIdentifiers_MQTT_3_3_4_3(t *testing.T) {
	_, addr := startBroker(t, nil)
	raw, _ := dialRaw5(t, addr, codec.Connect{ClientID: []byte("sid-raw"), CleanStart: true})
	for i, f := range []string{"sid/#", "sid/+/x", "sid/a/x"} {
		s := codec.Subscribe{PacketID: uint16(i + 1), Subscriptions: []codec.Subscription{{Filter: []byte(f), QoS: 1}}}
		if i < 2 {
			s.Props.SubscriptionIDs = []uint32{uint32(100 + i)}
		}
		raw.send(s.Append(nil, codec.Version5))
		raw.read(5 * time.Second)
	}
	c, _, r := paho5(t, addr, "sid-paho", nil)
	sub5(t, c, &paho.Subscribe{Properties: &paho.SubscribeProperties{SubscriptionIdentifier: intp(42)},
		Subscriptions: []paho.SubscribeOptions{{Topic: "sid/a/x", QoS: 0}}})
	pub, _, _ := paho5(t, addr, "sid-pub", nil)
	pub5(t, pub, &paho.Publish{Topic: "sid/a/x", QoS: 1, Payload: []byte("m")})
	p := raw.readPublish(5 * time.Second)
	ids := append([]uint32(nil), p.Props.SubscriptionIDs...)
	if len(ids) != 2 || !(ids[0] == 100 && ids[1] == 101 || ids[0] == 101 && ids[1] == 100) {
		t.Errorf("subscription ids %v, want 100 and 101 in one PUBLISH", ids)
	}
	if _, _, err := raw.tryRead(200 * time.Millisecond); err == nil {
		t.Error("more than one PUBLISH for one message")
	}
	got := r.waitN(t, 1, 5*time.Second)
	if id := got[0].Properties.SubscriptionIdentifier; id == nil || *id != 42 {
		t.Errorf("paho got subscription id %v, want 42", id)
	}
}

func intp(v int) *int { return &v }

// Shared subscriptions: each message goes to one member of the group
// (§4.8.2), while ordinary subscribers all get it.
func TestV5SharedSubscriptions_MQTT_4_8_2(t *testing.T) {
	_, addr := startBroker(t, nil)
	var recvs []*recv5
	for i := 0; i < 2; i++ {
		c, _, r := paho5(t, addr, fmt.Sprint("share-", i), nil)
		sub5(t, c, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "$share/g/sh/#", QoS: 1}}})
		recvs = append(recvs, r)
	}
	all, _, ar := paho5(t, addr, "share-all", nil)
	sub5(t, all, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "sh/#", QoS: 1}}})
	pub, _, _ := paho5(t, addr, "share-pub", nil)
	const n = 40
	for i := 0; i < n; i++ {
		pub5(t, pub, &paho.Publish{Topic: "sh/t", QoS: 1, Payload: []byte(fmt.Sprint(i))})
	}
	ar.waitN(t, n, 5*time.Second)
	deadline := time.Now().Add(5 * time.Second)
	for len(recvs[0].snapshot())+len(recvs[1].snapshot()) < n && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	a, b := len(recvs[0].snapshot()), len(recvs[1].snapshot())
	if a+b != n {
		t.Fatalf("group got %d+%d messages, want %d in all (each once)", a, b, n)
	}
	if a == 0 || b == 0 {
		t.Errorf("one member got everything (%d/%d)", a, b)
	}
	// No Local on a shared subscription is a Protocol Error [MQTT-3.8.3-4].
	raw, _ := dialRaw5(t, addr, codec.Connect{ClientID: []byte("share-nl"), CleanStart: true})
	s := codec.Subscribe{PacketID: 1, Subscriptions: []codec.Subscription{{Filter: []byte("$share/g/x"), NoLocal: true}}}
	raw.send(s.Append(nil, codec.Version5))
	raw.expectDisconnect(codec.ProtocolError)
}

// Request/response: Response Topic [MQTT-3.3.2-15], Correlation Data
// [MQTT-3.3.2-16], Content Type [MQTT-3.3.2-20], Payload Format Indicator
// [MQTT-3.3.2-4] and User Properties in order [MQTT-3.3.2-17]
// [MQTT-3.3.2-18] reach the subscriber unaltered; Response Information is
// returned when requested [MQTT-3.1.2-28].
func TestV5RequestResponse_MQTT_3_3_2_15(t *testing.T) {
	_, addr := startBroker(t, func(o *Options) { o.ResponseInformation = "reply/{clientid}/" })
	responder, ca, rr := paho5(t, addr, "rr-responder", &paho.ConnectProperties{RequestResponseInfo: true})
	if ca.Properties.ResponseInfo != "reply/rr-responder/" {
		t.Errorf("Response Information %q", ca.Properties.ResponseInfo)
	}
	_, ca2, _ := paho5(t, addr, "rr-nothing", nil)
	if ca2.Properties.ResponseInfo != "" {
		t.Errorf("Response Information %q sent unasked", ca2.Properties.ResponseInfo)
	}
	sub5(t, responder, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "rr/req", QoS: 1}}})
	requester, _, qr := paho5(t, addr, "rr-requester", &paho.ConnectProperties{RequestResponseInfo: true})
	sub5(t, requester, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "reply/rr-requester/#", QoS: 1}}})

	user := paho.UserProperties{{Key: "b", Value: "1"}, {Key: "a", Value: "2"}, {Key: "b", Value: "3"}}
	pub5(t, requester, &paho.Publish{Topic: "rr/req", QoS: 1, Payload: []byte("héllo"), Properties: &paho.PublishProperties{
		ResponseTopic: "reply/rr-requester/1", CorrelationData: []byte{0, 1, 2}, ContentType: "text/plain",
		PayloadFormat: b8(1), User: user}})
	req := rr.waitN(t, 1, 5*time.Second)[0]
	p := req.Properties
	if p.ResponseTopic != "reply/rr-requester/1" || !bytes.Equal(p.CorrelationData, []byte{0, 1, 2}) ||
		p.ContentType != "text/plain" || p.PayloadFormat == nil || *p.PayloadFormat != 1 {
		t.Fatalf("request properties %+v", p)
	}
	if fmt.Sprint(p.User) != fmt.Sprint(user) {
		t.Errorf("user properties %v, want %v in order", p.User, user)
	}
	pub5(t, responder, &paho.Publish{Topic: p.ResponseTopic, QoS: 1, Payload: []byte("answer"),
		Properties: &paho.PublishProperties{CorrelationData: p.CorrelationData}})
	resp := qr.waitN(t, 1, 5*time.Second)[0]
	if string(resp.Payload) != "answer" || !bytes.Equal(resp.Properties.CorrelationData, []byte{0, 1, 2}) {
		t.Errorf("response %q %v", resp.Payload, resp.Properties.CorrelationData)
	}
}

// Payload Format Indicator 1 with a payload that is not UTF-8: PUBACK or
// PUBREC 0x99 and no delivery; at QoS 0, DISCONNECT 0x99; a will, CONNACK
// 0x99 (§3.3.2.3.2, §3.1.3.2.3).
func TestV5PayloadFormatInvalid_MQTT_3_3_2_4(t *testing.T) {
	_, addr := startBroker(t, nil)
	w, _, r := paho5(t, addr, "pf-sub", nil)
	sub5(t, w, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "pf", QoS: 2}}})

	bad := []byte{0xC3, 0x28}
	raw, _ := dialRaw5(t, addr, codec.Connect{ClientID: []byte("pf-raw"), CleanStart: true})
	for _, q := range []byte{1, 2} {
		p := codec.Publish{QoS: q, PacketID: uint16(q), Topic: []byte("pf"), Payload: bad}
		p.Props.PayloadFormat = 1
		p.Props.Set(codec.PropPayloadFormat)
		raw.publish(p)
		want := codec.PUBACK
		if q == 2 {
			want = codec.PUBREC
		}
		a := raw.readAck(5*time.Second, want)
		if a.ReasonCode != codec.PayloadFormatInvalid || len(a.Props.ReasonString) == 0 {
			t.Errorf("QoS %d: ack reason 0x%02X %q, want 0x99 with a reason string", q, a.ReasonCode, a.Props.ReasonString)
		}
	}
	// The same bytes without the indicator are just binary.
	ok := codec.Publish{QoS: 1, PacketID: 9, Topic: []byte("pf"), Payload: bad}
	raw.publish(ok)
	if a := raw.readAck(5*time.Second, codec.PUBACK); a.ReasonCode != 0 {
		t.Errorf("binary payload refused: 0x%02X", a.ReasonCode)
	}
	if got := r.waitN(t, 1, 5*time.Second); !bytes.Equal(got[0].Payload, bad) {
		t.Errorf("delivered %v", got[0].Payload)
	}
	r.quiet(t, 1, 200*time.Millisecond)

	q0 := codec.Publish{Topic: []byte("pf"), Payload: bad}
	q0.Props.PayloadFormat = 1
	q0.Props.Set(codec.PropPayloadFormat)
	raw.publish(q0)
	raw.expectDisconnect(codec.PayloadFormatInvalid)

	will := dialRaw(t, addr)
	c := codec.Connect{ProtocolVersion: codec.Version5, ClientID: []byte("pf-will"), CleanStart: true, KeepAlive: 30,
		WillFlag: true, WillTopic: []byte("pf"), WillPayload: bad}
	c.WillProps.PayloadFormat = 1
	c.WillProps.Set(codec.PropPayloadFormat)
	will.connect(c, codec.PayloadFormatInvalid)
}

// Request Problem Information 0: no reason string on anything but
// PUBLISH, CONNACK and DISCONNECT [MQTT-3.1.2-29].
func TestV5RequestProblemInformation_MQTT_3_1_2_29(t *testing.T) {
	_, addr := startBroker(t, nil)
	c := codec.Connect{ClientID: []byte("rpi"), CleanStart: true}
	c.Props.RequestProblemInfo = 0
	c.Props.Set(codec.PropRequestProblemInfo)
	raw, _ := dialRaw5(t, addr, c)
	p := codec.Publish{QoS: 1, PacketID: 1, Topic: []byte("rpi"), Payload: []byte{0xFF}}
	p.Props.PayloadFormat = 1
	p.Props.Set(codec.PropPayloadFormat)
	raw.publish(p)
	a := raw.readAck(5*time.Second, codec.PUBACK)
	if a.ReasonCode != codec.PayloadFormatInvalid || a.Props.Has(codec.PropReasonString) {
		t.Errorf("PUBACK 0x%02X reason string %q; want 0x99 without one", a.ReasonCode, a.Props.ReasonString)
	}
	// SUBACK refusals: a reason string by default, none when asked not to.
	badSub := func(r *rawConn) codec.Suback {
		// Well formed but deeper than the broker allows: refused with 0x8F
		// (a malformed filter such as a/#/b would end the connection).
		deep := []byte(strings.Repeat("a/", 200) + "a")
		s := codec.Subscribe{PacketID: 7, Subscriptions: []codec.Subscription{{Filter: deep}}}
		r.send(s.Append(nil, codec.Version5))
		h, body := r.read(5 * time.Second)
		var ack codec.Suback
		if err := ack.Decode(h, body, codec.Version5); err != nil {
			t.Fatal(err)
		}
		return ack
	}
	if ack := badSub(raw); ack.ReasonCodes[0] != codec.TopicFilterInvalid || ack.Props.Has(codec.PropReasonString) {
		t.Errorf("SUBACK %v reason string %q; want 0x8F without one", ack.ReasonCodes, ack.Props.ReasonString)
	}
	chatty, _ := dialRaw5(t, addr, codec.Connect{ClientID: []byte("rpi-default"), CleanStart: true})
	if ack := badSub(chatty); ack.ReasonCodes[0] != codec.TopicFilterInvalid || len(ack.Props.ReasonString) == 0 {
		t.Errorf("SUBACK %v reason string %q; want 0x8F with one", ack.ReasonCodes, ack.Props.ReasonString)
	}
	// DISCONNECT may still say why.
	raw.publish(codec.Publish{Topic: []byte("rpi/#"), Payload: []byte("x")})
	if d := raw.expectDisconnect(codec.TopicNameInvalid); len(d.Props.ReasonString) == 0 {
		t.Error("DISCONNECT without a reason string")
	}
}

// Server-initiated DISCONNECT carries the reason: takeover 0x8E
// [MQTT-3.1.4-3], keepalive 0x8D, malformed 0x81, protocol error 0x82
// (Subscription Identifier from a client [MQTT-3.3.4-6]), quota 0x97.
func TestV5ServerDisconnectReasons_MQTT_4_13_1_1(t *testing.T) {
	_, addr := startBroker(t, nil)
	t.Run("takeover 0x8E", func(t *testing.T) {
		var got *paho.Disconnect
		done := make(chan struct{})
		_, _, _, err := dial5(t, addr, &paho.Connect{ClientID: "dr-take", CleanStart: true}, func(cc *paho.ClientConfig) {
			cc.OnServerDisconnect = func(d *paho.Disconnect) { got = d; close(done) }
		})
		if err != nil {
			t.Fatal(err)
		}
		paho5(t, addr, "dr-take", nil)
		select {
		case <-done:
			if got.ReasonCode != byte(codec.SessionTakenOver) {
				t.Errorf("reason 0x%02X", got.ReasonCode)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no DISCONNECT on takeover")
		}
	})
	t.Run("keepalive 0x8D", func(t *testing.T) {
		raw, _ := dialRaw5(t, addr, codec.Connect{ClientID: []byte("dr-ka"), CleanStart: true, KeepAlive: 1})
		raw.expectDisconnect(codec.KeepAliveTimeout)
	})
	t.Run("malformed 0x81", func(t *testing.T) {
		raw, _ := dialRaw5(t, addr, codec.Connect{ClientID: []byte("dr-mal"), CleanStart: true})
		raw.send([]byte{0x30, 0x03, 0x00, 0x09, 'a'})
		raw.expectDisconnect(codec.MalformedPacket)
	})
	t.Run("subscription id in PUBLISH 0x82 [MQTT-3.3.4-6]", func(t *testing.T) {
		raw, _ := dialRaw5(t, addr, codec.Connect{ClientID: []byte("dr-sid"), CleanStart: true})
		p := codec.Publish{Topic: []byte("a"), Payload: []byte("x")}
		p.Props.SubscriptionIDs = []uint32{5}
		raw.publish(p)
		raw.expectDisconnect(codec.ProtocolError)
	})
	t.Run("alias table quota 0x97", func(t *testing.T) {
		raw, _ := dialRaw5(t, addr, codec.Connect{ClientID: []byte("dr-quota"), CleanStart: true})
		long := strings.Repeat("t", 60000)
		for i := 1; i <= 5; i++ {
			p := codec.Publish{Topic: []byte(fmt.Sprint(long, i)), Payload: []byte("x")}
			p.Props.TopicAlias = uint16(i)
			p.Props.Set(codec.PropTopicAlias)
			raw.publish(p)
		}
		raw.expectDisconnect(codec.QuotaExceeded)
	})
}

// Mixed versions share topics: a 3.1.1 subscriber gets a 5.0 publisher's
// message as a 3.1.1 PUBLISH (no properties, no alias), and a 5.0
// subscriber gets a 3.1.1 publisher's message.
func TestMixedVersionDelivery(t *testing.T) {
	_, addr := startBroker(t, nil)
	r311 := newReceived()
	c311 := pahoClient(t, addr, "mix-311")
	subscribe(t, c311, "mix/#", 1, r311)
	raw311 := dialRaw(t, addr)
	raw311.connect(codec.Connect{ClientID: []byte("mix-raw311"), CleanStart: true, KeepAlive: 30}, 0)
	raw311.subscribe(1, "mix/#", 1)
	c5, _, r5 := paho5(t, addr, "mix-5", nil)
	sub5(t, c5, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "mix/#", QoS: 1}}})

	// 5.0 → 3.1.1, with properties and a topic alias on the way in.
	pub5(t, c5, &paho.Publish{Topic: "mix/from5", QoS: 1, Payload: []byte("five"), Properties: &paho.PublishProperties{
		TopicAlias: u16(2), ContentType: "text/plain", User: paho.UserProperties{{Key: "k", Value: "v"}},
		MessageExpiry: u32(100)}})
	pub5(t, c5, &paho.Publish{QoS: 1, Payload: []byte("five-alias"), Properties: &paho.PublishProperties{TopicAlias: u16(2)}})
	got := r311.waitN(t, 2, 5*time.Second)
	for i, want := range []string{"five", "five-alias"} {
		if got[i].Topic() != "mix/from5" || string(got[i].Payload()) != want {
			t.Errorf("3.1.1 subscriber got %s %q", got[i].Topic(), got[i].Payload())
		}
	}
	// On the wire: a well-formed 3.1.1 PUBLISH with nothing after the payload.
	for _, want := range []string{"five", "five-alias"} {
		h, body := raw311.read(5 * time.Second)
		var p codec.Publish
		if err := p.Decode(h, body, codec.Version311); err != nil || string(p.Topic) != "mix/from5" || string(p.Payload) != want {
			t.Errorf("3.1.1 wire: %v topic %q payload %q", err, p.Topic, p.Payload)
		}
		raw311.send((&codec.Ack{Type: codec.PUBACK, PacketID: p.PacketID}).Append(nil, codec.Version311))
	}

	// 3.1.1 → 5.0.
	wait(t, c311.Publish("mix/from311", 1, false, "three"), "publish")
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		msgs := r5.snapshot()
		for _, m := range msgs {
			if m.Topic == "mix/from311" {
				if string(m.Payload) != "three" || m.QoS != 1 || len(m.Properties.User) != 0 || m.Properties.ContentType != "" {
					t.Errorf("5.0 subscriber got %+v", m)
				}
				return
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("5.0 subscriber did not get the 3.1.1 message")
}
