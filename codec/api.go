package codec

// Entry points of the codec: the signatures and doc comments here are the
// contract server/ and bench/ program against; the work is done in the
// per-packet files (connect.go, publish.go, subscribe.go, control.go).

import "errors"

// ErrIncomplete means buf does not yet hold a whole fixed header or packet:
// read more bytes and call again. It is the only non-fatal decode error.
var ErrIncomplete = errors.New("codec: incomplete packet")

// ReadPacket frames the packet at the start of buf. When buf holds the whole
// packet it returns its fixed header, its body (a view: variable header +
// payload, capacity clipped to the packet) and the total number of bytes it
// occupies; buf may hold further packets after it. The remaining length is
// checked against maxPacketSize (total packet size, fixed header included;
// 0 = protocol maximum) from the fixed header alone, before any byte of the
// body is needed, so an oversized packet is refused with an *Error of code
// PacketTooLarge without buffering it. Malformed remaining length (a fourth
// byte with the continuation bit set) and packet type 0 are *Error with code
// MalformedPacket. Fixed-header flags are checked here against the reserved
// values of §2.1.3 [MQTT-2.2.2-2] as soon as the first byte is there, for
// every type but PUBLISH, whose flags are checked in (*Publish).Decode.
// AUTH is framed whatever the version; (*Auth).Decode refuses it before 5.0.
// Returns ErrIncomplete when more bytes are needed. Allocates nothing unless
// it returns an *Error.
func ReadPacket(buf []byte, maxPacketSize int) (h FixedHeader, body []byte, total int, err error) {
	if len(buf) == 0 {
		return h, nil, 0, ErrIncomplete
	}
	h.Type = PacketType(buf[0] >> 4)
	h.Flags = buf[0] & 0x0F
	switch h.Type {
	case 0:
		return h, nil, 0, Errf(MalformedPacket, "", "packet type 0 is reserved")
	case PUBLISH:
	case PUBREL, SUBSCRIBE, UNSUBSCRIBE:
		if h.Flags != 0x02 {
			return h, nil, 0, Errf(MalformedPacket, "MQTT-2.2.2-2", "packet type %d with flags 0x%X, must be 0x2", h.Type, h.Flags)
		}
	default:
		if h.Flags != 0 {
			return h, nil, 0, Errf(MalformedPacket, "MQTT-2.2.2-2", "packet type %d with flags 0x%X, must be 0", h.Type, h.Flags)
		}
	}
	rl, n := readVarint(buf[1:])
	switch {
	case n == 0:
		return h, nil, 0, ErrIncomplete
	case n < 0:
		return h, nil, 0, Errf(MalformedPacket, "", "remaining length longer than 4 bytes")
	}
	h.RemainingLength = int(rl)
	total = 1 + n + int(rl)
	if maxPacketSize > 0 && total > maxPacketSize {
		return h, nil, 0, Errf(PacketTooLarge, "", "packet of %d bytes exceeds the maximum of %d", total, maxPacketSize)
	}
	if len(buf) < total {
		return h, nil, 0, ErrIncomplete
	}
	return h, buf[1+n : total : total], total, nil
}

// Decode parses a CONNECT body; the protocol version comes from the packet.
// An unknown protocol name [MQTT-3.1.2-1] or level [MQTT-3.1.2-2] is an
// *Error with code UnsupportedProtocolVersion; ProtocolName and
// ProtocolVersion are set even then, so the server can answer in the
// client's format. Validates the reserved flag [MQTT-3.1.2-3], the will
// flags [MQTT-3.1.2-13/-14/-15], password without user name before 5.0
// [MQTT-3.1.2-22], every UTF-8 string and the properties.
func (p *Connect) Decode(h FixedHeader, body []byte) error { return p.decode(h, body) }

// Decode parses a CONNACK body: reserved flags [MQTT-3.2.2-1], return code
// 0–5 before 5.0, a defined reason code and the properties in 5.0.
func (p *Connack) Decode(h FixedHeader, body []byte, version byte) error {
	return p.decode(h, body, version)
}

// Decode parses a PUBLISH; fields are views into body. Validates flags (QoS 3
// [MQTT-3.3.1-4], DUP with QoS 0 [MQTT-3.3.1-2]), packet id ≠ 0 for QoS > 0
// [MQTT-2.2.1-3], topic UTF-8 [MQTT-1.5.3-1/-2] and properties (Topic Alias
// 0 is TopicAliasInvalid [MQTT-3.3.2-8]). It does not check wildcards in the
// topic, nor whether an empty topic comes with a Topic Alias (trie and server
// own topic syntax and alias state).
func (p *Publish) Decode(h FixedHeader, body []byte, version byte) error {
	return p.decode(h, body, version)
}

// Decode parses PUBACK/PUBREC/PUBREL/PUBCOMP; h.Type must be one of them and
// becomes p.Type. In 5.0 the reason code must be one defined for the type.
func (p *Ack) Decode(h FixedHeader, body []byte, version byte) error {
	return p.decode(h, body, version)
}

// Decode parses SUBSCRIBE: packet id ≠ 0 [MQTT-2.2.1-3], at least one filter
// [MQTT-3.8.3-3], reserved option bits 0 and QoS ≤ 2 ([MQTT-3.8.3-4] before
// 5.0, [MQTT-3.8.3-5] in 5.0, where QoS 3 and Retain Handling 3 are Protocol
// Errors). Filter syntax is not checked (trie owns it).
func (p *Subscribe) Decode(h FixedHeader, body []byte, version byte) error {
	return p.decode(h, body, version)
}

// Decode parses SUBACK (at least one code, each defined for the version).
func (p *Suback) Decode(h FixedHeader, body []byte, version byte) error {
	return p.decode(h, body, version)
}

// Decode parses UNSUBSCRIBE (packet id ≠ 0, at least one filter [MQTT-3.10.3-2]).
func (p *Unsubscribe) Decode(h FixedHeader, body []byte, version byte) error {
	return p.decode(h, body, version)
}

// Decode parses UNSUBACK (exactly the packet id before 5.0).
func (p *Unsuback) Decode(h FixedHeader, body []byte, version byte) error {
	return p.decode(h, body, version)
}

// Decode parses DISCONNECT (empty before 5.0).
func (p *Disconnect) Decode(h FixedHeader, body []byte, version byte) error {
	return p.decode(h, body, version)
}

// Decode parses the 5.0 AUTH packet; for any other version it is an *Error
// with code ProtocolError.
func (p *Auth) Decode(h FixedHeader, body []byte, version byte) error {
	return p.decode(h, body, version)
}

// Append encodes p after dst and returns the extended slice. The version is
// p.ProtocolVersion; the protocol name is p.ProtocolName, or if nil the
// name that goes with the version. The flags (WillFlag, UsernameFlag,
// PasswordFlag) decide which optional fields are written.
func (p *Connect) Append(dst []byte) []byte { return p.appendTo(dst) }

// Append encodes p after dst for the given protocol version.
func (p *Connack) Append(dst []byte, version byte) []byte { return p.appendTo(dst, version) }

// Append encodes p after dst for the given protocol version. Properties are
// written only for Version5. The caller checks Size against the receiver's
// Maximum Packet Size first.
func (p *Publish) Append(dst []byte, version byte) []byte { return p.appendTo(dst, version) }

// Append encodes p after dst for the given protocol version. Before 5.0, and
// in 5.0 for ReasonCode 0 without properties, it is the 4-byte short form.
func (p *Ack) Append(dst []byte, version byte) []byte { return p.appendTo(dst, version) }

// Append encodes p after dst for the given protocol version (subscription
// options other than QoS are written only for 5.0).
func (p *Subscribe) Append(dst []byte, version byte) []byte { return p.appendTo(dst, version) }

// Append encodes p after dst for the given protocol version. Before 5.0
// every code ≥ 0x80 is written as 0x80 (Failure).
func (p *Suback) Append(dst []byte, version byte) []byte { return p.appendTo(dst, version) }

// Append encodes p after dst for the given protocol version.
func (p *Unsubscribe) Append(dst []byte, version byte) []byte { return p.appendTo(dst, version) }

// Append encodes p after dst for the given protocol version (no payload
// before 5.0).
func (p *Unsuback) Append(dst []byte, version byte) []byte { return p.appendTo(dst, version) }

// Append encodes p after dst for the given protocol version (2 bytes before
// 5.0, and in 5.0 for a Normal disconnection without properties).
func (p *Disconnect) Append(dst []byte, version byte) []byte { return p.appendTo(dst, version) }

// Append encodes p after dst (2 bytes for Success without properties).
func (p *Auth) Append(dst []byte) []byte { return p.appendTo(dst) }

// AppendPingreq appends a PINGREQ.
func AppendPingreq(dst []byte) []byte { return append(dst, 0xC0, 0) }

// AppendPingresp appends a PINGRESP.
func AppendPingresp(dst []byte) []byte { return append(dst, 0xD0, 0) }

// ValidUTF8 reports an *Error (MalformedPacket) unless b is a well-formed
// UTF-8 string — no surrogate halves, no overlong forms [MQTT-1.5.3-1] —
// without U+0000 [MQTT-1.5.3-2]. It does not check the 65,535-byte limit.
func ValidUTF8(b []byte) error {
	switch utf8Rule(b) {
	case "":
		return nil
	case "MQTT-1.5.3-2":
		return Errf(MalformedPacket, "MQTT-1.5.3-2", "UTF-8 string contains U+0000")
	default:
		return Errf(MalformedPacket, "MQTT-1.5.3-1", "ill-formed UTF-8 string")
	}
}

// DecodePacket decodes the packet framed by ReadPacket into a new struct of
// the matching type (*Connect, *Connack, *Publish, *Ack, *Subscribe,
// *Suback, *Unsubscribe, *Unsuback, *Pingreq, *Pingresp, *Disconnect,
// *Auth). version is ignored for CONNECT. It allocates the struct; hot paths
// keep one struct per type and call its Decode instead.
func DecodePacket(h FixedHeader, body []byte, version byte) (any, error) {
	switch h.Type {
	case CONNECT:
		p := new(Connect)
		return p, p.Decode(h, body)
	case CONNACK:
		p := new(Connack)
		return p, p.Decode(h, body, version)
	case PUBLISH:
		p := new(Publish)
		return p, p.Decode(h, body, version)
	case PUBACK, PUBREC, PUBREL, PUBCOMP:
		p := new(Ack)
		return p, p.Decode(h, body, version)
	case SUBSCRIBE:
		p := new(Subscribe)
		return p, p.Decode(h, body, version)
	case SUBACK:
		p := new(Suback)
		return p, p.Decode(h, body, version)
	case UNSUBSCRIBE:
		p := new(Unsubscribe)
		return p, p.Decode(h, body, version)
	case UNSUBACK:
		p := new(Unsuback)
		return p, p.Decode(h, body, version)
	case PINGREQ:
		p := new(Pingreq)
		return p, p.Decode(h, body)
	case PINGRESP:
		p := new(Pingresp)
		return p, p.Decode(h, body)
	case DISCONNECT:
		p := new(Disconnect)
		return p, p.Decode(h, body, version)
	case AUTH:
		p := new(Auth)
		return p, p.Decode(h, body, version)
	}
	return nil, Errf(MalformedPacket, "", "packet type %d is reserved", h.Type)
}

// AppendPacket encodes any packet struct accepted by DecodePacket (pointer
// or value) for version; a *Connect uses its own ProtocolVersion. Any other
// value leaves dst unchanged.
func AppendPacket(dst []byte, pkt any, version byte) []byte {
	switch p := pkt.(type) {
	case *Connect:
		return p.Append(dst)
	case *Connack:
		return p.Append(dst, version)
	case *Publish:
		return p.Append(dst, version)
	case *Ack:
		return p.Append(dst, version)
	case *Subscribe:
		return p.Append(dst, version)
	case *Suback:
		return p.Append(dst, version)
	case *Unsubscribe:
		return p.Append(dst, version)
	case *Unsuback:
		return p.Append(dst, version)
	case *Pingreq:
		return AppendPingreq(dst)
	case *Pingresp:
		return AppendPingresp(dst)
	case *Disconnect:
		return p.Append(dst, version)
	case *Auth:
		return p.Append(dst)
	case Connect:
		return p.Append(dst)
	case Connack:
		return p.Append(dst, version)
	case Publish:
		return p.Append(dst, version)
	case Ack:
		return p.Append(dst, version)
	case Subscribe:
		return p.Append(dst, version)
	case Suback:
		return p.Append(dst, version)
	case Unsubscribe:
		return p.Append(dst, version)
	case Unsuback:
		return p.Append(dst, version)
	case Pingreq:
		return AppendPingreq(dst)
	case Pingresp:
		return AppendPingresp(dst)
	case Disconnect:
		return p.Append(dst, version)
	case Auth:
		return p.Append(dst)
	}
	return dst
}
