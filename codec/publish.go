package codec

// PUBLISH (§3.3): flags DUP|QoS|RETAIN in the fixed header; body: topic
// (string), packet id (2, QoS > 0 only), [5.0: properties], payload (rest).

func (p *Publish) decode(h FixedHeader, body []byte, version byte) error {
	props := p.Props
	props.Reset()
	*p = Publish{Props: props}
	p.QoS = h.Flags >> 1 & 3
	p.Dup = h.Flags&0x08 != 0
	p.Retain = h.Flags&0x01 != 0
	if p.QoS == 3 {
		return Errf(MalformedPacket, "MQTT-3.3.1-4", "PUBLISH with QoS 3")
	}
	if p.Dup && p.QoS == 0 {
		return Errf(MalformedPacket, "MQTT-3.3.1-2", "PUBLISH with DUP set at QoS 0")
	}
	r := reader{b: body}
	var err error
	if p.Topic, err = r.str("topic name"); err != nil {
		return err
	}
	if p.QoS > 0 {
		if p.PacketID, err = r.u16("packet identifier"); err != nil {
			return err
		}
		if p.PacketID == 0 {
			return Errf(ProtocolError, "MQTT-2.2.1-3", "PUBLISH QoS %d with packet identifier 0", p.QoS)
		}
	}
	if version == Version5 {
		if err := r.props(&p.Props, ctxPublish); err != nil {
			return err
		}
	}
	p.Payload = r.rest()
	return nil
}

func (p *Publish) flags() byte {
	f := (p.QoS & 3) << 1
	if p.Dup {
		f |= 0x08
	}
	if p.Retain {
		f |= 0x01
	}
	return f
}

func (p *Publish) bodySize(version byte) (body, props int) {
	body = binLen(p.Topic) + len(p.Payload)
	if p.QoS > 0 {
		body += 2
	}
	if version == Version5 {
		props = p.Props.size(ctxPublish)
		body += VarintSize(uint32(props)) + props
	}
	return body, props
}

// Size returns the encoded size of p for version, fixed header included:
// what the receiver's Maximum Packet Size is compared with.
func (p *Publish) Size(version byte) int {
	n, _ := p.bodySize(version)
	return headerSize(n) + n
}

func (p *Publish) appendTo(dst []byte, version byte) []byte {
	n, props := p.bodySize(version)
	dst = grow(dst, headerSize(n)+n)
	dst = AppendVarint(append(dst, byte(PUBLISH)<<4|p.flags()), uint32(n))
	dst = appendBin(dst, p.Topic)
	if p.QoS > 0 {
		dst = appendU16(dst, p.PacketID)
	}
	if version == Version5 {
		dst = p.Props.appendTo(dst, ctxPublish, props)
	}
	return append(dst, p.Payload...)
}

// PUBACK, PUBREC, PUBREL, PUBCOMP (§3.4–3.7): packet id (2), then in 5.0
// optionally a reason code (1) and optionally properties; a body of 2 bytes
// means Success without properties, 3 bytes a reason code without them.

func ackFlags(t PacketType) byte {
	if t == PUBREL {
		return 0x02
	}
	return 0
}

func (p *Ack) decode(h FixedHeader, body []byte, version byte) error {
	props := p.Props
	props.Reset()
	*p = Ack{Type: h.Type, Props: props}
	if h.Type < PUBACK || h.Type > PUBCOMP {
		return Errf(ProtocolError, "", "packet type %d is not an acknowledgement", h.Type)
	}
	r := reader{b: body}
	var err error
	if p.PacketID, err = r.u16("packet identifier"); err != nil {
		return err
	}
	if version == Version5 {
		set := &pubackCodes
		if h.Type == PUBREL || h.Type == PUBCOMP {
			set = &pubrelCodes
		}
		if err := r.reasonAndProps("acknowledgement", set, &p.ReasonCode, &p.Props, ctxAck); err != nil {
			return err
		}
	}
	return r.end("acknowledgement")
}

func (p *Ack) bodySize(version byte) (body, props int) {
	if version != Version5 {
		return 2, 0
	}
	props = p.Props.size(ctxAck)
	switch {
	case props > 0:
		return 3 + VarintSize(uint32(props)) + props, props
	case p.ReasonCode != 0:
		return 3, 0
	}
	return 2, 0
}

// Size returns the encoded size of p for version, fixed header included.
func (p *Ack) Size(version byte) int {
	n, _ := p.bodySize(version)
	return headerSize(n) + n
}

func (p *Ack) appendTo(dst []byte, version byte) []byte {
	n, props := p.bodySize(version)
	dst = grow(dst, headerSize(n)+n)
	dst = AppendVarint(append(dst, byte(p.Type)<<4|ackFlags(p.Type)), uint32(n))
	dst = appendU16(dst, p.PacketID)
	if n > 2 {
		dst = append(dst, byte(p.ReasonCode))
	}
	if props > 0 {
		dst = p.Props.appendTo(dst, ctxAck, props)
	}
	return dst
}
