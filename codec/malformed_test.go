package codec

import (
	"strings"
	"testing"
)

// malformedPackets is the table of packets every decoder must refuse, with
// the exact reason code and normative statement. The server's hostile-input
// tests can use the same bytes.
type malformedPacket struct {
	name    string
	version byte
	bytes   []byte // whole packet, fixed header included
	code    ReasonCode
	rule    string
}

// cat concatenates byte slices.
func cat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// frame builds a packet: first byte, remaining length, body.
func frame(b0 byte, parts ...[]byte) []byte {
	body := cat(parts...)
	return append(AppendVarint([]byte{b0}, uint32(len(body))), body...)
}

// s16 is a UTF-8 string / binary field: 2-byte length + bytes.
func s16(s string) []byte { return append([]byte{byte(len(s) >> 8), byte(len(s))}, s...) }

// vbi is a property list: VBI length + content.
func vbi(parts ...[]byte) []byte {
	c := cat(parts...)
	return append(AppendVarint(nil, uint32(len(c))), c...)
}

func by(v ...byte) []byte { return v }

var (
	hdr311 = cat(s16("MQTT"), by(4)) // protocol name + level 3.1.1
	hdr5   = cat(s16("MQTT"), by(5)) // protocol name + level 5.0
	ka60   = by(0x00, 0x3C)          // keep alive 60
	noProp = by(0x00)                // property length 0
)

// manyUser builds a PUBLISH property list with n empty user properties.
func manyUser(n int) []byte {
	var c []byte
	for i := 0; i < n; i++ {
		c = append(c, PropUserProperty, 0, 0, 0, 0)
	}
	return vbi(c)
}

// manySubIDs builds a PUBLISH property list with n subscription identifiers.
func manySubIDs(n int) []byte {
	var c []byte
	for i := 0; i < n; i++ {
		c = append(c, PropSubscriptionID, 1)
	}
	return vbi(c)
}

var malformedPackets = []malformedPacket{
	// ── fixed header / framing ──
	{"Reserved_type_0", Version311, by(0x00, 0x00), MalformedPacket, ""},
	{"Remaining_length_5_bytes", Version311, by(0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F), MalformedPacket, ""},
	{"CONNECT_flags_not_0", Version311, by(0x11, 0x00), MalformedPacket, "MQTT-2.2.2-2"},
	{"CONNACK_flags_not_0", Version311, by(0x28, 0x02, 0, 0), MalformedPacket, "MQTT-2.2.2-2"},
	{"PUBACK_flags_not_0", Version311, by(0x41, 0x02, 0, 1), MalformedPacket, "MQTT-2.2.2-2"},
	{"PUBREC_flags_not_0", Version311, by(0x52, 0x02, 0, 1), MalformedPacket, "MQTT-2.2.2-2"},
	{"PUBREL_flags_not_2", Version311, by(0x60, 0x02, 0, 1), MalformedPacket, "MQTT-2.2.2-2"},
	{"PUBCOMP_flags_not_0", Version311, by(0x72, 0x02, 0, 1), MalformedPacket, "MQTT-2.2.2-2"},
	{"SUBSCRIBE_flags_not_2", Version311, by(0x80, 0x06, 0, 1, 0, 1, 'a', 0), MalformedPacket, "MQTT-2.2.2-2"},
	{"SUBACK_flags_not_0", Version311, by(0x91, 0x03, 0, 1, 0), MalformedPacket, "MQTT-2.2.2-2"},
	{"UNSUBSCRIBE_flags_not_2", Version311, by(0xA3, 0x05, 0, 1, 0, 1, 'a'), MalformedPacket, "MQTT-2.2.2-2"},
	{"UNSUBACK_flags_not_0", Version311, by(0xB8, 0x02, 0, 1), MalformedPacket, "MQTT-2.2.2-2"},
	{"PINGREQ_flags_not_0", Version311, by(0xC1, 0x00), MalformedPacket, "MQTT-2.2.2-2"},
	{"PINGRESP_flags_not_0", Version311, by(0xD4, 0x00), MalformedPacket, "MQTT-2.2.2-2"},
	{"DISCONNECT_flags_not_0", Version311, by(0xE1, 0x00), MalformedPacket, "MQTT-2.2.2-2"},
	{"AUTH_flags_not_0", Version5, by(0xF1, 0x00), MalformedPacket, "MQTT-2.2.2-2"},
	{"PINGREQ_with_body", Version311, by(0xC0, 0x01, 0x00), MalformedPacket, ""},

	// ── CONNECT ──
	{"CONNECT_reserved_flag", Version311, frame(0x10, hdr311, by(0x03), ka60, s16("id")), MalformedPacket, "MQTT-3.1.2-3"},
	{"CONNECT_reserved_flag_v5", Version5, frame(0x10, hdr5, by(0x03), ka60, noProp, s16("id")), MalformedPacket, "MQTT-3.1.2-3"},
	{"CONNECT_will_QoS_without_will", Version311, frame(0x10, hdr311, by(0x0A), ka60, s16("id")), MalformedPacket, "MQTT-3.1.2-13"},
	{"CONNECT_will_retain_without_will", Version311, frame(0x10, hdr311, by(0x22), ka60, s16("id")), MalformedPacket, "MQTT-3.1.2-15"},
	{"CONNECT_will_QoS_3", Version311, frame(0x10, hdr311, by(0x1E), ka60, s16("id"), s16("w"), s16("x")), MalformedPacket, "MQTT-3.1.2-14"},
	{"CONNECT_will_QoS_3_v5", Version5, frame(0x10, hdr5, by(0x1E), ka60, noProp, s16("id"), noProp, s16("w"), s16("x")), MalformedPacket, "MQTT-3.1.2-14"},
	{"CONNECT_password_without_username", Version311, frame(0x10, hdr311, by(0x42), ka60, s16("id"), s16("pw")), MalformedPacket, "MQTT-3.1.2-22"},
	{"CONNECT_password_without_username_v31", Version31, frame(0x10, s16("MQIsdp"), by(3, 0x42), ka60, s16("id"), s16("pw")), MalformedPacket, "MQTT-3.1.2-22"},
	{"CONNECT_unknown_protocol_name", Version311, frame(0x10, s16("MQTX"), by(4, 2), ka60, s16("id")), UnsupportedProtocolVersion, "MQTT-3.1.2-1"},
	{"CONNECT_unknown_level", Version311, frame(0x10, s16("MQTT"), by(6, 2), ka60, s16("id")), UnsupportedProtocolVersion, "MQTT-3.1.2-2"},
	{"CONNECT_MQTT_with_level_3", Version311, frame(0x10, s16("MQTT"), by(3, 2), ka60, s16("id")), UnsupportedProtocolVersion, "MQTT-3.1.2-2"},
	{"CONNECT_MQIsdp_with_level_4", Version311, frame(0x10, s16("MQIsdp"), by(4, 2), ka60, s16("id")), UnsupportedProtocolVersion, "MQTT-3.1.2-2"},
	{"CONNECT_protocol_name_invalid_UTF8", Version311, frame(0x10, s16("MQ\xFFT"), by(4, 2), ka60, s16("id")), MalformedPacket, "MQTT-1.5.3-1"},
	{"CONNECT_client_id_U0000", Version311, frame(0x10, hdr311, by(0x02), ka60, s16("i\x00d")), MalformedPacket, "MQTT-1.5.3-2"},
	{"CONNECT_client_id_invalid_UTF8", Version311, frame(0x10, hdr311, by(0x02), ka60, s16("i\xFFd")), MalformedPacket, "MQTT-1.5.3-1"},
	{"CONNECT_client_id_surrogate", Version311, frame(0x10, hdr311, by(0x02), ka60, s16("\xED\xA0\x80")), MalformedPacket, "MQTT-1.5.3-1"},
	{"CONNECT_client_id_overlong_NUL", Version311, frame(0x10, hdr311, by(0x02), ka60, s16("\xC0\x80")), MalformedPacket, "MQTT-1.5.3-1"},
	{"CONNECT_will_topic_U0000", Version311, frame(0x10, hdr311, by(0x06), ka60, s16("id"), s16("a\x00"), s16("x")), MalformedPacket, "MQTT-1.5.3-2"},
	{"CONNECT_username_invalid_UTF8", Version311, frame(0x10, hdr311, by(0x82), ka60, s16("id"), s16("\xFE")), MalformedPacket, "MQTT-1.5.3-1"},
	{"CONNECT_trailing_bytes", Version311, frame(0x10, hdr311, by(0x02), ka60, s16("id"), by(0)), MalformedPacket, ""},
	{"CONNECT_missing_username", Version311, frame(0x10, hdr311, by(0x82), ka60, s16("id")), MalformedPacket, ""},
	{"CONNECT_client_id_overruns", Version311, frame(0x10, hdr311, by(0x02), ka60, by(0x00, 0x09, 'i', 'd')), MalformedPacket, ""},
	{"CONNECT_truncated_header", Version311, frame(0x10, hdr311), MalformedPacket, ""},
	{"CONNECT_v5_property_not_allowed", Version5, frame(0x10, hdr5, by(0x02), ka60, vbi(by(PropTopicAlias, 0, 1)), s16("id")), MalformedPacket, ""},
	{"CONNECT_v5_duplicate_session_expiry", Version5, frame(0x10, hdr5, by(0x02), ka60, vbi(by(PropSessionExpiry, 0, 0, 0, 1, PropSessionExpiry, 0, 0, 0, 2)), s16("id")), ProtocolError, ""},
	{"CONNECT_v5_receive_maximum_0", Version5, frame(0x10, hdr5, by(0x02), ka60, vbi(by(PropReceiveMaximum, 0, 0)), s16("id")), ProtocolError, ""},
	{"CONNECT_v5_maximum_packet_size_0", Version5, frame(0x10, hdr5, by(0x02), ka60, vbi(by(PropMaximumPacketSize, 0, 0, 0, 0)), s16("id")), ProtocolError, ""},
	{"CONNECT_v5_request_problem_info_2", Version5, frame(0x10, hdr5, by(0x02), ka60, vbi(by(PropRequestProblemInfo, 2)), s16("id")), ProtocolError, ""},
	{"CONNECT_v5_request_response_info_2", Version5, frame(0x10, hdr5, by(0x02), ka60, vbi(by(PropRequestResponseInfo, 2)), s16("id")), ProtocolError, ""},
	{"CONNECT_v5_unknown_property", Version5, frame(0x10, hdr5, by(0x02), ka60, vbi(by(0x7F, 0)), s16("id")), MalformedPacket, ""},
	{"CONNECT_v5_unknown_property_0", Version5, frame(0x10, hdr5, by(0x02), ka60, vbi(by(0x00, 0)), s16("id")), MalformedPacket, ""},
	{"CONNECT_v5_property_length_overruns", Version5, frame(0x10, hdr5, by(0x02), ka60, by(0x40, PropSessionExpiry, 0, 0, 0, 1), s16("id")), MalformedPacket, ""},
	{"CONNECT_v5_property_value_overruns", Version5, frame(0x10, hdr5, by(0x02), ka60, vbi(by(PropSessionExpiry, 0, 0)), s16("id")), MalformedPacket, ""},
	{"CONNECT_v5_property_length_5_byte_VBI", Version5, frame(0x10, hdr5, by(0x02), ka60, by(0x80, 0x80, 0x80, 0x80, 0x01)), MalformedPacket, ""},
	{"CONNECT_v5_will_payload_format_2", Version5, frame(0x10, hdr5, by(0x06), ka60, noProp, s16("id"), vbi(by(PropPayloadFormat, 2)), s16("w"), s16("x")), ProtocolError, ""},
	{"CONNECT_v5_will_property_not_allowed", Version5, frame(0x10, hdr5, by(0x06), ka60, noProp, s16("id"), vbi(by(PropSessionExpiry, 0, 0, 0, 1)), s16("w"), s16("x")), MalformedPacket, ""},
	{"CONNECT_v5_will_delay_in_connect_props", Version5, frame(0x10, hdr5, by(0x02), ka60, vbi(by(PropWillDelay, 0, 0, 0, 1)), s16("id")), MalformedPacket, ""},
	{"CONNECT_v5_user_property_key_invalid_UTF8", Version5, frame(0x10, hdr5, by(0x02), ka60, vbi(by(PropUserProperty), s16("\xFF"), s16("v")), s16("id")), MalformedPacket, "MQTT-1.5.3-1"},
	{"CONNECT_v5_auth_data_without_method", Version5, frame(0x10, hdr5, by(0x02), ka60, vbi(by(PropAuthData), s16("x")), s16("id")), ProtocolError, ""},
	{"CONNECT_v5_auth_method_U0000", Version5, frame(0x10, hdr5, by(0x02), ka60, vbi(by(PropAuthMethod), s16("a\x00")), s16("id")), MalformedPacket, "MQTT-1.5.3-2"},

	// ── CONNACK ──
	{"CONNACK_reserved_ack_flags", Version311, by(0x20, 0x02, 0x02, 0x00), MalformedPacket, "MQTT-3.2.2-1"},
	{"CONNACK_return_code_6", Version311, by(0x20, 0x02, 0x00, 0x06), ProtocolError, ""},
	{"CONNACK_session_present_with_refusal", Version311, by(0x20, 0x02, 0x01, 0x05), ProtocolError, "MQTT-3.2.2-4"},
	{"CONNACK_trailing_bytes", Version311, by(0x20, 0x03, 0x00, 0x00, 0x00), MalformedPacket, ""},
	{"CONNACK_v5_undefined_reason", Version5, by(0x20, 0x03, 0x00, 0x05, 0x00), ProtocolError, ""},
	{"CONNACK_v5_session_present_with_refusal", Version5, by(0x20, 0x03, 0x01, 0x87, 0x00), ProtocolError, "MQTT-3.2.2-6"},
	{"CONNACK_v5_maximum_QoS_2", Version5, frame(0x20, by(0, 0), vbi(by(PropMaximumQoS, 2))), ProtocolError, ""},
	{"CONNACK_v5_retain_available_2", Version5, frame(0x20, by(0, 0), vbi(by(PropRetainAvailable, 2))), ProtocolError, ""},
	{"CONNACK_v5_wildcard_available_2", Version5, frame(0x20, by(0, 0), vbi(by(PropWildcardSubAvailable, 2))), ProtocolError, ""},
	{"CONNACK_v5_subid_available_2", Version5, frame(0x20, by(0, 0), vbi(by(PropSubIDAvailable, 2))), ProtocolError, ""},
	{"CONNACK_v5_shared_available_2", Version5, frame(0x20, by(0, 0), vbi(by(PropSharedSubAvailable, 2))), ProtocolError, ""},
	{"CONNACK_v5_missing_property_length", Version5, by(0x20, 0x02, 0x00, 0x00), MalformedPacket, ""},
	{"CONNACK_v5_request_problem_info_not_allowed", Version5, frame(0x20, by(0, 0), vbi(by(PropRequestProblemInfo, 1))), MalformedPacket, ""},

	// ── PUBLISH ──
	{"PUBLISH_QoS3", Version311, frame(0x36, s16("a"), by(0, 1)), MalformedPacket, "MQTT-3.3.1-4"},
	{"PUBLISH_QoS3_v5", Version5, frame(0x36, s16("a"), by(0, 1), noProp), MalformedPacket, "MQTT-3.3.1-4"},
	{"PUBLISH_DUP_at_QoS0", Version311, frame(0x38, s16("a"), by('x')), MalformedPacket, "MQTT-3.3.1-2"},
	{"PUBLISH_QoS1_packet_id_0", Version311, frame(0x32, s16("a"), by(0, 0)), ProtocolError, "MQTT-2.2.1-3"},
	{"PUBLISH_QoS2_packet_id_0_v5", Version5, frame(0x34, s16("a"), by(0, 0), noProp), ProtocolError, "MQTT-2.2.1-3"},
	{"PUBLISH_topic_invalid_UTF8", Version311, frame(0x30, s16("a/\xC3"), by('x')), MalformedPacket, "MQTT-1.5.3-1"},
	{"PUBLISH_topic_U0000", Version311, frame(0x30, s16("a\x00b")), MalformedPacket, "MQTT-1.5.3-2"},
	{"PUBLISH_topic_surrogate", Version5, frame(0x30, s16("\xED\xBF\xBF"), noProp), MalformedPacket, "MQTT-1.5.3-1"},
	{"PUBLISH_topic_overruns", Version311, frame(0x30, by(0x00, 0x10, 'a')), MalformedPacket, ""},
	{"PUBLISH_missing_topic", Version311, by(0x30, 0x01, 0x00), MalformedPacket, ""},
	{"PUBLISH_QoS1_missing_packet_id", Version311, frame(0x32, s16("a"), by(0)), MalformedPacket, ""},
	{"PUBLISH_v5_missing_properties", Version5, frame(0x30, s16("a")), MalformedPacket, ""},
	{"PUBLISH_v5_subscription_id_0", Version5, frame(0x30, s16("a"), vbi(by(PropSubscriptionID, 0))), ProtocolError, ""},
	{"PUBLISH_v5_too_many_subscription_ids", Version5, frame(0x30, s16("a"), manySubIDs(MaxSubscriptionIDs+1)), MalformedPacket, ""},
	{"PUBLISH_v5_too_many_user_properties", Version5, frame(0x30, s16("a"), manyUser(MaxUserProperties+1)), MalformedPacket, ""},
	{"PUBLISH_v5_topic_alias_0", Version5, frame(0x30, s16("a"), vbi(by(PropTopicAlias, 0, 0))), TopicAliasInvalid, "MQTT-3.3.2-8"},
	{"PUBLISH_v5_payload_format_2", Version5, frame(0x30, s16("a"), vbi(by(PropPayloadFormat, 2))), ProtocolError, ""},
	{"PUBLISH_v5_session_expiry_not_allowed", Version5, frame(0x30, s16("a"), vbi(by(PropSessionExpiry, 0, 0, 0, 1))), MalformedPacket, ""},
	{"PUBLISH_v5_duplicate_content_type", Version5, frame(0x30, s16("a"), vbi(by(PropContentType), s16("x"), by(PropContentType), s16("y"))), ProtocolError, ""},
	{"PUBLISH_v5_duplicate_topic_alias", Version5, frame(0x30, s16("a"), vbi(by(PropTopicAlias, 0, 1, PropTopicAlias, 0, 2))), ProtocolError, ""},
	{"PUBLISH_v5_content_type_invalid_UTF8", Version5, frame(0x30, s16("a"), vbi(by(PropContentType), s16("\x80"))), MalformedPacket, "MQTT-1.5.3-1"},
	{"PUBLISH_v5_response_topic_U0000", Version5, frame(0x30, s16("a"), vbi(by(PropResponseTopic), s16("\x00"))), MalformedPacket, "MQTT-1.5.3-2"},
	{"PUBLISH_v5_user_value_U0000", Version5, frame(0x30, s16("a"), vbi(by(PropUserProperty), s16("k"), s16("v\x00"))), MalformedPacket, "MQTT-1.5.3-2"},
	{"PUBLISH_v5_subscription_id_5_byte_VBI", Version5, frame(0x30, s16("a"), vbi(by(PropSubscriptionID, 0x81, 0x81, 0x81, 0x81, 0x01))), MalformedPacket, ""},
	{"PUBLISH_v5_subscription_id_truncated", Version5, frame(0x30, s16("a"), vbi(by(PropSubscriptionID, 0x81))), MalformedPacket, ""},
	{"PUBLISH_v5_user_property_truncated", Version5, frame(0x30, s16("a"), vbi(by(PropUserProperty), s16("k"))), MalformedPacket, ""},

	// ── PUBACK / PUBREC / PUBREL / PUBCOMP ──
	{"PUBACK_trailing_bytes", Version311, by(0x40, 0x03, 0, 1, 0), MalformedPacket, ""},
	{"PUBACK_too_short", Version311, by(0x40, 0x01, 0), MalformedPacket, ""},
	{"PUBREL_trailing_bytes", Version311, by(0x62, 0x04, 0, 1, 0, 0), MalformedPacket, ""},
	{"PUBACK_v5_reason_not_for_puback", Version5, by(0x40, 0x03, 0, 1, 0x92), ProtocolError, ""},
	{"PUBREL_v5_reason_not_for_pubrel", Version5, by(0x62, 0x03, 0, 1, 0x10), ProtocolError, ""},
	{"PUBCOMP_v5_reason_not_for_pubcomp", Version5, by(0x70, 0x03, 0, 1, 0x80), ProtocolError, ""},
	{"PUBACK_v5_property_not_allowed", Version5, frame(0x40, by(0, 1, 0), vbi(by(PropContentType), s16("x"))), MalformedPacket, ""},
	{"PUBREC_v5_property_length_overruns", Version5, by(0x50, 0x04, 0, 1, 0, 0x05), MalformedPacket, ""},
	{"PUBACK_v5_duplicate_reason_string", Version5, frame(0x40, by(0, 1, 0), vbi(by(PropReasonString), s16("a"), by(PropReasonString), s16("b"))), ProtocolError, ""},

	// ── SUBSCRIBE ──
	{"SUBSCRIBE_no_filters", Version311, by(0x82, 0x02, 0, 1), ProtocolError, "MQTT-3.8.3-3"},
	{"SUBSCRIBE_no_filters_v5", Version5, by(0x82, 0x03, 0, 1, 0), ProtocolError, "MQTT-3.8.3-3"},
	{"SUBSCRIBE_reserved_option_bits", Version311, frame(0x82, by(0, 1), s16("a"), by(0x04)), MalformedPacket, "MQTT-3.8.3-4"},
	{"SUBSCRIBE_QoS3", Version311, frame(0x82, by(0, 1), s16("a"), by(0x03)), MalformedPacket, "MQTT-3.8.3-4"},
	{"SUBSCRIBE_v5_reserved_bits_6_7", Version5, frame(0x82, by(0, 1), noProp, s16("a"), by(0x40)), MalformedPacket, "MQTT-3.8.3-5"},
	{"SUBSCRIBE_v5_QoS3", Version5, frame(0x82, by(0, 1), noProp, s16("a"), by(0x03)), ProtocolError, ""},
	{"SUBSCRIBE_v5_retain_handling_3", Version5, frame(0x82, by(0, 1), noProp, s16("a"), by(0x30)), ProtocolError, ""},
	{"SUBSCRIBE_packet_id_0", Version311, frame(0x82, by(0, 0), s16("a"), by(0)), ProtocolError, "MQTT-2.2.1-3"},
	{"SUBSCRIBE_filter_U0000", Version311, frame(0x82, by(0, 1), s16("a\x00"), by(0)), MalformedPacket, "MQTT-1.5.3-2"},
	{"SUBSCRIBE_filter_invalid_UTF8", Version5, frame(0x82, by(0, 1), noProp, s16("\xF8"), by(0)), MalformedPacket, "MQTT-1.5.3-1"},
	{"SUBSCRIBE_missing_options", Version311, frame(0x82, by(0, 1), s16("a")), MalformedPacket, ""},
	{"SUBSCRIBE_v5_two_subscription_ids", Version5, frame(0x82, by(0, 1), vbi(by(PropSubscriptionID, 1, PropSubscriptionID, 2)), s16("a"), by(0)), ProtocolError, ""},
	{"SUBSCRIBE_v5_subscription_id_0", Version5, frame(0x82, by(0, 1), vbi(by(PropSubscriptionID, 0)), s16("a"), by(0)), ProtocolError, ""},
	{"SUBSCRIBE_v5_reason_string_not_allowed", Version5, frame(0x82, by(0, 1), vbi(by(PropReasonString), s16("x")), s16("a"), by(0)), MalformedPacket, ""},

	// ── SUBACK ──
	{"SUBACK_code_0x87_before_v5", Version311, by(0x90, 0x03, 0, 1, 0x87), ProtocolError, ""},
	{"SUBACK_no_codes", Version311, by(0x90, 0x02, 0, 1), ProtocolError, ""},
	{"SUBACK_v5_undefined_code", Version5, by(0x90, 0x04, 0, 1, 0, 0x03), ProtocolError, ""},

	// ── UNSUBSCRIBE ──
	{"UNSUBSCRIBE_no_filters", Version311, by(0xA2, 0x02, 0, 1), ProtocolError, "MQTT-3.10.3-2"},
	{"UNSUBSCRIBE_no_filters_v5", Version5, by(0xA2, 0x03, 0, 1, 0), ProtocolError, "MQTT-3.10.3-2"},
	{"UNSUBSCRIBE_packet_id_0", Version311, frame(0xA2, by(0, 0), s16("a")), ProtocolError, "MQTT-2.2.1-3"},
	{"UNSUBSCRIBE_filter_invalid_UTF8", Version311, frame(0xA2, by(0, 1), s16("\xC0\xAF")), MalformedPacket, "MQTT-1.5.3-1"},
	{"UNSUBSCRIBE_filter_overruns", Version311, frame(0xA2, by(0, 1), by(0, 5, 'a')), MalformedPacket, ""},
	{"UNSUBSCRIBE_v5_subscription_id_not_allowed", Version5, frame(0xA2, by(0, 1), vbi(by(PropSubscriptionID, 1)), s16("a")), MalformedPacket, ""},

	// ── UNSUBACK ──
	{"UNSUBACK_payload_before_v5", Version311, by(0xB0, 0x03, 0, 1, 0), MalformedPacket, ""},
	{"UNSUBACK_v5_undefined_code", Version5, by(0xB0, 0x04, 0, 1, 0, 0x01), ProtocolError, ""},
	{"UNSUBACK_v5_no_codes", Version5, by(0xB0, 0x03, 0, 1, 0), ProtocolError, ""},

	// ── DISCONNECT ──
	{"DISCONNECT_body_before_v5", Version311, by(0xE0, 0x01, 0x00), MalformedPacket, ""},
	{"DISCONNECT_v5_undefined_reason", Version5, by(0xE0, 0x01, 0x01), ProtocolError, ""},
	{"DISCONNECT_v5_duplicate_session_expiry", Version5, frame(0xE0, by(0), vbi(by(PropSessionExpiry, 0, 0, 0, 1, PropSessionExpiry, 0, 0, 0, 1))), ProtocolError, ""},
	{"DISCONNECT_v5_trailing_bytes", Version5, frame(0xE0, by(0), noProp, by(0)), MalformedPacket, ""},

	// ── AUTH ──
	{"AUTH_before_v5", Version311, by(0xF0, 0x00), ProtocolError, ""},
	{"AUTH_v5_undefined_reason", Version5, by(0xF0, 0x01, 0x01), ProtocolError, ""},
	{"AUTH_v5_auth_data_without_method", Version5, frame(0xF0, by(0x18), vbi(by(PropAuthData), s16("x"))), ProtocolError, ""},
	{"AUTH_v5_property_not_allowed", Version5, frame(0xF0, by(0x18), vbi(by(PropTopicAlias, 0, 1))), MalformedPacket, ""},
}

// testName turns an entry into a subtest name that carries the rule id,
// e.g. "PUBLISH_QoS3_MQTT_3_3_1_4".
func (m malformedPacket) testName() string {
	if m.rule == "" {
		return m.name
	}
	return m.name + "_" + strings.NewReplacer("-", "_", ".", "_").Replace(m.rule)
}

func TestMalformed(t *testing.T) {
	for _, m := range malformedPackets {
		t.Run(m.testName(), func(t *testing.T) {
			_, err := decodeWhole(m.bytes, m.version)
			e := asError(err)
			if e == nil {
				t.Fatalf("got %v, want *Error code 0x%02X rule %q", err, byte(m.code), m.rule)
			}
			if e.Code != m.code || e.Rule != m.rule {
				t.Fatalf("got code 0x%02X rule %q (%v), want code 0x%02X rule %q", byte(e.Code), e.Rule, e, byte(m.code), m.rule)
			}
		})
	}
}

// The tests below name the most important statements explicitly.

func TestPublish_QoS3_MQTT_3_3_1_4(t *testing.T) {
	var p Publish
	err := p.Decode(FixedHeader{Type: PUBLISH, Flags: 0x06}, s16("a"), Version311)
	if e := asError(err); e == nil || e.Rule != "MQTT-3.3.1-4" || e.Code != MalformedPacket {
		t.Fatalf("got %v", err)
	}
}

func TestReadPacket_ReservedFlags_MQTT_2_2_2_2(t *testing.T) {
	for typ := CONNECT; typ <= AUTH; typ++ {
		want := byte(0)
		if typ == PUBREL || typ == SUBSCRIBE || typ == UNSUBSCRIBE {
			want = 2
		}
		for flags := byte(0); flags < 16; flags++ {
			_, _, _, err := ReadPacket([]byte{byte(typ)<<4 | flags, 0}, 0)
			bad := typ != PUBLISH && flags != want
			if e := asError(err); bad != (e != nil && e.Rule == "MQTT-2.2.2-2") {
				t.Errorf("type %d flags %X: %v", typ, flags, err)
			}
		}
	}
}

func TestReadPacket_PacketTooLarge(t *testing.T) {
	// Only the fixed header is there: the size is refused before the body arrives.
	hdr := []byte{0x30, 0x80, 0x80, 0x40} // PUBLISH, remaining length 1 MiB
	_, _, _, err := ReadPacket(hdr, 1<<20)
	if e := asError(err); e == nil || e.Code != PacketTooLarge {
		t.Fatalf("got %v, want PacketTooLarge", err)
	}
	// The limit is on the whole packet: 4 header bytes + body.
	pkt := frame(0x30, s16("t"), make([]byte, 10)) // 2 + 13 bytes
	if _, _, _, err := ReadPacket(pkt, len(pkt)); err != nil {
		t.Fatalf("packet of exactly the limit: %v", err)
	}
	if _, _, _, err := ReadPacket(pkt, len(pkt)-1); asError(err) == nil || asError(err).Code != PacketTooLarge {
		t.Fatalf("packet one byte over the limit: %v", err)
	}
	// A fifth remaining-length byte is malformed as soon as the fourth has its continuation bit.
	if _, _, _, err := ReadPacket([]byte{0x30, 0xFF, 0xFF, 0xFF, 0xFF}, 0); asError(err) == nil || asError(err).Code != MalformedPacket {
		t.Fatalf("5-byte remaining length: %v", err)
	}
	// Largest legal remaining length, partial: incomplete, not malformed.
	if _, _, _, err := ReadPacket([]byte{0x30, 0xFF, 0xFF, 0xFF, 0x7F}, 0); err != ErrIncomplete {
		t.Fatalf("max remaining length: %v", err)
	}
}

func TestValidUTF8_MQTT_1_5_3(t *testing.T) {
	cases := []struct {
		in   string
		rule string
	}{
		{"", ""},
		{"a/b/c", ""},
		{"héllo wörld ✓ 🚀", ""},
		{"\uFEFF", ""},                   // BOM is allowed (and must not be stripped) [MQTT-1.5.3-3]
		{"\x00", "MQTT-1.5.3-2"},         // U+0000
		{"abc\x00", "MQTT-1.5.3-2"},      // U+0000 at the end
		{"\xED\xA0\x80", "MQTT-1.5.3-1"}, // U+D800, a surrogate
		{"\xED\xBF\xBF", "MQTT-1.5.3-1"}, // U+DFFF
		{"\xC0\x80", "MQTT-1.5.3-1"},     // overlong U+0000
		{"\xFF", "MQTT-1.5.3-1"},
		{"\xE2\x82", "MQTT-1.5.3-1"},         // truncated sequence
		{"\xF4\x90\x80\x80", "MQTT-1.5.3-1"}, // above U+10FFFF
	}
	for _, c := range cases {
		err := ValidUTF8([]byte(c.in))
		if c.rule == "" {
			if err != nil {
				t.Errorf("%q: %v", c.in, err)
			}
			continue
		}
		if e := asError(err); e == nil || e.Rule != c.rule || e.Code != MalformedPacket {
			t.Errorf("%q: got %v, want rule %s", c.in, err, c.rule)
		}
	}
}
