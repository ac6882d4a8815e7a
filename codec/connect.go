package codec

// CONNECT (§3.1):
//
//	variable header: protocol name (string "MQTT" / "MQIsdp"), level (1),
//	                 flags (1), keep alive (2), [5.0: properties]
//	flags:  7 username | 6 password | 5 will retain | 4..3 will QoS |
//	        2 will flag | 1 clean start | 0 reserved (0) [MQTT-3.1.2-3]
//	payload: client id, [will: [5.0: will properties] will topic, will payload],
//	         [username], [password]

const (
	connReserved   = 0x01
	connClean      = 0x02
	connWill       = 0x04
	connWillRetain = 0x20
	connPassword   = 0x40
	connUsername   = 0x80
)

func (p *Connect) decode(h FixedHeader, body []byte) error {
	props, willProps := p.Props, p.WillProps
	props.Reset()
	willProps.Reset()
	*p = Connect{Props: props, WillProps: willProps}

	r := reader{b: body}
	name, err := r.str("protocol name")
	if err != nil {
		return err
	}
	p.ProtocolName = name
	if p.ProtocolVersion, err = r.u8("protocol level"); err != nil {
		return err
	}
	switch v := p.ProtocolVersion; {
	case v == Version31 && string(name) == "MQIsdp":
	case (v == Version311 || v == Version5) && string(name) == "MQTT":
	case string(name) != "MQTT" && string(name) != "MQIsdp":
		return Errf(UnsupportedProtocolVersion, "MQTT-3.1.2-1", "unknown protocol name %q", name)
	default:
		return Errf(UnsupportedProtocolVersion, "MQTT-3.1.2-2", "unsupported protocol level %d for %q", v, name)
	}
	v5 := p.ProtocolVersion == Version5

	flags, err := r.u8("connect flags")
	if err != nil {
		return err
	}
	if flags&connReserved != 0 {
		return Errf(MalformedPacket, "MQTT-3.1.2-3", "reserved connect flag set")
	}
	p.CleanStart = flags&connClean != 0
	p.WillFlag = flags&connWill != 0
	p.WillQoS = flags >> 3 & 3
	p.WillRetain = flags&connWillRetain != 0
	p.PasswordFlag = flags&connPassword != 0
	p.UsernameFlag = flags&connUsername != 0
	switch {
	case !p.WillFlag && p.WillQoS != 0:
		return Errf(MalformedPacket, "MQTT-3.1.2-13", "will QoS %d without will flag", p.WillQoS)
	case !p.WillFlag && p.WillRetain:
		return Errf(MalformedPacket, "MQTT-3.1.2-15", "will retain without will flag")
	case p.WillQoS == 3:
		return Errf(MalformedPacket, "MQTT-3.1.2-14", "will QoS 3")
	case !v5 && p.PasswordFlag && !p.UsernameFlag:
		// 5.0 allows a password without a username; 3.1.1 does not.
		return Errf(MalformedPacket, "MQTT-3.1.2-22", "password flag without username flag")
	}
	if p.KeepAlive, err = r.u16("keep alive"); err != nil {
		return err
	}
	if v5 {
		if err := r.props(&p.Props, ctxConnect); err != nil {
			return err
		}
	}
	if p.ClientID, err = r.str("client identifier"); err != nil {
		return err
	}
	if p.WillFlag {
		if v5 {
			if err := r.props(&p.WillProps, ctxWill); err != nil {
				return err
			}
		}
		if p.WillTopic, err = r.str("will topic"); err != nil {
			return err
		}
		if p.WillPayload, err = r.bin("will payload"); err != nil {
			return err
		}
	}
	if p.UsernameFlag {
		if p.Username, err = r.str("user name"); err != nil {
			return err
		}
	}
	if p.PasswordFlag {
		if p.Password, err = r.bin("password"); err != nil {
			return err
		}
	}
	return r.end("CONNECT")
}

// protocolName is the name written for p: ProtocolName if set, otherwise
// the name that goes with ProtocolVersion.
func (p *Connect) protocolName() []byte {
	if p.ProtocolName != nil {
		return p.ProtocolName
	}
	if p.ProtocolVersion == Version31 {
		return nameMQIsdp
	}
	return nameMQTT
}

var (
	nameMQTT   = []byte("MQTT")
	nameMQIsdp = []byte("MQIsdp")
)

func (p *Connect) bodySize() (body, props, willProps int) {
	v5 := p.ProtocolVersion == Version5
	body = binLen(p.protocolName()) + 1 + 1 + 2 + binLen(p.ClientID)
	if v5 {
		props = p.Props.size(ctxConnect)
		body += VarintSize(uint32(props)) + props
	}
	if p.WillFlag {
		if v5 {
			willProps = p.WillProps.size(ctxWill)
			body += VarintSize(uint32(willProps)) + willProps
		}
		body += binLen(p.WillTopic) + binLen(p.WillPayload)
	}
	if p.UsernameFlag {
		body += binLen(p.Username)
	}
	if p.PasswordFlag {
		body += binLen(p.Password)
	}
	return body, props, willProps
}

// Size returns the encoded size of p, fixed header included.
func (p *Connect) Size() int {
	n, _, _ := p.bodySize()
	return headerSize(n) + n
}

func (p *Connect) appendTo(dst []byte) []byte {
	n, props, willProps := p.bodySize()
	dst = grow(dst, headerSize(n)+n)
	dst = AppendVarint(append(dst, byte(CONNECT)<<4), uint32(n))
	dst = appendBin(dst, p.protocolName())
	var flags byte
	if p.CleanStart {
		flags |= connClean
	}
	if p.WillFlag {
		flags |= connWill | (p.WillQoS&3)<<3
		if p.WillRetain {
			flags |= connWillRetain
		}
	}
	if p.PasswordFlag {
		flags |= connPassword
	}
	if p.UsernameFlag {
		flags |= connUsername
	}
	dst = append(dst, p.ProtocolVersion, flags)
	dst = appendU16(dst, p.KeepAlive)
	v5 := p.ProtocolVersion == Version5
	if v5 {
		dst = p.Props.appendTo(dst, ctxConnect, props)
	}
	dst = appendBin(dst, p.ClientID)
	if p.WillFlag {
		if v5 {
			dst = p.WillProps.appendTo(dst, ctxWill, willProps)
		}
		dst = appendBin(dst, p.WillTopic)
		dst = appendBin(dst, p.WillPayload)
	}
	if p.UsernameFlag {
		dst = appendBin(dst, p.Username)
	}
	if p.PasswordFlag {
		dst = appendBin(dst, p.Password)
	}
	return dst
}

// CONNACK (§3.2): ack flags (1: bit 0 session present, bits 7..1 reserved),
// return/reason code (1), [5.0: properties].

func (p *Connack) decode(h FixedHeader, body []byte, version byte) error {
	props := p.Props
	props.Reset()
	*p = Connack{Props: props}
	r := reader{b: body}
	flags, err := r.u8("connack flags")
	if err != nil {
		return err
	}
	if flags&0xFE != 0 {
		return Errf(MalformedPacket, "MQTT-3.2.2-1", "reserved connack flags set")
	}
	p.SessionPresent = flags&1 != 0
	rc, err := r.u8("connack reason code")
	if err != nil {
		return err
	}
	p.ReasonCode = ReasonCode(rc)
	if version == Version5 {
		if !connackCodes.has(p.ReasonCode) {
			return errReason("CONNACK", p.ReasonCode)
		}
		if p.SessionPresent && p.ReasonCode.IsError() {
			return Errf(ProtocolError, "MQTT-3.2.2-6", "session present with a refusal reason code")
		}
		if err := r.props(&p.Props, ctxConnack); err != nil {
			return err
		}
	} else {
		if p.ReasonCode > ConnRefusedNotAuthorized311 {
			return Errf(ProtocolError, "", "CONNACK: return code %d is reserved", p.ReasonCode)
		}
		if p.SessionPresent && p.ReasonCode != ConnAccepted311 {
			return Errf(ProtocolError, "MQTT-3.2.2-4", "session present with a non-zero return code")
		}
	}
	return r.end("CONNACK")
}

func (p *Connack) bodySize(version byte) (body, props int) {
	body = 2
	if version == Version5 {
		props = p.Props.size(ctxConnack)
		body += VarintSize(uint32(props)) + props
	}
	return body, props
}

// Size returns the encoded size of p for version, fixed header included.
func (p *Connack) Size(version byte) int {
	n, _ := p.bodySize(version)
	return headerSize(n) + n
}

func (p *Connack) appendTo(dst []byte, version byte) []byte {
	n, props := p.bodySize(version)
	dst = grow(dst, headerSize(n)+n)
	dst = AppendVarint(append(dst, byte(CONNACK)<<4), uint32(n))
	var flags byte
	if p.SessionPresent {
		flags = 1
	}
	dst = append(dst, flags, byte(p.ReasonCode))
	if version == Version5 {
		dst = p.Props.appendTo(dst, ctxConnack, props)
	}
	return dst
}
