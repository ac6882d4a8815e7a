package codec

// Entry points of the codec. TEMPORARY BODIES: the codec implementation replaces
// every body in this file; the signatures and doc comments are the contract.

import "errors"

// ErrIncomplete means buf does not yet hold a whole fixed header or packet:
// read more bytes and call again. It is the only non-fatal decode error.
var ErrIncomplete = errors.New("codec: incomplete packet")

var errTODO = errors.New("codec: not implemented yet")

// ReadPacket frames the packet at the start of buf. When buf holds the whole
// packet it returns its fixed header, its body (a view: variable header +
// payload) and the total number of bytes it occupies. The remaining length is
// checked against maxPacketSize (total packet size, 0 = protocol maximum)
// from the fixed header alone, before any byte of the body is needed, so an
// oversized packet is refused with an *Error of code PacketTooLarge without
// buffering it. Malformed remaining length (more than 4 bytes) is an *Error
// with code MalformedPacket. Fixed-header flags are checked here against the
// reserved values of §2.1.3 [MQTT-2.2.2-2] for every type but PUBLISH, whose
// flags are checked in (*Publish).Decode. Returns ErrIncomplete when more
// bytes are needed. Never allocates.
func ReadPacket(buf []byte, maxPacketSize int) (h FixedHeader, body []byte, total int, err error) {
	return h, nil, 0, errTODO
}

// Decode parses a CONNECT body; the protocol version comes from the packet.
// An unknown protocol name/level is an *Error with code UnsupportedProtocolVersion.
func (p *Connect) Decode(h FixedHeader, body []byte) error { return errTODO }

// Decode parses a CONNACK body.
func (p *Connack) Decode(h FixedHeader, body []byte, version byte) error { return errTODO }

// Decode parses a PUBLISH; fields are views into body. Validates flags (QoS 3,
// DUP with QoS 0 [MQTT-3.3.1-2]), packet id ≠ 0 for QoS > 0 [MQTT-2.2.1-3],
// topic UTF-8 [MQTT-1.5.3-1/-2] and properties. It does not check wildcards
// in the topic (trie owns topic syntax).
func (p *Publish) Decode(h FixedHeader, body []byte, version byte) error { return errTODO }

// Decode parses PUBACK/PUBREC/PUBREL/PUBCOMP; h.Type must be one of them.
func (p *Ack) Decode(h FixedHeader, body []byte, version byte) error { return errTODO }

// Decode parses SUBSCRIBE (at least one filter [MQTT-3.8.3-3], reserved bits 0 [MQTT-3-8.3-4]).
func (p *Subscribe) Decode(h FixedHeader, body []byte, version byte) error { return errTODO }

// Decode parses SUBACK.
func (p *Suback) Decode(h FixedHeader, body []byte, version byte) error { return errTODO }

// Decode parses UNSUBSCRIBE (at least one filter [MQTT-3.10.3-2]).
func (p *Unsubscribe) Decode(h FixedHeader, body []byte, version byte) error { return errTODO }

// Decode parses UNSUBACK.
func (p *Unsuback) Decode(h FixedHeader, body []byte, version byte) error { return errTODO }

// Decode parses DISCONNECT (empty before 5.0).
func (p *Disconnect) Decode(h FixedHeader, body []byte, version byte) error { return errTODO }

// Decode parses the 5.0 AUTH packet.
func (p *Auth) Decode(h FixedHeader, body []byte, version byte) error { return errTODO }

// Append encodes p after dst and returns the extended slice. The version is p.ProtocolVersion.
func (p *Connect) Append(dst []byte) []byte { return dst }

// Append encodes p after dst for the given protocol version.
func (p *Connack) Append(dst []byte, version byte) []byte { return dst }

// Append encodes p after dst for the given protocol version. Properties are
// written only for Version5.
func (p *Publish) Append(dst []byte, version byte) []byte { return dst }

// Append encodes p after dst for the given protocol version.
func (p *Ack) Append(dst []byte, version byte) []byte { return dst }

// Append encodes p after dst for the given protocol version.
func (p *Subscribe) Append(dst []byte, version byte) []byte { return dst }

// Append encodes p after dst for the given protocol version.
func (p *Suback) Append(dst []byte, version byte) []byte { return dst }

// Append encodes p after dst for the given protocol version.
func (p *Unsubscribe) Append(dst []byte, version byte) []byte { return dst }

// Append encodes p after dst for the given protocol version.
func (p *Unsuback) Append(dst []byte, version byte) []byte { return dst }

// Append encodes p after dst for the given protocol version (2 bytes before 5.0).
func (p *Disconnect) Append(dst []byte, version byte) []byte { return dst }

// Append encodes p after dst.
func (p *Auth) Append(dst []byte) []byte { return dst }

// AppendPingreq appends a PINGREQ.
func AppendPingreq(dst []byte) []byte { return append(dst, 0xC0, 0) }

// AppendPingresp appends a PINGRESP.
func AppendPingresp(dst []byte) []byte { return append(dst, 0xD0, 0) }

// ValidUTF8 reports an *Error (MalformedPacket) unless b is a well-formed
// UTF-8 string without U+0000 [MQTT-1.5.3-1] [MQTT-1.5.3-2].
func ValidUTF8(b []byte) error { return errTODO }

// GetBuffer returns a pooled buffer of length 0. Return it with PutBuffer.
func GetBuffer() *[]byte { b := make([]byte, 0, 512); return &b }

// PutBuffer returns b to the pool; b must not be used afterwards.
func PutBuffer(b *[]byte) {}
