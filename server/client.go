package server

import (
	"errors"
	"sync/atomic"

	"github.com/panjf2000/gnet/v2"

	"github.com/ternmq/tern/codec"
	"github.com/ternmq/tern/persist"
	"github.com/ternmq/tern/qos"
	"github.com/ternmq/tern/trie"
)

type clientState uint8

const (
	stateNew       clientState = iota // waiting for CONNECT
	stateConnected                    // CONNACK 0 sent
	stateClosed                       // OnClose ran: the gnet.Conn must not be used again
)

// client is one network connection. Every field is owned by the connection's
// event loop, except wakeQueued and takenOver (atomics, set from other
// loops) and the fields written once before the session is published to
// other loops (version, loop).
type client struct {
	loop *loop
	conn gnet.Conn
	sess *session
	will *message
	cold *clientCold // rarely used fields, allocated on first use
	id   string

	lastSeen  int64 // unix nanoseconds of the last packet received
	openedAt  int64 // unix seconds
	keepAlive uint16

	state    clientState
	version  byte
	graceful bool // DISCONNECT (normal) received: no will
	loopback bool

	wakeQueued  atomic.Bool     // on its loop's drain list
	takenOver   atomic.Bool     // another connection took the session
	lastPending *pendingReplies // replies waiting for a commit; later replies queue behind
	v5          *v5State        // 5.0-only state (v5.go); nil before 5.0
}

// clientCold holds what most connections never set, so that an idle
// connection does not pay for it (a fleet of a million idle devices).
type clientCold struct {
	user      string // for the Authorizer; set only when one is configured
	closeWhy  string
	willDelay uint32 // 5.0 Will Delay Interval, seconds
}

func (c *client) coldState() *clientCold {
	if c.cold == nil {
		c.cold = &clientCold{}
	}
	return c.cold
}

func (c *client) setCloseWhy(why string) { c.coldState().closeWhy = why }

func (c *client) closeReason() string {
	if c.cold == nil {
		return ""
	}
	return c.cold.closeWhy
}

// setUser keeps the username only when an auth hook will ask for it.
func (c *client) setUser(u string) {
	o := &c.loop.srv.opts
	if u != "" && (o.Authorizer != nil || o.Authenticator != nil || len(o.EnhancedAuth) > 0) {
		c.coldState().user = u
	}
}

func (c *client) username() string {
	if c.cold == nil {
		return ""
	}
	return c.cold.user
}

func (c *client) willDelaySecs() uint32 {
	if c.cold == nil {
		return 0
	}
	return c.cold.willDelay
}

// maxOut is the client's 5.0 Maximum Packet Size; 0 = none.
func (c *client) maxOut() uint32 {
	if c.v5 == nil {
		return 0
	}
	return c.v5.maxPacketOut
}

// onTraffic decodes and handles every whole packet buffered, then flushes
// replies and drains the deliveries this event produced on this loop.
func (c *client) onTraffic() gnet.Action {
	l := c.loop
	l.now = nanotime()
	if c.state == stateClosed {
		return gnet.Close
	}
	buf, _ := c.conn.Peek(-1)
	off := 0
	act := gnet.None
	for off < len(buf) {
		h, body, n, err := codec.ReadPacket(buf[off:], c.loop.srv.opts.MaxPacketSize)
		if err == codec.ErrIncomplete {
			break
		}
		if err != nil {
			act = c.fail(err)
			break
		}
		off += n
		c.lastSeen = l.now
		if act = c.handle(h, body); act != gnet.None {
			break
		}
	}
	if off > 0 {
		_, _ = c.conn.Discard(off)
		l.srv.stats.bytesIn.Add(uint64(off))
	}
	c.finishEvent()
	l.drainLocal()
	c.loop.srv.submit(l, &l.tx, nil) // what draining wrote (acknowledged deliveries are deleted lazily)
	return act
}

// flush writes the replies gathered in the loop's scratch buffer.
func (c *client) flush() {
	l := c.loop
	if len(l.out) > 0 && c.state != stateClosed {
		_, _ = c.conn.Write(l.out)
	}
	l.out = l.out[:0]
}

func (c *client) handle(h codec.FixedHeader, body []byte) gnet.Action {
	if c.authPending() { // a CONNECT waits for its AUTH exchange (auth.go)
		return c.continueConnectAuth(h, body)
	}
	if h.Type == codec.CONNECT {
		if c.state != stateNew {
			return c.fail(codec.Errf(codec.ProtocolError, "MQTT-3.1.0-2", "second CONNECT on one connection"))
		}
		return c.handleConnect(h, body)
	}
	if c.state != stateConnected {
		return c.fail(codec.Errf(codec.ProtocolError, "MQTT-3.1.0-1", "first packet is %d, not CONNECT", h.Type))
	}
	switch h.Type {
	case codec.PUBLISH:
		return c.handlePublish(h, body)
	case codec.PUBACK, codec.PUBREC, codec.PUBREL, codec.PUBCOMP:
		return c.handleAck(h, body)
	case codec.SUBSCRIBE:
		return c.handleSubscribe(h, body)
	case codec.UNSUBSCRIBE:
		return c.handleUnsubscribe(h, body)
	case codec.PINGREQ:
		if h.RemainingLength != 0 {
			return c.fail(codec.Errf(codec.MalformedPacket, "", "PINGREQ with a body"))
		}
		c.loop.out = codec.AppendPingresp(c.loop.out)
		return gnet.None
	case codec.DISCONNECT:
		return c.handleDisconnect(h, body)
	case codec.AUTH:
		return c.handleAuth(h, body) // enhanced authentication (auth.go)
	default:
		// CONNACK, SUBACK, UNSUBACK, PINGRESP only flow server → client.
		return c.fail(codec.Errf(codec.ProtocolError, "", "server-only packet type %d sent by a client", h.Type))
	}
}

// fail closes the connection for err: a 5.0 client that completed CONNECT is
// first told why with a DISCONNECT carrying the reason code [MQTT-4.13.1-1].
// 3.1.1 has no way to say why; the network connection is simply closed.
func (c *client) fail(err error) gnet.Action {
	code := codec.UnspecifiedError
	var ce *codec.Error
	if errors.As(err, &ce) {
		code = ce.Code
	}
	c.setCloseWhy(err.Error())
	if c.version == codec.Version5 && c.state == stateConnected {
		d := codec.Disconnect{ReasonCode: byte(code)}
		c.setReasonAlways(&d.Props, c.closeReason())
		c.loop.out = d.Append(c.loop.out, c.version)
	} else if c.version == codec.Version5 && c.state == stateNew {
		return c.refuse(c.version, code, c.closeReason()) // a CONNECT refused after it decoded
	}
	c.loop.srv.log.Debug("closing connection", "client_id", c.id, "reason", c.closeReason())
	return gnet.Close
}

// closeNow closes the connection from a loop task (not from OnTraffic),
// telling a 5.0 client the reason first.
func (c *client) closeNow(code codec.ReasonCode, why string) {
	if c.state == stateClosed {
		return
	}
	c.setCloseWhy(why)
	if c.version == codec.Version5 && c.state == stateConnected {
		d := codec.Disconnect{ReasonCode: byte(code)}
		c.setReasonAlways(&d.Props, why)
		_, _ = c.conn.Write(d.Append(nil, c.version))
	}
	_ = c.loop.el.Close(c.conn)
}

// checkDeadline is the timing wheel's callback: it closes a connection that
// sent no CONNECT in time or was silent for 1.5× its keepalive
// [MQTT-3.1.2-24], and otherwise returns when to look again (0: never).
func (c *client) checkDeadline(now int64) int64 {
	switch c.state {
	case stateClosed:
		return 0
	case stateNew:
		due := c.openedAt + int64(c.loop.srv.opts.ConnectTimeout.Seconds())
		if now >= due {
			c.closeNow(codec.MaximumConnectTime, "no CONNECT within the connect timeout")
			return 0
		}
		return due
	}
	if c.keepAlive == 0 {
		return 0
	}
	limit := int64(c.keepAlive) * 1500 * 1e6 // 1.5 × keepalive in ns
	if c.loop.now-c.lastSeen >= limit {
		c.closeNow(codec.KeepAliveTimeout, "keepalive expired")
		return 0
	}
	return (c.lastSeen+limit)/1e9 + 1
}

func (c *client) handleAck(h codec.FixedHeader, body []byte) gnet.Action {
	l := c.loop
	a := &l.ack
	if err := a.Decode(h, body, c.version); err != nil {
		return c.fail(err)
	}
	s := c.sess
	more := false
	switch a.Type {
	case codec.PUBACK:
		s.mu.Lock()
		f := s.flowLocked(&c.loop.srv.opts)
		if om, ok := f.window.Ack(a.PacketID); ok {
			c.loop.srv.forgetDelivery(&l.tx, s, om, false)
		}
		more = f.queue.Len() > 0
		s.mu.Unlock()
	case codec.PUBREC:
		s.mu.Lock()
		f := s.flowLocked(&c.loop.srv.opts)
		var ok bool
		if a.ReasonCode >= 0x80 { // 5.0: the flow ends here, no PUBREL
			if e, found := f.window.Get(a.PacketID); found {
				f.window.Drop(a.PacketID)
				c.loop.srv.forgetDelivery(&l.tx, s, e.Msg, e.State == qos.AwaitPubcomp)
			}
		} else {
			e, found := f.window.Get(a.PacketID)
			ok = f.window.Received(a.PacketID)
			if ok && found && e.State == qos.AwaitPubrec && e.Msg.stored && s.stored && c.loop.srv.store != nil {
				// PUBREL may go only once this is durable: after PUBREL the
				// receiver forgets the id, and a re-sent PUBLISH would be new.
				b := l.tx.batch(c.loop.srv)
				b.PutOutbound(s.id, e.Msg.seq, persist.Outbound{QoS: 2, State: persist.AwaitingPubcomp, PacketID: a.PacketID})
				b.Release(e.Msg.m.id)
			}
		}
		more = f.queue.Len() > 0
		s.mu.Unlock()
		if ok {
			rel := codec.Ack{Type: codec.PUBREL, PacketID: a.PacketID}
			l.out = rel.Append(l.out, c.version)
		} else if c.version == codec.Version5 && a.ReasonCode < 0x80 {
			rel := codec.Ack{Type: codec.PUBREL, PacketID: a.PacketID, ReasonCode: byte(codec.PacketIDNotFound)}
			l.out = rel.Append(l.out, c.version)
		}
	case codec.PUBCOMP:
		s.mu.Lock()
		f := s.flowLocked(&c.loop.srv.opts)
		if om, ok := f.window.Complete(a.PacketID); ok {
			c.loop.srv.forgetDelivery(&l.tx, s, om, true)
		}
		more = f.queue.Len() > 0
		s.mu.Unlock()
	case codec.PUBREL:
		s.mu.Lock()
		known := s.flowLocked(&c.loop.srv.opts).inbound.Release(a.PacketID)
		if known && s.storable() && c.loop.srv.store != nil {
			l.tx.batch(c.loop.srv).DeleteInbound(s.id, a.PacketID) // PUBCOMP waits for it
		}
		s.mu.Unlock()
		comp := codec.Ack{Type: codec.PUBCOMP, PacketID: a.PacketID}
		if !known && c.version == codec.Version5 {
			comp.ReasonCode = byte(codec.PacketIDNotFound)
		}
		// PUBCOMP even for an unknown id, so a client retrying after a
		// broker restart completes its flow [MQTT-4.3.3-11].
		l.out = comp.Append(l.out, c.version)
	}
	if more && c.wakeQueued.CompareAndSwap(false, true) {
		l.local = append(l.local, c)
	}
	return gnet.None
}

func (c *client) handleDisconnect(h codec.FixedHeader, body []byte) gnet.Action {
	d := &c.loop.disconnect
	if err := d.Decode(h, body, c.version); err != nil {
		return c.fail(err)
	}
	// 5.0: reason 0x04 asks for the will to be published anyway.
	c.graceful = !(c.version == codec.Version5 && d.ReasonCode == byte(codec.DisconnectWithWill))
	if c.version == codec.Version5 && d.Props.Has(codec.PropSessionExpiry) {
		s := c.sess
		s.mu.Lock()
		if s.expiry == 0 && d.Props.SessionExpiry != 0 {
			s.mu.Unlock()
			c.graceful = false
			return c.fail(codec.Errf(codec.ProtocolError, "MQTT-3.14.2-2", "session expiry set on DISCONNECT after CONNECT had 0"))
		}
		s.expiry = c.loop.srv.capExpiry(d.Props.SessionExpiry)
		s.persistent = s.expiry > 0
		s.mu.Unlock()
	}
	c.setCloseWhy("client sent DISCONNECT")
	return gnet.Close
}

// onClose runs once, on the loop, when the network connection is gone.
func (c *client) onClose(err error) {
	l := c.loop
	l.now = nanotime()
	was := c.state
	c.state = stateClosed
	if was != stateConnected {
		return
	}
	c.loop.srv.stats.connected.Add(-1)
	why := c.closeReason()
	switch {
	case c.takenOver.Load():
		why = "session taken over by a new connection"
	case why == "" && err != nil:
		why = err.Error()
	case why == "":
		why = "connection closed by peer"
	}
	s := c.sess
	s.mu.Lock()
	mine := s.owner == c
	if mine {
		s.owner = nil
		s.online.Store(false)
		s.offlineAt = l.now / 1e9
	}
	persistent, expiry := s.persistent, s.expiry
	if mine && persistent {
		c.loop.srv.putSessionLocked(&l.tx, s, l.now/1e6)
	}
	s.mu.Unlock()
	if mine {
		if persistent {
			c.loop.srv.scheduleExpiry(s, l.now/1e9+int64(expiry))
		} else {
			c.loop.srv.endSession(&l.tx, s)
		}
	}
	if c.will != nil && !c.graceful {
		c.loop.srv.publishWill(l, c) // now, after its delay, or never (will.go)
	}
	c.loop.srv.submit(l, &l.tx, nil)
	// The will's deliveries to clients on this loop were listed locally;
	// OnClose is not inside a read event, so nothing else would drain them.
	l.drainLocal()
	c.loop.srv.log.Info("client disconnected", "client_id", c.id, "remote", remoteString(c.conn), "reason", why)
}

func remoteString(conn gnet.Conn) string {
	if a := conn.RemoteAddr(); a != nil {
		return a.String()
	}
	return ""
}

// drain moves queued deliveries into the inflight window as far as it allows
// and writes them. It runs on the client's loop.
func (c *client) drain() {
	c.wakeQueued.Store(false)
	if c.state != stateConnected {
		return
	}
	l, s, o := c.loop, c.sess, &c.loop.srv.opts
	out := l.wbuf[:0]
	overLimit := c.conn.OutboundBuffered() > o.MaxOutboundBytes
	sent, dropped := 0, 0
	s.mu.Lock()
	if s.owner != c || s.f == nil {
		s.mu.Unlock()
		return
	}
	f := s.f
	for {
		it, ok := f.queue.Peek()
		if !ok {
			break
		}
		if tk := it.Msg.ticket; tk != nil && !tk.submitted.Load() {
			break // its store write is not queued yet; its publisher's loop wakes us
		}
		m := it.Msg.m
		if m.expiresAt != 0 && m.expiresAt <= l.now {
			f.queue.Pop()
			c.loop.srv.forgetDelivery(&l.tx, s, it.Msg, false)
			continue // expired messages are never delivered [MQTT-3.3.2-5]
		}
		var id uint16
		if it.QoS > 0 {
			id = packetIDFor(it.Msg.seq)
			if !f.window.AddID(it.Msg, it.QoS, id) {
				break // window full (or, rarely, the id is still in flight)
			}
		}
		f.queue.Pop()
		if it.QoS == 0 && overLimit {
			dropped++ // slow consumer: QoS 0 goes first
			continue
		}
		before := len(out)
		out = c.appendPublish(out, it.Msg, it.QoS, id, false)
		if c.maxOut() != 0 && len(out)-before > int(c.maxOut()) {
			// Too large for this client: not sent, and its flow ends [MQTT-3.1.2-24].
			out = out[:before]
			if id != 0 {
				f.window.Drop(id)
				c.loop.srv.forgetDelivery(&l.tx, s, it.Msg, false)
			}
			dropped++
			continue
		}
		sent++
		if len(out) >= 64<<10 {
			_, _ = c.conn.Write(out)
			out = out[:0]
		}
	}
	f.dropped += uint64(dropped)
	s.mu.Unlock()
	if len(out) > 0 {
		_, _ = c.conn.Write(out)
	}
	l.wbuf = out[:0]
	c.loop.srv.stats.msgsOut.Add(uint64(sent))
	if dropped > 0 {
		c.loop.srv.stats.dropped.Add(uint64(dropped))
	}
	if c.conn.OutboundBuffered() > 4*o.MaxOutboundBytes {
		c.closeNow(codec.QuotaExceeded, "slow consumer: outbound buffer over limit")
	}
}

// appendPublish encodes one delivery for this client's protocol version.
func (c *client) appendPublish(out []byte, om outMsg, q byte, id uint16, dup bool) []byte {
	p := &c.loop.enc
	m := om.m
	p.Topic, p.Payload = m.topic, m.payload
	p.QoS, p.PacketID, p.Dup, p.Retain = q, id, dup, om.retain
	if c.version == codec.Version5 {
		p.Props.Reset()
		if m.props != nil {
			user, ids := p.Props.User, p.Props.SubscriptionIDs
			p.Props = *m.props
			p.Props.User = append(user[:0], m.props.User...)
			p.Props.SubscriptionIDs = ids[:0]
			if m.expiresAt != 0 { // forward the remaining lifetime [MQTT-3.3.2-6]
				left := (m.expiresAt - c.loop.now + 999999999) / 1e9
				if left < 1 {
					left = 1
				}
				p.Props.MessageExpiry = uint32(left)
			}
		}
		if len(om.subIDs) > 0 {
			p.Props.SubscriptionIDs = append(p.Props.SubscriptionIDs, om.subIDs...)
			p.Props.Set(codec.PropSubscriptionID)
		} else if om.subID != 0 {
			p.Props.SubscriptionIDs = append(p.Props.SubscriptionIDs, om.subID)
			p.Props.Set(codec.PropSubscriptionID)
		}
		c.applyOutboundAlias(p) // v5_alias.go
	}
	return p.Append(out, c.version)
}

// resendInflight re-sends, in order, every unacknowledged delivery of a
// resumed session: PUBLISH with DUP for those awaiting PUBACK/PUBREC, PUBREL
// for those awaiting PUBCOMP [MQTT-4.4.0-1].
func (c *client) resendInflight() {
	l, s := c.loop, c.sess
	out := l.wbuf[:0]
	s.mu.Lock()
	var entries []qos.Entry[outMsg]
	if s.f != nil {
		entries = s.f.window.Entries()
	}
	for _, e := range entries {
		if e.State == qos.AwaitPubcomp {
			rel := codec.Ack{Type: codec.PUBREL, PacketID: e.PacketID}
			out = rel.Append(out, c.version)
			continue
		}
		out = c.appendPublish(out, e.Msg, e.QoS, e.PacketID, true)
	}
	s.mu.Unlock()
	if len(out) > 0 {
		_, _ = c.conn.Write(out)
	}
	l.wbuf = out[:0]
}

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
	allowed := srv.opts.Authorizer == nil || srv.opts.Authorizer.CanPublish(c.id, c.username(), string(p.Topic))
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
		m := newMessage(p.Topic, p.Payload, p.QoS, p.Retain, props, l.now, c.sess)
		srv.publishMessage(l, &l.tx, m)
	}
	switch p.QoS {
	case 1:
		a := codec.Ack{Type: codec.PUBACK, PacketID: p.PacketID}
		if !allowed && c.version == codec.Version5 {
			a.ReasonCode = byte(codec.NotAuthorized)
		}
		l.out = a.Append(l.out, c.version)
	case 2:
		a := codec.Ack{Type: codec.PUBREC, PacketID: p.PacketID}
		if !allowed && c.version == codec.Version5 {
			a.ReasonCode = byte(codec.NotAuthorized)
			c.sess.mu.Lock()
			c.sess.flowLocked(&srv.opts).inbound.Release(p.PacketID) // a failed PUBREC ends the flow
			c.sess.mu.Unlock()
		}
		l.out = a.Append(l.out, c.version)
	}
	return gnet.None
}
