package server

// Durability: how the broker keeps its promise that a QoS 1 PUBLISH is
// PUBACKed, and a QoS 2 PUBLISH PUBRECed, only once everything needed to
// deliver it to every matching persistent session is in the store and
// synced (DESIGN §5).
//
// # Write contexts and group commit
//
// Every event that changes durable state (a read event of one connection, a
// connection closing, an API call) gathers its writes in one txn: one
// persist.Batch. At the end of a read event the batch is committed and the
// replies the event produced (PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK,
// CONNACK…) are held back until the store calls done; the store merges the
// batches of all loops queued at that moment into one fsync. Replies of later
// events on the same connection queue behind the pending ones, so
// acknowledgements leave in the order the packets came [MQTT-4.6.0-2].
//
// # What is written
//
//	persistent session created, subscribed, unsubscribed, disconnected → PutSession
//	QoS 1/2 delivery to a persistent session → PutMessage (once per message) + AddRef + PutOutbound(Queued)
//	PUBACK / PUBCOMP / expiry / drop of such a delivery → DeleteOutbound (+ Release)
//	PUBREC from the subscriber → PutOutbound(AwaitingPubcomp) + Release; PUBREL waits for it
//	QoS 2 PUBLISH from a persistent session → PutInbound; PUBREC waits for it
//	PUBREL from that session → DeleteInbound; PUBCOMP waits for it
//	retained set / cleared → PutRetained / DeleteRetained
//	session ended → DeleteSession (the store drops the client's whole range)
//
// Clean sessions (3.1.1 clean session 1, 5.0 session expiry 0) write nothing.
//
// # Sending without a sync per send
//
// Outbound packet ids are derived from the delivery's sequence number
// (seq mod 65535 + 1), so the "sent" transition need not be stored: after a
// crash a recovered delivery goes out again with the id it first had, and a
// QoS 2 receiver that already holds that id treats it as the duplicate it is
// [MQTT-4.3.3-9]. Only PUBREC → PUBREL must be durable before PUBREL leaves,
// because after PUBREL the receiver forgets the id.
//
// A stored delivery is not sent before its batch has been handed to the
// store (ticket.submitted): the subscriber's acknowledgement, committed in
// a later batch, can then never be applied before the entry it deletes.

import (
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/ternmq/tern/codec"
	"github.com/ternmq/tern/persist"
	"github.com/ternmq/tern/qos"
)

// ticket marks the deliveries written by one batch.
type ticket struct{ submitted atomic.Bool }

// txn gathers the durable writes of one event.
type txn struct {
	b      *persist.Batch
	ticket *ticket
	wakes  []*client // owners of ticketed deliveries, woken after submission
	putIDs []uint64  // messages this batch put (a reference to them is a plain AddRef)
}

func (t *txn) putHere(id uint64) bool {
	for _, x := range t.putIDs {
		if x == id {
			return true
		}
	}
	return false
}

// batch returns the txn's batch, starting one. s.store must not be nil.
func (t *txn) batch(s *Server) *persist.Batch {
	if t.b == nil {
		t.b = s.store.NewBatch()
	}
	return t.b
}

// tick returns the ticket for deliveries written by this txn.
func (t *txn) tick() *ticket {
	if t.ticket == nil {
		t.ticket = &ticket{}
	}
	return t.ticket
}

// pendingReplies are replies held until a commit completes.
type pendingReplies struct{ out []byte }

// submit commits the txn's batch (if any) and calls done(err) on the loop l
// when it is durable (l nil: on the store's goroutine). It wakes the owners
// of the deliveries the batch stored once the batch is queued in the store.
func (s *Server) submit(l *loop, t *txn, done func(error)) {
	b, tk, wakes := t.b, t.ticket, t.wakes
	t.b, t.ticket, t.wakes, t.putIDs = nil, nil, t.wakes[:0], t.putIDs[:0]
	if b == nil {
		if done != nil {
			done(nil)
		}
		return
	}
	cb := func(err error) {
		if err != nil {
			s.log.Error("store commit failed", "err", err)
		}
		if done == nil {
			return
		}
		if l == nil {
			done(err)
			return
		}
		l.post(func() { done(err) })
	}
	s.store.Commit(b, cb)
	if tk != nil {
		tk.submitted.Store(true)
	}
	for _, c := range wakes {
		if c.wakeQueued.CompareAndSwap(false, true) {
			c.loop.schedule(c, l)
		}
	}
}

// submitWait commits the txn's batch from outside the event loops and waits
// for it (API calls, session expiry).
func (s *Server) submitWait(t *txn) error {
	if t.b == nil {
		return nil
	}
	ch := make(chan error, 1)
	s.submit(nil, t, func(err error) { ch <- err })
	return <-ch
}

// finishEvent ends a read event of c: commit its writes and send its replies,
// after the commit when there was one (or one is still pending).
func (c *client) finishEvent() {
	l, srv := c.loop, c.loop.srv
	if srv.store == nil || (l.tx.b == nil && c.lastPending == nil) {
		c.flush()
		srv.submit(l, &l.tx, nil) // wakes only
		return
	}
	if l.tx.b == nil { // nothing to write, but replies must stay in order
		c.lastPending.out = append(c.lastPending.out, l.out...)
		l.out = l.out[:0]
		return
	}
	p := &pendingReplies{out: append([]byte(nil), l.out...)}
	l.out = l.out[:0]
	c.lastPending = p
	srv.submit(l, &l.tx, func(err error) { c.commitDone(p, err) })
}

// commitDone runs on c's loop when a batch of c's completed.
func (c *client) commitDone(p *pendingReplies, err error) {
	if c.lastPending == p {
		c.lastPending = nil
	}
	if c.state == stateClosed {
		return
	}
	if err != nil {
		// Nothing of this batch is acknowledged: the client will resend
		// what it still holds [MQTT-4.4.0-1].
		c.closeNow(codec.UnspecifiedError, "store unavailable: "+err.Error())
		return
	}
	if len(p.out) > 0 {
		_, _ = c.conn.Write(p.out)
	}
}

// storable reports whether deliveries to s are written to the store. s.mu held.
func (s *session) storable() bool { return s.persistent && s.stored }

// sessionRecordLocked builds the store record of s. s.mu must be held.
func (s *session) sessionRecordLocked(disconnectedAt int64) *persist.Session {
	rec := &persist.Session{ProtocolVersion: s.version, ExpiryInterval: s.expiry, DisconnectedAt: disconnectedAt}
	rec.Subscriptions = make([]persist.Subscription, len(s.subs))
	for i, sub := range s.subs {
		rec.Subscriptions[i] = persist.Subscription{Filter: sub.filter, QoS: sub.qos, Options: sub.opts, ID: sub.id}
	}
	return rec
}

// putSessionLocked writes s's record into t if s is persistent. s.mu held.
func (srv *Server) putSessionLocked(t *txn, s *session, disconnectedAt int64) {
	if srv.store == nil || !s.persistent || s.dead {
		return
	}
	t.batch(srv).PutSession(s.id, s.sessionRecordLocked(disconnectedAt))
	s.stored = true
}

// storeDelivery writes a QoS 1/2 delivery to a persistent session: the
// message once, a reference and the outbound entry. target.mu held.
func (srv *Server) storeDelivery(t *txn, target *session, om *outMsg, q byte) {
	b := t.batch(srv)
	m := om.m
	switch {
	case m.id == 0:
		m.id = b.PutMessage(messageRecord(m))
		t.putIDs = append(t.putIDs, m.id)
		b.AddRef(m.id)
	case t.putHere(m.id):
		b.AddRef(m.id)
	default:
		// Stored by an earlier batch (a retained message delivered on a
		// later SUBSCRIBE): its record may be gone with its last reference.
		b.AddRefOrPut(m.id, messageRecord(m))
	}
	b.PutOutbound(target.id, om.seq, persist.Outbound{MessageID: m.id, QoS: q, State: persist.Queued})
	om.stored = true
	om.ticket = t.tick()
}

// forgetDelivery deletes a stored delivery that is done (acknowledged,
// expired or dropped). s.mu held.
func (srv *Server) forgetDelivery(t *txn, s *session, om outMsg, released bool) {
	if srv.store == nil || !om.stored || !s.stored || s.dead {
		return
	}
	b := t.batch(srv)
	b.DeleteOutbound(s.id, om.seq)
	if !released {
		b.Release(om.m.id)
	}
}

// messageRecord converts a message for the store.
func messageRecord(m *message) *persist.Message {
	rec := &persist.Message{Topic: string(m.topic), Payload: m.payload, QoS: m.qos, Retain: m.retain}
	if m.props != nil {
		rec.Properties = codec.AppendPublishProperties(nil, m.props)
	}
	if m.expiresAt != 0 {
		rec.ExpiresAt = m.expiresAt / 1e6
	}
	if m.from != nil {
		rec.Publisher = m.from.id
	}
	return rec
}

// messageFromRecord rebuilds a message read back from the store.
func messageFromRecord(id uint64, rec *persist.Message) (*message, error) {
	var props *codec.Properties
	if len(rec.Properties) > 0 {
		props = &codec.Properties{}
		if err := codec.DecodePublishProperties(rec.Properties, props); err != nil {
			return nil, fmt.Errorf("message %d properties: %w", id, err)
		}
	}
	m := newMessage([]byte(rec.Topic), rec.Payload, rec.QoS, rec.Retain, props, 0, nil)
	m.expiresAt = rec.ExpiresAt * 1e6 // absolute, not "now + interval"
	m.id = id
	return m, nil
}

// packetIDFor derives a delivery's packet id from its sequence number.
func packetIDFor(seq uint64) uint16 { return uint16(seq%65535) + 1 }

// openStore opens the configured store and rebuilds the broker's state
// from it: sessions (offline, with their subscriptions), their queued and
// inflight deliveries and inbound QoS 2 markers, and retained messages.
func (s *Server) openStore() error {
	o := &s.opts
	if o.Durability == DurabilityNone && o.Store == nil {
		return nil
	}
	st := o.Store
	if st == nil {
		mode := persist.ModeSync
		if o.Durability == DurabilityPeriodic {
			mode = persist.ModePeriodic
		}
		var err error
		st, err = persist.Open(persist.Options{Dir: o.DataDir, Mode: mode, SyncInterval: o.SyncInterval, Logger: s.log})
		if err != nil {
			return fmt.Errorf("open store in %s: %w", o.DataDir, err)
		}
	}
	s.store = st
	start := time.Now()
	if n, err := st.ExpireSessions(start); err != nil {
		return fmt.Errorf("expire sessions: %w", err)
	} else if n > 0 {
		s.log.Info("expired sessions while the broker was down", "sessions", n)
	}
	msgs := make(map[uint64]*message)
	var corrupt int64
	now := start.UnixNano()
	stats, err := st.Recover(persist.Visitor{
		Message: func(id uint64, rec *persist.Message) error {
			m, err := messageFromRecord(id, rec)
			if err != nil {
				s.log.Warn("skipping stored message", "id", id, "err", err)
				corrupt++
				return nil
			}
			msgs[id] = m
			return nil
		},
		Session: func(id string, rec *persist.Session) error {
			s.recoverSession(id, rec, now)
			return nil
		},
		Inbound: func(id string, pid uint16, _ persist.Inbound) error {
			if sess := s.sessions.get(id); sess != nil {
				sess.mu.Lock()
				sess.flowLocked(o).inbound.Receive(pid)
				sess.mu.Unlock()
			}
			return nil
		},
		Outbound: func(id string, seq uint64, rec persist.Outbound) error {
			s.recoverOutbound(id, seq, rec, msgs)
			return nil
		},
		Retained: func(rec *persist.Message) error {
			m, err := messageFromRecord(0, rec)
			if err != nil {
				corrupt++
				return nil
			}
			s.retained.Set(rec.Topic, m)
			return nil
		},
		Corrupt: func(key []byte, err error) {
			s.log.Warn("skipping corrupt record", "key", fmt.Sprintf("%x", key), "err", err)
		},
		Progress: func(rs persist.RecoveryStats) {
			s.log.Info("recovering", "records", rs.Records, "sessions", rs.Sessions, "outbound", rs.Outbound)
		},
	})
	if err != nil {
		return fmt.Errorf("recover store: %w", err)
	}
	s.log.Info("store recovered", "dir", o.DataDir, "durability", o.Durability,
		"sessions", stats.Sessions, "queued", stats.Outbound, "retained", stats.Retained,
		"corrupt_skipped", stats.Corrupt+corrupt, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

func (s *Server) recoverSession(id string, rec *persist.Session, now int64) {
	sess := newSession(id, &s.opts)
	sess.persistent, sess.stored = true, true
	sess.expiry = rec.ExpiryInterval
	sess.version = rec.ProtocolVersion
	sess.offlineAt = now / 1e9
	if rec.DisconnectedAt > 0 {
		sess.offlineAt = rec.DisconnectedAt / 1000
	}
	for _, sub := range rec.Subscriptions {
		sess.subs = append(sess.subs, sessionSub{filter: sub.Filter, qos: sub.QoS, opts: sub.Options, id: sub.ID})
		s.subs.Subscribe(sub.Filter, subFor(sess, sub.QoS, sub.Options, sub.ID))
	}
	sh := s.sessions.shard(id)
	sh.mu.Lock()
	sh.m[id] = sess
	sh.mu.Unlock()
	s.sessions.count.Add(1)
	s.scheduleExpiry(sess, sess.offlineAt+int64(sess.expiry))
}

func (s *Server) recoverOutbound(id string, seq uint64, rec persist.Outbound, msgs map[uint64]*message) {
	sess := s.sessions.get(id)
	if sess == nil {
		return
	}
	sess.mu.Lock()
	defer sess.mu.Unlock()
	f := sess.flowLocked(&s.opts)
	if seq >= f.nextSeq {
		f.nextSeq = seq + 1
	}
	om := outMsg{seq: seq, stored: true}
	if rec.State == persist.AwaitingPubcomp {
		om.m = &message{} // the message is no longer needed: only PUBREL is re-sent
		f.window.Restore(qos.Entry[outMsg]{Msg: om, PacketID: rec.PacketID, QoS: 2, State: qos.AwaitPubcomp})
		return
	}
	m := msgs[rec.MessageID]
	if m == nil {
		return // dangling: the store counted and logged it
	}
	om.m = m
	if rec.State == persist.AwaitingPuback || rec.State == persist.AwaitingPubrec {
		st := qos.AwaitPuback
		if rec.State == persist.AwaitingPubrec {
			st = qos.AwaitPubrec
		}
		f.window.Restore(qos.Entry[outMsg]{Msg: om, PacketID: rec.PacketID, QoS: rec.QoS, State: st})
		return
	}
	// Queued; it may have been sent before the crash, with the id derived
	// from seq, which it gets again.
	f.queue.Push(qos.Item[outMsg]{Msg: om, QoS: rec.QoS, Size: m.size()}, qos.DropNewest)
}

// errStoreDown is what clients are told when the store refuses writes.
var errStoreDown = errors.New("store unavailable")

// connTx is the write context of the event c's loop is handling.
func (s *Server) connTx(c *client) *txn { return &c.loop.tx }
