package codec

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"
)

// feed simulates a connection's inbound buffer: each chunk is appended as
// it "arrives", then as many whole packets as possible are framed and
// consumed. It returns the packets framed (copies) and the first error.
func feed(chunks [][]byte, maxPacketSize int) ([][]byte, error) {
	var out [][]byte
	var pending []byte
	for _, c := range chunks {
		pending = append(pending, c...)
		for {
			h, body, n, err := ReadPacket(pending, maxPacketSize)
			if err == ErrIncomplete {
				break
			}
			if err != nil {
				return out, err
			}
			hdr := n - len(body)
			if h.RemainingLength != len(body) || hdr < 2 || hdr > 5 ||
				(len(body) > 0 && &body[0] != &pending[hdr]) {
				return out, fmt.Errorf("inconsistent frame: header %+v, body %d, total %d", h, len(body), n)
			}
			if cap(body) != len(body) {
				return out, fmt.Errorf("body capacity %d exceeds its length %d", cap(body), len(body))
			}
			out = append(out, append([]byte(nil), pending[:n]...))
			pending = pending[n:]
		}
	}
	if len(pending) != 0 {
		return out, fmt.Errorf("%d bytes left unframed: %w", len(pending), ErrIncomplete)
	}
	return out, nil
}

func goldenStream() ([]byte, [][]byte) {
	var stream []byte
	var want [][]byte
	for _, g := range goldenPackets {
		stream = append(stream, g.bytes...)
		want = append(want, g.bytes)
	}
	return stream, want
}

func sameFrames(got, want [][]byte) error {
	if len(got) != len(want) {
		return fmt.Errorf("framed %d packets, want %d", len(got), len(want))
	}
	for i := range got {
		if !bytes.Equal(got[i], want[i]) {
			return fmt.Errorf("packet %d: % x, want % x", i, got[i], want[i])
		}
	}
	return nil
}

// TestReadPacketSplitEverywhere feeds the stream of every golden packet cut
// in two at every possible point, then byte by byte.
func TestReadPacketSplitEverywhere(t *testing.T) {
	stream, want := goldenStream()
	for cut := 0; cut <= len(stream); cut++ {
		got, err := feed([][]byte{stream[:cut], stream[cut:]}, 0)
		if err != nil {
			t.Fatalf("cut at %d: %v", cut, err)
		}
		if err := sameFrames(got, want); err != nil {
			t.Fatalf("cut at %d: %v", cut, err)
		}
	}
	var chunks [][]byte
	for i := range stream {
		chunks = append(chunks, stream[i:i+1])
	}
	got, err := feed(chunks, 0)
	if err == nil {
		err = sameFrames(got, want)
	}
	if err != nil {
		t.Fatalf("byte by byte: %v", err)
	}
}

// TestReadPacketRandomSplits feeds the stream in random chunks.
func TestReadPacketRandomSplits(t *testing.T) {
	stream, want := goldenStream()
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 500; i++ {
		got, err := feed(randomChunks(stream, rng), 0)
		if err == nil {
			err = sameFrames(got, want)
		}
		if err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
	}
}

func randomChunks(stream []byte, rng *rand.Rand) [][]byte {
	var chunks [][]byte
	for len(stream) > 0 {
		n := 1 + rng.IntN(min(len(stream), 1+rng.IntN(64)))
		chunks = append(chunks, stream[:n])
		stream = stream[n:]
	}
	return chunks
}

func TestReadPacketIncomplete(t *testing.T) {
	for _, g := range goldenPackets {
		for n := 0; n < len(g.bytes); n++ {
			if _, _, _, err := ReadPacket(g.bytes[:n], 0); err != ErrIncomplete {
				t.Fatalf("%s cut to %d bytes: %v, want ErrIncomplete", g.name, n, err)
			}
		}
	}
}

func TestVarint(t *testing.T) {
	for _, v := range []uint32{0, 1, 127, 128, 16383, 16384, 2097151, 2097152, MaxRemainingLength} {
		enc := AppendVarint(nil, v)
		if len(enc) != VarintSize(v) {
			t.Errorf("%d: VarintSize %d, encoded %d bytes", v, VarintSize(v), len(enc))
		}
		got, n := readVarint(enc)
		if got != v || n != len(enc) {
			t.Errorf("%d: readVarint = %d, %d", v, got, n)
		}
		if _, n := readVarint(enc[:len(enc)-1]); n != 0 {
			t.Errorf("%d truncated: n = %d, want 0 (incomplete)", v, n)
		}
	}
	// The examples of Table 1.1 of 3.1.1.
	for _, c := range []struct {
		v   uint32
		enc []byte
	}{
		{0, []byte{0x00}}, {127, []byte{0x7F}}, {128, []byte{0x80, 0x01}}, {16383, []byte{0xFF, 0x7F}},
		{16384, []byte{0x80, 0x80, 0x01}}, {2097151, []byte{0xFF, 0xFF, 0x7F}},
		{2097152, []byte{0x80, 0x80, 0x80, 0x01}}, {268435455, []byte{0xFF, 0xFF, 0xFF, 0x7F}},
	} {
		if got := AppendVarint(nil, c.v); !bytes.Equal(got, c.enc) {
			t.Errorf("%d: % x, want % x", c.v, got, c.enc)
		}
	}
	if _, n := readVarint([]byte{0x80, 0x80, 0x80, 0x80, 0x01}); n != -1 {
		t.Errorf("5-byte VBI accepted: n = %d", n)
	}
}
