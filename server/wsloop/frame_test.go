package wsloop

import (
	"bytes"
	"testing"
)

// maskBytes (eight bytes at a time) equals the byte-wise XOR of RFC 6455
// §5.3 from every starting position and for every length, including a
// mask continued across calls (a payload split across reads).
func TestMaskBytesMatchesBytewise(t *testing.T) {
	mask := [4]byte{0x12, 0x34, 0x56, 0x78}
	for n := range 70 {
		for start := range 4 {
			src := make([]byte, n)
			for i := range src {
				src[i] = byte(i * 7)
			}
			want := make([]byte, n)
			for i := range want {
				want[i] = src[i] ^ mask[(start+i)&3]
			}
			got := append([]byte(nil), src...)
			cut := n / 3
			pos := maskBytes(mask, uint8(start), got[:cut])
			pos = maskBytes(mask, pos, got[cut:])
			if !bytes.Equal(got, want) || int(pos) != (start+n)&3 {
				t.Fatalf("n=%d start=%d: got %x pos %d, want %x pos %d", n, start, got, pos, want, (start+n)&3)
			}
		}
	}
}

// parseHeader reads the three length forms and the mask, and reports an
// incomplete header as n == 0 (RFC 6455 §5.2).
func TestParseHeader(t *testing.T) {
	for _, tc := range []struct {
		name   string
		b      []byte
		n      int
		length uint64
		op     byte
		masked bool
	}{
		{"short masked", []byte{0x82, 0x85, 1, 2, 3, 4}, 6, 5, 2, true},
		{"16-bit", []byte{0x02, 0xFE, 0x01, 0x00, 1, 2, 3, 4}, 8, 256, 2, true},
		{"64-bit", []byte{0x80, 0xFF, 0, 0, 0, 0, 0, 1, 0, 0, 1, 2, 3, 4}, 14, 65536, 0, true},
		{"unmasked", []byte{0x82, 0x05}, 2, 5, 2, false},
		{"one byte", []byte{0x82}, 0, 0, 0, false},
		{"16-bit incomplete", []byte{0x82, 0xFE, 0x01}, 0, 0, 0, false},
		{"mask incomplete", []byte{0x82, 0x85, 1, 2}, 0, 0, 0, false},
	} {
		h := parseHeader(tc.b)
		if h.n != tc.n || (h.n > 0 && (h.length != tc.length || h.op != tc.op || h.masked != tc.masked)) {
			t.Errorf("%s: %+v", tc.name, h)
		}
	}
	if h := parseHeader([]byte{0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4}); !h.bad {
		t.Error("a 64-bit length with its top bit set is accepted")
	}
}

// Offers of permessage-deflate (RFC 7692 §5) that the bounded form can
// serve are accepted; one asking for a smaller server window is declined.
func TestAcceptDeflate(t *testing.T) {
	for _, tc := range []struct {
		offers []string
		want   bool
	}{
		{[]string{"permessage-deflate"}, true},
		{[]string{"permessage-deflate; client_max_window_bits"}, true},
		{[]string{"x-webkit-deflate-frame, permessage-deflate; server_no_context_takeover"}, true},
		{[]string{"permessage-deflate; server_max_window_bits=10"}, false},
		{[]string{"permessage-deflate; server_max_window_bits=10, permessage-deflate"}, true},
		{[]string{"permessage-deflate; server_max_window_bits=\"15\""}, true},
		{nil, false},
		{[]string{"deflate-frame"}, false},
	} {
		if got := acceptDeflate(tc.offers); got != tc.want {
			t.Errorf("%q: %v, want %v", tc.offers, got, tc.want)
		}
	}
}

func BenchmarkMaskBytes(b *testing.B) {
	p := make([]byte, 1024)
	b.SetBytes(int64(len(p)))
	for range b.N {
		maskBytes([4]byte{1, 2, 3, 4}, 1, p)
	}
}
