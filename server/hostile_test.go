package server

import (
	"bytes"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/ternmq/tern/codec"
)

// connect311 is a valid 3.1.1 CONNECT for client id "h", clean session, keepalive 30.
var connect311 = []byte{
	0x10, 0x0D, // CONNECT, remaining length 13
	0x00, 0x04, 'M', 'Q', 'T', 'T', // protocol name
	0x04,       // level 4
	0x02,       // flags: clean session
	0x00, 0x1E, // keepalive 30
	0x00, 0x01, 'h', // client id
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// TestHostileInput sends each malformed or abusive input on its own
// connection and checks that the broker closes that connection (after the
// reply the spec asks for, if any) while a healthy client on the same broker
// keeps exchanging messages.
func TestHostileInput(t *testing.T) {
	_, addr := startBroker(t, func(o *Options) { o.MaxPacketSize = 64 << 10 })
	healthyRecv := newReceived()
	healthy := pahoClient(t, addr, "healthy")
	subscribe(t, healthy, "healthy/#", 1, healthyRecv)
	healthyPub := pahoClient(t, addr, "healthy-pub")
	runHostileInput(t, func(t *testing.T) *rawConn { return dialRaw(t, addr) }, healthyPub, healthyRecv)
}

// hostileCase is one malformed or abusive 3.1.1 input.
type hostileCase struct {
	name string
	// pre is sent first (usually a valid CONNECT), then bad.
	pre, bad []byte
	// wantReply is the packet the broker must send before closing
	// (e.g. CONNACK with a refusal code); 0 means none.
	wantReply codec.PacketType
	// mayReply is a packet the broker may, but need not, send before closing.
	mayReply codec.PacketType
}

// runHostileInput sends every hostileCases input on its own connection
// from dial (a broker with MaxPacketSize 64 KiB) and checks that the
// connection is closed after the reply the spec asks for, if any, while
// healthyPub's messages keep reaching healthyRecv (subscribed to
// healthy/#). TestHostileInput runs it over TCP, TestHostileInputOverTLS
// over both TLS engines.
func runHostileInput(t *testing.T, dial func(t *testing.T) *rawConn, healthyPub mqtt.Client, healthyRecv *received) {
	sent := 0
	for _, tc := range hostileCases() {
		t.Run(tc.name, func(t *testing.T) {
			raw := dial(t)
			if tc.pre != nil {
				raw.send(tc.pre)
				if h, _ := raw.read(5 * time.Second); h.Type != codec.CONNACK {
					t.Fatalf("valid CONNECT not accepted: got %d", h.Type)
				}
			}
			// The broker may close before it read everything (a packet
			// over the maximum size is refused from its header): over TLS,
			// whose records the client writes one by one, the rest of
			// the write then fails, which is not an error of the broker.
			_ = raw.conn().Write(tc.bad)
			got := raw.expectClosed(5 * time.Second)
			for _, h := range got {
				if h.Type != tc.wantReply && h.Type != tc.mayReply && h.Type != codec.PUBREC {
					t.Errorf("unexpected packet type %d before close", h.Type)
				}
			}
			if tc.wantReply != 0 && (len(got) == 0 || got[0].Type != tc.wantReply) {
				t.Errorf("want packet %d before close, got %v", tc.wantReply, got)
			}
			// The healthy client is unaffected.
			sent++
			wait(t, healthyPub.Publish("healthy/x", 1, false, tc.name), "healthy publish")
			healthyRecv.waitN(t, sent, 5*time.Second)
		})
	}
}

// hostileCases are the 3.1.1 inputs of runHostileInput.
func hostileCases() []hostileCase {
	big := strings.Repeat("x", 70<<10)
	return []hostileCase{
		{name: "first packet not CONNECT [MQTT-3.1.0-1]", bad: []byte{0xC0, 0x00}},
		{name: "PUBLISH before CONNECT [MQTT-3.1.0-1]", bad: []byte{0x30, 0x05, 0x00, 0x01, 'a', 'h', 'i'}},
		{name: "second CONNECT [MQTT-3.1.0-2]", pre: connect311, bad: connect311},
		{name: "remaining length 5 bytes [MQTT-2.2.3]", bad: []byte{0x10, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F}},
		{name: "packet type 0 (reserved)", bad: []byte{0x00, 0x00}},
		{name: "CONNECT reserved flag bit [MQTT-3.1.2-3]", bad: []byte{0x10, 0x0D, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x03, 0, 30, 0, 1, 'h'}},
		{name: "CONNECT fixed header flags nonzero [MQTT-2.2.2-2]", bad: []byte{0x11, 0x0D, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 30, 0, 1, 'h'}},
		{name: "bad protocol name [MQTT-3.1.2-1]", bad: []byte{0x10, 0x0D, 0, 4, 'M', 'Q', 'T', 'X', 4, 0x02, 0, 30, 0, 1, 'h'}, mayReply: codec.CONNACK},
		{name: "unsupported protocol level [MQTT-3.1.2-2]", bad: []byte{0x10, 0x0D, 0, 4, 'M', 'Q', 'T', 'T', 9, 0x02, 0, 30, 0, 1, 'h'}, wantReply: codec.CONNACK},
		{name: "will QoS 3 [MQTT-3.1.2-14]", bad: []byte{0x10, 0x12, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x1E, 0, 30, 0, 1, 'h', 0, 1, 'w', 0, 0}},
		{name: "will QoS without will flag [MQTT-3.1.2-13]", bad: []byte{0x10, 0x0D, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x0A, 0, 30, 0, 1, 'h'}},
		{name: "password without username [MQTT-3.1.2-22]", bad: []byte{0x10, 0x10, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x42, 0, 30, 0, 1, 'h', 0, 1, 'p'}},
		{name: "client id invalid UTF-8 [MQTT-1.5.3-1]", bad: []byte{0x10, 0x0D, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 30, 0, 1, 0xFF}},
		{name: "client id U+0000 [MQTT-1.5.3-2]", bad: []byte{0x10, 0x0D, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 30, 0, 1, 0x00}},
		{name: "CONNECT truncated string", bad: []byte{0x10, 0x0D, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 30, 0, 9, 'h'}},
		{name: "CONNECT trailing garbage", bad: []byte{0x10, 0x0F, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 30, 0, 1, 'h', 'x', 'y'}},
		{name: "PUBLISH QoS 3 [MQTT-3.3.1-4]", pre: connect311, bad: []byte{0x36, 0x05, 0x00, 0x01, 'a', 0x00, 0x01}},
		{name: "PUBLISH packet id 0 at QoS 1 [MQTT-2.2.1-3]", pre: connect311, bad: []byte{0x32, 0x05, 0x00, 0x01, 'a', 0x00, 0x00}},
		{name: "PUBLISH DUP at QoS 0 [MQTT-3.3.1-2]", pre: connect311, bad: []byte{0x38, 0x04, 0x00, 0x01, 'a', 'x'}},
		{name: "PUBLISH topic with + [MQTT-3.3.2-2]", pre: connect311, bad: []byte{0x30, 0x05, 0x00, 0x03, 'a', '/', '+'}},
		{name: "PUBLISH topic with # [MQTT-3.3.2-2]", pre: connect311, bad: []byte{0x30, 0x03, 0x00, 0x01, '#'}},
		{name: "PUBLISH empty topic [MQTT-4.7.3-1]", pre: connect311, bad: []byte{0x30, 0x03, 0x00, 0x00, 'x'}},
		{name: "PUBLISH topic invalid UTF-8 [MQTT-1.5.3-1]", pre: connect311, bad: []byte{0x30, 0x04, 0x00, 0x02, 0xC3, 0x28}},
		{name: "PUBLISH topic U+0000 [MQTT-1.5.3-2]", pre: connect311, bad: []byte{0x30, 0x04, 0x00, 0x02, 'a', 0x00}},
		{name: "PUBLISH topic UTF-16 surrogate [MQTT-1.5.3-1]", pre: connect311, bad: []byte{0x30, 0x05, 0x00, 0x03, 0xED, 0xA0, 0x80}},
		{name: "PUBLISH topic length overruns packet", pre: connect311, bad: []byte{0x30, 0x03, 0x00, 0x09, 'a'}},
		{name: "packet over max packet size", pre: connect311, bad: cat([]byte{0x30, 0x84, 0xB0, 0x04, 0x00, 0x01, 'a'}, []byte(big))},
		{name: "SUBSCRIBE reserved flags 0000 [MQTT-3.8.1-1]", pre: connect311, bad: []byte{0x80, 0x06, 0x00, 0x01, 0x00, 0x01, 'a', 0x00}},
		{name: "SUBSCRIBE with no filters [MQTT-3.8.3-3]", pre: connect311, bad: []byte{0x82, 0x02, 0x00, 0x01}},
		{name: "SUBSCRIBE requested QoS 3 [MQTT-3.8.3-4]", pre: connect311, bad: []byte{0x82, 0x06, 0x00, 0x01, 0x00, 0x01, 'a', 0x03}},
		{name: "SUBSCRIBE packet id 0 [MQTT-2.2.1-3]", pre: connect311, bad: []byte{0x82, 0x06, 0x00, 0x00, 0x00, 0x01, 'a', 0x00}},
		{name: "UNSUBSCRIBE with no filters [MQTT-3.10.3-2]", pre: connect311, bad: []byte{0xA2, 0x02, 0x00, 0x01}},
		{name: "UNSUBSCRIBE reserved flags [MQTT-3.10.1-1]", pre: connect311, bad: []byte{0xA0, 0x05, 0x00, 0x01, 0x00, 0x01, 'a'}},
		{name: "PUBREL reserved flags [MQTT-3.6.1-1]", pre: connect311, bad: []byte{0x60, 0x02, 0x00, 0x01}},
		{name: "PUBACK wrong length", pre: connect311, bad: []byte{0x40, 0x03, 0x00, 0x01, 0x00}},
		{name: "PINGREQ with a body", pre: connect311, bad: []byte{0xC0, 0x01, 0x00}},
		{name: "server-only CONNACK from client", pre: connect311, bad: []byte{0x20, 0x02, 0x00, 0x00}},
		{name: "server-only SUBACK from client", pre: connect311, bad: []byte{0x90, 0x03, 0x00, 0x01, 0x00}},
		{name: "server-only PINGRESP from client", pre: connect311, bad: []byte{0xD0, 0x00}},
		{name: "AUTH from a 3.1.1 client", pre: connect311, bad: []byte{0xF0, 0x00}},
		{name: "DISCONNECT with reserved flags [MQTT-3.14.1-1]", pre: connect311, bad: []byte{0xE1, 0x00}},
		{name: "QoS 2 flood beyond inbound bound", pre: connect311, bad: qos2Flood(200)},
	}
}

// qos2Flood is 200 QoS 2 PUBLISHes with distinct ids and no PUBREL: more than
// the broker's bound on flows awaiting PUBREL.
func qos2Flood(n int) []byte {
	var out []byte
	for i := 1; i <= n; i++ {
		out = append(out, 0x34, 0x05, 0x00, 0x01, 'f', byte(i>>8), byte(i))
	}
	return out
}

// A half-sent packet followed by silence is closed by the keepalive or
// connect timeout, never held forever.
func TestSlowlorisConnect(t *testing.T) {
	_, addr := startBroker(t, func(o *Options) { o.ConnectTimeout = time.Second })
	raw := dialRaw(t, addr)
	raw.send(connect311[:5])
	start := time.Now()
	raw.expectClosed(5 * time.Second)
	if time.Since(start) > 3*time.Second {
		t.Errorf("closed after %v, want about the 1s connect timeout", time.Since(start))
	}
}
