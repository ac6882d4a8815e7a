package codec

import "math/bits"

// propCtx names the property list being decoded or encoded: each packet
// type (and the will properties of CONNECT) allows its own set (§2.2.2.2).
type propCtx uint8

const (
	ctxConnect propCtx = iota
	ctxConnack
	ctxPublish
	ctxWill // will properties in the CONNECT payload
	ctxAck  // PUBACK, PUBREC, PUBREL, PUBCOMP
	ctxSubscribe
	ctxSuback
	ctxUnsubscribe
	ctxUnsuback
	ctxDisconnect
	ctxAuth
	numCtx
)

// Value types of properties (§2.2.2.2).
const (
	kindByte   = iota + 1 // one byte
	kindU16               // two-byte integer
	kindU32               // four-byte integer
	kindVarint            // variable byte integer
	kindString            // UTF-8 string
	kindBinary            // binary data
	kindPair              // UTF-8 string pair
)

const maxPropID = PropSharedSubAvailable

// propSpec says, per identifier, the value type, where the property may
// appear (bit i = propCtx i) and its name for error messages.
var propSpec = [maxPropID + 1]struct {
	kind byte
	ctx  uint16
	name string
}{
	PropPayloadFormat:        {kindByte, ctxs(ctxPublish, ctxWill), "Payload Format Indicator"},
	PropMessageExpiry:        {kindU32, ctxs(ctxPublish, ctxWill), "Message Expiry Interval"},
	PropContentType:          {kindString, ctxs(ctxPublish, ctxWill), "Content Type"},
	PropResponseTopic:        {kindString, ctxs(ctxPublish, ctxWill), "Response Topic"},
	PropCorrelationData:      {kindBinary, ctxs(ctxPublish, ctxWill), "Correlation Data"},
	PropSubscriptionID:       {kindVarint, ctxs(ctxPublish, ctxSubscribe), "Subscription Identifier"},
	PropSessionExpiry:        {kindU32, ctxs(ctxConnect, ctxConnack, ctxDisconnect), "Session Expiry Interval"},
	PropAssignedClientID:     {kindString, ctxs(ctxConnack), "Assigned Client Identifier"},
	PropServerKeepAlive:      {kindU16, ctxs(ctxConnack), "Server Keep Alive"},
	PropAuthMethod:           {kindString, ctxs(ctxConnect, ctxConnack, ctxAuth), "Authentication Method"},
	PropAuthData:             {kindBinary, ctxs(ctxConnect, ctxConnack, ctxAuth), "Authentication Data"},
	PropRequestProblemInfo:   {kindByte, ctxs(ctxConnect), "Request Problem Information"},
	PropWillDelay:            {kindU32, ctxs(ctxWill), "Will Delay Interval"},
	PropRequestResponseInfo:  {kindByte, ctxs(ctxConnect), "Request Response Information"},
	PropResponseInfo:         {kindString, ctxs(ctxConnack), "Response Information"},
	PropServerReference:      {kindString, ctxs(ctxConnack, ctxDisconnect), "Server Reference"},
	PropReasonString:         {kindString, ctxs(ctxConnack, ctxAck, ctxSuback, ctxUnsuback, ctxDisconnect, ctxAuth), "Reason String"},
	PropReceiveMaximum:       {kindU16, ctxs(ctxConnect, ctxConnack), "Receive Maximum"},
	PropTopicAliasMaximum:    {kindU16, ctxs(ctxConnect, ctxConnack), "Topic Alias Maximum"},
	PropTopicAlias:           {kindU16, ctxs(ctxPublish), "Topic Alias"},
	PropMaximumQoS:           {kindByte, ctxs(ctxConnack), "Maximum QoS"},
	PropRetainAvailable:      {kindByte, ctxs(ctxConnack), "Retain Available"},
	PropUserProperty:         {kindPair, 1<<numCtx - 1, "User Property"},
	PropMaximumPacketSize:    {kindU32, ctxs(ctxConnect, ctxConnack), "Maximum Packet Size"},
	PropWildcardSubAvailable: {kindByte, ctxs(ctxConnack), "Wildcard Subscription Available"},
	PropSubIDAvailable:       {kindByte, ctxs(ctxConnack), "Subscription Identifier Available"},
	PropSharedSubAvailable:   {kindByte, ctxs(ctxConnack), "Shared Subscription Available"},
}

func ctxs(cs ...propCtx) uint16 {
	var m uint16
	for _, c := range cs {
		m |= 1 << c
	}
	return m
}

// propAllowed[ctx] has bit id set when property id may appear in ctx.
var propAllowed = func() (m [numCtx]uint64) {
	for id, s := range propSpec {
		for c := propCtx(0); c < numCtx; c++ {
			if s.ctx&(1<<c) != 0 {
				m[c] |= 1 << id
			}
		}
	}
	return m
}()

const (
	bitUser  = uint64(1) << PropUserProperty
	bitSubID = uint64(1) << PropSubscriptionID
)

// decode parses the property list b (without its length prefix) for ctx,
// replacing p's content.
func (p *Properties) decode(b []byte, ctx propCtx) error {
	p.Reset()
	allowed := propAllowed[ctx]
	r := reader{b: b}
	for r.off < len(b) {
		// The identifier is a VBI, but every defined identifier is < 128,
		// so a byte with bit 7 set can only start an unknown one.
		id := b[r.off]
		r.off++
		if id > maxPropID || propSpec[id].kind == 0 {
			return Errf(MalformedPacket, "", "unknown property identifier 0x%02X", id)
		}
		spec := &propSpec[id]
		if allowed&(1<<id) == 0 {
			return Errf(MalformedPacket, "", "property %s (0x%02X) is not allowed in this packet", spec.name, id)
		}
		multi := id == PropUserProperty || (id == PropSubscriptionID && ctx == ctxPublish)
		if !multi && p.Has(id) {
			return Errf(ProtocolError, "", "property %s (0x%02X) included more than once", spec.name, id)
		}
		p.Set(id)
		var (
			v8  byte
			v16 uint16
			v32 uint32
			s   []byte
			err error
		)
		switch spec.kind {
		case kindByte:
			v8, err = r.u8(spec.name)
		case kindU16:
			v16, err = r.u16(spec.name)
		case kindU32:
			v32, err = r.u32(spec.name)
		case kindVarint:
			v32, err = r.varint(spec.name)
		case kindString:
			s, err = r.str(spec.name)
		case kindBinary:
			s, err = r.bin(spec.name)
		case kindPair:
			err = p.decodeUser(&r)
		}
		if err != nil {
			return err
		}
		if err := p.store(id, v8, v16, v32, s); err != nil {
			return err
		}
	}
	if p.Has(PropAuthData) && !p.Has(PropAuthMethod) {
		return Errf(ProtocolError, "", "Authentication Data without Authentication Method")
	}
	return nil
}

func (p *Properties) decodeUser(r *reader) error {
	if len(p.User) >= MaxUserProperties {
		return Errf(MalformedPacket, "", "more than %d user properties", MaxUserProperties)
	}
	k, err := r.str("User Property name")
	if err != nil {
		return err
	}
	v, err := r.str("User Property value")
	if err != nil {
		return err
	}
	p.User = append(p.User, UserProperty{Key: k, Value: v})
	return nil
}

func errBool(id byte, v byte) error {
	return Errf(ProtocolError, "", "property %s = %d, must be 0 or 1", propSpec[id].name, v)
}

// store puts a decoded value into its field, checking the value ranges the
// specification makes a Protocol Error.
func (p *Properties) store(id, v8 byte, v16 uint16, v32 uint32, s []byte) error {
	switch id {
	case PropPayloadFormat:
		if v8 > 1 {
			return errBool(id, v8)
		}
		p.PayloadFormat = v8
	case PropMessageExpiry:
		p.MessageExpiry = v32
	case PropContentType:
		p.ContentType = s
	case PropResponseTopic:
		p.ResponseTopic = s
	case PropCorrelationData:
		p.CorrelationData = s
	case PropSubscriptionID:
		if v32 == 0 {
			return Errf(ProtocolError, "", "Subscription Identifier 0")
		}
		if len(p.SubscriptionIDs) >= MaxSubscriptionIDs {
			return Errf(MalformedPacket, "", "more than %d subscription identifiers", MaxSubscriptionIDs)
		}
		p.SubscriptionIDs = append(p.SubscriptionIDs, v32)
	case PropSessionExpiry:
		p.SessionExpiry = v32
	case PropAssignedClientID:
		p.AssignedClientID = s
	case PropServerKeepAlive:
		p.ServerKeepAlive = v16
	case PropAuthMethod:
		p.AuthMethod = s
	case PropAuthData:
		p.AuthData = s
	case PropRequestProblemInfo:
		if v8 > 1 {
			return errBool(id, v8)
		}
		p.RequestProblemInfo = v8
	case PropWillDelay:
		p.WillDelay = v32
	case PropRequestResponseInfo:
		if v8 > 1 {
			return errBool(id, v8)
		}
		p.RequestResponseInfo = v8
	case PropResponseInfo:
		p.ResponseInfo = s
	case PropServerReference:
		p.ServerReference = s
	case PropReasonString:
		p.ReasonString = s
	case PropReceiveMaximum:
		if v16 == 0 {
			return Errf(ProtocolError, "", "Receive Maximum 0")
		}
		p.ReceiveMaximum = v16
	case PropTopicAliasMaximum:
		p.TopicAliasMaximum = v16
	case PropTopicAlias:
		if v16 == 0 {
			return Errf(TopicAliasInvalid, "MQTT-3.3.2-8", "Topic Alias 0")
		}
		p.TopicAlias = v16
	case PropMaximumQoS:
		if v8 > 1 {
			return errBool(id, v8)
		}
		p.MaximumQoS = v8
	case PropRetainAvailable:
		if v8 > 1 {
			return errBool(id, v8)
		}
		p.RetainAvailable = v8
	case PropMaximumPacketSize:
		if v32 == 0 {
			return Errf(ProtocolError, "", "Maximum Packet Size 0")
		}
		p.MaximumPacketSize = v32
	case PropWildcardSubAvailable:
		if v8 > 1 {
			return errBool(id, v8)
		}
		p.WildcardSubAvailable = v8
	case PropSubIDAvailable:
		if v8 > 1 {
			return errBool(id, v8)
		}
		p.SubIDAvailable = v8
	case PropSharedSubAvailable:
		if v8 > 1 {
			return errBool(id, v8)
		}
		p.SharedSubAvailable = v8
	}
	return nil
}

// encodeMask is the set of identifiers encoded for ctx: the present ones
// that ctx allows, with User and SubscriptionIDs decided by their length
// rather than their Present bit so that a caller filling the slice cannot
// forget the bit.
func (p *Properties) encodeMask(ctx propCtx) uint64 {
	m := p.Present &^ (bitUser | bitSubID)
	if len(p.User) > 0 {
		m |= bitUser
	}
	if len(p.SubscriptionIDs) > 0 {
		m |= bitSubID
	}
	return m & propAllowed[ctx]
}

// size is the encoded size of the property list content for ctx, without
// the VBI length prefix.
func (p *Properties) size(ctx propCtx) int {
	n := 0
	for m := p.encodeMask(ctx); m != 0; m &= m - 1 {
		id := byte(bits.TrailingZeros64(m))
		switch propSpec[id].kind {
		case kindByte:
			n += 2
		case kindU16:
			n += 3
		case kindU32:
			n += 5
		case kindVarint: // Subscription Identifier: one per value, one only in SUBSCRIBE
			for i, v := range p.SubscriptionIDs {
				if i > 0 && ctx != ctxPublish {
					break
				}
				n += 1 + VarintSize(v)
			}
		case kindString, kindBinary:
			n += 1 + binLen(p.bytesField(id))
		case kindPair:
			for _, u := range p.User {
				n += 1 + binLen(u.Key) + binLen(u.Value)
			}
		}
	}
	return n
}

// appendTo writes the VBI length n (from size) and the properties for ctx.
func (p *Properties) appendTo(dst []byte, ctx propCtx, n int) []byte {
	dst = AppendVarint(dst, uint32(n))
	for m := p.encodeMask(ctx); m != 0; m &= m - 1 {
		id := byte(bits.TrailingZeros64(m))
		switch propSpec[id].kind {
		case kindByte:
			dst = append(dst, id, p.byteField(id))
		case kindU16:
			dst = appendU16(append(dst, id), p.u16Field(id))
		case kindU32:
			dst = appendU32(append(dst, id), p.u32Field(id))
		case kindVarint:
			for i, v := range p.SubscriptionIDs {
				if i > 0 && ctx != ctxPublish {
					break
				}
				dst = AppendVarint(append(dst, id), v)
			}
		case kindString, kindBinary:
			dst = appendBin(append(dst, id), p.bytesField(id))
		case kindPair:
			for _, u := range p.User {
				dst = appendBin(appendBin(append(dst, id), u.Key), u.Value)
			}
		}
	}
	return dst
}

func (p *Properties) byteField(id byte) byte {
	switch id {
	case PropPayloadFormat:
		return p.PayloadFormat
	case PropRequestProblemInfo:
		return p.RequestProblemInfo
	case PropRequestResponseInfo:
		return p.RequestResponseInfo
	case PropMaximumQoS:
		return p.MaximumQoS
	case PropRetainAvailable:
		return p.RetainAvailable
	case PropWildcardSubAvailable:
		return p.WildcardSubAvailable
	case PropSubIDAvailable:
		return p.SubIDAvailable
	case PropSharedSubAvailable:
		return p.SharedSubAvailable
	}
	return 0
}

func (p *Properties) u16Field(id byte) uint16 {
	switch id {
	case PropServerKeepAlive:
		return p.ServerKeepAlive
	case PropReceiveMaximum:
		return p.ReceiveMaximum
	case PropTopicAliasMaximum:
		return p.TopicAliasMaximum
	case PropTopicAlias:
		return p.TopicAlias
	}
	return 0
}

func (p *Properties) u32Field(id byte) uint32 {
	switch id {
	case PropMessageExpiry:
		return p.MessageExpiry
	case PropSessionExpiry:
		return p.SessionExpiry
	case PropWillDelay:
		return p.WillDelay
	case PropMaximumPacketSize:
		return p.MaximumPacketSize
	}
	return 0
}

func (p *Properties) bytesField(id byte) []byte {
	switch id {
	case PropContentType:
		return p.ContentType
	case PropResponseTopic:
		return p.ResponseTopic
	case PropCorrelationData:
		return p.CorrelationData
	case PropAssignedClientID:
		return p.AssignedClientID
	case PropAuthMethod:
		return p.AuthMethod
	case PropAuthData:
		return p.AuthData
	case PropResponseInfo:
		return p.ResponseInfo
	case PropServerReference:
		return p.ServerReference
	case PropReasonString:
		return p.ReasonString
	}
	return nil
}

// Clone returns a deep copy of p whose byte slices and lists no longer
// alias the decoded buffer; use it for properties that must outlive the
// read (e.g. a will, a retained message). It allocates one buffer for all
// byte fields plus the two lists.
func (p *Properties) Clone() Properties {
	c := *p
	n := 0
	for id := byte(0); id <= maxPropID; id++ {
		n += len(p.bytesField(id))
	}
	for _, u := range p.User {
		n += len(u.Key) + len(u.Value)
	}
	buf := make([]byte, 0, n)
	cp := func(b []byte) []byte {
		if b == nil {
			return nil
		}
		start := len(buf)
		buf = append(buf, b...)
		return buf[start:len(buf):len(buf)]
	}
	c.ContentType = cp(p.ContentType)
	c.ResponseTopic = cp(p.ResponseTopic)
	c.CorrelationData = cp(p.CorrelationData)
	c.AssignedClientID = cp(p.AssignedClientID)
	c.AuthMethod = cp(p.AuthMethod)
	c.AuthData = cp(p.AuthData)
	c.ResponseInfo = cp(p.ResponseInfo)
	c.ServerReference = cp(p.ServerReference)
	c.ReasonString = cp(p.ReasonString)
	c.User = nil
	if len(p.User) > 0 {
		c.User = make([]UserProperty, len(p.User))
		for i, u := range p.User {
			c.User[i] = UserProperty{Key: cp(u.Key), Value: cp(u.Value)}
		}
	}
	c.SubscriptionIDs = nil
	if len(p.SubscriptionIDs) > 0 {
		c.SubscriptionIDs = append([]uint32(nil), p.SubscriptionIDs...)
	}
	return c
}

// AppendPublishProperties appends p as a PUBLISH property list (length
// prefix included), the form in which a store keeps a 5.0 message's
// properties.
func AppendPublishProperties(dst []byte, p *Properties) []byte {
	return p.appendTo(dst, ctxPublish, p.size(ctxPublish))
}

// DecodePublishProperties parses what AppendPublishProperties wrote into p
// (which it resets). Byte-slice fields are views into b.
func DecodePublishProperties(b []byte, p *Properties) error {
	p.Reset()
	r := reader{b: b}
	if err := r.props(p, ctxPublish); err != nil {
		return err
	}
	return r.end("publish properties")
}
