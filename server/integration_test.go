package server

import (
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/ternmq/tern/codec"
)

// Every combination of publish and subscribe QoS: the delivered QoS is the
// minimum of the two [MQTT-3.8.4-6].
func TestPubSubQoSMatrix_MQTT_3_8_4_6(t *testing.T) {
	_, addr := startBroker(t, nil)
	for subQoS := byte(0); subQoS <= 2; subQoS++ {
		for pubQoS := byte(0); pubQoS <= 2; pubQoS++ {
			t.Run(fmt.Sprintf("pub%d_sub%d", pubQoS, subQoS), func(t *testing.T) {
				topic := fmt.Sprintf("matrix/%d/%d", pubQoS, subQoS)
				r := newReceived()
				sub := pahoClient(t, addr, "sub-"+topic)
				subscribe(t, sub, topic, subQoS, r)
				pub := pahoClient(t, addr, "pub-"+topic)
				for i := 0; i < 5; i++ {
					wait(t, pub.Publish(topic, pubQoS, false, strconv.Itoa(i)), "publish")
				}
				got := r.waitN(t, 5, 5*time.Second)
				for i, m := range got {
					if m.Qos() != min(pubQoS, subQoS) {
						t.Errorf("message %d delivered at QoS %d, want %d", i, m.Qos(), min(pubQoS, subQoS))
					}
					if string(m.Payload()) != strconv.Itoa(i) {
						t.Errorf("message %d payload %q: out of order", i, m.Payload())
					}
				}
				r.quiet(t, 5, 100*time.Millisecond)
			})
		}
	}
}

// Retained messages: set, replace, clear with an empty payload, and delivery
// on subscribe (wildcards included) with the RETAIN flag set
// [MQTT-3.3.1-5] [MQTT-3.3.1-6] [MQTT-3.3.1-10]; an established subscription
// gets RETAIN 0 [MQTT-3.3.1-9].
func TestRetained_MQTT_3_3_1_5(t *testing.T) {
	_, addr := startBroker(t, nil)
	pub := pahoClient(t, addr, "retain-pub")
	wait(t, pub.Publish("ret/a", 1, true, "first"), "publish")
	wait(t, pub.Publish("ret/a", 1, true, "second"), "publish") // replaces
	wait(t, pub.Publish("ret/b/c", 1, true, "deep"), "publish")
	wait(t, pub.Publish("ret/gone", 1, true, "x"), "publish")
	wait(t, pub.Publish("ret/gone", 1, true, ""), "publish") // clears

	r := newReceived()
	sub := pahoClient(t, addr, "retain-sub")
	subscribe(t, sub, "ret/#", 1, r)
	got := r.waitN(t, 2, 5*time.Second)
	r.quiet(t, 2, 200*time.Millisecond)
	byTopic := map[string]mqtt.Message{}
	for _, m := range got {
		byTopic[m.Topic()] = m
	}
	if m := byTopic["ret/a"]; m == nil || string(m.Payload()) != "second" || !m.Retained() {
		t.Errorf("ret/a: %+v", m)
	}
	if m := byTopic["ret/b/c"]; m == nil || string(m.Payload()) != "deep" || !m.Retained() {
		t.Errorf("ret/b/c: %+v", m)
	}
	if _, ok := byTopic["ret/gone"]; ok {
		t.Error("cleared retained message delivered")
	}
	// A message published while subscribed is forwarded with RETAIN 0.
	wait(t, pub.Publish("ret/a", 1, true, "live"), "publish")
	got = r.waitN(t, 3, 5*time.Second)
	if got[2].Retained() || string(got[2].Payload()) != "live" {
		t.Errorf("live retained publish forwarded with retain=%v payload %q", got[2].Retained(), got[2].Payload())
	}
	// "+" wildcard and exact-topic subscriptions see the retained message too.
	r2 := newReceived()
	sub2 := pahoClient(t, addr, "retain-sub2")
	subscribe(t, sub2, "ret/+", 0, r2)
	got2 := r2.waitN(t, 1, 5*time.Second)
	r2.quiet(t, 1, 200*time.Millisecond)
	if got2[0].Topic() != "ret/a" || string(got2[0].Payload()) != "live" {
		t.Errorf("ret/+ got %s %q", got2[0].Topic(), got2[0].Payload())
	}
}

// The will is published when the connection drops without DISCONNECT
// [MQTT-3.1.2-8] and not after DISCONNECT [MQTT-3.1.2-10].
func TestWill_MQTT_3_1_2_8(t *testing.T) {
	_, addr := startBroker(t, nil)
	r := newReceived()
	watcher := pahoClient(t, addr, "will-watch")
	subscribe(t, watcher, "wills/#", 1, r)

	// Abnormal: the socket is dropped.
	raw := dialRaw(t, addr)
	raw.connect(codec.Connect{ClientID: []byte("will-drop"), CleanStart: true, KeepAlive: 30,
		WillFlag: true, WillQoS: 1, WillTopic: []byte("wills/drop"), WillPayload: []byte("gone")}, 0)
	raw.c.Close()
	got := r.waitN(t, 1, 5*time.Second)
	if got[0].Topic() != "wills/drop" || string(got[0].Payload()) != "gone" {
		t.Fatalf("will: %s %q", got[0].Topic(), got[0].Payload())
	}

	// Normal: DISCONNECT discards the will.
	raw2 := dialRaw(t, addr)
	raw2.connect(codec.Connect{ClientID: []byte("will-clean"), CleanStart: true, KeepAlive: 30,
		WillFlag: true, WillQoS: 1, WillTopic: []byte("wills/clean"), WillPayload: []byte("no")}, 0)
	raw2.send((&codec.Disconnect{}).Append(nil, codec.Version311))
	raw2.expectClosed(5 * time.Second)
	r.quiet(t, 1, 300*time.Millisecond)
}

// A client silent for 1.5× its keepalive is disconnected [MQTT-3.1.2-24] and
// its will published.
func TestKeepAliveExpiry_MQTT_3_1_2_24(t *testing.T) {
	_, addr := startBroker(t, nil)
	r := newReceived()
	watcher := pahoClient(t, addr, "ka-watch")
	subscribe(t, watcher, "ka/will", 0, r)
	raw := dialRaw(t, addr)
	raw.connect(codec.Connect{ClientID: []byte("ka-silent"), CleanStart: true, KeepAlive: 1,
		WillFlag: true, WillTopic: []byte("ka/will"), WillPayload: []byte("timeout")}, 0)
	start := time.Now()
	raw.expectClosed(5 * time.Second)
	if el := time.Since(start); el < 1400*time.Millisecond || el > 3500*time.Millisecond {
		t.Errorf("closed after %v, want about 1.5s", el)
	}
	r.waitN(t, 1, 3*time.Second)

	// A client that pings in time stays connected.
	raw2 := dialRaw(t, addr)
	raw2.connect(codec.Connect{ClientID: []byte("ka-alive"), CleanStart: true, KeepAlive: 1}, 0)
	for i := 0; i < 4; i++ {
		time.Sleep(700 * time.Millisecond)
		raw2.send(codec.AppendPingreq(nil))
		if h, _ := raw2.read(2 * time.Second); h.Type != codec.PINGRESP {
			t.Fatalf("want PINGRESP, got %d", h.Type)
		}
	}
}

// A persistent session (clean session 0) keeps its subscriptions and queues
// QoS 1/2 messages while offline; they arrive on reconnect with session
// present [MQTT-3.1.2-4] [MQTT-3.2.2-2].
func TestOfflineQueueing_MQTT_3_1_2_4(t *testing.T) {
	_, addr := startBroker(t, nil)
	persistent := func(o *mqtt.ClientOptions) { o.SetCleanSession(false) }
	r := newReceived()
	sub := pahoClient(t, addr, "offline-sub", persistent)
	subscribe(t, sub, "queue/#", 2, r)
	sub.Disconnect(50)

	pub := pahoClient(t, addr, "offline-pub")
	for i := 0; i < 50; i++ {
		wait(t, pub.Publish("queue/x", byte(1+i%2), false, strconv.Itoa(i)), "publish")
	}
	wait(t, pub.Publish("queue/x", 0, false, "qos0-dropped-offline"), "publish")
	// paho completes a QoS 0 publish once it is written, not once the
	// broker read it: without this fence the broker could route it after
	// the reconnect below, to an online session that rightly gets it. A
	// connection's packets are handled in order, so the PUBACK of a QoS 1
	// publish sent after it (to a topic nobody subscribed) proves the QoS 0
	// message met the session offline.
	wait(t, pub.Publish("fence/x", 1, false, "fence"), "publish")

	r2 := newReceived()
	o := mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID("offline-sub").
		SetCleanSession(false).SetAutoReconnect(false).SetDefaultPublishHandler(r2.handler)
	c := mqtt.NewClient(o)
	tok := c.Connect()
	wait(t, tok, "reconnect")
	if !tok.(*mqtt.ConnectToken).SessionPresent() {
		t.Error("session present flag not set on resumed session")
	}
	defer c.Disconnect(50)
	got := r2.waitN(t, 50, 5*time.Second)
	for i, m := range got[:50] {
		if string(m.Payload()) != strconv.Itoa(i) {
			t.Fatalf("message %d: %q (order per publisher must hold)", i, m.Payload())
		}
	}
	r2.quiet(t, 50, 200*time.Millisecond)
}

// Overlapping subscriptions deliver one copy at the highest QoS [MQTT-3.3.5-1].
func TestOverlappingSubscriptions_MQTT_3_3_5_1(t *testing.T) {
	_, addr := startBroker(t, nil)
	// On the wire: a raw client sees exactly one PUBLISH.
	raw := dialRaw(t, addr)
	raw.connect(codec.Connect{ClientID: []byte("overlap"), CleanStart: true, KeepAlive: 30}, 0)
	raw.subscribe(1, "ov/#", 0)
	raw.subscribe(2, "ov/+/c", 2)
	raw.subscribe(3, "ov/b/c", 1)
	pub := pahoClient(t, addr, "overlap-pub")
	wait(t, pub.Publish("ov/b/c", 2, false, "once"), "publish")
	p := raw.readPublish(5 * time.Second)
	if p.QoS != 2 {
		t.Errorf("delivered at QoS %d, want 2 (the highest)", p.QoS)
	}
	if h, _, err := raw.tryRead(300 * time.Millisecond); err == nil {
		t.Fatalf("second packet (type %d) for one message", h.Type)
	}
	// paho calls every matching route's handler, so use the default handler.
	r := newReceived()
	sub := pahoClient(t, addr, "overlap-paho", func(o *mqtt.ClientOptions) { o.SetDefaultPublishHandler(r.handler) })
	for _, f := range []string{"ov/#", "ov/+/c", "ov/b/c"} {
		wait(t, sub.Subscribe(f, 1, nil), "subscribe")
	}
	wait(t, pub.Publish("ov/b/c", 1, false, "once"), "publish")
	r.waitN(t, 1, 5*time.Second)
	r.quiet(t, 1, 300*time.Millisecond)
}

func TestUnsubscribe_MQTT_3_10_4_1(t *testing.T) {
	_, addr := startBroker(t, nil)
	r := newReceived()
	sub := pahoClient(t, addr, "unsub")
	subscribe(t, sub, "un/a", 1, r)
	subscribe(t, sub, "un/b", 1, r)
	wait(t, sub.Unsubscribe("un/a"), "unsubscribe")
	pub := pahoClient(t, addr, "unsub-pub")
	wait(t, pub.Publish("un/a", 1, false, "no"), "publish")
	wait(t, pub.Publish("un/b", 1, false, "yes"), "publish")
	got := r.waitN(t, 1, 5*time.Second)
	r.quiet(t, 1, 300*time.Millisecond)
	if got[0].Topic() != "un/b" {
		t.Fatalf("got %s", got[0].Topic())
	}
	// Unsubscribing a filter never subscribed is still acknowledged [MQTT-3.10.4-5].
	wait(t, sub.Unsubscribe("never/subscribed"), "unsubscribe unknown")
}

// Topics starting with $ are not matched by filters starting with a wildcard
// [MQTT-4.7.2-1], but are by an explicit $ filter.
func TestDollarTopics_MQTT_4_7_2_1(t *testing.T) {
	s, addr := startBroker(t, nil)
	all, dollar := newReceived(), newReceived()
	sub := pahoClient(t, addr, "dollar-sub")
	subscribe(t, sub, "#", 0, all)
	sub2 := pahoClient(t, addr, "dollar-sub2")
	subscribe(t, sub2, "$app/#", 0, dollar)
	if err := s.Publish("$app/x", []byte("hidden"), 0, false); err != nil {
		t.Fatal(err)
	}
	if err := s.Publish("app/x", []byte("visible"), 0, false); err != nil {
		t.Fatal(err)
	}
	got := all.waitN(t, 1, 5*time.Second)
	all.quiet(t, 1, 300*time.Millisecond)
	if got[0].Topic() != "app/x" {
		t.Errorf("# received %s", got[0].Topic())
	}
	if d := dollar.waitN(t, 1, 5*time.Second); d[0].Topic() != "$app/x" {
		t.Errorf("$app/# received %s", d[0].Topic())
	}
}

// A zero-length client id is assigned one with clean session 1 and refused
// with return code 0x02 with clean session 0 [MQTT-3.1.3-6] [MQTT-3.1.3-8].
func TestZeroLengthClientID_MQTT_3_1_3_8(t *testing.T) {
	_, addr := startBroker(t, nil)
	raw := dialRaw(t, addr)
	raw.connect(codec.Connect{CleanStart: true, KeepAlive: 30}, 0)
	if codes := raw.subscribe(1, "zero/id", 1); len(codes) != 1 || codes[0] != 1 {
		t.Fatalf("suback %v", codes)
	}
	raw2 := dialRaw(t, addr)
	raw2.connect(codec.Connect{CleanStart: false, KeepAlive: 30}, codec.ConnRefusedIdentifier311)
	raw2.expectClosed(5 * time.Second)
	// paho with an empty id and clean session works too.
	r := newReceived()
	c := pahoClient(t, addr, "")
	subscribe(t, c, "zero/#", 0, r)
	pub := pahoClient(t, addr, "zero-pub")
	wait(t, pub.Publish("zero/x", 0, false, "hi"), "publish")
	r.waitN(t, 1, 5*time.Second)
}

// A second connection with the same client id takes the session over: the
// old connection is closed [MQTT-3.1.4-2] and the session (subscriptions,
// queued messages) moves to the new one.
func TestTakeover_MQTT_3_1_4_2(t *testing.T) {
	_, addr := startBroker(t, nil)
	old := dialRaw(t, addr)
	old.connect(codec.Connect{ClientID: []byte("dup"), KeepAlive: 30}, 0)
	old.subscribe(1, "take/#", 1)

	nu := dialRaw(t, addr)
	ack := nu.connect(codec.Connect{ClientID: []byte("dup"), KeepAlive: 30}, 0)
	if !ack.SessionPresent {
		t.Error("takeover of a persistent session: session present not set")
	}
	old.expectClosed(5 * time.Second)
	pub := pahoClient(t, addr, "take-pub")
	wait(t, pub.Publish("take/x", 1, false, "moved"), "publish")
	p := nu.readPublish(5 * time.Second)
	if string(p.Payload) != "moved" || p.QoS != 1 {
		t.Fatalf("got %q qos %d", p.Payload, p.QoS)
	}
}

// Takeover under load: many goroutines reconnect the same ids while
// messages flow; the broker must neither race (run with -race) nor lose the
// session's subscription.
func TestTakeoverUnderLoad(t *testing.T) {
	_, addr := startBroker(t, nil)
	const ids, rounds = 8, 15
	pub := pahoClient(t, addr, "storm-pub")
	stop := make(chan struct{})
	var pubWG sync.WaitGroup
	pubWG.Add(1)
	go func() {
		defer pubWG.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			pub.Publish(topicN("storm", i%ids), 1, false, "x").WaitTimeout(time.Second)
		}
	}()
	var wg sync.WaitGroup
	for i := 0; i < ids; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for r := 0; r < rounds; r++ {
				o := mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(topicN("storm-id", i)).
					SetCleanSession(r%3 == 0).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second)
				c := mqtt.NewClient(o)
				if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
					continue // a concurrent takeover may close us mid-handshake
				}
				c.Subscribe(topicN("storm", i), 1, nil).WaitTimeout(time.Second)
				if r%2 == 0 {
					c.Disconnect(0)
				}
			}
		}(i)
	}
	wg.Wait()
	close(stop)
	pubWG.Wait()
	// The broker is still healthy.
	r := newReceived()
	c := pahoClient(t, addr, "storm-after")
	subscribe(t, c, "after", 1, r)
	wait(t, pub.Publish("after", 1, false, "ok"), "publish")
	r.waitN(t, 1, 5*time.Second)
}

// 1,000 concurrent clients exchange messages; at QoS 1 and 2 none is lost.
func TestThousandClients(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	_, addr := startBroker(t, nil)
	const n = 1000
	const perClient = 3
	var got atomic.Int64
	clients := make([]mqtt.Client, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 50)
	for i := 0; i < n; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func(i int) {
			defer wg.Done()
			defer func() { <-sem }()
			o := mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(topicN("k", i)).
				SetAutoReconnect(false).SetConnectTimeout(10 * time.Second)
			c := mqtt.NewClient(o)
			if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
				t.Errorf("connect %d: %v", i, tok.Error())
				return
			}
			// Each client listens on its own topic; client i publishes to i+1.
			tok := c.Subscribe(topicN("ring", i), 2, func(mqtt.Client, mqtt.Message) { got.Add(1) })
			if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
				t.Errorf("subscribe %d: %v", i, tok.Error())
			}
			clients[i] = c
		}(i)
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for k := 0; k < perClient; k++ {
				tok := clients[i].Publish(topicN("ring", (i+1)%n), byte(1+k%2), false, "m")
				if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
					t.Errorf("publish %d/%d: %v", i, k, tok.Error())
				}
			}
		}(i)
	}
	wg.Wait()
	deadline := time.Now().Add(15 * time.Second)
	for got.Load() < n*perClient && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if g := got.Load(); g != n*perClient {
		t.Fatalf("delivered %d of %d QoS 1/2 messages", g, n*perClient)
	}
	for _, c := range clients {
		c.Disconnect(0)
	}
}
