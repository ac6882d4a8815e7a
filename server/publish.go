package server

import (
	"errors"
	"fmt"
	"sync"

	"github.com/panjf2000/gnet/v2"
	"github.com/ternmq/tern/codec"
	"github.com/ternmq/tern/persist"
	"github.com/ternmq/tern/trie"
)

func (c *client) handlePublish(h codec.FixedHeader, body []byte) gnet.Action {
	l, srv := c.loop, c.loop.srv
	p := &l.publish
	if err := p.Decode(h, body, c.version); err != nil {
		return c.fail(err)
	}
	srv.stats.msgsIn.Add(1)
	if c.version == codec.Version5 { // topic alias, payload format, receive maximum (v5.go)
		if act, stop := c.checkPublishV5(p); stop {
			return act
		}
	}
	if err := trie.ValidateTopic(p.Topic, srv.opts.MaxTopicLevels); err != nil {
		return c.fail(codec.Errf(codec.TopicNameInvalid, "MQTT-3.3.2-2", "invalid topic name: %v", err))
	}
	a := srv.authorizer() // reload.go: one load, so one ACL decides
	allowed := a == nil || a.CanPublish(c.id, c.username(), string(p.Topic))
	if !allowed {
		srv.refuse(limitACLPublish, c.id, c.username(), c.remote(), "ACL denies publishing to "+string(p.Topic))
	}
	if isSysTopic(p.Topic) {
		// $SYS is the broker's own namespace: clients read it, never write
		// it, whatever the ACL grants [MQTT-4.7.2-1 note on $ topics].
		allowed = false
		srv.refuse(limitSysPublish, c.id, c.username(), remoteString(c.conn), "publish to "+string(p.Topic))
	}
	if allowed && srv.hooks.authorize != nil {
		ok, known := c.hookVerdict(AuthzPublish, p.Topic)
		if !known { // ask the Authorize hooks off the loop; this PUBLISH is handled again then
			srv.stats.msgsIn.Add(^uint64(0))
			return c.authorizeAsync(h, body, AuthzPublish, []string{string(p.Topic)})
		}
		if allowed = ok; !ok {
			srv.refuse(limitACLPublish, c.id, c.username(), c.remote(), "Authorize hook denies publishing to "+string(p.Topic))
		}
	}
	route := allowed
	if p.QoS == 2 {
		s := c.sess
		s.mu.Lock()
		isNew, full := s.flowLocked(&srv.opts).inbound.Receive(p.PacketID)
		if isNew && s.storable() && srv.store != nil {
			// A PUBLISH re-sent after a restart must not be routed again.
			l.tx.batch(srv).PutInbound(s.id, p.PacketID, persist.Inbound{ReceivedAt: l.now / 1e6})
		}
		s.mu.Unlock()
		if full {
			return c.fail(codec.Errf(codec.ReceiveMaximumExceeded, "MQTT-3.3.4-7", "more than %d QoS 2 messages awaiting PUBREL", srv.opts.MaxInboundQoS2))
		}
		route = route && isNew // a re-sent PUBLISH before PUBREL is not routed again
	}
	if route {
		var props *codec.Properties
		if c.version == codec.Version5 {
			props = &p.Props
		}
		if srv.hooks.onPublish != nil {
			hm := &l.hookMsg
			*hm = HookMessage{ClientID: c.id, Username: c.username(), Topic: p.Topic, Payload: p.Payload, QoS: p.QoS, Retain: p.Retain}
			if srv.hookPublish(hm) {
				goto ack // dropped by a hook: acknowledged, not routed
			}
			p.Topic, p.Payload = hm.Topic, hm.Payload
		}
		m := newMessage(p.Topic, p.Payload, p.QoS, p.Retain, props, l.now, c.sess)
		l.paceOn = l.paceOn[:0]
		l.tx.ref = uint64(p.PacketID) | uint64(p.QoS)<<16 // cluster.go: a node's refusal names this PUBLISH
		// deliver: startPacing below holds this client back, so the
		// deliveries of this PUBLISH are never dropped.
		l.paced = c.sess
		why := srv.publishMessage(l, &l.tx, m)
		l.tx.ref, l.paced = 0, nil
		if why != 0 {
			return c.quotaRefused(p, why)
		}
		if len(l.paceOn) > 0 {
			c.startPacing() // pace.go: a subscriber's queue is full; this client waits
		}
	}
ack:
	switch p.QoS {
	case 1:
		a := codec.Ack{Type: codec.PUBACK, PacketID: p.PacketID}
		if !allowed && c.version == codec.Version5 {
			a.ReasonCode = codec.NotAuthorized
		}
		l.out = a.Append(l.out, c.version)
	case 2:
		a := codec.Ack{Type: codec.PUBREC, PacketID: p.PacketID}
		if !allowed && c.version == codec.Version5 {
			a.ReasonCode = codec.NotAuthorized
			c.sess.mu.Lock()
			c.sess.flowLocked(&srv.opts).inbound.Release(p.PacketID) // a failed PUBREC ends the flow
			c.sess.mu.Unlock()
		}
		l.out = a.Append(l.out, c.version)
	}
	return gnet.None
}

// publishMessage applies a message's retain flag and routes it. l is the
// loop the caller runs on, nil outside the event loops; t gathers the
// durable writes.
//
// It returns the limit that refused the message as a whole (0: routed);
// a refused message is neither delivered nor retained.
func (s *Server) publishMessage(l *loop, t *txn, m *message) limitID {
	if why := s.route(l, t, m); why != 0 {
		return why
	}
	if m.retain {
		topic := string(m.topic)
		if len(m.payload) == 0 {
			s.retainQuota.remove(s, topic) // [MQTT-3.3.1-10]
			if s.store != nil {
				t.batch(s).DeleteRetained(topic)
			}
		} else if s.retainQuota.set(s, topic, m) { // replaces [MQTT-3.3.1-5]
			if s.store != nil {
				t.batch(s).PutRetained(messageRecord(m))
			}
		} else {
			from := ""
			if m.from != nil {
				from = m.from.id
			}
			s.refuse(limitRetained, from, "", "", "new retained topic over the retained limits: "+topic)
			return 0
		}
		if s.cluster != nil {
			s.cluster.Retained(&ClusterMessage{Topic: m.topic, Payload: m.payload, Props: m.props, ExpiresAt: m.expiresAt, QoS: m.qos, Retain: true})
		}
	}
	return 0
}

// ErrInvalidTopic is returned by Publish for a topic name that is not valid.
var ErrInvalidTopic = errors.New("invalid topic name")

// Publish injects a message as if a client had published it: it is retained
// when retain is set and delivered to every matching subscription. It may be
// called from any goroutine once the server is Ready.
func (s *Server) Publish(topic string, payload []byte, qos byte, retain bool) error {
	if qos > 2 {
		return errors.New("qos must be 0, 1 or 2")
	}
	if err := trie.ValidateTopic([]byte(topic), s.opts.MaxTopicLevels); err != nil {
		return errors.Join(ErrInvalidTopic, err)
	}
	if err := codec.ValidUTF8([]byte(topic)); err != nil {
		return errors.Join(ErrInvalidTopic, err)
	}
	s.stats.msgsIn.Add(1)
	tb := []byte(topic)
	if s.hooks.onPublish != nil {
		hm := &HookMessage{Topic: tb, Payload: payload, QoS: qos, Retain: retain}
		if s.hookPublish(hm) {
			return nil // dropped by an OnPublish hook
		}
		tb, payload = hm.Topic, hm.Payload
	}
	var t txn
	if why := s.publishMessage(nil, &t, newMessage(tb, payload, qos, retain, nil, nanotime(), nil)); why != 0 {
		s.refuse(why, "", "", "", "Server.Publish to "+topic)
		return fmt.Errorf("%w: %s", ErrQuotaExceeded, limitNames[why])
	}
	return s.submitWait(&t)
}

// ErrQuotaExceeded is returned by Publish when a persistent subscriber's
// store quota (MaxSessionBacklogBytes, MaxStoreBytes, MinFreeDiskBytes)
// refused the message: nothing was delivered.
var ErrQuotaExceeded = errors.New("quota exceeded")

// isSysTopic reports whether topic is in the broker's $SYS namespace.
func isSysTopic(topic []byte) bool {
	return len(topic) >= 4 && string(topic[:4]) == "$SYS" && (len(topic) == 4 || topic[4] == '/')
}

// retainQuota accounts the retained index against Limits.MaxRetainedMessages
// and MaxRetainedBytes. Its mutex serialises retained writes only (a
// retained PUBLISH, not the publish path in general), so a replace is
// accounted exactly even when two loops set one topic at once.
type retainQuota struct {
	mu    sync.Mutex
	bytes int64
}

// set retains m on topic if the limits admit it, reporting whether it did.
// Replacing a retained topic is always admitted (it cannot grow the count,
// and refusing it would leave a stale value); a new topic must fit both
// limits.
func (q *retainQuota) set(s *Server, topic string, m *message) bool {
	lim := &s.opts.Limits
	q.mu.Lock()
	defer q.mu.Unlock()
	old, had := s.retained.Get(topic)
	grow := int64(m.size())
	if had {
		grow -= int64(old.size())
	} else if (lim.MaxRetainedMessages > 0 && s.retained.Len() >= lim.MaxRetainedMessages) ||
		(lim.MaxRetainedBytes > 0 && q.bytes+grow > lim.MaxRetainedBytes) {
		return false
	}
	q.bytes += grow
	s.retained.Set(topic, m)
	return true
}

// remove deletes topic's retained message and its accounting.
func (q *retainQuota) remove(s *Server, topic string) {
	q.mu.Lock()
	if old, had := s.retained.Get(topic); had {
		q.bytes -= int64(old.size())
		s.retained.Delete(topic)
	}
	q.mu.Unlock()
}

// quotaRefused answers a QoS 1/2 PUBLISH that a store quota refused as a
// whole (nothing was delivered): a 5.0 client gets PUBACK/PUBREC 0x97
// Quota exceeded and may try again later; a 3.1.1 client, which has no way
// to be told, gets no acknowledgement and is disconnected, so it sends the
// message again when it reconnects [MQTT-4.4.0-1]. Either way nothing is
// acknowledged that was not stored, and a QoS 2 retry is routed again.
func (c *client) quotaRefused(p *codec.Publish, why limitID) gnet.Action {
	l, srv, s := c.loop, c.loop.srv, c.sess
	srv.refuse(why, c.id, c.username(), remoteString(c.conn), "message for a persistent session refused: "+string(p.Topic))
	if p.QoS == 2 {
		s.mu.Lock()
		if s.flowLocked(&srv.opts).inbound.Release(p.PacketID) && s.storable() && srv.store != nil {
			l.tx.batch(srv).DeleteInbound(s.id, p.PacketID)
		}
		s.mu.Unlock()
	}
	if c.version < codec.Version5 {
		return c.fail(codec.Errf(codec.QuotaExceeded, "", "store quota exceeded (%s)", limitNames[why]))
	}
	t := codec.PUBACK
	if p.QoS == 2 {
		t = codec.PUBREC
	}
	a := codec.Ack{Type: t, PacketID: p.PacketID, ReasonCode: codec.QuotaExceeded}
	c.setReason(&a.Props, "quota exceeded: "+limitNames[why])
	l.out = a.Append(l.out, c.version)
	return gnet.None
}
