package codec

// DISCONNECT (§3.14): empty before 5.0. In 5.0: reason code (1) and
// properties, both omitted for a Normal disconnection without properties
// (remaining length 0); remaining length 1 means a reason code without
// properties.

func (p *Disconnect) decode(h FixedHeader, body []byte, version byte) error {
	props := p.Props
	props.Reset()
	*p = Disconnect{Props: props}
	r := reader{b: body}
	if version == Version5 {
		if err := r.reasonAndProps("DISCONNECT", &disconnectCodes, &p.ReasonCode, &p.Props, ctxDisconnect); err != nil {
			return err
		}
	}
	return r.end("DISCONNECT")
}

func (p *Disconnect) bodySize(version byte) (body, props int) {
	if version != Version5 {
		return 0, 0
	}
	props = p.Props.size(ctxDisconnect)
	switch {
	case props > 0:
		return 1 + VarintSize(uint32(props)) + props, props
	case p.ReasonCode != 0:
		return 1, 0
	}
	return 0, 0
}

// Size returns the encoded size of p for version, fixed header included.
func (p *Disconnect) Size(version byte) int {
	n, _ := p.bodySize(version)
	return headerSize(n) + n
}

func (p *Disconnect) appendTo(dst []byte, version byte) []byte {
	n, props := p.bodySize(version)
	dst = grow(dst, headerSize(n)+n)
	dst = AppendVarint(append(dst, byte(DISCONNECT)<<4), uint32(n))
	if n > 0 {
		dst = append(dst, byte(p.ReasonCode))
	}
	if props > 0 {
		dst = p.Props.appendTo(dst, ctxDisconnect, props)
	}
	return dst
}

// AUTH (§3.15, 5.0 only): reason code (1) and properties, both omitted for
// Success without properties (remaining length 0).

func (p *Auth) decode(h FixedHeader, body []byte, version byte) error {
	props := p.Props
	props.Reset()
	*p = Auth{Props: props}
	if version != Version5 {
		return Errf(ProtocolError, "", "AUTH is an MQTT 5.0 packet (protocol level %d)", version)
	}
	r := reader{b: body}
	if err := r.reasonAndProps("AUTH", &authCodes, &p.ReasonCode, &p.Props, ctxAuth); err != nil {
		return err
	}
	return r.end("AUTH")
}

func (p *Auth) bodySize() (body, props int) {
	props = p.Props.size(ctxAuth)
	if props == 0 && p.ReasonCode == 0 {
		return 0, 0
	}
	return 1 + VarintSize(uint32(props)) + props, props
}

// Size returns the encoded size of p, fixed header included.
func (p *Auth) Size() int {
	n, _ := p.bodySize()
	return headerSize(n) + n
}

func (p *Auth) appendTo(dst []byte) []byte {
	n, props := p.bodySize()
	dst = grow(dst, headerSize(n)+n)
	dst = AppendVarint(append(dst, byte(AUTH)<<4), uint32(n))
	if n > 0 {
		dst = append(dst, byte(p.ReasonCode))
		dst = p.Props.appendTo(dst, ctxAuth, props)
	}
	return dst
}

// Pingreq is the PINGREQ packet (§3.12); it has no body. It exists so that
// DecodePacket and AppendPacket cover every packet type.
type Pingreq struct{}

// Pingresp is the PINGRESP packet (§3.13); it has no body.
type Pingresp struct{}

// Decode checks that a PINGREQ has no body.
func (*Pingreq) Decode(h FixedHeader, body []byte) error {
	if len(body) != 0 {
		return Errf(MalformedPacket, "", "PINGREQ with a %d-byte body", len(body))
	}
	return nil
}

// Append appends a PINGREQ.
func (*Pingreq) Append(dst []byte) []byte { return AppendPingreq(dst) }

// Decode checks that a PINGRESP has no body.
func (*Pingresp) Decode(h FixedHeader, body []byte) error {
	if len(body) != 0 {
		return Errf(MalformedPacket, "", "PINGRESP with a %d-byte body", len(body))
	}
	return nil
}

// Append appends a PINGRESP.
func (*Pingresp) Append(dst []byte) []byte { return AppendPingresp(dst) }
