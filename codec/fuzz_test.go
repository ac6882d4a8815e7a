package codec

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

// FuzzDecode decodes any packet for a version; whatever decodes must
// re-encode to bytes that decode to an equal value, and encoding must be
// idempotent. Decode errors must be *Error, never panics.
func FuzzDecode(f *testing.F) {
	for _, g := range goldenPackets {
		f.Add(g.bytes, g.version)
	}
	for _, m := range malformedPackets {
		f.Add(m.bytes, m.version)
	}
	f.Fuzz(func(t *testing.T, data []byte, v byte) {
		version := Version31 + v%3
		h, body, _, err := ReadPacket(data, 0)
		if err != nil {
			if err != ErrIncomplete && asError(err) == nil {
				t.Fatalf("ReadPacket error is not *Error: %v", err)
			}
			return
		}
		pkt, err := DecodePacket(h, body, version)
		if err != nil {
			if asError(err) == nil {
				t.Fatalf("decode error is not *Error: %v", err)
			}
			return
		}
		if c, ok := pkt.(*Connect); ok {
			version = c.ProtocolVersion
		}
		enc := AppendPacket(nil, pkt, version)
		if n := sizeOf(pkt, version); n >= 0 && n != len(enc) {
			t.Fatalf("Size %d, encoded %d bytes", n, len(enc))
		}
		pkt2, err := decodeWhole(enc, version)
		if err != nil {
			t.Fatalf("re-decode of % x: %v\nvalue: %s", enc, err, show(pkt))
		}
		if !equalPacket(pkt, pkt2) {
			t.Fatalf("round trip changed the value\nfirst:  %s\nsecond: %s", show(pkt), show(pkt2))
		}
		enc2 := AppendPacket(nil, pkt2, version)
		if !bytes.Equal(enc, enc2) {
			t.Fatalf("encoding not idempotent:\n% x\n% x", enc, enc2)
		}
	})
}

// FuzzReadPacket frames a byte stream in one piece and fed in random
// chunks (split points drawn from seed): both must frame the same packets
// and stop at the same error.
func FuzzReadPacket(f *testing.F) {
	stream, _ := goldenStream()
	f.Add(stream, int64(0))
	f.Add(stream[:len(stream)/2], int64(1))
	for _, m := range malformedPackets {
		f.Add(append(append([]byte(nil), goldenPackets[0].bytes...), m.bytes...), int64(len(m.bytes)))
	}
	f.Fuzz(func(t *testing.T, data []byte, seed int64) {
		maxSize := 0
		if seed%4 == 1 {
			maxSize = int(uint64(seed)>>2) % 512
		}
		whole, errWhole := feed([][]byte{data}, maxSize)
		rng := rand.New(rand.NewPCG(uint64(seed), 7))
		split, errSplit := feed(randomChunks(data, rng), maxSize)
		if err := sameFrames(split, whole); err != nil {
			t.Fatalf("split framing differs: %v", err)
		}
		if (errWhole == nil) != (errSplit == nil) {
			t.Fatalf("errors differ: whole %v, split %v", errWhole, errSplit)
		}
		if e1, e2 := asError(errWhole), asError(errSplit); e1 != nil && (e2 == nil || e1.Code != e2.Code || e1.Rule != e2.Rule) {
			t.Fatalf("errors differ: whole %v, split %v", errWhole, errSplit)
		}
		for _, p := range whole {
			if maxSize > 0 && len(p) > maxSize {
				t.Fatalf("packet of %d bytes framed with maximum %d", len(p), maxSize)
			}
		}
	})
}

// FuzzProperties decodes a property list for any packet context; whatever
// decodes must re-encode to an equal list, idempotently.
func FuzzProperties(f *testing.F) {
	for _, g := range goldenPackets {
		if g.version != Version5 {
			continue
		}
		h, body, _, _ := ReadPacket(g.bytes, 0)
		if b, ctx, ok := propsBytes(h, body, g.value); ok {
			f.Add(b, byte(ctx))
		}
	}
	f.Fuzz(func(t *testing.T, data []byte, c byte) {
		ctx := propCtx(c % byte(numCtx))
		var p Properties
		if err := p.decode(data, ctx); err != nil {
			if asError(err) == nil {
				t.Fatalf("error is not *Error: %v", err)
			}
			return
		}
		n := p.size(ctx)
		enc := p.appendTo(nil, ctx, n)
		if len(enc) != VarintSize(uint32(n))+n {
			t.Fatalf("size %d, encoded %d", n, len(enc))
		}
		var q Properties
		r := reader{b: enc}
		if err := r.props(&q, ctx); err != nil || r.left() != 0 {
			t.Fatalf("re-decode: %v (left %d)", err, r.left())
		}
		if !equalPacket(&p, &q) {
			t.Fatalf("round trip changed the properties\nfirst:  %s\nsecond: %s", show(&p), show(&q))
		}
		if enc2 := q.appendTo(nil, ctx, q.size(ctx)); !bytes.Equal(enc, enc2) {
			t.Fatalf("encoding not idempotent")
		}
		cl := p.Clone()
		if !equalPacket(&p, &cl) {
			t.Fatalf("Clone differs")
		}
	})
}
