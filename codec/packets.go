package codec

// This file is the codec's contract: the packet types, the framing and the
// decode/encode entry points that server/ and bench/ program against. Bodies
// live in the other files of the package.

// PacketType is the 4-bit control packet type of the fixed header (§2.1.2).
type PacketType byte

// Control packet types.
const (
	CONNECT     PacketType = 1
	CONNACK     PacketType = 2
	PUBLISH     PacketType = 3
	PUBACK      PacketType = 4
	PUBREC      PacketType = 5
	PUBREL      PacketType = 6
	PUBCOMP     PacketType = 7
	SUBSCRIBE   PacketType = 8
	SUBACK      PacketType = 9
	UNSUBSCRIBE PacketType = 10
	UNSUBACK    PacketType = 11
	PINGREQ     PacketType = 12
	PINGRESP    PacketType = 13
	DISCONNECT  PacketType = 14
	AUTH        PacketType = 15 // MQTT 5.0 only
)

// Protocol levels carried in CONNECT.
const (
	Version31  byte = 3 // MQTT 3.1, protocol name "MQIsdp"
	Version311 byte = 4 // MQTT 3.1.1, protocol name "MQTT"
	Version5   byte = 5 // MQTT 5.0, protocol name "MQTT"
)

// Limits fixed by the protocol.
const (
	// MaxRemainingLength is the largest value four remaining-length bytes hold (§2.2.3).
	MaxRemainingLength = 268435455
	// MaxUserProperties bounds the user properties accepted in one packet, so a
	// 1 MiB packet of empty pairs cannot make the broker build a 200k-entry slice.
	MaxUserProperties = 1024
	// MaxSubscriptionIDs bounds the subscription identifiers decoded from one PUBLISH.
	MaxSubscriptionIDs = 64
)

// FixedHeader is the first 2–5 bytes of every packet (§2.1).
type FixedHeader struct {
	Type            PacketType
	Flags           byte // low nibble of byte 1
	RemainingLength int  // length of variable header + payload
}

// UserProperty is one MQTT 5.0 user property (§3.3.2.3.7). Key and Value are
// views into the decoded buffer.
type UserProperty struct {
	Key, Value []byte
}

// Properties holds every MQTT 5.0 property. A field is meaningful only when
// its bit is set in Present (use Has). Byte-slice fields are views into the
// decoded buffer; slices (User, SubscriptionIDs) are appended into the
// existing backing arrays, so a Properties reused across decodes allocates
// nothing once warmed up.
type Properties struct {
	Present uint64 // bit i set ⇔ property with identifier i was present / is to be encoded

	PayloadFormat        byte     // 0x01
	MessageExpiry        uint32   // 0x02
	ContentType          []byte   // 0x03
	ResponseTopic        []byte   // 0x08
	CorrelationData      []byte   // 0x09
	SubscriptionIDs      []uint32 // 0x0B (PUBLISH may carry several; SUBSCRIBE one)
	SessionExpiry        uint32   // 0x11
	AssignedClientID     []byte   // 0x12
	ServerKeepAlive      uint16   // 0x13
	AuthMethod           []byte   // 0x15
	AuthData             []byte   // 0x16
	RequestProblemInfo   byte     // 0x17
	WillDelay            uint32   // 0x18
	RequestResponseInfo  byte     // 0x19
	ResponseInfo         []byte   // 0x1A
	ServerReference      []byte   // 0x1C
	ReasonString         []byte   // 0x1F
	ReceiveMaximum       uint16   // 0x21
	TopicAliasMaximum    uint16   // 0x22
	TopicAlias           uint16   // 0x23
	MaximumQoS           byte     // 0x24
	RetainAvailable      byte     // 0x25
	User                 []UserProperty
	MaximumPacketSize    uint32 // 0x27
	WildcardSubAvailable byte   // 0x28
	SubIDAvailable       byte   // 0x29
	SharedSubAvailable   byte   // 0x2A
}

// Property identifiers (§2.2.2.2).
const (
	PropPayloadFormat        = 0x01
	PropMessageExpiry        = 0x02
	PropContentType          = 0x03
	PropResponseTopic        = 0x08
	PropCorrelationData      = 0x09
	PropSubscriptionID       = 0x0B
	PropSessionExpiry        = 0x11
	PropAssignedClientID     = 0x12
	PropServerKeepAlive      = 0x13
	PropAuthMethod           = 0x15
	PropAuthData             = 0x16
	PropRequestProblemInfo   = 0x17
	PropWillDelay            = 0x18
	PropRequestResponseInfo  = 0x19
	PropResponseInfo         = 0x1A
	PropServerReference      = 0x1C
	PropReasonString         = 0x1F
	PropReceiveMaximum       = 0x21
	PropTopicAliasMaximum    = 0x22
	PropTopicAlias           = 0x23
	PropMaximumQoS           = 0x24
	PropRetainAvailable      = 0x25
	PropUserProperty         = 0x26
	PropMaximumPacketSize    = 0x27
	PropWildcardSubAvailable = 0x28
	PropSubIDAvailable       = 0x29
	PropSharedSubAvailable   = 0x2A
)

// Has reports whether the property with identifier id is present.
func (p *Properties) Has(id byte) bool { return p.Present&(1<<id) != 0 }

// Set marks the property with identifier id as present.
func (p *Properties) Set(id byte) { p.Present |= 1 << id }

// Reset empties p, keeping the backing arrays of its slices for reuse.
func (p *Properties) Reset() {
	user, ids := p.User[:0], p.SubscriptionIDs[:0]
	*p = Properties{User: user, SubscriptionIDs: ids}
}

// Connect is the CONNECT packet (§3.1).
type Connect struct {
	ProtocolName    []byte // "MQTT" or "MQIsdp"
	ProtocolVersion byte   // Version31, Version311 or Version5
	CleanStart      bool   // "clean session" before 5.0
	KeepAlive       uint16 // seconds
	Props           Properties
	ClientID        []byte
	WillFlag        bool
	WillQoS         byte
	WillRetain      bool
	WillProps       Properties
	WillTopic       []byte
	WillPayload     []byte
	UsernameFlag    bool
	Username        []byte
	PasswordFlag    bool
	Password        []byte
}

// Connack is the CONNACK packet (§3.2). ReasonCode is the 3.1.1 return code
// (0–5) or the 5.0 reason code.
type Connack struct {
	SessionPresent bool
	ReasonCode     ReasonCode
	Props          Properties
}

// Publish is the PUBLISH packet (§3.3). PacketID is meaningful for QoS > 0.
type Publish struct {
	Dup      bool
	QoS      byte
	Retain   bool
	Topic    []byte
	PacketID uint16
	Props    Properties
	Payload  []byte
}

// Ack is PUBACK, PUBREC, PUBREL or PUBCOMP (§3.4–3.7); Type says which. A
// ReasonCode of 0 with no properties encodes as the 2-byte 3.1.1 form.
type Ack struct {
	Type       PacketType
	PacketID   uint16
	ReasonCode ReasonCode
	Props      Properties
}

// Subscription is one topic filter with its options in SUBSCRIBE (§3.8.3.1).
type Subscription struct {
	Filter            []byte
	QoS               byte
	NoLocal           bool // 5.0
	RetainAsPublished bool // 5.0
	RetainHandling    byte // 5.0: 0, 1 or 2
}

// Subscribe is the SUBSCRIBE packet (§3.8).
type Subscribe struct {
	PacketID      uint16
	Props         Properties
	Subscriptions []Subscription
}

// Suback is the SUBACK packet (§3.9): one return/reason code per filter
// (the granted QoS 0–2, or a failure ≥ 0x80).
type Suback struct {
	PacketID    uint16
	Props       Properties
	ReasonCodes []ReasonCode
}

// Unsubscribe is the UNSUBSCRIBE packet (§3.10).
type Unsubscribe struct {
	PacketID uint16
	Props    Properties
	Filters  [][]byte
}

// Unsuback is the UNSUBACK packet (§3.11). ReasonCodes is empty before 5.0.
type Unsuback struct {
	PacketID    uint16
	Props       Properties
	ReasonCodes []ReasonCode
}

// Disconnect is the DISCONNECT packet (§3.14). Before 5.0 it has no body.
type Disconnect struct {
	ReasonCode ReasonCode
	Props      Properties
}

// Auth is the MQTT 5.0 AUTH packet (§3.15).
type Auth struct {
	ReasonCode ReasonCode
	Props      Properties
}
