package persist

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/klauspost/compress/s2"
)

// Record format versions (first byte of every value). Each record type has
// its own version so one layout can evolve without touching the others.
const (
	messageVersion  = 1
	sessionVersion  = 2 // 2 added the owner identity; 1 is still read
	outboundVersion = 1 // 2: the same layout with flags in the state byte's high bits
	outboundFlagged = 2
	inboundVersion  = 1
	metaVersion     = 1
	refsVersion     = 1
	backlogVersion  = 1
)

// Message record flag bits (byte 1).
const (
	flagQoSMask    = 0x03
	flagRetain     = 0x04
	flagCompressed = 0x08 // payload is one S2 block
	flagReserved   = 0xF0 // must be zero: a future flag is not silently ignored
)

// outboundLen is the fixed size of an outbound entry record.
const outboundLen = 13

// inboundLen is the fixed size of an inbound marker record.
const inboundLen = 9

// validateMessage checks what the record format can hold.
func validateMessage(m *Message) error {
	switch {
	case m == nil:
		return fmt.Errorf("%w: nil message", ErrInvalid)
	case m.QoS > 2:
		return fmt.Errorf("%w: message QoS %d", ErrInvalid, m.QoS)
	case len(m.Topic) == 0 || len(m.Topic) > MaxStringLen:
		return fmt.Errorf("%w: topic length %d", ErrInvalid, len(m.Topic))
	case len(m.Publisher) > MaxStringLen:
		return fmt.Errorf("%w: publisher length %d", ErrInvalid, len(m.Publisher))
	case len(m.Payload) > MaxPayloadLen:
		return fmt.Errorf("%w: payload length %d", ErrInvalid, len(m.Payload))
	case len(m.Properties) > MaxPayloadLen:
		return fmt.Errorf("%w: properties length %d", ErrInvalid, len(m.Properties))
	case m.ExpiresAt < 0:
		return fmt.Errorf("%w: negative expiry time", ErrInvalid)
	}
	return nil
}

// appendMessage appends a message record. A payload of at least threshold
// bytes (threshold > 0) is S2-compressed when that makes it smaller;
// incompressible payloads are stored as they are, flag clear.
func appendMessage(dst []byte, m *Message, threshold int) []byte {
	flags := m.QoS & flagQoSMask
	if m.Retain {
		flags |= flagRetain
	}
	dst = append(dst, messageVersion, flags)
	flagAt := len(dst) - 1
	dst = binary.AppendUvarint(dst, uint64(m.ExpiresAt))
	dst = binary.AppendUvarint(dst, uint64(len(m.Publisher)))
	dst = append(dst, m.Publisher...)
	dst = binary.AppendUvarint(dst, uint64(len(m.Topic)))
	dst = append(dst, m.Topic...)
	dst = binary.AppendUvarint(dst, uint64(len(m.Properties)))
	dst = append(dst, m.Properties...)
	if threshold > 0 && len(m.Payload) >= threshold {
		// Compress straight into dst's spare capacity: no scratch buffer.
		start := len(dst)
		need := s2.MaxEncodedLen(len(m.Payload))
		dst = grow(dst, need)
		enc := s2.Encode(dst[start:start+need], m.Payload)
		if len(enc) < len(m.Payload) {
			dst[flagAt] |= flagCompressed
			return dst[:start+len(enc)]
		}
		dst = dst[:start]
	}
	return append(dst, m.Payload...)
}

// grow returns dst with room for n more bytes past len(dst), contents kept.
func grow(dst []byte, n int) []byte {
	if cap(dst)-len(dst) < n {
		nd := make([]byte, len(dst), 2*cap(dst)+n)
		copy(nd, dst)
		dst = nd
	}
	return dst
}

// reader is a strict cursor over a record; every read checks bounds.
type reader struct {
	b   []byte
	err error
}

func (r *reader) fail(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: "+format, append([]any{ErrCorrupt}, args...)...)
	}
}

func (r *reader) byte() byte {
	if r.err != nil {
		return 0
	}
	if len(r.b) < 1 {
		r.fail("truncated")
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail("bad varint")
		return 0
	}
	r.b = r.b[n:]
	return v
}

// bytes returns the next length-prefixed field (aliasing the record), at
// most max bytes long.
func (r *reader) bytes(max int) []byte {
	n := r.uvarint()
	if r.err != nil {
		return nil
	}
	if n > uint64(max) || n > uint64(len(r.b)) {
		r.fail("field length %d exceeds limit or record", n)
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) fixed(n int) []byte {
	if r.err != nil {
		return nil
	}
	if len(r.b) < n {
		r.fail("truncated")
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) version(want byte) {
	if v := r.byte(); r.err == nil && v != want {
		r.err = fmt.Errorf("%w: %w: %d (this build reads %d)", ErrCorrupt, ErrUnknownVersion, v, want)
	}
}

// decodeMessage decodes a message record into freshly allocated memory (the
// result never aliases v). maxPayload bounds the decompressed size, so a
// corrupt length cannot make it allocate more.
func decodeMessage(v []byte, maxPayload int) (*Message, error) {
	return decodeMessageInterned(v, maxPayload, nil)
}

// interner remembers the last topic and publisher decoded, so a run of
// messages on one topic from one publisher (a queue's usual content)
// shares their strings instead of allocating them per message.
type interner struct{ topic, publisher string }

func (in *interner) str(last *string, b []byte) string {
	if string(b) != *last {
		*last = string(b)
	}
	return *last
}

// decodeMessageInterned is decodeMessage taking topic and publisher
// strings from in when they repeat (in may be nil).
func decodeMessageInterned(v []byte, maxPayload int, in *interner) (*Message, error) {
	r := reader{b: v}
	r.version(messageVersion)
	flags := r.byte()
	exp := r.uvarint()
	pub := r.bytes(MaxStringLen)
	topic := r.bytes(MaxStringLen)
	props := r.bytes(MaxPayloadLen)
	if r.err != nil {
		return nil, r.err
	}
	switch {
	case flags&flagReserved != 0:
		return nil, fmt.Errorf("%w: reserved message flags 0x%02x", ErrCorrupt, flags)
	case flags&flagQoSMask == 3:
		return nil, fmt.Errorf("%w: message QoS 3", ErrCorrupt)
	case exp > math.MaxInt64:
		return nil, fmt.Errorf("%w: expiry time out of range", ErrCorrupt)
	case len(topic) == 0:
		return nil, fmt.Errorf("%w: empty topic", ErrCorrupt)
	}
	m := &Message{
		QoS:       flags & flagQoSMask,
		Retain:    flags&flagRetain != 0,
		ExpiresAt: int64(exp),
	}
	if in != nil {
		m.Topic, m.Publisher = in.str(&in.topic, topic), in.str(&in.publisher, pub)
	} else {
		m.Topic, m.Publisher = string(topic), string(pub)
	}
	if len(props) > 0 {
		m.Properties = append([]byte(nil), props...)
	}
	payload := r.b
	if flags&flagCompressed != 0 {
		n, err := s2.DecodedLen(payload)
		if err != nil {
			return nil, fmt.Errorf("%w: compressed payload: %v", ErrCorrupt, err)
		}
		if n > maxPayload {
			return nil, fmt.Errorf("%w: decompressed payload %d bytes exceeds %d", ErrCorrupt, n, maxPayload)
		}
		out, err := s2.Decode(make([]byte, n), payload)
		if err != nil {
			return nil, fmt.Errorf("%w: compressed payload: %v", ErrCorrupt, err)
		}
		m.Payload = out
	} else {
		if len(payload) > maxPayload {
			return nil, fmt.Errorf("%w: payload %d bytes exceeds %d", ErrCorrupt, len(payload), maxPayload)
		}
		m.Payload = append(make([]byte, 0, len(payload)), payload...)
	}
	return m, nil
}

// validateSession checks what the record format can hold.
func validateSession(s *Session) error {
	if s == nil {
		return fmt.Errorf("%w: nil session", ErrInvalid)
	}
	if s.ProtocolVersion < 3 || s.ProtocolVersion > 5 {
		return fmt.Errorf("%w: protocol version %d", ErrInvalid, s.ProtocolVersion)
	}
	if s.DisconnectedAt < 0 {
		return fmt.Errorf("%w: negative disconnect time", ErrInvalid)
	}
	if len(s.Owner) > MaxStringLen {
		return fmt.Errorf("%w: owner length %d", ErrInvalid, len(s.Owner))
	}
	for i := range s.Subscriptions {
		sub := &s.Subscriptions[i]
		switch {
		case len(sub.Filter) == 0 || len(sub.Filter) > MaxStringLen:
			return fmt.Errorf("%w: subscription %d filter length %d", ErrInvalid, i, len(sub.Filter))
		case sub.QoS > 2:
			return fmt.Errorf("%w: subscription %d QoS %d", ErrInvalid, i, sub.QoS)
		case sub.ID > MaxSubscriptionID:
			return fmt.Errorf("%w: subscription %d identifier %d", ErrInvalid, i, sub.ID)
		}
	}
	return nil
}

// appendSession appends a session record.
func appendSession(dst []byte, s *Session) []byte {
	dst = append(dst, sessionVersion, s.ProtocolVersion)
	dst = binary.BigEndian.AppendUint32(dst, s.ExpiryInterval)
	dst = binary.BigEndian.AppendUint64(dst, uint64(s.DisconnectedAt))
	dst = binary.AppendUvarint(dst, uint64(len(s.Subscriptions)))
	for i := range s.Subscriptions {
		sub := &s.Subscriptions[i]
		dst = binary.AppendUvarint(dst, uint64(len(sub.Filter)))
		dst = append(dst, sub.Filter...)
		dst = append(dst, sub.QoS, sub.Options)
		dst = binary.AppendUvarint(dst, uint64(sub.ID))
	}
	dst = binary.AppendUvarint(dst, uint64(len(s.Owner)))
	return append(dst, s.Owner...)
}

// minSubscriptionLen is the smallest encoded subscription: 1-byte length,
// 1-byte filter, QoS, options, 1-byte identifier. It bounds the count a
// record can claim before anything is allocated.
const minSubscriptionLen = 5

// decodeSession decodes a session record into fresh memory.
func decodeSession(v []byte) (*Session, error) {
	r := reader{b: v}
	ver := r.byte()
	if r.err == nil && (ver < 1 || ver > sessionVersion) {
		return nil, fmt.Errorf("%w: %w: %d (this build reads 1..%d)", ErrCorrupt, ErrUnknownVersion, ver, sessionVersion)
	}
	pv := r.byte()
	fx := r.fixed(12)
	n := r.uvarint()
	if r.err != nil {
		return nil, r.err
	}
	if pv < 3 || pv > 5 {
		return nil, fmt.Errorf("%w: protocol version %d", ErrCorrupt, pv)
	}
	disc := binary.BigEndian.Uint64(fx[4:])
	if disc > math.MaxInt64 {
		return nil, fmt.Errorf("%w: disconnect time out of range", ErrCorrupt)
	}
	if n > uint64(len(r.b)/minSubscriptionLen) {
		return nil, fmt.Errorf("%w: %d subscriptions cannot fit in %d bytes", ErrCorrupt, n, len(r.b))
	}
	s := &Session{
		ProtocolVersion: pv,
		ExpiryInterval:  binary.BigEndian.Uint32(fx[:4]),
		DisconnectedAt:  int64(disc),
	}
	if n > 0 {
		s.Subscriptions = make([]Subscription, n)
	}
	for i := range s.Subscriptions {
		f := r.bytes(MaxStringLen)
		qos := r.byte()
		opt := r.byte()
		id := r.uvarint()
		if r.err != nil {
			return nil, r.err
		}
		switch {
		case len(f) == 0:
			return nil, fmt.Errorf("%w: subscription %d has an empty filter", ErrCorrupt, i)
		case qos > 2:
			return nil, fmt.Errorf("%w: subscription %d QoS %d", ErrCorrupt, i, qos)
		case id > MaxSubscriptionID:
			return nil, fmt.Errorf("%w: subscription %d identifier %d", ErrCorrupt, i, id)
		}
		s.Subscriptions[i] = Subscription{Filter: string(f), QoS: qos, Options: opt, ID: uint32(id)}
	}
	if ver >= 2 {
		s.Owner = string(r.bytes(MaxStringLen))
		if r.err != nil {
			return nil, r.err
		}
	}
	if len(r.b) != 0 {
		return nil, fmt.Errorf("%w: %d trailing bytes after session", ErrCorrupt, len(r.b))
	}
	return s, nil
}

// Outbound entry flags (version 2, high bits of the state byte).
const (
	outFlagShared   = 0x10 // delivered through a $share subscription
	outFlagReserved = 0xE0
	outStateMask    = 0x0F
)

// appendOutbound appends the 13-byte outbound entry record:
//
//	version | state | QoS | packet id (u16 BE) | message id (u64 BE)
//
// Version 1 when no flag is set (so what older builds wrote and read is
// unchanged), version 2 with flags in the state byte's high bits.
func appendOutbound(dst []byte, o Outbound) []byte {
	if o.Shared {
		dst = append(dst, outboundFlagged, byte(o.State)|outFlagShared, o.QoS)
	} else {
		dst = append(dst, outboundVersion, byte(o.State), o.QoS)
	}
	dst = binary.BigEndian.AppendUint16(dst, o.PacketID)
	return binary.BigEndian.AppendUint64(dst, o.MessageID)
}

// decodeOutbound decodes an outbound entry record, rejecting state
// combinations the delivery state machine cannot be in.
func decodeOutbound(v []byte) (Outbound, error) {
	if len(v) < 1 {
		return Outbound{}, fmt.Errorf("%w: empty outbound record", ErrCorrupt)
	}
	if v[0] != outboundVersion && v[0] != outboundFlagged {
		return Outbound{}, fmt.Errorf("%w: %w: outbound %d", ErrCorrupt, ErrUnknownVersion, v[0])
	}
	if len(v) != outboundLen {
		return Outbound{}, fmt.Errorf("%w: outbound record is %d bytes, want %d", ErrCorrupt, len(v), outboundLen)
	}
	state := v[1]
	if v[0] == outboundFlagged {
		if state&outFlagReserved != 0 || state&outFlagShared == 0 {
			return Outbound{}, fmt.Errorf("%w: outbound flags %#x", ErrCorrupt, state&^outStateMask)
		}
		state &= outStateMask
	}
	o := Outbound{
		State:     OutState(state),
		QoS:       v[2],
		PacketID:  binary.BigEndian.Uint16(v[3:5]),
		MessageID: binary.BigEndian.Uint64(v[5:13]),
		Shared:    v[0] == outboundFlagged,
	}
	if err := o.validate(); err != nil {
		return Outbound{}, fmt.Errorf("%w: outbound: %v", ErrCorrupt, err)
	}
	return o, nil
}

// appendInbound appends the 9-byte inbound marker: version | received-at (u64 BE).
func appendInbound(dst []byte, in Inbound) []byte {
	return binary.BigEndian.AppendUint64(append(dst, inboundVersion), uint64(in.ReceivedAt))
}

func decodeInbound(v []byte) (Inbound, error) {
	if len(v) < 1 {
		return Inbound{}, fmt.Errorf("%w: empty inbound record", ErrCorrupt)
	}
	if v[0] != inboundVersion {
		return Inbound{}, fmt.Errorf("%w: %w: inbound %d", ErrCorrupt, ErrUnknownVersion, v[0])
	}
	if len(v) != inboundLen {
		return Inbound{}, fmt.Errorf("%w: inbound record is %d bytes, want %d", ErrCorrupt, len(v), inboundLen)
	}
	t := binary.BigEndian.Uint64(v[1:])
	if t > math.MaxInt64 {
		return Inbound{}, fmt.Errorf("%w: inbound time out of range", ErrCorrupt)
	}
	return Inbound{ReceivedAt: int64(t)}, nil
}

// appendMetaU64 appends a meta record holding one number: version | u64 BE.
func appendMetaU64(dst []byte, v uint64) []byte {
	return binary.BigEndian.AppendUint64(append(dst, metaVersion), v)
}

func decodeMetaU64(v []byte) (uint64, error) {
	if len(v) != 9 || v[0] != metaVersion {
		return 0, fmt.Errorf("%w: meta record", ErrCorrupt)
	}
	return binary.BigEndian.Uint64(v[1:]), nil
}

// appendBacklogBytes appends a backlog byte count: version | u64 BE.
func appendBacklogBytes(dst []byte, n uint64) []byte {
	return binary.BigEndian.AppendUint64(append(dst, backlogVersion), n)
}

func decodeBacklogBytes(v []byte) (uint64, error) {
	if len(v) != 9 || v[0] != backlogVersion {
		return 0, fmt.Errorf("%w: backlog byte count", ErrCorrupt)
	}
	n := binary.BigEndian.Uint64(v[1:])
	if n > math.MaxInt64 {
		return 0, fmt.Errorf("%w: backlog byte count out of range", ErrCorrupt)
	}
	return n, nil
}

// appendRefs appends a reference-count record: version | count (uvarint).
func appendRefs(dst []byte, n uint32) []byte {
	return binary.AppendUvarint(append(dst, refsVersion), uint64(n))
}

// decodeRefs decodes a reference-count record. Only messages with two or
// more references have one, so a smaller count is corrupt.
func decodeRefs(v []byte) (uint32, error) {
	if len(v) < 2 || v[0] != refsVersion {
		return 0, fmt.Errorf("%w: reference-count record", ErrCorrupt)
	}
	n, k := binary.Uvarint(v[1:])
	if k <= 0 || 1+k != len(v) || n < 2 || n > math.MaxUint32 {
		return 0, fmt.Errorf("%w: reference count", ErrCorrupt)
	}
	return uint32(n), nil
}
