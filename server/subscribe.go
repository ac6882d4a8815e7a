package server

import (
	"errors"

	"github.com/panjf2000/gnet/v2"

	"github.com/ternmq/tern/codec"
	"github.com/ternmq/tern/trie"
)

// maxScratch bounds the decode arrays a loop keeps between packets: a 1 MiB
// SUBSCRIBE of tiny filters would otherwise leave ~20 MB pinned per loop.
const maxScratch = 1024

func (c *client) handleSubscribe(h codec.FixedHeader, body []byte) gnet.Action {
	l, srv, s := c.loop, c.loop.srv, c.sess
	p := &l.subscribe
	defer func() {
		if cap(p.Subscriptions) > maxScratch {
			p.Subscriptions = nil
		}
	}()
	if err := p.Decode(h, body, c.version); err != nil {
		return c.fail(err)
	}
	if srv.hooks.authorize != nil {
		for _, sub := range p.Subscriptions {
			if _, known := c.hookVerdict(AuthzSubscribe, sub.Filter); !known {
				// Ask the Authorize hooks about every filter off the loop;
				// the SUBSCRIBE is handled again with their verdicts.
				filters := make([]string, len(p.Subscriptions))
				for i := range p.Subscriptions {
					filters[i] = string(p.Subscriptions[i].Filter)
				}
				return c.authorizeAsync(h, body, AuthzSubscribe, filters)
			}
		}
	}
	var subID uint32
	if c.version == codec.Version5 && len(p.Props.SubscriptionIDs) > 0 {
		subID = p.Props.SubscriptionIDs[0]
	}
	codes := make([]codec.ReasonCode, 0, len(p.Subscriptions))
	type retainedReq struct {
		filter string
		qos    byte
		rap    bool
	}
	var wantRetained []retainedReq
	changed := false
	for _, sub := range p.Subscriptions {
		filter := string(sub.Filter)
		if err := trie.ValidateFilter(sub.Filter, srv.opts.MaxTopicLevels); err != nil {
			if err != trie.ErrTooManyLevels {
				// A filter that breaks the wildcard or $share rules is not a
				// filter at all: the packet is malformed and the connection
				// ends [MQTT-4.7.1-2] [MQTT-4.7.1-3] [MQTT-4.8.2-1] (5.0
				// §4.13: DISCONNECT 0x81 Malformed Packet).
				rule := ""
				var te *trie.Error
				if errors.As(err, &te) {
					rule = te.Rule
				}
				return c.fail(codec.Errf(codec.MalformedPacket, rule, "invalid topic filter %q: %v", filter, err))
			}
			// Well formed but deeper than this broker allows: refused, the
			// connection stays (5.0 0x8F Topic Filter invalid).
			codes = append(codes, c.subFailure(codec.TopicFilterInvalid))
			continue
		}
		_, inner, shared := trie.SplitShared(filter)
		if shared && sub.NoLocal && c.version == codec.Version5 {
			return c.fail(codec.Errf(codec.ProtocolError, "MQTT-3.8.3-4", "No Local on a shared subscription"))
		}
		if a := srv.authorizer(); a != nil && !a.CanSubscribe(c.id, c.username(), filter) {
			srv.refuse(limitACLSubscribe, c.id, c.username(), c.remote(), "ACL denies subscribing to "+filter)
			codes = append(codes, c.subFailure(codec.NotAuthorized))
			continue
		}
		if srv.hooks.authorize != nil {
			if ok, _ := c.hookVerdict(AuthzSubscribe, sub.Filter); !ok {
				srv.refuse(limitACLSubscribe, c.id, c.username(), c.remote(), "Authorize hook denies subscribing to "+filter)
				codes = append(codes, c.subFailure(codec.NotAuthorized))
				continue
			}
		}
		granted := sub.QoS
		var opts byte
		if sub.NoLocal {
			opts |= optNoLocal
		}
		if sub.RetainAsPublished {
			opts |= optRetainAsPublished
		}
		opts |= sub.RetainHandling << 4
		s.mu.Lock()
		if s.dead || s.owner != c {
			s.mu.Unlock()
			return gnet.Close // taken over while this packet was in flight
		}
		if max := srv.opts.Limits.MaxSubscriptionsPerClient; max > 0 && len(s.subs) >= max && s.findSubLocked(filter) < 0 {
			s.mu.Unlock()
			srv.refuse(limitSubscriptions, c.id, c.username(), remoteString(c.conn), "subscription over the per-client limit: "+filter)
			codes = append(codes, c.subFailure(codec.QuotaExceeded))
			continue
		}
		// The trie is updated under the session lock so that a concurrent
		// end of the session (clean takeover on another loop) sees it.
		existed := s.setSubLocked(sessionSub{filter: filter, qos: granted, opts: opts, id: subID})
		srv.subscribeTrie(filter, subFor(s, granted, opts, subID))
		s.mu.Unlock()
		changed = true
		codes = append(codes, codec.ReasonCode(granted)) // Granted QoS 0–2
		for _, f := range srv.hooks.onSubscribe {
			f(c.clientInfo(), filter, granted)
		}
		// Retained messages on subscribe: Retain Handling 0 always, 1 only
		// for a new subscription, 2 never; never for shared subscriptions
		// [MQTT-3.8.4-4] [MQTT-3.3.1-9..-11].
		rh := sub.RetainHandling
		if !shared && (rh == 0 || (rh == 1 && !existed)) {
			wantRetained = append(wantRetained, retainedReq{filter: inner, qos: granted, rap: sub.RetainAsPublished})
		}
	}
	if changed {
		// One session record per SUBSCRIBE, not per filter: a packet of
		// many filters costs one write (SUBACK waits for it).
		s.mu.Lock()
		srv.putSessionLocked(&l.tx, s, 0)
		s.mu.Unlock()
	}
	ack := codec.Suback{PacketID: p.PacketID, ReasonCodes: codes}
	c.subackReason(&ack) // v5.go
	l.out = ack.Append(l.out, c.version)
	for _, r := range wantRetained {
		srv.retained.Match(r.filter, func(_ string, m *message) bool {
			srv.deliver(l, &l.tx, s, m, min(m.qos, r.qos), true, subID, nil, "")
			return true
		})
	}
	return gnet.None
}

// subFailure is the SUBACK code for a refused filter: 0x80 before 5.0
// [MQTT-3.9.3-2], the specific reason in 5.0.
func (c *client) subFailure(code codec.ReasonCode) codec.ReasonCode {
	if c.version < codec.Version5 {
		return codec.UnspecifiedError // 0x80, the one 3.1.1 failure code
	}
	return code
}

func (c *client) handleUnsubscribe(h codec.FixedHeader, body []byte) gnet.Action {
	l, srv, s := c.loop, c.loop.srv, c.sess
	p := &l.unsubscribe
	defer func() {
		if cap(p.Filters) > maxScratch {
			p.Filters = nil
		}
	}()
	if err := p.Decode(h, body, c.version); err != nil {
		return c.fail(err)
	}
	var codes []codec.ReasonCode
	changed := false
	for _, f := range p.Filters {
		filter := string(f)
		s.mu.Lock()
		existed := s.removeSubLocked(filter)
		if existed {
			srv.unsubscribeTrie(filter, s)
			changed = true
		}
		s.mu.Unlock()
		if existed {
			for _, f := range srv.hooks.onUnsubscribe {
				f(c.clientInfo(), filter)
			}
		}
		if c.version == codec.Version5 {
			if existed {
				codes = append(codes, codec.Success)
			} else {
				codes = append(codes, codec.NoSubscriptionExisted)
			}
		}
	}
	if changed {
		s.mu.Lock()
		srv.putSessionLocked(&l.tx, s, 0) // one record per packet; UNSUBACK waits for it
		s.mu.Unlock()
	}
	ack := codec.Unsuback{PacketID: p.PacketID, ReasonCodes: codes}
	l.out = ack.Append(l.out, c.version)
	return gnet.None
}
