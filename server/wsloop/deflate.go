package wsloop

// permessage-deflate (RFC 7692) in its bounded-memory form; see the
// package comment.

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/klauspost/compress/flate"

	"github.com/ternmq/tern/server/stdnet"
)

// deflateTail ends a message's compressed bytes for the inflater: the sync
// marker the sender removed, then a final empty stored block so the reader
// returns io.EOF at the message's end (RFC 7692 §7.2.2).
var deflateTail = []byte{0x00, 0x00, 0xff, 0xff, 0x01, 0x00, 0x00, 0xff, 0xff}

// deflateAnswer is the extension the server answers an accepted offer with.
const deflateAnswer = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"

// inflater is a pooled decompressor and the reader it reads a message from.
type inflater struct {
	src bytes.Reader
	r   io.ReadCloser
}

var (
	inflaters = sync.Pool{New: func() any { return new(inflater) }}
	zPool     = sync.Pool{New: func() any { b := make([]byte, 0, plainBufSize); return &b }}
	cbufs     = sync.Pool{New: func() any { return new(bytes.Buffer) }}
)

// acceptDeflate reports whether one of the Sec-WebSocket-Extensions offers
// is permessage-deflate in a form we serve: any, except one asking the
// server for a window under 15 bits (StatelessDeflate uses the full 32 KiB
// window; the other parameters are ours to answer with no context
// takeover either way, and client_max_window_bits may be ignored).
func acceptDeflate(values []string) bool {
	for _, v := range values {
		for _, offer := range strings.Split(v, ",") {
			params := strings.Split(offer, ";")
			if !strings.EqualFold(strings.TrimSpace(params[0]), "permessage-deflate") {
				continue
			}
			ok := true
			for _, p := range params[1:] {
				name, val, _ := strings.Cut(strings.TrimSpace(p), "=")
				if strings.EqualFold(strings.TrimSpace(name), "server_max_window_bits") &&
					strings.Trim(strings.TrimSpace(val), `"`) != "15" {
					ok = false
				}
			}
			if ok {
				return true
			}
		}
	}
	return false
}

// growZ makes room for n more compressed bytes.
func (c *conn) growZ(n int) {
	if c.z == nil {
		c.z = zPool.Get().(*[]byte)
		*c.z = (*c.z)[:0]
	}
	z := *c.z
	if cap(z)-len(z) < n {
		bigger := make([]byte, len(z), max(2*cap(z), len(z)+n))
		copy(bigger, z)
		*c.z = bigger
	}
}

// releaseZ gives the compressed-message buffer back (a large one to the GC).
func (c *conn) releaseZ() {
	if c.z == nil {
		return
	}
	if cap(*c.z) <= 4*plainBufSize {
		*c.z = (*c.z)[:0]
		zPool.Put(c.z)
	}
	c.z = nil
}

// inflate decompresses the message collected in c.z into c.in, reading at
// most limit bytes of output: past that the message is refused (1009),
// however small it was compressed. Loop only.
func (c *conn) inflate(limit int) error {
	var z []byte
	if c.z != nil {
		z = *c.z
	}
	z = append(z, deflateTail...)
	if c.z != nil {
		*c.z = z
	}
	f := inflaters.Get().(*inflater)
	defer inflaters.Put(f)
	f.src.Reset(z)
	if f.r == nil {
		f.r = flate.NewReader(&f.src)
	} else if err := f.r.(flate.Resetter).Reset(&f.src, nil); err != nil {
		return err
	}
	start := len(c.in)
	for {
		if len(c.in)-start > limit {
			c.in = c.in[:start] // none of it reaches the broker
			c.releaseZ()
			return c.tooBig("message inflating past " + itoa(uint64(limit)) + " bytes")
		}
		c.grow(min(plainBufSize, limit+1-(len(c.in)-start)))
		room := c.in[len(c.in):cap(c.in)]
		if over := limit + 1 - (len(c.in) - start); len(room) > over {
			room = room[:over]
		}
		n, err := f.r.Read(room)
		c.in = c.in[:len(c.in)+n]
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			c.in = c.in[:start]
			c.releaseZ()
			c.e.protoErr.Add(1)
			return &wsError{code: CloseInvalidPayload, why: "bad deflate data"}
		}
	}
	if len(c.in)-start > limit {
		c.in = c.in[:start]
		c.releaseZ()
		return c.tooBig("message inflating past " + itoa(uint64(limit)) + " bytes")
	}
	c.releaseZ()
	return nil
}

// writeCompressed sends b as one compressed binary message: stateless
// deflate (no context kept between messages), the trailing empty stored
// block's 0x00 0x00 0xff 0xff removed (§7.2.1).
func (c *conn) writeCompressed(b []byte) error {
	buf := cbufs.Get().(*bytes.Buffer)
	buf.Reset()
	defer func() {
		if buf.Cap() <= 4*plainBufSize {
			cbufs.Put(buf)
		}
	}()
	if err := flate.StatelessDeflate(buf, b, false, nil); err != nil {
		return err
	}
	return c.writeFrame(stdnet.WSOpBinary, true, bytes.TrimSuffix(buf.Bytes(), deflateTail[:4]))
}

func validUTF8(b []byte) bool { return utf8.Valid(b) }
