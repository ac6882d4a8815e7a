package server

import (
	"bytes"
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/ternmq/tern/codec"
)

// A QoS 2 PUBLISH re-sent with the same packet id before PUBREL is answered
// with PUBREC again but delivered only once [MQTT-4.3.3-9..-10].
func TestQoS2InboundDedupe_MQTT_4_3_3_10(t *testing.T) {
	_, addr := startBroker(t, nil)
	r := newReceived()
	sub := pahoClient(t, addr, "dedupe-sub")
	subscribe(t, sub, "dd", 2, r)
	raw := dialRaw(t, addr)
	raw.connect(codec.Connect{ClientID: []byte("dedupe-pub"), CleanStart: true, KeepAlive: 30}, 0)
	p := codec.Publish{QoS: 2, PacketID: 7, Topic: []byte("dd"), Payload: []byte("once")}
	raw.publish(p)
	if a := raw.readAck(5*time.Second, codec.PUBREC); a.PacketID != 7 {
		t.Fatalf("PUBREC id %d", a.PacketID)
	}
	p.Dup = true
	raw.publish(p) // the client did not see PUBREC in time and retries
	if a := raw.readAck(5*time.Second, codec.PUBREC); a.PacketID != 7 {
		t.Fatalf("PUBREC id %d", a.PacketID)
	}
	raw.send((&codec.Ack{Type: codec.PUBREL, PacketID: 7}).Append(nil, codec.Version311))
	if a := raw.readAck(5*time.Second, codec.PUBCOMP); a.PacketID != 7 {
		t.Fatalf("PUBCOMP id %d", a.PacketID)
	}
	r.waitN(t, 1, 5*time.Second)
	r.quiet(t, 1, 300*time.Millisecond)
	// PUBREL for an id the broker does not know is still completed [MQTT-4.3.3-11].
	raw.send((&codec.Ack{Type: codec.PUBREL, PacketID: 999}).Append(nil, codec.Version311))
	if a := raw.readAck(5*time.Second, codec.PUBCOMP); a.PacketID != 999 {
		t.Fatalf("PUBCOMP id %d", a.PacketID)
	}
}

// Unacknowledged QoS 1 and 2 deliveries are re-sent with DUP when a
// persistent session reconnects, in the original order; a QoS 2 delivery
// whose PUBREC arrived is continued with PUBREL [MQTT-4.4.0-1].
func TestRedeliveryOnReconnect_MQTT_4_4_0_1(t *testing.T) {
	_, addr := startBroker(t, nil)
	sub := dialRaw(t, addr)
	sub.connect(codec.Connect{ClientID: []byte("redeliver"), KeepAlive: 30}, 0)
	sub.subscribe(1, "rd/#", 2)
	pub := pahoClient(t, addr, "redeliver-pub")
	wait(t, pub.Publish("rd/1", 1, false, "one"), "publish")
	wait(t, pub.Publish("rd/2", 2, false, "two"), "publish")
	wait(t, pub.Publish("rd/3", 2, false, "three"), "publish")
	p1 := sub.readPublish(5 * time.Second)
	p2 := sub.readPublish(5 * time.Second)
	p3 := sub.readPublish(5 * time.Second)
	if string(p1.Payload) != "one" || string(p2.Payload) != "two" || string(p3.Payload) != "three" {
		t.Fatalf("order: %q %q %q", p1.Payload, p2.Payload, p3.Payload)
	}
	// Acknowledge the third's PUBREC step only, then drop the connection.
	sub.send((&codec.Ack{Type: codec.PUBREC, PacketID: p3.PacketID}).Append(nil, codec.Version311))
	if a := sub.readAck(5*time.Second, codec.PUBREL); a.PacketID != p3.PacketID {
		t.Fatalf("PUBREL id %d", a.PacketID)
	}
	sub.c.Close()

	again := dialRaw(t, addr)
	ack := again.connect(codec.Connect{ClientID: []byte("redeliver"), KeepAlive: 30}, 0)
	if !ack.SessionPresent {
		t.Fatal("session not present")
	}
	r1 := again.readPublish(5 * time.Second)
	r2 := again.readPublish(5 * time.Second)
	rel := again.readAck(5*time.Second, codec.PUBREL)
	if !r1.Dup || r1.PacketID != p1.PacketID || string(r1.Payload) != "one" {
		t.Errorf("first redelivery: dup=%v id=%d/%d %q", r1.Dup, r1.PacketID, p1.PacketID, r1.Payload)
	}
	if !r2.Dup || r2.PacketID != p2.PacketID || r2.QoS != 2 {
		t.Errorf("second redelivery: dup=%v id=%d/%d qos %d", r2.Dup, r2.PacketID, p2.PacketID, r2.QoS)
	}
	if rel.PacketID != p3.PacketID {
		t.Errorf("PUBREL re-sent for %d, want %d", rel.PacketID, p3.PacketID)
	}
	// Completing the flows empties the window: a new message flows.
	again.send((&codec.Ack{Type: codec.PUBACK, PacketID: r1.PacketID}).Append(nil, codec.Version311))
	again.send((&codec.Ack{Type: codec.PUBREC, PacketID: r2.PacketID}).Append(nil, codec.Version311))
	again.readAck(5*time.Second, codec.PUBREL)
	again.send((&codec.Ack{Type: codec.PUBCOMP, PacketID: r2.PacketID}).Append(nil, codec.Version311))
	again.send((&codec.Ack{Type: codec.PUBCOMP, PacketID: rel.PacketID}).Append(nil, codec.Version311))
	wait(t, pub.Publish("rd/4", 1, false, "four"), "publish")
	if p := again.readPublish(5 * time.Second); string(p.Payload) != "four" || p.Dup {
		t.Errorf("after redelivery: %q dup=%v", p.Payload, p.Dup)
	}
}

// The inflight window holds back deliveries beyond Receive Maximum until
// acknowledgements free slots; nothing is lost.
func TestInflightWindow(t *testing.T) {
	_, addr := startBroker(t, func(o *Options) { o.ReceiveMaximum = 2 })
	sub := dialRaw(t, addr)
	sub.connect(codec.Connect{ClientID: []byte("window"), CleanStart: true, KeepAlive: 30}, 0)
	sub.subscribe(1, "win", 1)
	pub := pahoClient(t, addr, "window-pub")
	for i := 0; i < 5; i++ {
		wait(t, pub.Publish("win", 1, false, string(rune('a'+i))), "publish")
	}
	a := sub.readPublish(5 * time.Second)
	b := sub.readPublish(5 * time.Second)
	if _, _, err := sub.tryRead(300 * time.Millisecond); err == nil {
		t.Fatal("a third message was sent with a window of 2")
	}
	for _, p := range []codec.Publish{a, b} {
		sub.send((&codec.Ack{Type: codec.PUBACK, PacketID: p.PacketID}).Append(nil, codec.Version311))
	}
	var got []string
	got = append(got, string(a.Payload), string(b.Payload))
	for len(got) < 5 {
		p := sub.readPublish(5 * time.Second)
		got = append(got, string(p.Payload))
		sub.send((&codec.Ack{Type: codec.PUBACK, PacketID: p.PacketID}).Append(nil, codec.Version311))
	}
	if strings.Join(got, "") != "abcde" {
		t.Fatalf("got %v", got)
	}
}

// MQTT 3.1 (MQIsdp) clients are served.
func TestMQTT31Client(t *testing.T) {
	_, addr := startBroker(t, nil)
	raw := dialRaw(t, addr)
	raw.connect(codec.Connect{ProtocolVersion: codec.Version31, ClientID: []byte("old-client"), CleanStart: true, KeepAlive: 30}, 0)
	raw.subscribe(1, "v31", 1)
	raw.publish(codec.Publish{QoS: 1, PacketID: 3, Topic: []byte("v31"), Payload: []byte("hello")})
	var sawAck, sawMsg bool
	for !(sawAck && sawMsg) {
		h, body := raw.read(5 * time.Second)
		switch h.Type {
		case codec.PUBACK:
			sawAck = true
		case codec.PUBLISH:
			var p codec.Publish
			if err := p.Decode(h, body, codec.Version31); err != nil || string(p.Payload) != "hello" {
				t.Fatalf("publish %q %v", p.Payload, err)
			}
			sawMsg = true
		}
	}
}

// The new user's path from the README: mosquitto_sub and mosquitto_pub at
// QoS 2, and a retained message with -r.
func TestMosquittoClients(t *testing.T) {
	subBin, err1 := exec.LookPath("mosquitto_sub")
	pubBin, err2 := exec.LookPath("mosquitto_pub")
	if err1 != nil || err2 != nil {
		t.Skip("mosquitto-clients not installed (.ci/run installs them)")
	}
	_, addr := startBroker(t, nil)
	host, port, _ := strings.Cut(addr, ":")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out bytes.Buffer
	sub := exec.CommandContext(ctx, subBin, "-h", host, "-p", port, "-t", "a/#", "-q", "2", "-C", "2", "-v", "-i", "msub")
	sub.Stdout = &out
	if err := sub.Start(); err != nil {
		t.Fatal(err)
	}
	// Wait until the subscription is in place.
	deadline := time.Now().Add(5 * time.Second)
	for {
		if s := srvSubscriptions(t, addr); s > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, args := range [][]string{
		{"-t", "a/b", "-m", "hi", "-q", "2"},
		{"-t", "a/r", "-m", "kept", "-q", "1", "-r"},
	} {
		if b, err := exec.CommandContext(ctx, pubBin, append([]string{"-h", host, "-p", port}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("mosquitto_pub %v: %v %s", args, err, b)
		}
	}
	if err := sub.Wait(); err != nil {
		t.Fatalf("mosquitto_sub: %v (output %q)", err, out.String())
	}
	if got := out.String(); got != "a/b hi\na/r kept\n" {
		t.Fatalf("mosquitto_sub printed %q", got)
	}
	// The retained message is there for a later subscriber.
	b, err := exec.CommandContext(ctx, subBin, "-h", host, "-p", port, "-t", "a/r", "-C", "1", "-W", "5").CombinedOutput()
	if err != nil || string(b) != "kept\n" {
		t.Fatalf("retained via mosquitto_sub: %q %v", b, err)
	}
}

// srvSubscriptions returns the subscription count of the broker at addr.
func srvSubscriptions(t *testing.T, addr string) int {
	for _, s := range liveServers() {
		for _, a := range s.Addrs() {
			if a.String() == addr {
				return s.Stats().Subscriptions
			}
		}
	}
	return 0
}
