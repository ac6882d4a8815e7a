package codec

// Longer than 600 lines on purpose: the golden table of every packet, one
// entry each, annotated field by field.

// goldenPackets is the codec's reference table: for every packet type in
// every protocol version where it exists, in both directions, the exact
// bytes on the wire (annotated field by field) and the decoded value.
// TestGolden checks decode(bytes) == value and encode(value) == bytes.
//
// `go test ./codec -run TestGolden -update` writes each entry to
// testdata/golden/<name>.bin (whole packets, fixed header included) so that
// other packages' tests (server hostile/acceptance tests) can load them,
// and refreshes the fuzz seed corpora under testdata/fuzz/.

var (
	bs = func(s string) []byte { return []byte(s) }
	up = func(k, v string) UserProperty {
		var kb, vb []byte
		if k != "" {
			kb = []byte(k)
		}
		if v != "" {
			vb = []byte(v)
		}
		return UserProperty{Key: kb, Value: vb}
	}
)

// present builds a Properties.Present mask.
func present(ids ...byte) uint64 {
	var m uint64
	for _, id := range ids {
		m |= 1 << id
	}
	return m
}

type goldenPacket struct {
	name    string // also the file name under testdata/golden/
	version byte   // protocol level the bytes are encoded for
	bytes   []byte // whole packet, fixed header included
	value   any    // pointer to the decoded struct
}

var goldenPackets = []goldenPacket{
	// ───────────────────────── CONNECT ─────────────────────────
	{"connect_v31_minimal", Version31, []byte{
		0x10,                                     // CONNECT, flags 0
		0x10,                                     // remaining length 16
		0x00, 0x06, 'M', 'Q', 'I', 's', 'd', 'p', // protocol name "MQIsdp"
		0x03,       // protocol level 3 (MQTT 3.1)
		0x02,       // connect flags: clean session
		0x00, 0x3C, // keep alive 60 s
		0x00, 0x02, 'c', '1', // client id "c1"
	}, &Connect{ProtocolName: bs("MQIsdp"), ProtocolVersion: 3, CleanStart: true, KeepAlive: 60, ClientID: bs("c1")}},

	{"connect_v31_will_user_pass", Version31, []byte{
		0x10,                                     // CONNECT
		0x1E,                                     // remaining length 30
		0x00, 0x06, 'M', 'Q', 'I', 's', 'd', 'p', // protocol name "MQIsdp"
		0x03,       // protocol level 3
		0xD4,       // flags: username | password | will QoS 2 | will
		0x00, 0x0A, // keep alive 10 s
		0x00, 0x02, 'c', '1', // client id "c1"
		0x00, 0x01, 'w', // will topic "w"
		0x00, 0x03, 'b', 'y', 'e', // will payload "bye"
		0x00, 0x01, 'u', // user name "u"
		0x00, 0x01, 'p', // password "p"
	}, &Connect{ProtocolName: bs("MQIsdp"), ProtocolVersion: 3, KeepAlive: 10, ClientID: bs("c1"),
		WillFlag: true, WillQoS: 2, WillTopic: bs("w"), WillPayload: bs("bye"),
		UsernameFlag: true, Username: bs("u"), PasswordFlag: true, Password: bs("p")}},

	{"connect_v311_minimal", Version311, []byte{
		0x10,                           // CONNECT
		0x0E,                           // remaining length 14
		0x00, 0x04, 'M', 'Q', 'T', 'T', // protocol name "MQTT"
		0x04,       // protocol level 4 (MQTT 3.1.1)
		0x02,       // flags: clean session
		0x00, 0x3C, // keep alive 60 s
		0x00, 0x02, 'i', 'd', // client id "id"
	}, &Connect{ProtocolName: bs("MQTT"), ProtocolVersion: 4, CleanStart: true, KeepAlive: 60, ClientID: bs("id")}},

	{"connect_v311_empty_client_id", Version311, []byte{
		0x10,                           // CONNECT
		0x0C,                           // remaining length 12
		0x00, 0x04, 'M', 'Q', 'T', 'T', // protocol name "MQTT"
		0x04,       // level 4
		0x02,       // flags: clean session
		0x00, 0x00, // keep alive 0 (disabled)
		0x00, 0x00, // client id "" (server assigns one)
	}, &Connect{ProtocolName: bs("MQTT"), ProtocolVersion: 4, CleanStart: true}},

	{"connect_v311_will_user_pass", Version311, []byte{
		0x10,                           // CONNECT
		0x36,                           // remaining length 54
		0x00, 0x04, 'M', 'Q', 'T', 'T', // protocol name "MQTT"
		0x04,       // level 4
		0xEC,       // flags: username | password | will retain | will QoS 1 | will (no clean session)
		0x00, 0x1E, // keep alive 30 s
		0x00, 0x05, 'd', 'e', 'v', '-', '1', // client id "dev-1"
		0x00, 0x0C, 'd', 'e', 'v', '/', '1', '/', 's', 't', 'a', 't', 'u', 's', // will topic "dev/1/status"
		0x00, 0x07, 'o', 'f', 'f', 'l', 'i', 'n', 'e', // will payload "offline"
		0x00, 0x04, 'u', 's', 'e', 'r', // user name "user"
		0x00, 0x06, 's', 'e', 'c', 'r', 'e', 't', // password "secret"
	}, &Connect{ProtocolName: bs("MQTT"), ProtocolVersion: 4, KeepAlive: 30, ClientID: bs("dev-1"),
		WillFlag: true, WillQoS: 1, WillRetain: true, WillTopic: bs("dev/1/status"), WillPayload: bs("offline"),
		UsernameFlag: true, Username: bs("user"), PasswordFlag: true, Password: bs("secret")}},

	{"connect_v5_minimal", Version5, []byte{
		0x10,                           // CONNECT
		0x0F,                           // remaining length 15
		0x00, 0x04, 'M', 'Q', 'T', 'T', // protocol name "MQTT"
		0x05,       // level 5 (MQTT 5.0)
		0x02,       // flags: clean start
		0x00, 0x3C, // keep alive 60 s
		0x00,                 // property length 0
		0x00, 0x02, 'i', 'd', // client id "id"
	}, &Connect{ProtocolName: bs("MQTT"), ProtocolVersion: 5, CleanStart: true, KeepAlive: 60, ClientID: bs("id")}},

	{"connect_v5_full", Version5, []byte{
		0x10,                           // CONNECT
		0x71,                           // remaining length 113
		0x00, 0x04, 'M', 'Q', 'T', 'T', // protocol name "MQTT"
		0x05,       // level 5
		0xD6,       // flags: username | password | will QoS 2 | will | clean start
		0x00, 0x3C, // keep alive 60 s
		0x27,                         // property length 39
		0x11, 0x00, 0x00, 0x0E, 0x10, // Session Expiry Interval 3600
		0x15, 0x00, 0x05, 'S', 'C', 'R', 'A', 'M', // Authentication Method "SCRAM"
		0x16, 0x00, 0x01, 'x', // Authentication Data "x"
		0x17, 0x00, // Request Problem Information 0
		0x19, 0x01, // Request Response Information 1
		0x21, 0x00, 0x14, // Receive Maximum 20
		0x22, 0x00, 0x0A, // Topic Alias Maximum 10
		0x26, 0x00, 0x01, 'k', 0x00, 0x01, 'v', // User Property "k"="v"
		0x27, 0x00, 0x10, 0x00, 0x00, // Maximum Packet Size 1 MiB
		0x00, 0x01, 'c', // client id "c"
		0x29,       // will property length 41
		0x01, 0x01, // Payload Format Indicator 1 (UTF-8)
		0x02, 0x00, 0x00, 0x00, 0x3C, // Message Expiry Interval 60
		0x03, 0x00, 0x0A, 't', 'e', 'x', 't', '/', 'p', 'l', 'a', 'i', 'n', // Content Type "text/plain"
		0x08, 0x00, 0x01, 'r', // Response Topic "r"
		0x09, 0x00, 0x02, 0x01, 0x02, // Correlation Data 01 02
		0x18, 0x00, 0x00, 0x00, 0x05, // Will Delay Interval 5
		0x26, 0x00, 0x01, 'a', 0x00, 0x01, 'b', // User Property "a"="b"
		0x00, 0x03, 'w', '/', 't', // will topic "w/t"
		0x00, 0x04, 'g', 'o', 'n', 'e', // will payload "gone"
		0x00, 0x01, 'u', // user name "u"
		0x00, 0x02, 'p', 'w', // password "pw"
	}, &Connect{ProtocolName: bs("MQTT"), ProtocolVersion: 5, CleanStart: true, KeepAlive: 60,
		Props: Properties{
			Present: present(PropSessionExpiry, PropAuthMethod, PropAuthData, PropRequestProblemInfo,
				PropRequestResponseInfo, PropReceiveMaximum, PropTopicAliasMaximum, PropUserProperty, PropMaximumPacketSize),
			SessionExpiry: 3600, AuthMethod: bs("SCRAM"), AuthData: bs("x"), RequestProblemInfo: 0,
			RequestResponseInfo: 1, ReceiveMaximum: 20, TopicAliasMaximum: 10, User: []UserProperty{up("k", "v")},
			MaximumPacketSize: 1 << 20,
		},
		ClientID: bs("c"), WillFlag: true, WillQoS: 2,
		WillProps: Properties{
			Present: present(PropPayloadFormat, PropMessageExpiry, PropContentType, PropResponseTopic,
				PropCorrelationData, PropWillDelay, PropUserProperty),
			PayloadFormat: 1, MessageExpiry: 60, ContentType: bs("text/plain"), ResponseTopic: bs("r"),
			CorrelationData: []byte{1, 2}, WillDelay: 5, User: []UserProperty{up("a", "b")},
		},
		WillTopic: bs("w/t"), WillPayload: bs("gone"),
		UsernameFlag: true, Username: bs("u"), PasswordFlag: true, Password: bs("pw")}},

	{"connect_v5_password_without_username", Version5, []byte{
		0x10,                           // CONNECT
		0x13,                           // remaining length 19
		0x00, 0x04, 'M', 'Q', 'T', 'T', // protocol name "MQTT"
		0x05,       // level 5
		0x42,       // flags: password | clean start (allowed in 5.0, unlike 3.1.1)
		0x00, 0x00, // keep alive 0
		0x00,                 // property length 0
		0x00, 0x02, 'i', 'd', // client id "id"
		0x00, 0x02, 'p', 'w', // password "pw"
	}, &Connect{ProtocolName: bs("MQTT"), ProtocolVersion: 5, CleanStart: true, ClientID: bs("id"),
		PasswordFlag: true, Password: bs("pw")}},

	// ───────────────────────── CONNACK ─────────────────────────
	{"connack_v31_accepted", Version31, []byte{
		0x20, // CONNACK
		0x02, // remaining length 2
		0x00, // reserved (no session present in 3.1)
		0x00, // return code 0: accepted
	}, &Connack{}},

	{"connack_v311_accepted", Version311, []byte{
		0x20, // CONNACK
		0x02, // remaining length 2
		0x00, // ack flags: no session present
		0x00, // return code 0: accepted
	}, &Connack{}},

	{"connack_v311_session_present", Version311, []byte{
		0x20, // CONNACK
		0x02, // remaining length 2
		0x01, // ack flags: session present
		0x00, // return code 0: accepted
	}, &Connack{SessionPresent: true}},

	{"connack_v311_not_authorized", Version311, []byte{
		0x20, // CONNACK
		0x02, // remaining length 2
		0x00, // ack flags
		0x05, // return code 5: not authorized
	}, &Connack{ReasonCode: 5}},

	{"connack_v5_success", Version5, []byte{
		0x20, // CONNACK
		0x03, // remaining length 3
		0x00, // ack flags
		0x00, // reason code Success
		0x00, // property length 0
	}, &Connack{}},

	{"connack_v5_full", Version5, []byte{
		0x20,                         // CONNACK
		0x50,                         // remaining length 80
		0x01,                         // ack flags: session present
		0x00,                         // reason code Success
		0x4D,                         // property length 77
		0x11, 0x00, 0x00, 0x00, 0x78, // Session Expiry Interval 120
		0x12, 0x00, 0x06, 'a', 'u', 't', 'o', '-', '1', // Assigned Client Identifier "auto-1"
		0x13, 0x00, 0x1E, // Server Keep Alive 30
		0x15, 0x00, 0x05, 'S', 'C', 'R', 'A', 'M', // Authentication Method "SCRAM"
		0x16, 0x00, 0x01, 0xAA, // Authentication Data AA
		0x1A, 0x00, 0x04, 'r', 'e', 's', 'p', // Response Information "resp"
		0x1C, 0x00, 0x05, 'o', 't', 'h', 'e', 'r', // Server Reference "other"
		0x1F, 0x00, 0x02, 'o', 'k', // Reason String "ok"
		0x21, 0x00, 0x40, // Receive Maximum 64
		0x22, 0x00, 0x10, // Topic Alias Maximum 16
		0x24, 0x01, // Maximum QoS 1
		0x25, 0x00, // Retain Available 0
		0x26, 0x00, 0x01, 'x', 0x00, 0x01, 'y', // User Property "x"="y"
		0x27, 0x00, 0x01, 0x00, 0x00, // Maximum Packet Size 65536
		0x28, 0x01, // Wildcard Subscription Available 1
		0x29, 0x00, // Subscription Identifier Available 0
		0x2A, 0x01, // Shared Subscription Available 1
	}, &Connack{SessionPresent: true, Props: Properties{
		Present: present(PropSessionExpiry, PropAssignedClientID, PropServerKeepAlive, PropAuthMethod,
			PropAuthData, PropResponseInfo, PropServerReference, PropReasonString, PropReceiveMaximum,
			PropTopicAliasMaximum, PropMaximumQoS, PropRetainAvailable, PropUserProperty,
			PropMaximumPacketSize, PropWildcardSubAvailable, PropSubIDAvailable, PropSharedSubAvailable),
		SessionExpiry: 120, AssignedClientID: bs("auto-1"), ServerKeepAlive: 30, AuthMethod: bs("SCRAM"),
		AuthData: []byte{0xAA}, ResponseInfo: bs("resp"), ServerReference: bs("other"), ReasonString: bs("ok"),
		ReceiveMaximum: 64, TopicAliasMaximum: 16, MaximumQoS: 1, RetainAvailable: 0,
		User: []UserProperty{up("x", "y")}, MaximumPacketSize: 65536, WildcardSubAvailable: 1,
		SubIDAvailable: 0, SharedSubAvailable: 1,
	}}},

	{"connack_v5_not_authorized", Version5, []byte{
		0x20,                                           // CONNACK
		0x0C,                                           // remaining length 12
		0x00,                                           // ack flags
		0x87,                                           // reason code Not authorized
		0x09,                                           // property length 9
		0x1F, 0x00, 0x06, 'd', 'e', 'n', 'i', 'e', 'd', // Reason String "denied"
	}, &Connack{ReasonCode: 0x87, Props: Properties{Present: present(PropReasonString), ReasonString: bs("denied")}}},

	// ───────────────────────── PUBLISH ─────────────────────────
	{"publish_v31_qos1", Version31, []byte{
		0x32,                      // PUBLISH, QoS 1
		0x09,                      // remaining length 9
		0x00, 0x03, 'a', '/', 'b', // topic "a/b"
		0x00, 0x01, // packet id 1
		'h', 'i', // payload "hi"
	}, &Publish{QoS: 1, Topic: bs("a/b"), PacketID: 1, Payload: bs("hi")}},

	{"publish_v311_qos0", Version311, []byte{
		0x30,                      // PUBLISH, QoS 0
		0x0A,                      // remaining length 10
		0x00, 0x03, 'a', '/', 'b', // topic "a/b"
		'h', 'e', 'l', 'l', 'o', // payload "hello" (no packet id at QoS 0)
	}, &Publish{Topic: bs("a/b"), Payload: bs("hello")}},

	{"publish_v311_qos1", Version311, []byte{
		0x32,                      // PUBLISH, QoS 1
		0x0C,                      // remaining length 12
		0x00, 0x03, 'a', '/', 'b', // topic "a/b"
		0x00, 0x0A, // packet id 10
		'h', 'e', 'l', 'l', 'o', // payload "hello"
	}, &Publish{QoS: 1, Topic: bs("a/b"), PacketID: 10, Payload: bs("hello")}},

	{"publish_v311_qos2_dup_retain", Version311, []byte{
		0x3D,            // PUBLISH, DUP | QoS 2 | RETAIN
		0x07,            // remaining length 7
		0x00, 0x01, 't', // topic "t"
		0xFF, 0xFF, // packet id 65535
		0x00, 0xFF, // payload 00 FF (binary)
	}, &Publish{Dup: true, QoS: 2, Retain: true, Topic: bs("t"), PacketID: 65535, Payload: []byte{0, 0xFF}}},

	{"publish_v311_retain_empty_payload", Version311, []byte{
		0x31,                      // PUBLISH, QoS 0, RETAIN
		0x05,                      // remaining length 5
		0x00, 0x03, 'a', '/', 'b', // topic "a/b", empty payload (clears the retained message)
	}, &Publish{Retain: true, Topic: bs("a/b")}},

	{"publish_v311_two_byte_length", Version311, append([]byte{
		0x30,       // PUBLISH, QoS 0
		0xCB, 0x01, // remaining length 203 as a 2-byte VBI: 0x4B + 1*128
		0x00, 0x01, 't', // topic "t"
	}, make([]byte, 200)...), // payload: 200 zero bytes
		&Publish{Topic: bs("t"), Payload: make([]byte, 200)}},

	{"publish_v5_qos0", Version5, []byte{
		0x30,                      // PUBLISH, QoS 0
		0x0B,                      // remaining length 11
		0x00, 0x03, 'a', '/', 'b', // topic "a/b"
		0x00,                    // property length 0
		'h', 'e', 'l', 'l', 'o', // payload "hello"
	}, &Publish{Topic: bs("a/b"), Payload: bs("hello")}},

	{"publish_v5_qos1_props", Version5, []byte{
		0x32,                      // PUBLISH, QoS 1
		0x41,                      // remaining length 65
		0x00, 0x03, 's', '/', '1', // topic "s/1"
		0x00, 0x07, // packet id 7
		0x32,       // property length 50
		0x01, 0x01, // Payload Format Indicator 1
		0x02, 0x00, 0x00, 0x01, 0x2C, // Message Expiry Interval 300
		0x03, 0x00, 0x04, 'j', 's', 'o', 'n', // Content Type "json"
		0x08, 0x00, 0x03, 'r', '/', '1', // Response Topic "r/1"
		0x09, 0x00, 0x03, 0xC0, 0xFF, 0xEE, // Correlation Data C0 FF EE
		0x0B, 0x01, // Subscription Identifier 1
		0x0B, 0xC8, 0x01, // Subscription Identifier 200 (2-byte VBI)
		0x23, 0x00, 0x03, // Topic Alias 3
		0x26, 0x00, 0x02, 'k', '1', 0x00, 0x02, 'v', '1', // User Property "k1"="v1"
		0x26, 0x00, 0x02, 'k', '2', 0x00, 0x00, // User Property "k2"="" (order kept)
		'{', '"', 't', '"', ':', '1', '}', // payload {"t":1}
	}, &Publish{QoS: 1, Topic: bs("s/1"), PacketID: 7, Payload: bs(`{"t":1}`), Props: Properties{
		Present: present(PropPayloadFormat, PropMessageExpiry, PropContentType, PropResponseTopic,
			PropCorrelationData, PropSubscriptionID, PropTopicAlias, PropUserProperty),
		PayloadFormat: 1, MessageExpiry: 300, ContentType: bs("json"), ResponseTopic: bs("r/1"),
		CorrelationData: []byte{0xC0, 0xFF, 0xEE}, SubscriptionIDs: []uint32{1, 200}, TopicAlias: 3,
		User: []UserProperty{up("k1", "v1"), up("k2", "")},
	}}},

	{"publish_v5_topic_alias_only", Version5, []byte{
		0x30,       // PUBLISH, QoS 0
		0x07,       // remaining length 7
		0x00, 0x00, // topic "" (the Topic Alias stands for it)
		0x03,             // property length 3
		0x23, 0x00, 0x01, // Topic Alias 1
		'x', // payload "x"
	}, &Publish{Payload: bs("x"), Props: Properties{Present: present(PropTopicAlias), TopicAlias: 1}}},

	// ──────────────── PUBACK / PUBREC / PUBREL / PUBCOMP ────────────────
	{"puback_v31", Version31, []byte{
		0x40,       // PUBACK
		0x02,       // remaining length 2
		0x00, 0x0A, // packet id 10
	}, &Ack{Type: PUBACK, PacketID: 10}},
	{"pubrec_v31", Version31, []byte{
		0x50,       // PUBREC
		0x02,       // remaining length 2
		0x00, 0x0A, // packet id 10
	}, &Ack{Type: PUBREC, PacketID: 10}},
	{"pubrel_v31", Version31, []byte{
		0x62,       // PUBREL, flags 0b0010
		0x02,       // remaining length 2
		0x00, 0x0A, // packet id 10
	}, &Ack{Type: PUBREL, PacketID: 10}},
	{"pubcomp_v31", Version31, []byte{
		0x70,       // PUBCOMP
		0x02,       // remaining length 2
		0x00, 0x0A, // packet id 10
	}, &Ack{Type: PUBCOMP, PacketID: 10}},

	{"puback_v311", Version311, []byte{
		0x40,       // PUBACK
		0x02,       // remaining length 2
		0x00, 0x0A, // packet id 10
	}, &Ack{Type: PUBACK, PacketID: 10}},
	{"pubrec_v311", Version311, []byte{
		0x50,       // PUBREC
		0x02,       // remaining length 2
		0x12, 0x34, // packet id 0x1234
	}, &Ack{Type: PUBREC, PacketID: 0x1234}},
	{"pubrel_v311", Version311, []byte{
		0x62,       // PUBREL, flags 0b0010
		0x02,       // remaining length 2
		0x12, 0x34, // packet id 0x1234
	}, &Ack{Type: PUBREL, PacketID: 0x1234}},
	{"pubcomp_v311", Version311, []byte{
		0x70,       // PUBCOMP
		0x02,       // remaining length 2
		0x12, 0x34, // packet id 0x1234
	}, &Ack{Type: PUBCOMP, PacketID: 0x1234}},

	{"puback_v5_short", Version5, []byte{
		0x40,       // PUBACK
		0x02,       // remaining length 2: Success, no properties (short form)
		0x00, 0x0A, // packet id 10
	}, &Ack{Type: PUBACK, PacketID: 10}},
	{"puback_v5_no_matching_subscribers", Version5, []byte{
		0x40,       // PUBACK
		0x03,       // remaining length 3: reason code, no property length
		0x00, 0x0A, // packet id 10
		0x10, // reason code No matching subscribers
	}, &Ack{Type: PUBACK, PacketID: 10, ReasonCode: 0x10}},
	{"pubrec_v5_short", Version5, []byte{
		0x50,       // PUBREC
		0x02,       // remaining length 2
		0x00, 0x0B, // packet id 11
	}, &Ack{Type: PUBREC, PacketID: 11}},
	{"pubrec_v5_quota_exceeded_props", Version5, []byte{
		0x50,       // PUBREC
		0x13,       // remaining length 19
		0x00, 0x0B, // packet id 11
		0x97,                                      // reason code Quota exceeded
		0x0F,                                      // property length 15
		0x1F, 0x00, 0x05, 'q', 'u', 'o', 't', 'a', // Reason String "quota"
		0x26, 0x00, 0x01, 'k', 0x00, 0x01, 'v', // User Property "k"="v"
	}, &Ack{Type: PUBREC, PacketID: 11, ReasonCode: 0x97, Props: Properties{
		Present: present(PropReasonString, PropUserProperty), ReasonString: bs("quota"), User: []UserProperty{up("k", "v")},
	}}},
	{"pubrel_v5_short", Version5, []byte{
		0x62,       // PUBREL, flags 0b0010
		0x02,       // remaining length 2
		0x00, 0x0B, // packet id 11
	}, &Ack{Type: PUBREL, PacketID: 11}},
	{"pubrel_v5_packet_id_not_found", Version5, []byte{
		0x62,       // PUBREL
		0x03,       // remaining length 3
		0x00, 0x0B, // packet id 11
		0x92, // reason code Packet Identifier not found
	}, &Ack{Type: PUBREL, PacketID: 11, ReasonCode: 0x92}},
	{"pubcomp_v5_short", Version5, []byte{
		0x70,       // PUBCOMP
		0x02,       // remaining length 2
		0x00, 0x0B, // packet id 11
	}, &Ack{Type: PUBCOMP, PacketID: 11}},
	{"pubcomp_v5_not_found_reason_string", Version5, []byte{
		0x70,       // PUBCOMP
		0x0B,       // remaining length 11
		0x00, 0x0B, // packet id 11
		0x92,                                 // reason code Packet Identifier not found
		0x07,                                 // property length 7
		0x1F, 0x00, 0x04, 'g', 'o', 'n', 'e', // Reason String "gone"
	}, &Ack{Type: PUBCOMP, PacketID: 11, ReasonCode: 0x92, Props: Properties{
		Present: present(PropReasonString), ReasonString: bs("gone"),
	}}},

	// ───────────────────────── SUBSCRIBE ─────────────────────────
	{"subscribe_v31", Version31, []byte{
		0x82,       // SUBSCRIBE, flags 0b0010
		0x08,       // remaining length 8
		0x00, 0x01, // packet id 1
		0x00, 0x03, 'a', '/', '#', // filter "a/#"
		0x01, // requested QoS 1
	}, &Subscribe{PacketID: 1, Subscriptions: []Subscription{{Filter: bs("a/#"), QoS: 1}}}},

	{"subscribe_v311_three_filters", Version311, []byte{
		0x82,       // SUBSCRIBE
		0x12,       // remaining length 18
		0x00, 0x02, // packet id 2
		0x00, 0x03, 'a', '/', '+', // filter "a/+"
		0x00,            // QoS 0
		0x00, 0x01, 'b', // filter "b"
		0x01,                      // QoS 1
		0x00, 0x03, 'c', '/', '#', // filter "c/#"
		0x02, // QoS 2
	}, &Subscribe{PacketID: 2, Subscriptions: []Subscription{
		{Filter: bs("a/+"), QoS: 0}, {Filter: bs("b"), QoS: 1}, {Filter: bs("c/#"), QoS: 2},
	}}},

	{"subscribe_v5_options", Version5, []byte{
		0x82,       // SUBSCRIBE
		0x24,       // remaining length 36
		0x00, 0x03, // packet id 3
		0x0A,             // property length 10
		0x0B, 0xAC, 0x02, // Subscription Identifier 300
		0x26, 0x00, 0x01, 'k', 0x00, 0x01, 'v', // User Property "k"="v"
		0x00, 0x03, 'a', '/', 'b', // filter "a/b"
		0x05,                                                         // options: No Local | QoS 1
		0x00, 0x0A, '$', 's', 'h', 'a', 'r', 'e', '/', 'g', '/', 'x', // filter "$share/g/x"
		0x2A,            // options: Retain Handling 2 | Retain As Published | QoS 2
		0x00, 0x01, 'c', // filter "c"
		0x10, // options: Retain Handling 1 | QoS 0
	}, &Subscribe{PacketID: 3, Props: Properties{
		Present: present(PropSubscriptionID, PropUserProperty), SubscriptionIDs: []uint32{300}, User: []UserProperty{up("k", "v")},
	}, Subscriptions: []Subscription{
		{Filter: bs("a/b"), QoS: 1, NoLocal: true},
		{Filter: bs("$share/g/x"), QoS: 2, RetainAsPublished: true, RetainHandling: 2},
		{Filter: bs("c"), RetainHandling: 1},
	}}},

	// ───────────────────────── SUBACK ─────────────────────────
	{"suback_v31", Version31, []byte{
		0x90,       // SUBACK
		0x03,       // remaining length 3
		0x00, 0x01, // packet id 1
		0x01, // granted QoS 1
	}, &Suback{PacketID: 1, ReasonCodes: []ReasonCode{1}}},

	{"suback_v311", Version311, []byte{
		0x90,       // SUBACK
		0x06,       // remaining length 6
		0x00, 0x02, // packet id 2
		0x00, // granted QoS 0
		0x01, // granted QoS 1
		0x02, // granted QoS 2
		0x80, // failure
	}, &Suback{PacketID: 2, ReasonCodes: []ReasonCode{0, 1, 2, 0x80}}},

	{"suback_v5_reason_string", Version5, []byte{
		0x90,       // SUBACK
		0x10,       // remaining length 16
		0x00, 0x03, // packet id 3
		0x0A,                                                // property length 10
		0x1F, 0x00, 0x07, 'p', 'a', 'r', 't', 'i', 'a', 'l', // Reason String "partial"
		0x01, // Granted QoS 1
		0x87, // Not authorized
		0x00, // Granted QoS 0
	}, &Suback{PacketID: 3, Props: Properties{Present: present(PropReasonString), ReasonString: bs("partial")},
		ReasonCodes: []ReasonCode{0x01, 0x87, 0x00}}},

	// ───────────────────────── UNSUBSCRIBE ─────────────────────────
	{"unsubscribe_v31", Version31, []byte{
		0xA2,       // UNSUBSCRIBE, flags 0b0010
		0x07,       // remaining length 7
		0x00, 0x04, // packet id 4
		0x00, 0x03, 'a', '/', '#', // filter "a/#"
	}, &Unsubscribe{PacketID: 4, Filters: [][]byte{bs("a/#")}}},

	{"unsubscribe_v311_two_filters", Version311, []byte{
		0xA2,       // UNSUBSCRIBE
		0x0A,       // remaining length 10
		0x00, 0x05, // packet id 5
		0x00, 0x03, 'a', '/', '+', // filter "a/+"
		0x00, 0x01, 'b', // filter "b"
	}, &Unsubscribe{PacketID: 5, Filters: [][]byte{bs("a/+"), bs("b")}}},

	{"unsubscribe_v5_user_property", Version5, []byte{
		0xA2,       // UNSUBSCRIBE
		0x0F,       // remaining length 15
		0x00, 0x06, // packet id 6
		0x07,                                   // property length 7
		0x26, 0x00, 0x01, 'k', 0x00, 0x01, 'v', // User Property "k"="v"
		0x00, 0x03, 'a', '/', 'b', // filter "a/b"
	}, &Unsubscribe{PacketID: 6, Props: Properties{Present: present(PropUserProperty), User: []UserProperty{up("k", "v")}},
		Filters: [][]byte{bs("a/b")}}},

	// ───────────────────────── UNSUBACK ─────────────────────────
	{"unsuback_v31", Version31, []byte{
		0xB0,       // UNSUBACK
		0x02,       // remaining length 2
		0x00, 0x04, // packet id 4 (no payload before 5.0)
	}, &Unsuback{PacketID: 4}},

	{"unsuback_v311", Version311, []byte{
		0xB0,       // UNSUBACK
		0x02,       // remaining length 2
		0x00, 0x05, // packet id 5
	}, &Unsuback{PacketID: 5}},

	{"unsuback_v5_reason_codes", Version5, []byte{
		0xB0,       // UNSUBACK
		0x0A,       // remaining length 10
		0x00, 0x06, // packet id 6
		0x05,                       // property length 5
		0x1F, 0x00, 0x02, 'n', 'o', // Reason String "no"
		0x00, // Success
		0x11, // No subscription existed
	}, &Unsuback{PacketID: 6, Props: Properties{Present: present(PropReasonString), ReasonString: bs("no")},
		ReasonCodes: []ReasonCode{0x00, 0x11}}},

	// ───────────────────────── PINGREQ / PINGRESP ─────────────────────────
	{"pingreq_v31", Version31, []byte{0xC0, 0x00 /* PINGREQ, remaining length 0 */}, &Pingreq{}},
	{"pingreq_v311", Version311, []byte{0xC0, 0x00 /* PINGREQ, remaining length 0 */}, &Pingreq{}},
	{"pingreq_v5", Version5, []byte{0xC0, 0x00 /* PINGREQ, remaining length 0 */}, &Pingreq{}},
	{"pingresp_v31", Version31, []byte{0xD0, 0x00 /* PINGRESP, remaining length 0 */}, &Pingresp{}},
	{"pingresp_v311", Version311, []byte{0xD0, 0x00 /* PINGRESP, remaining length 0 */}, &Pingresp{}},
	{"pingresp_v5", Version5, []byte{0xD0, 0x00 /* PINGRESP, remaining length 0 */}, &Pingresp{}},

	// ───────────────────────── DISCONNECT ─────────────────────────
	{"disconnect_v31", Version31, []byte{0xE0, 0x00 /* DISCONNECT, remaining length 0 */}, &Disconnect{}},
	{"disconnect_v311", Version311, []byte{0xE0, 0x00 /* DISCONNECT, remaining length 0 */}, &Disconnect{}},
	{"disconnect_v5_normal", Version5, []byte{
		0xE0, // DISCONNECT
		0x00, // remaining length 0: Normal disconnection, no properties
	}, &Disconnect{}},
	{"disconnect_v5_with_will", Version5, []byte{
		0xE0, // DISCONNECT
		0x01, // remaining length 1: reason code, no property length
		0x04, // Disconnect with Will Message
	}, &Disconnect{ReasonCode: 0x04}},
	{"disconnect_v5_use_another_server", Version5, []byte{
		0xE0,                         // DISCONNECT
		0x1B,                         // remaining length 27
		0x9C,                         // reason code Use another server
		0x19,                         // property length 25
		0x11, 0x00, 0x00, 0x00, 0x00, // Session Expiry Interval 0
		0x1C, 0x00, 0x04, 's', 'r', 'v', '2', // Server Reference "srv2"
		0x1F, 0x00, 0x03, 'b', 'y', 'e', // Reason String "bye"
		0x26, 0x00, 0x01, 'k', 0x00, 0x01, 'v', // User Property "k"="v"
	}, &Disconnect{ReasonCode: 0x9C, Props: Properties{
		Present:       present(PropSessionExpiry, PropServerReference, PropReasonString, PropUserProperty),
		SessionExpiry: 0, ServerReference: bs("srv2"), ReasonString: bs("bye"), User: []UserProperty{up("k", "v")},
	}}},

	// ───────────────────────── AUTH (5.0 only) ─────────────────────────
	{"auth_v5_success", Version5, []byte{
		0xF0, // AUTH
		0x00, // remaining length 0: Success, no properties
	}, &Auth{}},
	{"auth_v5_continue", Version5, []byte{
		0xF0,                                      // AUTH
		0x1E,                                      // remaining length 30
		0x18,                                      // reason code Continue authentication
		0x1C,                                      // property length 28
		0x15, 0x00, 0x05, 'S', 'C', 'R', 'A', 'M', // Authentication Method "SCRAM"
		0x16, 0x00, 0x03, 'a', 'b', 'c', // Authentication Data "abc"
		0x1F, 0x00, 0x04, 's', 't', 'e', 'p', // Reason String "step"
		0x26, 0x00, 0x01, 'k', 0x00, 0x01, 'v', // User Property "k"="v"
	}, &Auth{ReasonCode: 0x18, Props: Properties{
		Present:    present(PropAuthMethod, PropAuthData, PropReasonString, PropUserProperty),
		AuthMethod: bs("SCRAM"), AuthData: bs("abc"), ReasonString: bs("step"), User: []UserProperty{up("k", "v")},
	}}},
}
