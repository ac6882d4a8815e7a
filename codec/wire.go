package codec

import (
	"bytes"
	"encoding/binary"
	"slices"
	"unicode/utf8"
)

// maxStringLen is the longest UTF-8 string or binary field (2-byte length prefix).
const maxStringLen = 65535

// VarintSize returns the number of bytes AppendVarint writes for v: 1 to 4
// for v ≤ MaxRemainingLength (larger values are not representable on the
// wire; 5 is returned so that size arithmetic stays monotonic).
func VarintSize(v uint32) int {
	switch {
	case v < 1<<7:
		return 1
	case v < 1<<14:
		return 2
	case v < 1<<21:
		return 3
	case v < 1<<28:
		return 4
	}
	return 5
}

// AppendVarint appends v as a variable byte integer (§1.5.5 of 5.0): 7 bits
// per byte, least significant group first, bit 7 set on every byte but the
// last. v must be ≤ MaxRemainingLength for the result to be valid MQTT.
func AppendVarint(dst []byte, v uint32) []byte {
	for v >= 0x80 {
		dst = append(dst, byte(v)|0x80)
		v >>= 7
	}
	return append(dst, byte(v))
}

// readVarint decodes the variable byte integer at the start of b and the
// number of bytes it occupies. It returns n = 0 when b ends inside the
// integer and n = -1 when the fourth byte still has its continuation bit
// set. Non-minimal encodings are accepted, as every widespread broker does.
func readVarint(b []byte) (v uint32, n int) {
	for i := 0; i < 4; i++ {
		if i >= len(b) {
			return 0, 0
		}
		c := b[i]
		v |= uint32(c&0x7F) << (7 * i)
		if c&0x80 == 0 {
			return v, i + 1
		}
	}
	return 0, -1
}

// utf8Rule returns the normative statement b breaks as an MQTT UTF-8
// string, or "" if it is valid. Most MQTT strings are short ASCII, so it
// checks 8 bytes at a time for a byte ≥ 0x80 or = 0x00 and falls back to
// utf8.Valid from the first non-ASCII byte. Go's utf8.Valid rejects
// surrogate halves (U+D800..U+DFFF) and overlong forms, so U+0000 can only
// appear as a 0x00 byte.
func utf8Rule(b []byte) string {
	const hi, lo = 0x8080808080808080, 0x0101010101010101
	i := 0
	for ; i+8 <= len(b); i += 8 {
		w := binary.LittleEndian.Uint64(b[i:])
		// (w-lo)&^w&hi is non-zero iff some byte of w is 0x00.
		if w&hi != 0 || (w-lo)&^w&hi != 0 {
			break
		}
	}
	for ; i < len(b); i++ {
		if c := b[i]; c == 0 || c >= 0x80 {
			// Ill-formed takes precedence over U+0000 wherever each is.
			rest := b[i:]
			if !utf8.Valid(rest) {
				return ruleIllFormed
			}
			if bytes.IndexByte(rest, 0) >= 0 {
				return ruleNUL
			}
			return ""
		}
	}
	return ""
}

const (
	ruleIllFormed = "MQTT-1.5.3-1"
	ruleNUL       = "MQTT-1.5.3-2"
)

// reader walks a packet body. Every read that would run past the end is a
// MalformedPacket error naming the field.
type reader struct {
	b   []byte
	off int
}

func (r *reader) left() int { return len(r.b) - r.off }

func errShort(what string) error {
	return Errf(MalformedPacket, "", "%s: runs past the end of the packet", what)
}

func (r *reader) u8(what string) (byte, error) {
	if r.off >= len(r.b) {
		return 0, errShort(what)
	}
	v := r.b[r.off]
	r.off++
	return v, nil
}

func (r *reader) u16(what string) (uint16, error) {
	if len(r.b)-r.off < 2 {
		return 0, errShort(what)
	}
	v := binary.BigEndian.Uint16(r.b[r.off:])
	r.off += 2
	return v, nil
}

func (r *reader) u32(what string) (uint32, error) {
	if len(r.b)-r.off < 4 {
		return 0, errShort(what)
	}
	v := binary.BigEndian.Uint32(r.b[r.off:])
	r.off += 4
	return v, nil
}

func (r *reader) varint(what string) (uint32, error) {
	v, n := readVarint(r.b[r.off:])
	switch {
	case n == 0:
		return 0, errShort(what)
	case n < 0:
		return 0, Errf(MalformedPacket, "", "%s: variable byte integer longer than 4 bytes", what)
	}
	r.off += n
	return v, nil
}

// bin reads binary data with a 2-byte length prefix. The view's capacity is
// clipped so that a caller appending to it cannot overwrite the next field.
// An empty value is nil.
func (r *reader) bin(what string) ([]byte, error) {
	if len(r.b)-r.off < 2 {
		return nil, errShort(what)
	}
	n := int(binary.BigEndian.Uint16(r.b[r.off:]))
	r.off += 2
	if len(r.b)-r.off < n {
		return nil, Errf(MalformedPacket, "", "%s: length %d runs past the end of the packet", what, n)
	}
	if n == 0 {
		return nil, nil
	}
	v := r.b[r.off : r.off+n : r.off+n]
	r.off += n
	return v, nil
}

// str reads a UTF-8 string [MQTT-1.5.3-1] [MQTT-1.5.3-2].
func (r *reader) str(what string) ([]byte, error) {
	v, err := r.bin(what)
	if err != nil {
		return nil, err
	}
	if rule := utf8Rule(v); rule != "" {
		return nil, Errf(MalformedPacket, rule, "%s: not a valid MQTT UTF-8 string", what)
	}
	return v, nil
}

// rest returns the unread bytes (nil if none).
func (r *reader) rest() []byte {
	if r.off >= len(r.b) {
		return nil
	}
	v := r.b[r.off:len(r.b):len(r.b)]
	r.off = len(r.b)
	return v
}

// end reports bytes left over after the last field of a packet.
func (r *reader) end(what string) error {
	if r.off != len(r.b) {
		return Errf(MalformedPacket, "", "%s: %d unexpected bytes after the last field", what, len(r.b)-r.off)
	}
	return nil
}

// props reads a 5.0 property list (VBI length + properties) into p.
func (r *reader) props(p *Properties, ctx propCtx) error {
	n, err := r.varint("property length")
	if err != nil {
		return err
	}
	if uint32(r.left()) < n {
		return Errf(MalformedPacket, "", "property length %d runs past the end of the packet", n)
	}
	b := r.b[r.off : r.off+int(n) : r.off+int(n)]
	r.off += int(n)
	return p.decode(b, ctx)
}

// binLen is the encoded size of a string or binary field: 2-byte prefix +
// content, truncated at 65,535 bytes (see appendBin).
func binLen(b []byte) int {
	if len(b) > maxStringLen {
		return 2 + maxStringLen
	}
	return 2 + len(b)
}

// appendBin writes a 2-byte length prefix and b. A value longer than the
// prefix can express is truncated to 65,535 bytes rather than producing a
// packet whose framing is corrupt; callers that care check lengths first.
func appendBin(dst, b []byte) []byte {
	if len(b) > maxStringLen {
		b = b[:maxStringLen]
	}
	dst = append(dst, byte(len(b)>>8), byte(len(b)))
	return append(dst, b...)
}

func appendU16(dst []byte, v uint16) []byte { return append(dst, byte(v>>8), byte(v)) }

func appendU32(dst []byte, v uint32) []byte {
	return append(dst, byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
}

// headerSize is the size of a fixed header for a body of n bytes.
func headerSize(n int) int { return 1 + VarintSize(uint32(n)) }

// grow makes room for n more bytes in one step so the appends that follow
// never reallocate more than once.
func grow(dst []byte, n int) []byte {
	if n < 0 {
		return dst
	}
	return slices.Grow(dst, n)
}
