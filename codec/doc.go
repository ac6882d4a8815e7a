// Package codec is Tern's MQTT wire format: framing, decoding and encoding of
// every control packet of MQTT 3.1 (protocol level 3), 3.1.1 (level 4) and
// 5.0 (level 5). It does no I/O, takes no locks, logs nothing and imports
// nothing else of Tern; the server and the bench harness drive it.
//
// # Framing
//
// Every packet starts with a fixed header of 2 to 5 bytes:
//
//	  byte 0           bytes 1..4 (1 to 4 of them)
//	+--------+-------+---------------------------------------+
//	| type   | flags | remaining length (variable byte int)  |  variable header + payload ...
//	| 7..4   | 3..0  | 7 bits per byte, bit 7 = "more"       |  (remaining length bytes)
//	+--------+-------+---------------------------------------+
//
// The remaining length is a variable byte integer (VBI, §1.5.5 of 5.0,
// §2.2.3 of 3.1.1): little-endian groups of 7 bits, at most 4 bytes, so at
// most 268,435,455. ReadPacket frames one packet at the front of a buffer
// that may hold a fraction of a packet or several packets: it returns
// ErrIncomplete until the whole packet is there, and refuses a packet larger
// than the configured maximum from the fixed header alone, before any of the
// body has arrived, so a peer cannot make the broker buffer a huge packet.
//
// The low nibble of byte 0 is reserved for every type but PUBLISH: it must
// be 0b0010 for PUBREL, SUBSCRIBE and UNSUBSCRIBE and 0 for the others; for
// PUBLISH it holds DUP, QoS and RETAIN:
//
//	PUBLISH byte 0:   0 0 1 1 | DUP | QoS QoS | RETAIN
//
// # Decoding
//
// Each packet type is a struct with a Decode method taking the fixed header
// and the body returned by ReadPacket. Decoding is zero-copy: every []byte
// field of a decoded packet (topic, payload, client id, property strings…)
// is a view into body, valid only as long as body is; copy what must outlive
// the read buffer. Slices of structs (Subscriptions, Filters, ReasonCodes,
// Props.User, Props.SubscriptionIDs) are appended into the backing arrays
// the struct already has, so one struct reused for every packet of a
// connection, or of an event loop, allocates nothing once warmed up. Decode
// always resets the whole struct first.
//
// Decoding validates what the wire format itself says: reserved bits,
// lengths that overrun the body, bytes left over after the last field,
// well-formed UTF-8 without U+0000 in every UTF-8 string field, packet
// identifiers, QoS values, and for 5.0 every property (allowed in this
// packet type, not duplicated, in range). A violation is an *Error carrying
// the 5.0 reason code to report (MalformedPacket, ProtocolError, …) and the
// normative statement broken, e.g. [MQTT-3.3.1-4]. Topic name and filter
// syntax (wildcards, levels, $share) is not checked here: the trie package
// owns it.
//
// A PUBLISH body, for example, is laid out as:
//
//	+----------------+------------------+---------------------+-----------------+---------+
//	| topic length   | topic (UTF-8)    | packet id           | properties      | payload |
//	| 2 bytes, BE    | length bytes     | 2 bytes, QoS>0 only | 5.0 only:       | the     |
//	|                |                  |                     | VBI length +    | rest    |
//	|                |                  |                     | id/value pairs  |         |
//	+----------------+------------------+---------------------+-----------------+---------+
//
// # 5.0 properties
//
// A property list is a VBI byte count followed by (identifier, value)
// pairs; the identifier says the value's type: byte, two- or four-byte
// integer, VBI, UTF-8 string, binary data (both with a 2-byte length
// prefix) or UTF-8 string pair (user property). Properties decodes every
// identifier of §2.2.2.2 into a field and records which ones were present
// in a bitmask (Has/Set). On encode, only the properties present and
// allowed for that packet type are written, in increasing identifier
// order; User and SubscriptionIDs are written whenever they are non-empty.
//
// # Encoding
//
// Each packet type has an Append method that appends its encoding to a
// caller-owned buffer for a given protocol version: lengths are computed
// first, then the bytes are written once, with no intermediate buffer.
// Fields that the target version cannot carry are dropped (properties and
// reason codes before 5.0; SUBACK codes above 0x80 become 0x80 before 5.0).
// Size methods return the encoded size without encoding, so the server can
// check a PUBLISH against a client's Maximum Packet Size before sending it.
//
// # Concurrency
//
// Every function and method may be called from any goroutine; a packet
// struct must not be decoded into while another goroutine reads it.
package codec
