package codec

// codeSet is a set of reason code bytes.
type codeSet [4]uint64

func codes(cs ...ReasonCode) (s codeSet) {
	for _, c := range cs {
		s[c>>6] |= 1 << (c & 63)
	}
	return s
}

func (s *codeSet) has(c ReasonCode) bool { return s[c>>6]&(1<<(c&63)) != 0 }

// The reason codes each 5.0 packet may carry (§3.x.2.1 of 5.0). A code
// outside its packet's list is treated as a Protocol Error: the spec lists
// them exhaustively and a peer sending another one does not speak 5.0.
var (
	connackCodes = codes(Success, UnspecifiedError, MalformedPacket, ProtocolError,
		ImplementationSpecificError, UnsupportedProtocolVersion, ClientIDNotValid,
		BadUsernameOrPassword, NotAuthorized, ServerUnavailable, ServerBusy, Banned,
		BadAuthenticationMethod, TopicNameInvalid, PacketTooLarge, QuotaExceeded,
		PayloadFormatInvalid, RetainNotSupported, QoSNotSupported, UseAnotherServer,
		ServerMoved, ConnectionRateExceeded)
	pubackCodes = codes(Success, NoMatchingSubscribers, UnspecifiedError,
		ImplementationSpecificError, NotAuthorized, TopicNameInvalid, PacketIDInUse,
		QuotaExceeded, PayloadFormatInvalid)
	pubrelCodes = codes(Success, PacketIDNotFound)
	subackCodes = codes(Success, GrantedQoS1, GrantedQoS2, UnspecifiedError,
		ImplementationSpecificError, NotAuthorized, TopicFilterInvalid, PacketIDInUse,
		QuotaExceeded, SharedSubsNotSupported, SubIDsNotSupported, WildcardSubsNotSupported)
	subackCodes311 = codes(0x00, 0x01, 0x02, 0x80)
	unsubackCodes  = codes(Success, NoSubscriptionExisted, UnspecifiedError,
		ImplementationSpecificError, NotAuthorized, TopicFilterInvalid, PacketIDInUse)
	disconnectCodes = codes(Success, DisconnectWithWill, UnspecifiedError, MalformedPacket,
		ProtocolError, ImplementationSpecificError, NotAuthorized, ServerBusy,
		ServerShuttingDown, KeepAliveTimeout, SessionTakenOver, TopicFilterInvalid,
		TopicNameInvalid, ReceiveMaximumExceeded, TopicAliasInvalid, PacketTooLarge,
		MessageRateTooHigh, QuotaExceeded, AdministrativeAction, PayloadFormatInvalid,
		RetainNotSupported, QoSNotSupported, UseAnotherServer, ServerMoved,
		SharedSubsNotSupported, ConnectionRateExceeded, MaximumConnectTime,
		SubIDsNotSupported, WildcardSubsNotSupported)
	authCodes = codes(Success, ContinueAuthentication, ReAuthenticate)
)

// reasonAndProps reads the 5.0 tail shared by the acks, DISCONNECT and
// AUTH: an optional reason code (from set) and, when bytes remain, a
// property list. A body that ends after the reason code has no property
// length: it is read as no properties (§3.4.2.2.1, §3.14.2.2.1).
func (r *reader) reasonAndProps(what string, set *codeSet, code *ReasonCode, props *Properties, ctx propCtx) error {
	if r.left() == 0 {
		return nil
	}
	*code = ReasonCode(r.b[r.off])
	r.off++
	if !set.has(*code) {
		return errReason(what, *code)
	}
	if r.left() > 0 {
		return r.props(props, ctx)
	}
	return nil
}

// reasonList appends the rest of the body, one reason code per filter of
// the request, to dst after checking each against set; at least one is
// required.
func (r *reader) reasonList(what string, set *codeSet, dst []ReasonCode) ([]ReasonCode, error) {
	rest := r.rest()
	if len(rest) == 0 {
		return dst, Errf(ProtocolError, "", "%s without a reason code", what)
	}
	for _, b := range rest {
		c := ReasonCode(b)
		if !set.has(c) {
			return dst, errReason(what, c)
		}
		dst = append(dst, c)
	}
	return dst, nil
}

func errReason(what string, c ReasonCode) error {
	return Errf(ProtocolError, "", "%s: reason code 0x%02X is not defined for this packet", what, c)
}
