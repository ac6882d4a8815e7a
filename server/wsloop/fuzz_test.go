package wsloop

import (
	"bytes"
	"errors"
	"testing"

	"github.com/panjf2000/gnet/v2"
)

// fakeLower is the lower connection the frame decoder reads from: what
// arrived so far, and what the decoder wrote back (pongs, close frames).
// Only the methods decode and writeFrame use are implemented; any other
// would call the nil embedded interface and panic, which the fuzzer would
// report.
type fakeLower struct {
	gnet.Conn
	in  []byte
	out []byte
}

func (f *fakeLower) InboundBuffered() int { return len(f.in) }

func (f *fakeLower) Peek(n int) ([]byte, error) {
	if n <= 0 || n > len(f.in) {
		return f.in, nil
	}
	return f.in[:n], nil
}

func (f *fakeLower) Discard(n int) (int, error) {
	if n <= 0 || n > len(f.in) {
		n = len(f.in)
	}
	f.in = f.in[n:]
	return n, nil
}

func (f *fakeLower) Write(b []byte) (int, error) {
	f.out = append(f.out, b...)
	return len(b), nil
}

func (f *fakeLower) Writev(bs [][]byte) (int, error) {
	n := 0
	for _, b := range bs {
		f.out = append(f.out, b...)
		n += len(b)
	}
	return n, nil
}

// decodeResult is what the decoder made of a byte stream: the payload the
// broker would have read, the frames written back, and the error that
// ended the connection (with its close code).
type decodeResult struct {
	payload, written []byte
	err              string
	code             int
}

// decodeInChunks feeds data to an open connection's decoder chunk bytes at
// a time (0: all at once), consuming its output as the broker would after
// every read event, until the data is used up or the decoder fails.
func decodeInChunks(data []byte, chunk int, deflate bool) decodeResult {
	e := &Engine{cfg: Config{MaxPacketSize: 1024, MaxPlaintext: 4096}}
	lower := &fakeLower{}
	c := newConn(e, lower, &listener{})
	c.state, c.deflate = stateOpen, deflate
	var r decodeResult
	defer c.release()
	defer c.releaseZ()
	for fed := 0; ; {
		n := len(data) - fed
		if chunk > 0 {
			n = min(n, chunk)
		}
		lower.in = append(lower.in, data[fed:fed+n]...)
		fed += n
		c.more = true
		for c.more { // a read event: decode until nothing is left or back-pressure lifts
			err := c.decode()
			if len(c.in) > e.cfg.MaxPlaintext {
				panic("decoder holds more than MaxPlaintext")
			}
			r.payload = append(r.payload, c.in...)
			_, _ = c.Discard(-1)
			if err != nil {
				r.err = err.Error()
				var we *wsError
				if errors.As(err, &we) {
					r.code = we.code
				}
				r.written = lower.out
				return r
			}
		}
		if fed == len(data) {
			r.written = lower.out
			return r
		}
	}
}

// FuzzDecodeFrames feeds arbitrary bytes to the frame decoder of an open
// WebSocket connection (RFC 6455 §5, permessage-deflate per RFC 7692 when
// deflate is set): it must never panic nor hold more than MaxPlaintext,
// and how the bytes are split across reads must not change anything — the
// payload the broker reads, the control frames answered, or the error that
// ends the connection [MQTT-6.0.0-2]: an MQTT packet may span frames and
// a frame may span reads.
func FuzzDecodeFrames(f *testing.F) {
	// One masked binary frame "MQTT" and a ping; the rest of the seeds are
	// in testdata/fuzz/FuzzDecodeFrames.
	f.Add([]byte{0x82, 0x84, 1, 2, 3, 4, 'M' ^ 1, 'Q' ^ 2, 'T' ^ 3, 'T' ^ 4, 0x89, 0x80, 0, 0, 0, 0}, uint16(3), false)
	f.Fuzz(func(t *testing.T, data []byte, chunk uint16, deflate bool) {
		whole := decodeInChunks(data, 0, deflate)
		split := decodeInChunks(data, int(chunk%97)+1, deflate)
		if !bytes.Equal(whole.payload, split.payload) || whole.err != split.err || whole.code != split.code ||
			!bytes.Equal(whole.written, split.written) {
			t.Fatalf("split in chunks of %d: payload %x, written %x, err %q (%d); at once: %x, %x, %q (%d)",
				int(chunk%97)+1, split.payload, split.written, split.err, split.code,
				whole.payload, whole.written, whole.err, whole.code)
		}
		if whole.err == "" && !deflate && len(whole.payload) > len(data) {
			t.Fatalf("%d payload bytes out of %d bytes of frames", len(whole.payload), len(data))
		}
	})
}

// The decoder's refusals each carry their close code (RFC 6455 §7.4.1),
// whether the frame arrives whole or a byte at a time.
func TestDecodeFramesRefusals(t *testing.T) {
	masked := func(b0 byte, payload ...byte) []byte {
		return append([]byte{b0, 0x80 | byte(len(payload)), 0, 0, 0, 0}, payload...)
	}
	for _, tc := range []struct {
		name string
		data []byte
		code int
	}{
		{"unmasked", []byte{0x82, 0x01, 'x'}, CloseProtocolError},
		{"text frame [MQTT-6.0.0-1]", masked(0x81, 'x'), CloseUnsupportedData},
		{"reserved bits", masked(0xA2, 'x'), CloseProtocolError},
		{"continuation first", masked(0x80, 'x'), CloseProtocolError},
		{"fragmented ping", masked(0x09), CloseProtocolError},
		{"unknown opcode", masked(0x83, 'x'), CloseProtocolError},
		{"RSV1 without deflate", masked(0xC2, 'x'), CloseProtocolError},
		{"frame over max packet size", []byte{0x82, 0xFE, 0x10, 0x00, 0, 0, 0, 0}, CloseMessageTooBig},
		{"close answered", masked(0x88, 0x03, 0xE8), 0},
	} {
		for _, chunk := range []int{0, 1} {
			r := decodeInChunks(tc.data, chunk, false)
			if r.err == "" || r.code != tc.code {
				t.Errorf("%s (chunk %d): err %q code %d, want code %d", tc.name, chunk, r.err, r.code, tc.code)
			}
		}
	}
	r := decodeInChunks(masked(0x88, 0x03, 0xE8), 0, false)
	if want := []byte{0x88, 0x02, 0x03, 0xE8}; !bytes.Equal(r.written, want) {
		t.Errorf("close answered with %x, want %x", r.written, want)
	}
}
