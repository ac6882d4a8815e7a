package codec

import (
	"errors"
	"fmt"
)

// ReasonCode is an MQTT 5.0 reason code (§2.4). The same numbers name the
// reasons a connection is refused or closed for 3.1.1 clients; see
// ConnackReturnCode311 for the mapping onto 3.1.1 CONNACK return codes.
type ReasonCode byte

// IsError reports whether c says something failed (0x80 and above), as
// opposed to a success or granted QoS [MQTT-2.4].
func (c ReasonCode) IsError() bool { return c >= 0x80 }

// CodeOf is the one place an error becomes a reason code on the wire: the
// Code of an *Error (or of any error wrapping one) when it is a failure,
// else def.
func CodeOf(err error, def ReasonCode) ReasonCode {
	var e *Error
	if errors.As(err, &e) && e.Code.IsError() {
		return e.Code
	}
	return def
}

// Reason codes (§2.4, Table 2-6).
const (
	Success                     ReasonCode = 0x00 // also Normal disconnection, Granted QoS 0
	GrantedQoS1                 ReasonCode = 0x01
	GrantedQoS2                 ReasonCode = 0x02
	DisconnectWithWill          ReasonCode = 0x04
	NoMatchingSubscribers       ReasonCode = 0x10
	NoSubscriptionExisted       ReasonCode = 0x11
	ContinueAuthentication      ReasonCode = 0x18
	ReAuthenticate              ReasonCode = 0x19
	UnspecifiedError            ReasonCode = 0x80
	MalformedPacket             ReasonCode = 0x81
	ProtocolError               ReasonCode = 0x82
	ImplementationSpecificError ReasonCode = 0x83
	UnsupportedProtocolVersion  ReasonCode = 0x84
	ClientIDNotValid            ReasonCode = 0x85
	BadUsernameOrPassword       ReasonCode = 0x86
	NotAuthorized               ReasonCode = 0x87
	ServerUnavailable           ReasonCode = 0x88
	ServerBusy                  ReasonCode = 0x89
	Banned                      ReasonCode = 0x8A
	ServerShuttingDown          ReasonCode = 0x8B
	BadAuthenticationMethod     ReasonCode = 0x8C
	KeepAliveTimeout            ReasonCode = 0x8D
	SessionTakenOver            ReasonCode = 0x8E
	TopicFilterInvalid          ReasonCode = 0x8F
	TopicNameInvalid            ReasonCode = 0x90
	PacketIDInUse               ReasonCode = 0x91
	PacketIDNotFound            ReasonCode = 0x92
	ReceiveMaximumExceeded      ReasonCode = 0x93
	TopicAliasInvalid           ReasonCode = 0x94
	PacketTooLarge              ReasonCode = 0x95
	MessageRateTooHigh          ReasonCode = 0x96
	QuotaExceeded               ReasonCode = 0x97
	AdministrativeAction        ReasonCode = 0x98
	PayloadFormatInvalid        ReasonCode = 0x99
	RetainNotSupported          ReasonCode = 0x9A
	QoSNotSupported             ReasonCode = 0x9B
	UseAnotherServer            ReasonCode = 0x9C
	ServerMoved                 ReasonCode = 0x9D
	SharedSubsNotSupported      ReasonCode = 0x9E
	ConnectionRateExceeded      ReasonCode = 0x9F
	MaximumConnectTime          ReasonCode = 0xA0
	SubIDsNotSupported          ReasonCode = 0xA1
	WildcardSubsNotSupported    ReasonCode = 0xA2
)

// 3.1.1 CONNACK return codes (§3.2.2.3 of 3.1.1).
const (
	ConnAccepted311             ReasonCode = 0
	ConnRefusedVersion311       ReasonCode = 1
	ConnRefusedIdentifier311    ReasonCode = 2
	ConnRefusedUnavailable311   ReasonCode = 3
	ConnRefusedBadUserPass311   ReasonCode = 4
	ConnRefusedNotAuthorized311 ReasonCode = 5
)

// ConnackReturnCode311 maps a 5.0 reason code to the closest 3.1.1 CONNACK return code.
func ConnackReturnCode311(rc ReasonCode) ReasonCode {
	switch rc {
	case Success:
		return ConnAccepted311
	case UnsupportedProtocolVersion:
		return ConnRefusedVersion311
	case ClientIDNotValid:
		return ConnRefusedIdentifier311
	case BadUsernameOrPassword, BadAuthenticationMethod:
		return ConnRefusedBadUserPass311
	case NotAuthorized, Banned:
		return ConnRefusedNotAuthorized311
	default:
		return ConnRefusedUnavailable311
	}
}

// Error is a protocol violation found while decoding: Code is the reason a
// 5.0 peer is told (MalformedPacket, ProtocolError, PacketTooLarge, …), Rule
// the normative statement broken (e.g. "MQTT-3.3.1-4"), if one applies.
type Error struct {
	Code ReasonCode
	Rule string
	Msg  string
}

func (e *Error) Error() string {
	if e.Rule != "" {
		return fmt.Sprintf("%s [%s] (reason 0x%02X)", e.Msg, e.Rule, byte(e.Code))
	}
	return fmt.Sprintf("%s (reason 0x%02X)", e.Msg, byte(e.Code))
}

// Errf builds an *Error.
func Errf(code ReasonCode, rule, format string, args ...any) *Error {
	return &Error{Code: code, Rule: rule, Msg: fmt.Sprintf(format, args...)}
}
