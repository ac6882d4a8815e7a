package persist

import (
	"errors"
	"fmt"
)

// Errors returned by the store. Callers compare with errors.Is.
var (
	// ErrStoreUnavailable is returned (wrapped with the first failure) by every
	// Commit after a write or sync failed. The store stays unavailable until
	// the process restarts and reopens it: a failed fsync leaves the WAL in an
	// unknown state, and retrying it can report success for data that never
	// reached the disk. The server answers new QoS 1/2 PUBLISHes with a
	// reason code instead of acknowledging what it could not store.
	ErrStoreUnavailable = errors.New("persist: store unavailable after a write failure; restart to recover")
	// ErrClosed is returned by operations on a closed store.
	ErrClosed = errors.New("persist: store closed")
	// ErrCorrupt wraps every record or key decoding failure.
	ErrCorrupt = errors.New("persist: corrupt record")
	// ErrUnknownVersion is returned (wrapped in ErrCorrupt) for a record
	// whose format version this build does not know: written by a newer Tern.
	ErrUnknownVersion = errors.New("persist: unknown record format version")
	// ErrDanglingReference reports an outbound entry whose message record is
	// missing; recovery skips the entry.
	ErrDanglingReference = errors.New("persist: outbound entry references a missing message")
	// ErrInvalid wraps every invalid argument given to a Batch method.
	ErrInvalid = errors.New("persist: invalid argument")
)

// Limits taken from the MQTT wire format; records never hold more.
const (
	// MaxStringLen bounds client ids, topics and filters: MQTT strings carry
	// a two-byte length.
	MaxStringLen = 65535
	// MaxPayloadLen is the largest payload a record holds: an MQTT packet's
	// remaining length cannot exceed 268,435,455 bytes.
	MaxPayloadLen = 268435455
	// MaxSubscriptionID is the largest MQTT 5.0 subscription identifier
	// (a variable byte integer).
	MaxSubscriptionID = 268435455
	// NoExpiry is the MQTT 5.0 session expiry interval meaning "never".
	NoExpiry = 0xFFFFFFFF
)

// Message is one application message as the store keeps it. A message
// referenced by many sessions is written once under its id (see Batch.PutMessage).
//
// Values passed to a Visitor are freshly allocated and may be retained.
type Message struct {
	Topic   string
	Payload []byte
	QoS     byte // 0, 1 or 2: the QoS it was published with
	Retain  bool
	// Properties are the MQTT 5.0 PUBLISH properties in wire encoding,
	// opaque to the store (nil for 3.1.1).
	Properties []byte
	// ExpiresAt is the message expiry time in unix milliseconds; 0 = never.
	// The store does not drop expired messages: the server does.
	ExpiresAt int64
	// Publisher is the client id of the publisher (for no-local and logs).
	Publisher string
}

// Session is the durable part of a persistent session.
type Session struct {
	// ProtocolVersion is the CONNECT protocol level: 3 (3.1), 4 (3.1.1) or 5.
	ProtocolVersion byte
	// ExpiryInterval is the session expiry interval in seconds, already
	// capped by the broker; NoExpiry means never.
	ExpiryInterval uint32
	// DisconnectedAt is when the client disconnected, unix milliseconds;
	// 0 while it is connected (after a crash: "connected when the broker
	// died", which the server treats as disconnected at recovery time).
	DisconnectedAt int64
	Subscriptions  []Subscription
	// Owner is the authenticated identity (username) that created the
	// session; another identity may not resume it. Empty: anonymous.
	Owner string
}

// Subscription is one subscription of a session.
type Subscription struct {
	Filter string // may be a shared subscription: $share/group/filter
	QoS    byte   // maximum QoS granted, 0..2
	// Options is the MQTT 5.0 subscription options byte (no local, retain
	// as published, retain handling), stored as received.
	Options byte
	// ID is the MQTT 5.0 subscription identifier; 0 = none.
	ID uint32
}

// OutState is the delivery state of an outbound entry.
type OutState byte

// Outbound entry states, in the order a QoS 1/2 delivery walks them.
const (
	// Queued: not yet sent (or sent on a connection that died before the
	// entry was updated); delivered in sequence order when the client is online.
	Queued OutState = iota
	// AwaitingPuback: QoS 1 PUBLISH sent with PacketID, waiting for PUBACK.
	AwaitingPuback
	// AwaitingPubrec: QoS 2 PUBLISH sent with PacketID, waiting for PUBREC.
	AwaitingPubrec
	// AwaitingPubcomp: PUBREL sent for PacketID, waiting for PUBCOMP. The
	// message itself is no longer needed: the entry may carry MessageID 0.
	AwaitingPubcomp
	outStateCount
)

// String names the state.
func (s OutState) String() string {
	switch s {
	case Queued:
		return "queued"
	case AwaitingPuback:
		return "awaiting-puback"
	case AwaitingPubrec:
		return "awaiting-pubrec"
	case AwaitingPubcomp:
		return "awaiting-pubcomp"
	}
	return fmt.Sprintf("OutState(%d)", byte(s))
}

// Outbound is one entry of a session's outbound queue: a reference to a
// stored message plus its delivery state. Entries are keyed by (client id,
// sequence) and delivered in sequence order.
type Outbound struct {
	// MessageID references a message record; 0 only in state AwaitingPubcomp.
	MessageID uint64
	// QoS is the delivered QoS: min(published QoS, granted QoS).
	QoS   byte
	State OutState
	// PacketID is the packet identifier used on the wire; 0 while Queued
	// (ids are assigned when the message is sent).
	PacketID uint16
	// Shared says the entry was delivered through a $share subscription:
	// if the session ends before it is acknowledged, the server gives it
	// to another member of the group. Stored as record version 2.
	Shared bool
}

// validate enforces the combinations the state machine can produce, so that
// a decoded entry can be trusted by the server's QoS state machine.
func (o Outbound) validate() error {
	switch {
	case o.State >= outStateCount:
		return fmt.Errorf("state %d out of range", o.State)
	case o.QoS > 2:
		return fmt.Errorf("QoS %d out of range", o.QoS)
	case o.MessageID == 0 && o.State != AwaitingPubcomp:
		return fmt.Errorf("message id 0 in state %v", o.State)
	case o.State != Queued && o.PacketID == 0:
		return fmt.Errorf("packet id 0 in state %v", o.State) // [MQTT-2.2.1-3]
	case o.State == AwaitingPuback && o.QoS != 1,
		(o.State == AwaitingPubrec || o.State == AwaitingPubcomp) && o.QoS != 2:
		return fmt.Errorf("state %v with QoS %d", o.State, o.QoS)
	}
	return nil
}

// Inbound marks an inbound QoS 2 PUBLISH whose PUBREC was sent and whose
// PUBREL has not arrived: a PUBLISH re-sent with the same packet id is not
// routed again, even across a restart [MQTT-4.3.3-10].
type Inbound struct {
	// ReceivedAt is when the PUBLISH arrived, unix milliseconds (lets the
	// server bound and age markers).
	ReceivedAt int64
}
