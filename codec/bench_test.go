package codec

import (
	"bytes"
	"testing"
)

// benchPublish311 is a typical telemetry PUBLISH: QoS 1, 30-byte topic,
// 64-byte payload.
func benchPublish311() *Publish {
	return &Publish{QoS: 1, PacketID: 42, Topic: []byte("sensors/building-1/floor-2/temp"),
		Payload: bytes.Repeat([]byte{'x'}, 64)}
}

// benchPublish5 adds the properties of a 5.0 request/response message.
func benchPublish5() *Publish {
	p := benchPublish311()
	p.Props = Properties{
		Present: present(PropPayloadFormat, PropMessageExpiry, PropContentType, PropResponseTopic,
			PropCorrelationData, PropSubscriptionID, PropUserProperty),
		PayloadFormat: 1, MessageExpiry: 3600, ContentType: []byte("application/json"),
		ResponseTopic: []byte("replies/client-7"), CorrelationData: []byte("req-000123"),
		SubscriptionIDs: []uint32{7, 300},
		User: []UserProperty{
			{Key: []byte("trace-id"), Value: []byte("4bf92f3577b34da6a3ce929d0e0e4736")},
			{Key: []byte("tenant"), Value: []byte("acme")},
			{Key: []byte("schema"), Value: []byte("v2")},
		},
	}
	return p
}

func benchDecode(b *testing.B, p *Publish, version byte) {
	data := p.Append(nil, version)
	h, body, _, err := ReadPacket(data, 0)
	if err != nil {
		b.Fatal(err)
	}
	var out Publish
	if err := out.Decode(h, body, version); err != nil { // warm the backing arrays
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if err := out.Decode(h, body, version); err != nil {
			b.Fatal(err)
		}
	}
}

func benchEncode(b *testing.B, p *Publish, version byte) {
	buf := p.Append(nil, version)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		buf = p.Append(buf[:0], version)
	}
}

func BenchmarkPublishDecode311(b *testing.B)        { benchDecode(b, benchPublish311(), Version311) }
func BenchmarkPublishEncode311(b *testing.B)        { benchEncode(b, benchPublish311(), Version311) }
func BenchmarkPublishDecode5WithProps(b *testing.B) { benchDecode(b, benchPublish5(), Version5) }
func BenchmarkPublishEncode5WithProps(b *testing.B) { benchEncode(b, benchPublish5(), Version5) }

// BenchmarkReadPacket frames a buffer of 32 mixed packets (one op = the
// whole buffer), as the server does after each read.
func BenchmarkReadPacket(b *testing.B) {
	var stream []byte
	for i := 0; i < 8; i++ {
		stream = benchPublish311().Append(stream, Version311)
		stream = (&Ack{Type: PUBACK, PacketID: 9}).Append(stream, Version311)
		stream = AppendPingreq(stream)
		stream = benchPublish5().Append(stream, Version5)
	}
	n := 0
	for off := 0; off < len(stream); n++ {
		_, _, k, err := ReadPacket(stream[off:], 1<<20)
		if err != nil {
			b.Fatal(err)
		}
		off += k
	}
	b.SetBytes(int64(len(stream)))
	b.ReportAllocs()
	for b.Loop() {
		for off := 0; off < len(stream); {
			_, _, k, err := ReadPacket(stream[off:], 1<<20)
			if err != nil {
				b.Fatal(err)
			}
			off += k
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/packet")
}

// TestZeroAllocs enforces the allocation budget of the hot paths: framing,
// decoding into a warmed struct and encoding into a buffer with room, for
// every golden packet.
func TestZeroAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector changes allocation counts")
	}
	var (
		connect     Connect
		connack     Connack
		publish     Publish
		ack         Ack
		subscribe   Subscribe
		suback      Suback
		unsubscribe Unsubscribe
		unsuback    Unsuback
		disconnect  Disconnect
		auth        Auth
		ping        Pingreq
		pong        Pingresp
	)
	decode := func(g goldenPacket) error {
		h, body, _, err := ReadPacket(g.bytes, 0)
		if err != nil {
			return err
		}
		switch h.Type {
		case CONNECT:
			return connect.Decode(h, body)
		case CONNACK:
			return connack.Decode(h, body, g.version)
		case PUBLISH:
			return publish.Decode(h, body, g.version)
		case PUBACK, PUBREC, PUBREL, PUBCOMP:
			return ack.Decode(h, body, g.version)
		case SUBSCRIBE:
			return subscribe.Decode(h, body, g.version)
		case SUBACK:
			return suback.Decode(h, body, g.version)
		case UNSUBSCRIBE:
			return unsubscribe.Decode(h, body, g.version)
		case UNSUBACK:
			return unsuback.Decode(h, body, g.version)
		case DISCONNECT:
			return disconnect.Decode(h, body, g.version)
		case AUTH:
			return auth.Decode(h, body, g.version)
		case PINGREQ:
			return ping.Decode(h, body)
		case PINGRESP:
			return pong.Decode(h, body)
		}
		return nil
	}
	for _, g := range goldenPackets { // warm every struct with every packet
		if err := decode(g); err != nil {
			t.Fatalf("%s: %v", g.name, err)
		}
	}
	buf := make([]byte, 0, 4096)
	for _, g := range goldenPackets {
		if n := testing.AllocsPerRun(20, func() { _ = decode(g) }); n != 0 {
			t.Errorf("%s: ReadPacket+Decode allocates %.1f times", g.name, n)
		}
		v := g.value
		if n := testing.AllocsPerRun(20, func() { buf = AppendPacket(buf[:0], v, g.version) }); n != 0 {
			t.Errorf("%s: Append allocates %.1f times", g.name, n)
		}
	}
}
