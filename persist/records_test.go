package persist

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"reflect"
	"testing"
)

func TestMessageRecordRoundTripAndCompression(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	cases := []struct {
		name           string
		payload        []byte
		threshold      int
		wantCompressed bool
	}{
		{"small below threshold", []byte(`{"t":1}`), 1024, false},
		{"json above threshold", jsonPayload(rng, 4096), 1024, true},
		{"json at threshold", bytes.Repeat([]byte("a"), 1024), 1024, true},
		{"random stays raw", randomPayload(rng, 4096), 1024, false},
		{"compression disabled", jsonPayload(rng, 4096), -1, false},
		{"empty", nil, 1024, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := &Message{Topic: "a/b", Payload: tc.payload, QoS: 2, Retain: true, Properties: []byte{1, 2, 3}, ExpiresAt: 99, Publisher: "me"}
			rec := appendMessage([]byte("prefix"), m, tc.threshold)[len("prefix"):]
			if rec[0] != messageVersion {
				t.Fatalf("version byte %d", rec[0])
			}
			if got := rec[1]&flagCompressed != 0; got != tc.wantCompressed {
				t.Fatalf("compressed flag %v, want %v", got, tc.wantCompressed)
			}
			if tc.wantCompressed && len(rec) >= len(tc.payload) {
				t.Errorf("compressed record %d bytes for a %d-byte payload", len(rec), len(tc.payload))
			}
			got, err := decodeMessage(rec, MaxPayloadLen)
			if err != nil {
				t.Fatal(err)
			}
			if m.Payload == nil {
				m.Payload = []byte{}
			}
			if !reflect.DeepEqual(got, m) {
				t.Errorf("got %+v\nwant %+v", got, m)
			}
			// The decoded message must not alias the record.
			if len(got.Payload) > 0 && !tc.wantCompressed {
				rec[len(rec)-1] ^= 0xFF
				if got.Payload[len(got.Payload)-1] != m.Payload[len(m.Payload)-1] {
					t.Error("decoded payload aliases the record")
				}
			}
		})
	}
}

func TestDecodeRejects(t *testing.T) {
	msg := appendMessage(nil, &Message{Topic: "t", Payload: []byte("p")}, 0)
	sess := appendSession(nil, &Session{ProtocolVersion: 5, Subscriptions: []Subscription{{Filter: "f"}}})
	out := appendOutbound(nil, Outbound{MessageID: 1, QoS: 1, State: AwaitingPuback, PacketID: 1})
	with := func(rec []byte, i int, b byte) []byte {
		r := bytes.Clone(rec)
		r[i] = b
		return r
	}
	cases := []struct {
		name    string
		decode  func([]byte) error
		rec     []byte
		version bool
	}{
		{"message empty", decodeMsg, nil, false},
		{"message version 2", decodeMsg, with(msg, 0, 2), true},
		{"message reserved flag", decodeMsg, with(msg, 1, 0x10), false},
		{"message QoS 3", decodeMsg, with(msg, 1, 3), false},
		{"message truncated", decodeMsg, msg[:3], false},
		{"message topic longer than record", decodeMsg, with(msg, 4, 0x7F), false},
		{"message bad compressed payload", decodeMsg, append(with(msg, 1, flagCompressed), 0xFF, 0xFF), false},
		{"session version", decodeSess, with(sess, 0, 9), true},
		{"session protocol 2", decodeSess, with(sess, 1, 2), false},
		{"session trailing byte", decodeSess, append(bytes.Clone(sess), 0), false},
		{"session huge count", decodeSess, append(bytes.Clone(sess[:14]), 0xFF, 0xFF, 0xFF, 0x7F), false},
		{"session sub QoS 3", decodeSess, with(sess, 17, 3), false},
		{"outbound short", decodeOut, out[:12], false},
		{"outbound version", decodeOut, with(out, 0, 7), true},
		{"outbound state 4", decodeOut, with(out, 1, 4), false},
		{"outbound puback with QoS 2", decodeOut, with(out, 2, 2), false},
		{"outbound in flight with packet id 0 [MQTT-2.2.1-3]", decodeOut, with(with(out, 3, 0), 4, 0), false},
		{"outbound version 2 without a flag", decodeOut, with(out, 0, 2), false},
		{"outbound version 2 reserved flag", decodeOut, with(with(out, 0, 2), 1, byte(AwaitingPuback)|outFlagShared|0x40), false},
		{"outbound version 1 with a flag", decodeOut, with(out, 1, byte(AwaitingPuback)|outFlagShared), false},
		{"inbound short", func(b []byte) error { _, err := decodeInbound(b); return err }, []byte{1, 0}, false},
	}
	for _, tc := range cases {
		err := tc.decode(tc.rec)
		if !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: err %v, want ErrCorrupt", tc.name, err)
		}
		if tc.version && !errors.Is(err, ErrUnknownVersion) {
			t.Errorf("%s: err %v, want ErrUnknownVersion", tc.name, err)
		}
	}
}

func decodeMsg(b []byte) error  { _, err := decodeMessage(b, MaxPayloadLen); return err }
func decodeSess(b []byte) error { _, err := decodeSession(b); return err }
func decodeOut(b []byte) error  { _, err := decodeOutbound(b); return err }

func TestKeyLayout(t *testing.T) {
	// The bytes the package doc draws.
	if got, want := appendOutboundKey(nil, "dev1", 258), []byte{0x03, 0x00, 0x04, 'd', 'e', 'v', '1', 0x03, 0, 0, 0, 0, 0, 0, 0x01, 0x02}; !bytes.Equal(got, want) {
		t.Errorf("outbound key % x, want % x", got, want)
	}
	if got, want := appendInboundKey(nil, "dev1", 7), []byte{0x03, 0x00, 0x04, 'd', 'e', 'v', '1', 0x02, 0x00, 0x07}; !bytes.Equal(got, want) {
		t.Errorf("inbound key % x, want % x", got, want)
	}
	if got, want := appendMessageKey(nil, 1), []byte{0x02, 0, 0, 0, 0, 0, 0, 0, 0x01}; !bytes.Equal(got, want) {
		t.Errorf("message key % x", got)
	}
	ck, err := parseClientKey(appendOutboundKey(nil, "dev1", 258))
	if err != nil || string(ck.clientID) != "dev1" || ck.seq != 258 || ck.kind != kindOutbound {
		t.Errorf("parse: %+v %v", ck, err)
	}
	for _, bad := range [][]byte{{0x03}, {0x03, 0, 9, 'a', 1}, {0x03, 0, 1, 'a', 9}, {0x03, 0, 1, 'a', kindSession, 0}, {0x03, 0, 1, 'a', kindOutbound, 1}} {
		if _, err := parseClientKey(bad); !errors.Is(err, ErrCorrupt) {
			t.Errorf("parseClientKey(% x): %v", bad, err)
		}
	}
	lo, hi := clientBounds("a")
	for _, k := range [][]byte{appendSessionKey(nil, "ab"), appendSessionKey(nil, ""), appendOutboundKey(nil, "b", 0)} {
		if bytes.Compare(k, lo) >= 0 && bytes.Compare(k, hi) < 0 {
			t.Errorf("key % x of another client falls in client a's range", k)
		}
	}
}

// An entry without flags is written as version 1, byte for byte what
// builds before flags wrote; a shared one as version 2, and both decode
// back to what was written.
func TestOutboundSharedFlag(t *testing.T) {
	plain := Outbound{MessageID: 7, QoS: 1, State: AwaitingPuback, PacketID: 3}
	want := []byte{1, 1, 1, 0, 3, 0, 0, 0, 0, 0, 0, 0, 7}
	if got := appendOutbound(nil, plain); !bytes.Equal(got, want) {
		t.Errorf("unflagged entry % x, want % x", got, want)
	}
	shared := plain
	shared.Shared = true
	rec := appendOutbound(nil, shared)
	if rec[0] != 2 || rec[1] != byte(AwaitingPuback)|outFlagShared {
		t.Errorf("shared entry % x: want version 2 and the flag in the state byte", rec)
	}
	for _, o := range []Outbound{plain, shared} {
		if got, err := decodeOutbound(appendOutbound(nil, o)); err != nil || got != o {
			t.Errorf("round trip of %+v: %+v, %v", o, got, err)
		}
	}
}
