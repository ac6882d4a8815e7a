package server

import (
	"github.com/ternmq/tern/codec"
)

// Topic aliases (MQTT 5.0 §3.3.2.3.4) replace a topic name by a two-byte
// number for the rest of one network connection. Each direction has its
// own table, sized by what the receiver allowed in CONNECT/CONNACK:
//
//	client ─PUBLISH topic="a/b" alias=3──▶ broker   broker records 3 → "a/b"
//	client ─PUBLISH topic=""    alias=3──▶ broker   broker reads topic "a/b"
//
//	broker ─PUBLISH topic="x/y" alias=1──▶ client   first delivery on x/y
//	broker ─PUBLISH topic=""    alias=1──▶ client   later deliveries
//
// Inbound, the broker accepts every alias from 1 to the Topic Alias Maximum
// it advertised [MQTT-3.3.2-12]; 0 [MQTT-3.3.2-8] or above it
// [MQTT-3.3.2-9] is DISCONNECT 0x94, and an alias never defined, or an
// empty topic without an alias, is a Protocol Error (0x82). Mappings die
// with the connection [MQTT-3.3.2-7].
//
// Outbound, when the client's CONNECT allowed aliases, the broker assigns
// them first come, first served, and once all are taken reassigns them
// round-robin (O(1), no per-message bookkeeping); it never uses one above
// the client's maximum [MQTT-3.3.2-11]. A mapping is created only with a
// PUBLISH that will be sent (one that fits the client's Maximum Packet
// Size), so the client always learns it before it is used.

// maxAliasBytes bounds the topic bytes one connection's inbound aliases
// may hold (the alias count is bounded by the advertised maximum, but each
// topic may be 64 KiB long): past it the client is disconnected with 0x97.
const maxAliasBytes = 256 << 10

// aliasIn is the client → broker alias table.
type aliasIn struct {
	max    uint16   // the Topic Alias Maximum advertised in CONNACK
	topics [][]byte // alias-1 → topic (copied); grown on demand
	bytes  int      // total length of topics
}

// aliasOut is the broker → client alias table.
type aliasOut struct {
	max    uint16            // min(client's Topic Alias Maximum, broker's)
	ids    map[string]uint16 // topic → alias
	topics []string          // alias-1 → topic
	next   uint16            // index of the next alias to reassign once full
}

// resolveInboundAlias applies p's Topic Alias: it records a new mapping or
// fills p.Topic from an existing one (a view into the table, valid until
// the mapping is replaced; the message copies it).
func (c *client) resolveInboundAlias(p *codec.Publish) error {
	a := &c.v5.aliasIn
	if !p.Props.Has(codec.PropTopicAlias) {
		if len(p.Topic) == 0 {
			return codec.Errf(codec.ProtocolError, "", "PUBLISH with an empty topic name and no topic alias (§3.3.2.1)")
		}
		return nil
	}
	n := p.Props.TopicAlias
	if n == 0 {
		return codec.Errf(codec.TopicAliasInvalid, "MQTT-3.3.2-8", "topic alias 0")
	}
	if n > a.max {
		return codec.Errf(codec.TopicAliasInvalid, "MQTT-3.3.2-9", "topic alias %d above the maximum %d", n, a.max)
	}
	i := int(n) - 1
	if len(p.Topic) == 0 {
		if i >= len(a.topics) || a.topics[i] == nil {
			return codec.Errf(codec.ProtocolError, "", "topic alias %d was never defined on this connection (§3.3.2.3.4)", n)
		}
		p.Topic = a.topics[i]
		return nil
	}
	if i >= len(a.topics) {
		a.topics = append(a.topics, make([][]byte, i+1-len(a.topics))...)
	}
	a.bytes += len(p.Topic) - len(a.topics[i])
	if a.bytes > maxAliasBytes {
		return codec.Errf(codec.QuotaExceeded, "", "topic aliases hold more than %d bytes", maxAliasBytes)
	}
	a.topics[i] = append(a.topics[i][:0], p.Topic...)
	return nil
}

// applyOutboundAlias rewrites the delivery p (already filled in for this
// 5.0 client) to use a topic alias when the client allows them.
func (c *client) applyOutboundAlias(p *codec.Publish) {
	v := c.v5
	if v == nil || v.aliasOut.max == 0 || len(p.Topic) == 0 {
		return
	}
	a := &v.aliasOut
	if id, ok := a.ids[string(p.Topic)]; ok {
		p.Props.TopicAlias = id
		p.Props.Set(codec.PropTopicAlias)
		p.Topic = nil
		return
	}
	reuse := len(a.topics) >= int(a.max)
	id := uint16(len(a.topics)) + 1
	if reuse {
		id = a.next + 1
	}
	p.Props.TopicAlias = id
	p.Props.Set(codec.PropTopicAlias)
	if c.maxOut() != 0 && p.Size(codec.Version5) > int(c.maxOut()) {
		// This PUBLISH will not be sent, so it must not define a mapping.
		p.Props.Present &^= 1 << codec.PropTopicAlias
		return
	}
	t := string(p.Topic)
	if a.ids == nil {
		a.ids = make(map[string]uint16, a.max)
	}
	if reuse {
		delete(a.ids, a.topics[id-1])
		a.topics[id-1] = t
		a.next = (a.next + 1) % a.max
	} else {
		a.topics = append(a.topics, t)
	}
	a.ids[t] = id
}
