package codec

// SUBSCRIBE (§3.8): packet id (2), [5.0: properties], then one or more
// (filter string, options byte) pairs. Options:
//
//	bits 7..6 reserved | 5..4 retain handling | 3 retain as published | 2 no local | 1..0 QoS
//
// Before 5.0 bits 7..2 are reserved.

func (p *Subscribe) decode(h FixedHeader, body []byte, version byte) error {
	props, subs := p.Props, p.Subscriptions[:0]
	props.Reset()
	*p = Subscribe{Props: props, Subscriptions: subs}
	r := reader{b: body}
	var err error
	if p.PacketID, err = r.u16("packet identifier"); err != nil {
		return err
	}
	if p.PacketID == 0 {
		return Errf(ProtocolError, "MQTT-2.2.1-3", "SUBSCRIBE with packet identifier 0")
	}
	v5 := version == Version5
	if v5 {
		if err := r.props(&p.Props, ctxSubscribe); err != nil {
			return err
		}
	}
	for r.left() > 0 {
		f, err := r.str("topic filter")
		if err != nil {
			return err
		}
		o, err := r.u8("subscription options")
		if err != nil {
			return err
		}
		s := Subscription{Filter: f, QoS: o & 3}
		if v5 {
			s.NoLocal = o&0x04 != 0
			s.RetainAsPublished = o&0x08 != 0
			s.RetainHandling = o >> 4 & 3
			switch {
			case o&0xC0 != 0:
				return Errf(MalformedPacket, "MQTT-3.8.3-5", "reserved subscription option bits set")
			case s.QoS == 3:
				return Errf(ProtocolError, "", "subscription with QoS 3")
			case s.RetainHandling == 3:
				return Errf(ProtocolError, "", "retain handling 3")
			}
		} else if o&0xFC != 0 || s.QoS == 3 {
			// 3.1.1 prints this id as "MQTT-3-8.3-4".
			return Errf(MalformedPacket, "MQTT-3.8.3-4", "reserved subscription option bits set or QoS 3 (options 0x%02X)", o)
		}
		p.Subscriptions = append(p.Subscriptions, s)
	}
	if len(p.Subscriptions) == 0 {
		return Errf(ProtocolError, "MQTT-3.8.3-3", "SUBSCRIBE without a topic filter")
	}
	return nil
}

func (s *Subscription) options(version byte) byte {
	o := s.QoS & 3
	if version == Version5 {
		if s.NoLocal {
			o |= 0x04
		}
		if s.RetainAsPublished {
			o |= 0x08
		}
		o |= (s.RetainHandling & 3) << 4
	}
	return o
}

func (p *Subscribe) bodySize(version byte) (body, props int) {
	body = 2
	if version == Version5 {
		props = p.Props.size(ctxSubscribe)
		body += VarintSize(uint32(props)) + props
	}
	for i := range p.Subscriptions {
		body += binLen(p.Subscriptions[i].Filter) + 1
	}
	return body, props
}

// Size returns the encoded size of p for version, fixed header included.
func (p *Subscribe) Size(version byte) int {
	n, _ := p.bodySize(version)
	return headerSize(n) + n
}

func (p *Subscribe) appendTo(dst []byte, version byte) []byte {
	n, props := p.bodySize(version)
	dst = grow(dst, headerSize(n)+n)
	dst = AppendVarint(append(dst, byte(SUBSCRIBE)<<4|0x02), uint32(n))
	dst = appendU16(dst, p.PacketID)
	if version == Version5 {
		dst = p.Props.appendTo(dst, ctxSubscribe, props)
	}
	for i := range p.Subscriptions {
		s := &p.Subscriptions[i]
		dst = append(appendBin(dst, s.Filter), s.options(version))
	}
	return dst
}

// SUBACK (§3.9): packet id (2), [5.0: properties], one return/reason code
// per filter of the SUBSCRIBE.

func (p *Suback) decode(h FixedHeader, body []byte, version byte) error {
	props, rcs := p.Props, p.ReasonCodes[:0]
	props.Reset()
	*p = Suback{Props: props, ReasonCodes: rcs}
	r := reader{b: body}
	var err error
	if p.PacketID, err = r.u16("packet identifier"); err != nil {
		return err
	}
	set := &subackCodes311
	if version == Version5 {
		set = &subackCodes
		if err := r.props(&p.Props, ctxSuback); err != nil {
			return err
		}
	}
	p.ReasonCodes, err = r.reasonList("SUBACK", set, p.ReasonCodes)
	return err
}

func (p *Suback) bodySize(version byte) (body, props int) {
	body = 2 + len(p.ReasonCodes)
	if version == Version5 {
		props = p.Props.size(ctxSuback)
		body += VarintSize(uint32(props)) + props
	}
	return body, props
}

// Size returns the encoded size of p for version, fixed header included.
func (p *Suback) Size(version byte) int {
	n, _ := p.bodySize(version)
	return headerSize(n) + n
}

// appendTo writes the codes as they are for 5.0; before 5.0 every failure
// code (≥ 0x80) becomes 0x80, the only failure 3.1.1 knows, so the server
// can build one list of 5.0 codes for every client.
func (p *Suback) appendTo(dst []byte, version byte) []byte {
	n, props := p.bodySize(version)
	dst = grow(dst, headerSize(n)+n)
	dst = AppendVarint(append(dst, byte(SUBACK)<<4), uint32(n))
	dst = appendU16(dst, p.PacketID)
	if version == Version5 {
		dst = p.Props.appendTo(dst, ctxSuback, props)
		return appendCodes(dst, p.ReasonCodes)
	}
	for _, c := range p.ReasonCodes {
		if c.IsError() {
			c = UnspecifiedError // 0x80, the only failure 3.1.1 knows
		}
		dst = append(dst, byte(c))
	}
	return dst
}

// UNSUBSCRIBE (§3.10): packet id (2), [5.0: properties], one or more filters.

func (p *Unsubscribe) decode(h FixedHeader, body []byte, version byte) error {
	props, fs := p.Props, p.Filters[:0]
	props.Reset()
	*p = Unsubscribe{Props: props, Filters: fs}
	r := reader{b: body}
	var err error
	if p.PacketID, err = r.u16("packet identifier"); err != nil {
		return err
	}
	if p.PacketID == 0 {
		return Errf(ProtocolError, "MQTT-2.2.1-3", "UNSUBSCRIBE with packet identifier 0")
	}
	if version == Version5 {
		if err := r.props(&p.Props, ctxUnsubscribe); err != nil {
			return err
		}
	}
	for r.left() > 0 {
		f, err := r.str("topic filter")
		if err != nil {
			return err
		}
		p.Filters = append(p.Filters, f)
	}
	if len(p.Filters) == 0 {
		return Errf(ProtocolError, "MQTT-3.10.3-2", "UNSUBSCRIBE without a topic filter")
	}
	return nil
}

func (p *Unsubscribe) bodySize(version byte) (body, props int) {
	body = 2
	if version == Version5 {
		props = p.Props.size(ctxUnsubscribe)
		body += VarintSize(uint32(props)) + props
	}
	for _, f := range p.Filters {
		body += binLen(f)
	}
	return body, props
}

// Size returns the encoded size of p for version, fixed header included.
func (p *Unsubscribe) Size(version byte) int {
	n, _ := p.bodySize(version)
	return headerSize(n) + n
}

func (p *Unsubscribe) appendTo(dst []byte, version byte) []byte {
	n, props := p.bodySize(version)
	dst = grow(dst, headerSize(n)+n)
	dst = AppendVarint(append(dst, byte(UNSUBSCRIBE)<<4|0x02), uint32(n))
	dst = appendU16(dst, p.PacketID)
	if version == Version5 {
		dst = p.Props.appendTo(dst, ctxUnsubscribe, props)
	}
	for _, f := range p.Filters {
		dst = appendBin(dst, f)
	}
	return dst
}

// UNSUBACK (§3.11): packet id (2); 5.0 adds properties and one reason code
// per filter.

func (p *Unsuback) decode(h FixedHeader, body []byte, version byte) error {
	props, rcs := p.Props, p.ReasonCodes[:0]
	props.Reset()
	*p = Unsuback{Props: props, ReasonCodes: rcs}
	r := reader{b: body}
	var err error
	if p.PacketID, err = r.u16("packet identifier"); err != nil {
		return err
	}
	if version != Version5 {
		return r.end("UNSUBACK")
	}
	if err := r.props(&p.Props, ctxUnsuback); err != nil {
		return err
	}
	p.ReasonCodes, err = r.reasonList("UNSUBACK", &unsubackCodes, p.ReasonCodes)
	return err
}

func (p *Unsuback) bodySize(version byte) (body, props int) {
	if version != Version5 {
		return 2, 0
	}
	props = p.Props.size(ctxUnsuback)
	return 2 + VarintSize(uint32(props)) + props + len(p.ReasonCodes), props
}

// Size returns the encoded size of p for version, fixed header included.
func (p *Unsuback) Size(version byte) int {
	n, _ := p.bodySize(version)
	return headerSize(n) + n
}

func (p *Unsuback) appendTo(dst []byte, version byte) []byte {
	n, props := p.bodySize(version)
	dst = grow(dst, headerSize(n)+n)
	dst = AppendVarint(append(dst, byte(UNSUBACK)<<4), uint32(n))
	dst = appendU16(dst, p.PacketID)
	if version == Version5 {
		dst = p.Props.appendTo(dst, ctxUnsuback, props)
		dst = appendCodes(dst, p.ReasonCodes)
	}
	return dst
}

// appendCodes appends one byte per reason code.
func appendCodes(dst []byte, codes []ReasonCode) []byte {
	for _, c := range codes {
		dst = append(dst, byte(c))
	}
	return dst
}
