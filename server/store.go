package server

import (
	"fmt"
	"strings"
	"unsafe"

	"github.com/ternmq/tern/codec"
	"github.com/ternmq/tern/persist"
)

// storable reports whether deliveries to s are written to the store. s.mu held.
func (s *session) storable() bool { return s.persistent && s.stored }

// sessionRecordLocked builds the store record of s. s.mu must be held.
func (s *session) sessionRecordLocked(disconnectedAt int64) *persist.Session {
	rec := &persist.Session{ProtocolVersion: s.version, ExpiryInterval: s.expiry, DisconnectedAt: disconnectedAt, Owner: s.user}
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
		var rec persist.Message // on the stack: PutMessage encodes it at once
		fillMessageRecord(&rec, m)
		m.id = b.PutMessage(&rec)
		t.putIDs = append(t.putIDs, m.id)
		b.AddRef(m.id)
	case t.putHere(m.id):
		b.AddRef(m.id)
	default:
		// Stored by an earlier batch (a retained message delivered on a
		// later SUBSCRIBE): its record may be gone with its last reference.
		var rec persist.Message
		fillMessageRecord(&rec, m)
		b.AddRefOrPut(m.id, &rec)
	}
	// om.seq is new (f.nextSeq): an insert, so a group that also deletes
	// the entry (acknowledged meanwhile) writes neither (persist, "Write
	// avoidance").
	b.InsertOutbound(target.id, om.seq, persist.Outbound{MessageID: m.id, QoS: q, State: persist.Queued, Shared: om.share != ""})
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
		srv.unaccountBacklogLocked(t, s, om.m)
	}
}

// unaccountBacklogLocked takes a stored delivery of m off s's backlog
// quota (MaxSessionBacklogBytes, backlog.go), recording the count in t
// when it moved enough. s.mu held.
func (srv *Server) unaccountBacklogLocked(t *txn, s *session, m *message) {
	if s.f != nil {
		s.f.diskBytes = max(0, s.f.diskBytes-int64(m.size()))
		srv.saveBacklogBytesLocked(t, s)
	}
}

// messageRecord converts a message for the store, in a record of its own
// (callers that keep it, or hand it to code that may).
func messageRecord(m *message) *persist.Message {
	rec := &persist.Message{}
	fillMessageRecord(rec, m)
	rec.Topic = strings.Clone(rec.Topic)
	return rec
}

// fillMessageRecord sets rec to m for the store. rec.Topic views m.topic
// without a copy, so rec may only be used while m is (Batch.PutMessage and
// AddRefOrPut encode it before they return). This is the durable publish
// path, once per message stored: the copy and the record on the heap were
// 2 of its allocations.
func fillMessageRecord(rec *persist.Message, m *message) {
	*rec = persist.Message{Payload: m.payload, QoS: m.qos, Retain: m.retain}
	if len(m.topic) > 0 {
		rec.Topic = unsafe.String(&m.topic[0], len(m.topic))
	}
	if m.props != nil {
		rec.Properties = codec.AppendPublishProperties(nil, m.props)
	}
	if m.expiresAt != 0 {
		rec.ExpiresAt = m.expiresAt / 1e6
	}
	if m.from != nil {
		rec.Publisher = m.from.id
	}
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
