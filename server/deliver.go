package server

import (
	"github.com/ternmq/tern/codec"
	"github.com/ternmq/tern/persist"
	"github.com/ternmq/tern/qos"
)

// drain moves queued deliveries into the inflight window as far as it allows
// and writes them. It runs on the client's loop.
func (c *client) drain() {
	c.wakeQueued.Store(false)
	if c.state != stateConnected || c.flags.has(flagConnackHeld) { // connect.go: CONNACK first
		return
	}
	l, s, o := c.loop, c.sess, &c.loop.srv.opts
	trStart := traceNow()
	out := c.pageIn(l.wbuf[:0]) // backlog.go: the next stored deliveries, if some wait on disk
	overLimit := c.conn.OutboundBuffered() > o.MaxOutboundBytes
	sent, dropped := 0, 0
	hooks := l.srv.hooks.wantsDeliveryHooks()
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
			if hooks {
				l.hookEvents = append(l.hookEvents, hookEvent{kind: hookExpiredMsg, q: it.QoS, m: m})
			}
			continue // expired messages are never delivered [MQTT-3.3.2-5]
		}
		var id uint16
		if it.QoS > 0 {
			id = packetIDFor(it.Msg.seq)
			if !f.window.AddID(it.Msg, it.QoS, id) {
				break // window full (or, rarely, the id is still in flight)
			}
			if it.Msg.seq >= f.sentEnd {
				f.sentEnd = it.Msg.seq + 1
			}
			if srv := c.loop.srv; it.Msg.stored && s.storable() && srv.store != nil {
				// Record that it was sent (no fsync waits for this): after
				// a restart it goes out again as a re-delivery, DUP 1
				// [MQTT-3.3.1-1], while never-sent ones keep DUP 0 [MQTT-3.3.1-3].
				st := persist.AwaitingPuback
				if it.QoS == 2 {
					st = persist.AwaitingPubrec
				}
				l.tx.batch(srv).PutOutbound(s.id, it.Msg.seq, persist.Outbound{MessageID: it.Msg.m.id, QoS: it.QoS, State: st, PacketID: id, Shared: it.Msg.share != ""})
			}
		}
		f.queue.Pop()
		if it.QoS == 0 && overLimit {
			dropped++ // slow consumer: QoS 0 goes first
			if hooks {
				l.hookEvents = append(l.hookEvents, hookEvent{kind: hookDroppedSlow, m: it.Msg.m})
			}
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
			if hooks {
				l.hookEvents = append(l.hookEvents, hookEvent{kind: hookDroppedTooLarge, q: it.QoS, m: it.Msg.m})
			}
			continue
		}
		sent++
		traceSent(l, m)
		if hooks {
			l.hookEvents = append(l.hookEvents, hookEvent{kind: hookDelivered, q: it.QoS, m: it.Msg.m})
		}
		if len(out) >= 64<<10 {
			_, _ = c.conn.Write(out)
			out = out[:0]
		}
	}
	f.dropped += uint64(dropped)
	if sent > 0 {
		f.lastProgress = l.now
	}
	if !f.spilled && !s.overSoftLocked(o) {
		s.setCongested(false)
	}
	var released []*client
	if len(f.waiters) > 0 && s.drainedLocked(o) {
		released = s.takeWaitersLocked() // pace.go: its publishers may go on
	}
	refill := f.spilled && f.queue.Len() < backlogWindow/2 && sent > 0
	s.mu.Unlock()
	if len(out) > 0 {
		w := traceNow()
		_, _ = c.conn.Write(out)
		if end := traceNow(); end != 0 {
			traceWcall(end - w)
			traceDrain(l, trStart, end)
		}
	}
	if released != nil {
		c.loop.srv.releasePaced(released)
	}
	if len(l.hookEvents) > 0 {
		l.srv.fireDeliveryHooks(l, c.id)
	}
	if refill && c.wakeQueued.CompareAndSwap(false, true) {
		l.local = append(l.local, c) // more of the backlog once the window has room
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

// packetIDFor derives a delivery's packet id from its sequence number.
func packetIDFor(seq uint64) uint16 { return uint16(seq%65535) + 1 }

// deliver queues one delivery on target and wakes its connection's loop if
// it is online and not already scheduled. Offline sessions keep QoS 1/2
// deliveries only (QoS 0 is not queued for absent clients).
//
// A QoS 1/2 delivery to a persistent session is written to the store in t
// and kept in memory only while it fits the session's window and nothing
// older waits on disk; otherwise it stays in the store alone and is paged
// in as the window drains (backlog.go) — it is never dropped. A delivery
// that puts a clean session's queue over its limit marks the publisher for
// pacing (l.paceOn, pace.go); QoS 0 is dropped first.
//
// subID is the matching subscription's identifier; ids, when not nil, are
// all the identifiers of several overlapping subscriptions and win. share
// is the ShareName of the $share group that chose target, "" otherwise.
func (s *Server) deliver(l *loop, t *txn, target *session, m *message, q byte, retain bool, subID uint32, ids []uint32, share string) {
	target.mu.Lock()
	if target.dead {
		target.mu.Unlock()
		return
	}
	owner := target.owner
	if owner == nil && q == 0 {
		target.mu.Unlock()
		return
	}
	om := outMsg{m: m, retain: retain, subIDs: ids, share: share}
	if ids == nil {
		om.subID = subID
	}
	f := target.flowLocked(&s.opts)
	if q > 0 && s.store != nil && target.storable() {
		s.deliverDurableLocked(l, t, target, f, om, q)
		target.mu.Unlock()
		return
	}
	if q > 0 {
		om.seq = f.nextSeq
	}
	policy := s.opts.QueuePolicy.qos()
	if owner == nil {
		// Nobody to pace for an absent client: its queue stops at the
		// configured limit (the hard bound, twice that, is pacing's slack).
		f.queue.MaxCount, f.queue.MaxBytes = s.opts.MaxQueuedMessages, s.opts.MaxQueuedBytes
	} else if q > 0 && l != nil && l.paced != nil && l.paced != target {
		// A client's PUBLISH, and its client will be paced (pace.go): it
		// will be acknowledged, so it must not be dropped. Each publisher
		// adds at most one message past the soft limit, then waits for
		// the queue to drain to half: the hard bound grows by one
		// message per publisher waiting (f.waiters, cleared at that
		// drain) and this one. With the hard bound alone, once more
		// publishers than the soft limit fed one subscriber, their
		// acknowledged messages were dropped
		// (TestLossPacedPublishersOneCleanSubscriber_MQTT_4_6_0_6).
		k := len(f.waiters) + 1
		f.queue.MaxCount = 2*s.opts.MaxQueuedMessages + k
		f.queue.MaxBytes = 2*s.opts.MaxQueuedBytes + k*s.opts.MaxPacketSize
	}
	dropped, hasDropped, queued := f.queue.Push(qos.Item[outMsg]{Msg: om, QoS: q, Size: m.size()}, policy)
	f.queue.MaxCount, f.queue.MaxBytes = 2*s.opts.MaxQueuedMessages, 2*s.opts.MaxQueuedBytes
	if queued && q > 0 {
		f.nextSeq++
	}
	if hasDropped {
		f.dropped++
		if dropped.Msg.stored { // an older stored delivery made room (DropOldest)
			s.forgetDelivery(t, target, dropped.Msg, false)
		}
	}
	if queued && q > 0 && owner != nil && target.overSoftLocked(&s.opts) {
		target.setCongested(true) // share.go: groups prefer another member
		if l != nil {
			l.paceOn = append(l.paceOn, target) // pace.go: the publisher waits for this queue
		}
	}
	wake := owner != nil && queued && owner.wakeQueued.CompareAndSwap(false, true)
	target.mu.Unlock()
	if hasDropped {
		s.stats.dropped.Add(1)
		if s.hooks.onDropped != nil {
			s.hookDropped(target.id, dropped.Msg.m, dropped.QoS, "session queue full")
		}
	}
	if wake {
		owner.loop.schedule(owner, l)
	}
}
