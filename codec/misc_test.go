package codec

import (
	"bytes"
	"math/rand/v2"
	"testing"
	"unicode/utf8"
)

// refUTF8Rule is the obvious definition the fast path must agree with.
func refUTF8Rule(b []byte) string {
	switch {
	case !utf8.Valid(b):
		return ruleIllFormed
	case bytes.IndexByte(b, 0) >= 0:
		return ruleNUL
	}
	return ""
}

func TestUTF8RuleMatchesReference(t *testing.T) {
	// Every position of a special byte in ASCII strings around the 8-byte word size.
	specials := [][]byte{{0}, {0x80}, {0xC3, 0xA9}, {0xED, 0xA0, 0x80}, {0xFF}, {0x7F}, {0x01}}
	for n := 0; n <= 24; n++ {
		for pos := 0; pos <= n; pos++ {
			for _, sp := range specials {
				s := bytes.Repeat([]byte{'a'}, n)
				s = append(s[:pos], append(append([]byte(nil), sp...), s[pos:]...)...)
				if got, want := utf8Rule(s), refUTF8Rule(s); got != want {
					t.Fatalf("%q: got %q, want %q", s, got, want)
				}
			}
		}
	}
	rng := rand.New(rand.NewPCG(3, 4))
	alphabet := []byte{0, 'a', 'z', 0x7F, 0x80, 0xBF, 0xC2, 0xE0, 0xED, 0xF0, 0xF4, 0xFF}
	for i := 0; i < 20000; i++ {
		s := make([]byte, rng.IntN(40))
		for j := range s {
			if rng.IntN(4) == 0 {
				s[j] = alphabet[rng.IntN(len(alphabet))]
			} else {
				s[j] = byte(0x20 + rng.IntN(0x5F))
			}
		}
		if got, want := utf8Rule(s), refUTF8Rule(s); got != want {
			t.Fatalf("%q: got %q, want %q", s, got, want)
		}
	}
}

// A string longer than 65,535 bytes cannot be encoded: it is truncated so
// that the packet stays well-framed, and Size agrees with Append.
func TestOversizedStringTruncated(t *testing.T) {
	long := bytes.Repeat([]byte{'t'}, 70000)
	p := &Publish{Topic: long, Payload: []byte("x"), Props: Properties{
		Present: present(PropContentType), ContentType: long,
	}}
	for _, v := range []byte{Version311, Version5} {
		enc := p.Append(nil, v)
		if len(enc) != p.Size(v) {
			t.Fatalf("v%d: Size %d, Append %d", v, p.Size(v), len(enc))
		}
		got, err := decodeWhole(enc, v)
		if err != nil {
			t.Fatalf("v%d: %v", v, err)
		}
		q := got.(*Publish)
		if len(q.Topic) != 65535 || string(q.Payload) != "x" {
			t.Fatalf("v%d: topic %d bytes, payload %q", v, len(q.Topic), q.Payload)
		}
	}
}

// Append writes only the properties the packet type allows, whatever is
// set, so a server forwarding an inbound PUBLISH's properties cannot emit a
// malformed packet.
func TestEncodeFiltersProperties(t *testing.T) {
	p := &Publish{Topic: []byte("a"), Props: Properties{
		Present:       present(PropSessionExpiry, PropReasonString, PropContentType),
		SessionExpiry: 5, ReasonString: []byte("r"), ContentType: []byte("c"),
	}}
	got, err := decodeWhole(p.Append(nil, Version5), Version5)
	if err != nil {
		t.Fatal(err)
	}
	q := got.(*Publish)
	if q.Props.Present != present(PropContentType) || string(q.Props.ContentType) != "c" {
		t.Fatalf("got %s", show(q))
	}
	// SUBSCRIBE carries one Subscription Identifier: only the first is written.
	s := &Subscribe{PacketID: 1, Props: Properties{SubscriptionIDs: []uint32{4, 5}},
		Subscriptions: []Subscription{{Filter: []byte("a")}}}
	got, err = decodeWhole(s.Append(nil, Version5), Version5)
	if err != nil {
		t.Fatal(err)
	}
	if ids := got.(*Subscribe).Props.SubscriptionIDs; len(ids) != 1 || ids[0] != 4 {
		t.Fatalf("subscription ids %v", ids)
	}
}

// Before 5.0 SUBACK failure codes collapse to 0x80, and acks, DISCONNECT and
// UNSUBACK lose their 5.0 fields.
func TestDowngradeTo311(t *testing.T) {
	cases := []struct {
		pkt  any
		want []byte
	}{
		{&Suback{PacketID: 1, ReasonCodes: []ReasonCode{0x00, 0x87, 0x02, 0xA2}}, []byte{0x90, 0x06, 0, 1, 0x00, 0x80, 0x02, 0x80}},
		{&Ack{Type: PUBACK, PacketID: 1, ReasonCode: 0x10, Props: Properties{Present: present(PropReasonString), ReasonString: []byte("x")}}, []byte{0x40, 0x02, 0, 1}},
		{&Disconnect{ReasonCode: 0x8B}, []byte{0xE0, 0x00}},
		{&Unsuback{PacketID: 1, ReasonCodes: []ReasonCode{0x11}}, []byte{0xB0, 0x02, 0, 1}},
		{&Connack{ReasonCode: 0, Props: Properties{Present: present(PropReceiveMaximum), ReceiveMaximum: 5}}, []byte{0x20, 0x02, 0, 0}},
		{&Subscribe{PacketID: 1, Subscriptions: []Subscription{{Filter: []byte("a"), QoS: 1, NoLocal: true, RetainHandling: 2}}}, []byte{0x82, 0x06, 0, 1, 0, 1, 'a', 0x01}},
	}
	for _, c := range cases {
		if got := AppendPacket(nil, c.pkt, Version311); !bytes.Equal(got, c.want) {
			t.Errorf("%s: % x, want % x", show(c.pkt), got, c.want)
		}
	}
}

func TestAppendPacketValues(t *testing.T) {
	for _, g := range goldenPackets {
		// AppendPacket accepts the struct by value as well as by pointer.
		v := indirect(g.value)
		if got := AppendPacket(nil, v, g.version); !bytes.Equal(got, g.bytes) {
			t.Errorf("%s by value: % x", g.name, got)
		}
	}
	if got := AppendPacket([]byte("x"), 42, Version5); string(got) != "x" {
		t.Errorf("unknown value changed dst: %q", got)
	}
}

func indirect(v any) any {
	switch p := v.(type) {
	case *Connect:
		return *p
	case *Connack:
		return *p
	case *Publish:
		return *p
	case *Ack:
		return *p
	case *Subscribe:
		return *p
	case *Suback:
		return *p
	case *Unsubscribe:
		return *p
	case *Unsuback:
		return *p
	case *Pingreq:
		return *p
	case *Pingresp:
		return *p
	case *Disconnect:
		return *p
	case *Auth:
		return *p
	}
	return v
}

func TestPropertiesClone(t *testing.T) {
	data := append([]byte(nil), goldenPackets[6].bytes...) // connect_v5_full
	got, err := decodeWhole(data, Version5)
	if err != nil {
		t.Fatal(err)
	}
	c := got.(*Connect)
	props, will := c.Props.Clone(), c.WillProps.Clone()
	for i := range data {
		data[i] = 0xEE // the read buffer is reused
	}
	want := goldenPackets[6].value.(*Connect)
	if !equalPacket(&props, &want.Props) || !equalPacket(&will, &want.WillProps) {
		t.Fatalf("clone aliases the buffer:\n%s\n%s", show(&props), show(&will))
	}
}

// Decoded views have their capacity clipped: appending to one cannot
// overwrite the bytes after it.
func TestViewsAreClipped(t *testing.T) {
	g := goldenPackets[6] // connect_v5_full
	data := append([]byte(nil), g.bytes...)
	got, _ := decodeWhole(data, g.version)
	c := got.(*Connect)
	_ = append(c.ClientID, "XXXX"...)
	_ = append(c.Props.User[0].Key, "XXXX"...)
	if !bytes.Equal(data, g.bytes) {
		t.Fatal("append to a decoded field wrote into the packet buffer")
	}
}
