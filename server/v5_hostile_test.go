package server

import (
	"bytes"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/ternmq/tern/codec"
)

// connect5 is a valid 5.0 CONNECT for client id "h5", clean start,
// keepalive 30, no properties.
var connect5 = []byte{
	0x10, 0x0F, // CONNECT, remaining length 15
	0x00, 0x04, 'M', 'Q', 'T', 'T', // protocol name
	0x05,       // level 5
	0x02,       // flags: clean start
	0x00, 0x1E, // keepalive 30
	0x00,                 // property length 0
	0x00, 0x02, 'h', '5', // client id
}

// publish5 frames a 5.0 QoS 0 PUBLISH on topic "a" with the given raw
// property bytes (length prefix added) and payload "x".
func publish5(props []byte) []byte {
	body := []byte{0x00, 0x01, 'a'}
	body = codec.AppendVarint(body, uint32(len(props)))
	body = append(body, props...)
	body = append(body, 'x')
	return append(codec.AppendVarint([]byte{0x30}, uint32(len(body))), body...)
}

// TestV5HostileInput sends each malformed or abusive 5.0 input on its own
// connection: the broker answers with the reason code the spec gives
// (DISCONNECT once connected, CONNACK for a bad CONNECT) and closes, while
// a healthy 5.0 client on the same broker keeps exchanging messages.
func TestV5HostileInput(t *testing.T) {
	_, addr := startBroker(t, nil)
	runV5HostileInput(t, addr, func(t *testing.T) *rawConn { return dialRaw(t, addr) })
}

// runV5HostileInput sends each 5.0 input on its own connection from dial
// and checks the reason code and the close; healthy 5.0 clients on the
// broker's plain-TCP address addr keep exchanging messages throughout.
// TestV5HostileInput runs it over TCP, TestV5HostileInputOverTLS over both
// TLS engines.
func runV5HostileInput(t *testing.T, addr string, dial func(t *testing.T) *rawConn) {
	healthy, _, hr := paho5(t, addr, "healthy5", nil)
	sub5(t, healthy, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "healthy/#", QoS: 1}}})
	healthyPub, _, _ := paho5(t, addr, "healthy5-pub", nil)
	sent := 0

	manyUser := bytes.Repeat([]byte{codec.PropUserProperty, 0, 0, 0, 0}, 100000)
	var flood []byte
	for i := 1; i <= 100; i++ {
		flood = append(flood, 0x34, 0x06, 0x00, 0x01, 'f', byte(i>>8), byte(i), 0x00)
	}
	cases := []struct {
		name string
		// bad follows connect5 unless connectLevel, when it is the CONNECT.
		bad          []byte
		connectLevel bool
		want         codec.ReasonCode
	}{
		{name: "remaining length of 5 bytes (§1.5.5)", bad: []byte{0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F}, want: codec.MalformedPacket},
		{name: "property length VBI of 5 bytes (§1.5.5)", bad: []byte{0x30, 0x08, 0x00, 0x01, 'a', 0xFF, 0xFF, 0xFF, 0xFF, 0x7F}, want: codec.MalformedPacket},
		{name: "Subscription Identifier VBI of 5 bytes", bad: []byte{0x82, 0x0D, 0x00, 0x01, 0x06, 0x0B, 0x80, 0x80, 0x80, 0x80, 0x01, 0x00, 0x01, 'a', 0x00}, want: codec.MalformedPacket},
		{name: "duplicate property in PUBLISH (§2.2.2.2)", bad: publish5([]byte{codec.PropPayloadFormat, 0, codec.PropPayloadFormat, 0}), want: codec.ProtocolError},
		{name: "duplicate property in CONNECT", connectLevel: true, bad: []byte{0x10, 0x19, 0, 4, 'M', 'Q', 'T', 'T', 5, 0x02, 0, 30,
			0x0A, codec.PropSessionExpiry, 0, 0, 0, 1, codec.PropSessionExpiry, 0, 0, 0, 2, 0, 2, 'h', 'x'}, want: codec.ProtocolError},
		{name: "unknown property identifier", bad: publish5([]byte{0x7F, 0x00}), want: codec.MalformedPacket},
		{name: "property of another packet type (Will Delay in PUBLISH)", bad: publish5([]byte{codec.PropWillDelay, 0, 0, 0, 1}), want: codec.MalformedPacket},
		{name: "property length overruns the packet", bad: []byte{0x30, 0x05, 0x00, 0x01, 'a', 0x09, 0x01}, want: codec.MalformedPacket},
		{name: "100,000 user properties", bad: publish5(manyUser), want: codec.MalformedPacket},
		{name: "topic alias 0 [MQTT-3.3.2-8]", bad: publish5([]byte{codec.PropTopicAlias, 0, 0}), want: codec.TopicAliasInvalid},
		{name: "topic alias above the maximum [MQTT-3.3.2-9]", bad: publish5([]byte{codec.PropTopicAlias, 0, 11}), want: codec.TopicAliasInvalid},
		{name: "topic alias never defined", bad: []byte{0x30, 0x07, 0x00, 0x00, 0x03, codec.PropTopicAlias, 0, 1, 'x'}, want: codec.ProtocolError},
		{name: "empty topic without alias", bad: []byte{0x30, 0x04, 0x00, 0x00, 0x00, 'x'}, want: codec.ProtocolError},
		{name: "Subscription Identifier in PUBLISH [MQTT-3.3.4-6]", bad: publish5([]byte{codec.PropSubscriptionID, 7}), want: codec.ProtocolError},
		{name: "Subscription Identifier 0 in SUBSCRIBE", bad: []byte{0x82, 0x09, 0x00, 0x01, 0x02, 0x0B, 0x00, 0x00, 0x01, 'a', 0x00}, want: codec.ProtocolError},
		{name: "Retain Handling 3 (§3.8.3.1)", bad: []byte{0x82, 0x07, 0x00, 0x01, 0x00, 0x00, 0x01, 'a', 0x30}, want: codec.ProtocolError},
		{name: "QoS 2 flood beyond Receive Maximum [MQTT-3.3.4-7]", bad: flood, want: codec.ReceiveMaximumExceeded},
		{name: "AUTH without an authentication method in CONNECT", bad: []byte{0xF0, 0x00}, want: codec.ProtocolError},
		{name: "payload not UTF-8 with Payload Format Indicator 1", bad: []byte{0x30, 0x07, 0x00, 0x01, 'a', 0x02, codec.PropPayloadFormat, 1, 0xFF}, want: codec.PayloadFormatInvalid},
		{name: "Request Problem Information 2", connectLevel: true, bad: []byte{0x10, 0x11, 0, 4, 'M', 'Q', 'T', 'T', 5, 0x02, 0, 30,
			0x02, codec.PropRequestProblemInfo, 2, 0, 2, 'h', 'y'}, want: codec.ProtocolError},
		{name: "Receive Maximum 0 in CONNECT", connectLevel: true, bad: []byte{0x10, 0x12, 0, 4, 'M', 'Q', 'T', 'T', 5, 0x02, 0, 30,
			0x03, codec.PropReceiveMaximum, 0, 0, 0, 2, 'h', 'z'}, want: codec.ProtocolError},
		{name: "second CONNECT [MQTT-3.1.0-2]", bad: connect5, want: codec.ProtocolError},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			raw := dial(t)
			raw.vers = codec.Version5
			if !tc.connectLevel {
				raw.send(connect5)
				if h, _ := raw.read(5 * time.Second); h.Type != codec.CONNACK {
					t.Fatalf("valid CONNECT not accepted: got %d", h.Type)
				}
			}
			raw.send(tc.bad)
			got := raw.untilClosed(5 * time.Second)
			wantType := codec.DISCONNECT
			if tc.connectLevel {
				wantType = codec.CONNACK
			}
			var last packet
			for _, p := range got {
				if p.h.Type == wantType {
					last = p
				} else if p.h.Type != codec.PUBREC {
					t.Errorf("unexpected packet type %d before close", p.h.Type)
				}
			}
			if last.h.Type != wantType {
				t.Fatalf("no packet %d before close", wantType)
			}
			code := last.body[0]
			if wantType == codec.CONNACK {
				code = last.body[1]
			}
			if code != byte(tc.want) {
				t.Errorf("reason 0x%02X, want 0x%02X", code, byte(tc.want))
			}
			sent++
			pub5(t, healthyPub, &paho.Publish{Topic: "healthy/x", QoS: 1, Payload: []byte(tc.name)})
			hr.waitN(t, sent, 5*time.Second)
		})
	}
}
