package server

// The codec's golden packets (codec/testdata/golden/*.bin, annotated byte by
// byte in codec/golden_test.go) sent to a real broker over a real socket:
// every packet a client may send, for every protocol version, in an order
// that gives each one a meaning (CONNECT first, a PUBREL after its PUBLISH),
// with the broker's answers checked against the specification. An observer
// client subscribed to "#" sees what the broker routed.
//
// TestGoldenPackets also fails when a client→server golden file is added
// without being sent here.

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ternmq/tern/codec"
	"github.com/ternmq/tern/internal/mqtttest"
)

const goldenDir = "../codec/testdata/golden"

// goldenUsed records which golden files the tests sent.
var goldenUsed sync.Map

// golden returns the bytes of one golden packet.
func golden(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(goldenDir, name+".bin"))
	if err != nil {
		t.Fatal(err)
	}
	goldenUsed.Store(name, true)
	return b
}

// sendGolden writes one golden packet on r.
func (r *rawConn) sendGolden(name string) {
	r.t.Helper()
	r.send(golden(r.t, name))
}

// clientToServer reports whether a golden file holds a packet a client
// sends: the server-only types (CONNACK, SUBACK, UNSUBACK, PINGRESP) are
// not. PUBLISH and the acknowledgements go both ways.
func clientToServer(name string) bool {
	for _, p := range []string{"connack_", "suback_", "unsuback_", "pingresp_"} {
		if strings.HasPrefix(name, p) {
			return false
		}
	}
	return true
}

// want is one expected packet: a description and a predicate.
type want struct {
	desc string
	ok   func(pkt any) bool
}

func wantConnack(rc codec.ReasonCode, present bool) want {
	return want{fmt.Sprintf("CONNACK rc=0x%02x present=%v", rc, present), func(p any) bool {
		a, ok := p.(*codec.Connack)
		return ok && a.ReasonCode == rc && a.SessionPresent == present
	}}
}

func wantAck(typ codec.PacketType, id uint16, code codec.ReasonCode) want {
	return want{fmt.Sprintf("%s id=%d code=0x%02x", mqtttest.TypeName(typ), id, code), func(p any) bool {
		a, ok := p.(*codec.Ack)
		return ok && a.Type == typ && a.PacketID == id && a.ReasonCode == code
	}}
}

func wantSuback(id uint16, codes ...codec.ReasonCode) want {
	return want{fmt.Sprintf("SUBACK id=%d %v", id, codes), func(p any) bool {
		a, ok := p.(*codec.Suback)
		return ok && a.PacketID == id && slices.Equal(a.ReasonCodes, codes)
	}}
}

func wantUnsuback(id uint16, codes ...codec.ReasonCode) want {
	return want{fmt.Sprintf("UNSUBACK id=%d %v", id, codes), func(p any) bool {
		a, ok := p.(*codec.Unsuback)
		return ok && a.PacketID == id && slices.Equal(a.ReasonCodes, codes)
	}}
}

func wantPublish(topic string, payload []byte, qos byte, retain bool) want {
	return want{fmt.Sprintf("PUBLISH %s qos=%d retain=%v %q", topic, qos, retain, payload), func(p any) bool {
		m, ok := p.(*codec.Publish)
		return ok && string(m.Topic) == topic && bytes.Equal(m.Payload, payload) && m.QoS == qos && m.Retain == retain
	}}
}

func wantPingresp() want {
	return want{"PINGRESP", func(p any) bool { _, ok := p.(*codec.Pingresp); return ok }}
}

func wantDisconnect(code codec.ReasonCode) want {
	return want{fmt.Sprintf("DISCONNECT 0x%02x", byte(code)), func(p any) bool {
		d, ok := p.(*codec.Disconnect)
		return ok && d.ReasonCode == code
	}}
}

// expect reads exactly len(ws) packets from r, in any order (a PUBACK and
// the delivery of the same message to the sender's own subscription have
// no defined order), and checks each matches one of ws. A QoS 1 PUBLISH
// is acknowledged.
func (r *rawConn) expect(ws ...want) {
	r.t.Helper()
	left := slices.Clone(ws)
	for len(left) > 0 {
		h, body, err := r.tryRead(5 * time.Second)
		if err != nil {
			r.t.Fatalf("waiting for %s: %v", descs(left), err)
		}
		pkt, err := codec.DecodePacket(h, body, r.vers)
		if err != nil {
			r.t.Fatalf("decode %s: %v", mqtttest.TypeName(h.Type), err)
		}
		i := slices.IndexFunc(left, func(w want) bool { return w.ok(pkt) })
		if i < 0 {
			r.t.Fatalf("got %s %+v, want one of %s", mqtttest.TypeName(h.Type), pkt, descs(left))
		}
		left = slices.Delete(left, i, i+1)
		if p, ok := pkt.(*codec.Publish); ok && p.QoS == 1 {
			r.send((&codec.Ack{Type: codec.PUBACK, PacketID: p.PacketID}).Append(nil, r.vers))
		}
	}
}

// quiet asserts nothing arrives on r for a little while.
func (r *rawConn) quiet() {
	r.t.Helper()
	if h, _, err := r.tryRead(200 * time.Millisecond); err != mqtttest.ErrTimeout {
		r.t.Fatalf("want nothing, got %s (%v)", mqtttest.TypeName(h.Type), err)
	}
}

// closed asserts the broker closes r after sending exactly ws.
func (r *rawConn) closed(ws ...want) {
	r.t.Helper()
	got := r.untilClosed(5 * time.Second)
	if len(got) != len(ws) {
		r.t.Fatalf("got %d packets before close, want %s", len(got), descs(ws))
	}
	for i, p := range got {
		pkt, err := codec.DecodePacket(p.h, p.body, r.vers)
		if err != nil || !ws[i].ok(pkt) {
			r.t.Fatalf("got %+v (%v) before close, want %s", pkt, err, ws[i].desc)
		}
	}
}

func descs(ws []want) string {
	var s []string
	for _, w := range ws {
		s = append(s, w.desc)
	}
	return strings.Join(s, ", ")
}

// observer connects a 3.1.1 client subscribed to "#" at QoS 1: it sees
// every message routed (not $SYS [MQTT-4.7.2-1]).
func observer(t *testing.T, addr string) *rawConn {
	o := dialRaw(t, addr)
	o.connect(codec.Connect{ClientID: []byte("golden-observer"), CleanStart: true, KeepAlive: 60}, 0)
	o.subscribe(1, "#", 1)
	return o
}

// goldenBroker starts a broker without $SYS traffic for the observer to see.
func goldenBroker(t *testing.T) string {
	_, addr := startBroker(t, func(o *Options) { o.SysInterval = -1 })
	return addr
}

func TestGoldenPackets(t *testing.T) {
	ran := 0
	for _, v := range []struct {
		name string
		run  func(*testing.T)
	}{{"v31", goldenPackets31}, {"v311", goldenPackets311}, {"v5", goldenPackets5}} {
		t.Run(v.name, func(t *testing.T) { ran++; v.run(t) })
	}
	if ran < 3 || t.Failed() {
		return // filtered by -run, or already failing: coverage is moot
	}
	files, err := filepath.Glob(filepath.Join(goldenDir, "*.bin"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden files: %v", err)
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".bin")
		if _, used := goldenUsed.Load(name); clientToServer(name) && !used {
			t.Errorf("golden packet %s is not sent by any server test", name)
		}
	}
}

// MQTT 3.1.1, every client→server golden packet.
func goldenPackets311(t *testing.T) {
	addr := goldenBroker(t)
	obs := observer(t, addr)
	c := dialRaw(t, addr)

	// CONNECT, clean session: CONNACK accepted, Session Present 0
	// [MQTT-3.2.0-1] [MQTT-3.2.2-1].
	c.sendGolden("connect_v311_minimal")
	c.expect(wantConnack(0, false))

	// SUBSCRIBE a/+ q0, b q1, c/# q2: one return code per filter, the
	// granted QoS, same packet identifier [MQTT-3.8.4-2] [MQTT-3.8.4-5].
	c.sendGolden("subscribe_v311_three_filters")
	c.expect(wantSuback(2, 0, 1, 2))

	// QoS 0 a/b: delivered to the sender's own a/+ and to the observer.
	c.sendGolden("publish_v311_qos0")
	c.expect(wantPublish("a/b", []byte("hello"), 0, false))
	obs.expect(wantPublish("a/b", []byte("hello"), 0, false))

	// QoS 1 a/b, id 10: PUBACK 10 [MQTT-4.3.2-2]; delivered at the
	// subscription's QoS 0 [MQTT-3.8.4-6].
	c.sendGolden("publish_v311_qos1")
	c.expect(wantAck(codec.PUBACK, 10, 0), wantPublish("a/b", []byte("hello"), 0, false))
	obs.expect(wantPublish("a/b", []byte("hello"), 1, false))

	// A 200-byte payload (two-byte remaining length) on t: no subscription
	// of the sender matches.
	c.sendGolden("publish_v311_two_byte_length")
	obs.expect(wantPublish("t", make([]byte, 200), 0, false))
	c.quiet()

	// QoS 2, DUP, RETAIN on t with id 65535: PUBREC 65535, then PUBCOMP for
	// its PUBREL [MQTT-4.3.3-2]; forwarded once, RETAIN 0 to an established
	// subscription [MQTT-3.3.1-9], and retained [MQTT-3.3.1-5].
	c.sendGolden("publish_v311_qos2_dup_retain")
	c.expect(wantAck(codec.PUBREC, 65535, 0))
	c.send((&codec.Ack{Type: codec.PUBREL, PacketID: 65535}).Append(nil, codec.Version311))
	c.expect(wantAck(codec.PUBCOMP, 65535, 0))
	obs.expect(wantPublish("t", []byte{0, 0xFF}, 1, false))
	late := dialRaw(t, addr)
	late.connect(codec.Connect{ClientID: []byte("golden-late"), CleanStart: true}, 0)
	late.send((&codec.Subscribe{PacketID: 1, Subscriptions: []codec.Subscription{{Filter: []byte("t"), QoS: 2}}}).Append(nil, codec.Version311))
	late.expect(wantSuback(1, 2), wantPublish("t", []byte{0, 0xFF}, 2, true))

	// PUBREL for an identifier the broker does not hold: still PUBCOMP
	// [MQTT-4.3.3-2].
	c.sendGolden("pubrel_v311")
	c.expect(wantAck(codec.PUBCOMP, 0x1234, 0))

	// RETAIN with an empty payload: forwarded as a normal message, clears
	// a/b's retained message [MQTT-3.3.1-10].
	c.sendGolden("publish_v311_retain_empty_payload")
	c.expect(wantPublish("a/b", nil, 0, false))
	obs.expect(wantPublish("a/b", nil, 0, false))

	// Acknowledgements of deliveries the broker never made: ignored, the
	// connection stays up and answers PINGREQ [MQTT-3.12.4-1].
	c.sendGolden("puback_v311")
	c.sendGolden("pubrec_v311")
	c.sendGolden("pubcomp_v311")
	c.sendGolden("pingreq_v311")
	c.expect(wantPingresp())

	// UNSUBSCRIBE a/+ and b: UNSUBACK 5 [MQTT-3.10.4-4]; a/b no longer
	// reaches the sender [MQTT-3.10.4-1].
	c.sendGolden("unsubscribe_v311_two_filters")
	c.expect(wantUnsuback(5))
	c.sendGolden("publish_v311_qos0")
	obs.expect(wantPublish("a/b", []byte("hello"), 0, false))
	c.quiet()

	// DISCONNECT: the broker closes the connection [MQTT-3.14.4-3].
	c.sendGolden("disconnect_v311")
	c.closed()

	// CONNECT dev-1 with a retained QoS 1 will, user name and password,
	// clean session 0 and no stored session: Session Present 0
	// [MQTT-3.2.2-3]. The connection drops: the will is published
	// [MQTT-3.1.2-8].
	d := dialRaw(t, addr)
	d.sendGolden("connect_v311_will_user_pass")
	d.expect(wantConnack(0, false))
	_ = d.c.Close()
	obs.expect(wantPublish("dev/1/status", []byte("offline"), 1, false))
	// Again: the session is there [MQTT-3.2.2-2]; after DISCONNECT no will
	// [MQTT-3.14.4-3].
	d = dialRaw(t, addr)
	d.sendGolden("connect_v311_will_user_pass")
	d.expect(wantConnack(0, true))
	d.sendGolden("disconnect_v311")
	d.closed()
	obs.quiet()

	// A zero-byte client id with clean session 1 is accepted and gets an
	// identifier from the broker [MQTT-3.1.3-6].
	e := dialRaw(t, addr)
	e.sendGolden("connect_v311_empty_client_id")
	e.expect(wantConnack(0, false))
}

// MQTT 3.1 (protocol name MQIsdp), every client→server golden packet.
func goldenPackets31(t *testing.T) {
	addr := goldenBroker(t)
	obs := observer(t, addr)
	c := dialRaw(t, addr)
	c.vers = codec.Version31

	c.sendGolden("connect_v31_minimal")
	c.expect(wantConnack(0, false))
	c.sendGolden("subscribe_v31")
	c.expect(wantSuback(1, 1))
	// QoS 1 a/b id 1: PUBACK 1 and the delivery to its own a/# at QoS 1
	// (acknowledged by expect).
	c.sendGolden("publish_v31_qos1")
	c.expect(wantAck(codec.PUBACK, 1, 0), wantPublish("a/b", []byte("hi"), 1, false))
	obs.expect(wantPublish("a/b", []byte("hi"), 1, false))
	// PUBREL of an unknown identifier is completed; stray PUBACK, PUBREC
	// and PUBCOMP are ignored.
	c.sendGolden("pubrel_v31")
	c.expect(wantAck(codec.PUBCOMP, 10, 0))
	c.sendGolden("puback_v31")
	c.sendGolden("pubrec_v31")
	c.sendGolden("pubcomp_v31")
	c.sendGolden("pingreq_v31")
	c.expect(wantPingresp())
	c.sendGolden("unsubscribe_v31")
	c.expect(wantUnsuback(4))
	c.sendGolden("disconnect_v31")
	c.closed()

	// Will QoS 2 on w, clean session 0: published when the connection
	// drops (at the observer's QoS 1).
	d := dialRaw(t, addr)
	d.vers = codec.Version31
	d.sendGolden("connect_v31_will_user_pass")
	d.expect(wantConnack(0, false))
	_ = d.c.Close()
	obs.expect(wantPublish("w", []byte("bye"), 1, false))
}

// MQTT 5.0, every client→server golden packet.
func goldenPackets5(t *testing.T) {
	addr := goldenBroker(t)
	obs := observer(t, addr)
	c := dialRaw(t, addr)
	c.vers = codec.Version5

	c.sendGolden("connect_v5_minimal")
	c.expect(wantConnack(0, false))

	// a/b q1 No Local, $share/g/x q2, c q0: all granted.
	c.sendGolden("subscribe_v5_options")
	c.expect(wantSuback(3, 1, 2, 0))

	// No Local: the sender's own a/b subscription does not get it
	// [MQTT-3.8.3-3].
	c.sendGolden("publish_v5_qos0")
	obs.expect(wantPublish("a/b", []byte("hello"), 0, false))
	c.quiet()

	// A Topic Alias set by one PUBLISH names the topic of a later one with
	// an empty topic (§3.3.2.3.4).
	set := codec.Publish{Topic: []byte("a/x"), Payload: []byte("set")}
	set.Props.TopicAlias = 1
	set.Props.Set(codec.PropTopicAlias)
	c.publish(set)
	obs.expect(wantPublish("a/x", []byte("set"), 0, false))
	c.sendGolden("publish_v5_topic_alias_only")
	obs.expect(wantPublish("a/x", []byte("x"), 0, false))

	// QoS 2 id 11 (on a topic the sender is not subscribed to): PUBREC,
	// then PUBCOMP for the golden PUBREL; a second PUBREL, now for an
	// identifier the broker no longer holds, is completed with 0x92 Packet
	// Identifier not found.
	q2 := codec.Publish{Topic: []byte("q/11"), QoS: 2, PacketID: 11, Payload: []byte("two")}
	c.publish(q2)
	c.expect(wantAck(codec.PUBREC, 11, 0))
	c.sendGolden("pubrel_v5_short")
	c.expect(wantAck(codec.PUBCOMP, 11, 0))
	obs.expect(wantPublish("q/11", []byte("two"), 1, false))
	c.sendGolden("pubrel_v5_packet_id_not_found")
	c.expect(wantAck(codec.PUBCOMP, 11, codec.PacketIDNotFound))

	// Acknowledgements of deliveries the broker never made. A successful
	// PUBREC is answered with PUBREL 0x92 Packet Identifier not found; one
	// with a failure code ends the flow, so no PUBREL follows it
	// [MQTT-4.3.3-4]; PUBACK and PUBCOMP are ignored. The connection stays
	// up and answers PINGREQ.
	for _, g := range []string{"puback_v5_short", "puback_v5_no_matching_subscribers",
		"pubrec_v5_short", "pubrec_v5_quota_exceeded_props", "pubcomp_v5_short", "pubcomp_v5_not_found_reason_string"} {
		c.sendGolden(g)
	}
	c.sendGolden("pingreq_v5")
	c.expect(wantAck(codec.PUBREL, 11, codec.PacketIDNotFound), wantPingresp())

	// UNSUBSCRIBE a/b: UNSUBACK 6 with Success.
	c.sendGolden("unsubscribe_v5_user_property")
	c.expect(wantUnsuback(6, 0))

	// DISCONNECT, Normal disconnection: the broker closes the connection
	// and sends nothing back.
	c.sendGolden("disconnect_v5_normal")
	c.closed()

	// Password without user name is allowed in 5.0 (§3.1.2.9).
	p := dialRaw(t, addr)
	p.vers = codec.Version5
	p.sendGolden("connect_v5_password_without_username")
	p.expect(wantConnack(0, false))
	// 0x9C Use another server is a server's reason code; from a client it
	// still ends the connection.
	p.sendGolden("disconnect_v5_use_another_server")
	p.closed()

	// 0x04 Disconnect with Will Message: the will is published
	// (§3.14.2.1).
	w := dialRaw(t, addr)
	wc := codec.Connect{ClientID: []byte("golden-will"), CleanStart: true, KeepAlive: 60,
		WillFlag: true, WillTopic: []byte("will/5"), WillPayload: []byte("asked for")}
	w.connect(wc, 0)
	w.vers = codec.Version5
	w.sendGolden("disconnect_v5_with_will")
	w.closed()
	obs.expect(wantPublish("will/5", []byte("asked for"), 0, false))

	// An Authentication Method the broker does not implement: 0x8C Bad
	// authentication method, then close [MQTT-4.12.0-1].
	f := dialRaw(t, addr)
	f.vers = codec.Version5
	f.sendGolden("connect_v5_full")
	f.closed(wantConnack(codec.BadAuthenticationMethod, false))

	// AUTH without an Authentication Method in CONNECT is a Protocol
	// Error (§4.12): DISCONNECT 0x82 and close.
	for _, g := range []string{"auth_v5_continue", "auth_v5_success"} {
		a, _ := dialRaw5(t, addr, codec.Connect{ClientID: []byte("golden-" + g), CleanStart: true})
		a.sendGolden(g)
		a.closed(wantDisconnect(codec.ProtocolError))
	}

	// A PUBLISH from a client must not carry a Subscription Identifier
	// [MQTT-3.3.4-6]: Protocol Error.
	s, _ := dialRaw5(t, addr, codec.Connect{ClientID: []byte("golden-subid"), CleanStart: true})
	s.sendGolden("publish_v5_qos1_props")
	s.closed(wantDisconnect(codec.ProtocolError))
}
