package server

import (
	"fmt"
	"strings"

	"github.com/panjf2000/gnet/v2"

	"github.com/ternmq/tern/codec"
)

// This file holds the per-connection MQTT 5.0 state that 3.1.1 has no use
// for, and the checks the other handlers call into for 5.0 clients:
//
//	CONNECT   connectV5: will payload format, Request Problem/Response
//	          Information, the client's Topic Alias Maximum, enhanced
//	          authentication (auth.go)
//	CONNACK   connackV5: what the broker advertises (Topic Alias Maximum,
//	          Receive Maximum, Wildcard/Subscription Identifier/Shared
//	          Subscription Available, Response Information, AUTH result)
//	PUBLISH   checkPublishV5: topic alias (v5_alias.go), Subscription
//	          Identifier from a client, Receive Maximum, Payload Format
//	          Indicator
//
// The state hangs off client.v5 and exists only for 5.0 connections, so a
// 3.1.1 connection pays one nil pointer for it.

// v5State is a 5.0 connection's state; owned by the connection's loop.
type v5State struct {
	// maxPacketOut is the client's Maximum Packet Size; 0 = none
	// [MQTT-3.1.2-24].
	maxPacketOut uint32

	// problemInfo is the client's Request Problem Information (default 1):
	// 0 forbids reason strings and user properties on everything but
	// PUBLISH, CONNACK and DISCONNECT [MQTT-3.1.2-29].
	problemInfo bool

	aliasIn  aliasIn  // client → broker topic aliases (v5_alias.go)
	aliasOut aliasOut // broker → client topic aliases (v5_alias.go)

	// Inbound Receive Maximum: QoS 1 PUBLISHes are acknowledged when the
	// read event that carried them ends, so those seen in the current event
	// (recvEvent = loop.now of that event) are the unacknowledged ones.
	recvEvent int64
	recvQoS1  int

	auth *authState // enhanced authentication (auth.go); nil unless CONNECT named a method
}

// maxReasonString bounds the reason strings the broker sends.
const maxReasonString = 128

// connectV5 runs the 5.0-only parts of CONNECT after the packet decoded
// and the client id is known, before the password Authenticator. stop
// means the CONNECT is answered (refused, or an AUTH exchange began) and
// act is what handleConnect returns.
func (c *client) connectV5(h codec.FixedHeader, body []byte, p *codec.Connect) (act gnet.Action, stop bool) {
	if c.v5 == nil {
		c.v5 = &v5State{}
	}
	v := c.v5
	v.problemInfo = !p.Props.Has(codec.PropRequestProblemInfo) || p.Props.RequestProblemInfo == 1
	if p.WillFlag && p.WillProps.Has(codec.PropPayloadFormat) && p.WillProps.PayloadFormat == 1 {
		if codec.ValidUTF8(p.WillPayload) != nil {
			// §3.1.3.2.3 lets the broker refuse a will whose payload is not
			// the UTF-8 its Payload Format Indicator claims; it does.
			return c.refuse(codec.Version5, codec.PayloadFormatInvalid, "will payload is not valid UTF-8 but its Payload Format Indicator is 1"), true
		}
	}
	max := c.loop.srv.opts.topicAliasMax()
	v.aliasIn.max = max
	v.aliasOut.max = 0
	if p.Props.Has(codec.PropTopicAliasMaximum) {
		v.aliasOut.max = min(p.Props.TopicAliasMaximum, max)
	}
	if p.Props.Has(codec.PropAuthMethod) && !c.enhancedAuthed() {
		return c.startConnectAuth(h, body, p), true
	}
	return gnet.None, false
}

// connackV5 adds what the broker advertises to a successful 5.0 CONNACK.
func (c *client) connackV5(props *codec.Properties, p *codec.Connect) {
	o := &c.loop.srv.opts
	props.TopicAliasMaximum = o.topicAliasMax()
	if props.TopicAliasMaximum > 0 {
		props.Set(codec.PropTopicAliasMaximum)
	}
	// The inbound bound on QoS 2 flows is part of what the client must
	// respect, so advertise the smaller of the two.
	props.ReceiveMaximum = uint16(min(o.ReceiveMaximum, o.MaxInboundQoS2))
	props.Set(codec.PropReceiveMaximum)
	// Everything below is supported; saying so is optional (absent means
	// available) but costs 6 bytes and spares clients a guess.
	props.WildcardSubAvailable, props.SubIDAvailable, props.SharedSubAvailable = 1, 1, 1
	props.Set(codec.PropWildcardSubAvailable)
	props.Set(codec.PropSubIDAvailable)
	props.Set(codec.PropSharedSubAvailable)
	if p.Props.RequestResponseInfo == 1 && o.ResponseInformation != "" {
		props.ResponseInfo = []byte(strings.ReplaceAll(o.ResponseInformation, "{clientid}", c.id))
		props.Set(codec.PropResponseInfo)
	}
	if a := c.v5.auth; a != nil && a.done {
		props.AuthMethod = []byte(a.method)
		props.Set(codec.PropAuthMethod)
		if len(a.final) > 0 {
			props.AuthData = a.final
			props.Set(codec.PropAuthData)
		}
	}
}

// checkPublishV5 applies the 5.0 rules to an inbound PUBLISH before it is
// validated and routed: it resolves a topic alias into p.Topic. stop means
// the PUBLISH is answered (refused or connection closed).
func (c *client) checkPublishV5(p *codec.Publish) (act gnet.Action, stop bool) {
	if len(p.Props.SubscriptionIDs) > 0 {
		return c.fail(codec.Errf(codec.ProtocolError, "MQTT-3.3.4-6", "PUBLISH from a client carries a Subscription Identifier")), true
	}
	if err := c.resolveInboundAlias(p); err != nil {
		return c.fail(err), true
	}
	if p.QoS > 0 {
		if err := c.countInbound(p); err != nil {
			return c.fail(err), true
		}
	}
	if p.Props.Has(codec.PropPayloadFormat) && p.Props.PayloadFormat == 1 && codec.ValidUTF8(p.Payload) != nil {
		const why = "payload is not valid UTF-8 but its Payload Format Indicator is 1"
		if p.QoS == 0 {
			// No acknowledgement to carry the reason: DISCONNECT 0x99 (§3.3.2.3.2).
			return c.fail(codec.Errf(codec.PayloadFormatInvalid, "", why)), true
		}
		// The message is refused but the connection stays: PUBACK/PUBREC
		// 0x99, which also ends a QoS 2 flow (no PUBREL follows).
		a := codec.Ack{Type: codec.PUBACK, PacketID: p.PacketID, ReasonCode: codec.PayloadFormatInvalid}
		if p.QoS == 2 {
			a.Type = codec.PUBREC
		}
		c.setReason(&a.Props, why)
		c.loop.out = a.Append(c.loop.out, codec.Version5)
		return gnet.None, true
	}
	return gnet.None, false
}

// countInbound enforces the broker's Receive Maximum on a 5.0 client: more
// unacknowledged QoS 1/2 PUBLISHes than advertised is DISCONNECT 0x93
// (§3.3.4, [MQTT-3.3.4-7] is the client's side of the rule). QoS 1 ones
// count until the PUBACK leaves at the end of the read event; QoS 2 ones
// until PUBREL (the session's inbound set, whose own bound applies too).
func (c *client) countInbound(p *codec.Publish) error {
	v, l := c.v5, c.loop
	if v.recvEvent != l.now {
		v.recvEvent, v.recvQoS1 = l.now, 0
	}
	if p.QoS == 1 {
		v.recvQoS1++
	}
	inflight := v.recvQoS1
	if p.QoS == 2 {
		s := c.sess
		s.mu.Lock()
		if s.f != nil {
			inflight += s.f.inbound.Len()
			if !s.f.inbound.Has(p.PacketID) {
				inflight++
			}
		} else {
			inflight++
		}
		s.mu.Unlock()
	}
	max := min(c.loop.srv.opts.ReceiveMaximum, c.loop.srv.opts.MaxInboundQoS2)
	if inflight > max {
		return codec.Errf(codec.ReceiveMaximumExceeded, "MQTT-3.3.4-7", "more than Receive Maximum (%d) unacknowledged QoS 1/2 PUBLISHes", max)
	}
	return nil
}

// setReason puts a reason string on an acknowledgement-type packet unless
// the client asked for no problem information [MQTT-3.1.2-29] or it would
// push the packet past the client's Maximum Packet Size [MQTT-3.4.2-2].
func (c *client) setReason(props *codec.Properties, why string) {
	if c.v5 == nil || !c.v5.problemInfo {
		return
	}
	c.setReasonAlways(props, why)
}

// setReasonAlways is setReason for CONNACK and DISCONNECT, which may carry
// a reason string whatever Request Problem Information says.
func (c *client) setReasonAlways(props *codec.Properties, why string) {
	if len(why) > maxReasonString {
		why = why[:maxReasonString]
		for len(why) > 0 && codec.ValidUTF8([]byte(why)) != nil {
			why = why[:len(why)-1] // do not cut a rune in half
		}
	}
	if c.maxOut() != 0 && 16+len(why) > int(c.maxOut()) {
		return
	}
	props.ReasonString = []byte(why)
	props.Set(codec.PropReasonString)
}

// connectFailed answers a CONNECT that did not decode. A 5.0 client is
// told why with a CONNACK reason code (§3.2.2.2, [MQTT-4.13.1-1]); earlier
// versions are simply closed.
func (c *client) connectFailed(p *codec.Connect, err error) gnet.Action {
	if p.ProtocolVersion == codec.Version5 {
		return c.refuse(codec.Version5, codec.CodeOf(err, codec.MalformedPacket), err.Error())
	}
	return c.fail(err)
}

// subackReason explains refused filters in a 5.0 SUBACK (a reason string
// is per packet, so it names the first refusal).
func (c *client) subackReason(ack *codec.Suback) {
	if c.version != codec.Version5 {
		return
	}
	for i, rc := range ack.ReasonCodes {
		switch codec.ReasonCode(rc) {
		case codec.TopicFilterInvalid:
			c.setReason(&ack.Props, fmt.Sprintf("filter %d is not a valid topic filter", i+1))
		case codec.NotAuthorized:
			c.setReason(&ack.Props, fmt.Sprintf("filter %d is not authorized", i+1))
		default:
			continue
		}
		return
	}
}
