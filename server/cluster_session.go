package server

import (
	"errors"
	"time"

	"github.com/ternmq/tern/persist"
)

// Moving a persistent session between cluster nodes. The new node (where
// the client connects) imports what the old node exports, in two rounds:
//
//	new: Claim ─▶ old: RemoteTakeover (connection closed, session kept)
//	new ─▶ old: ExportSession(from 0)    subscriptions, QoS 2 ids, stored deliveries
//	new: ImportSession                    same sequence numbers (same packet ids),
//	                                      subscriptions → its interest; synced
//	new ─▶ old: ExportSession(from next, final)   what arrived meanwhile; the
//	                                      old copy is deleted only now
//	new: ImportSession (append)           then the CONNACK, Session Present 1
//
// Between the two rounds a message may reach the session on both nodes (a
// QoS 1 duplicate is allowed; see README for QoS 2); no acknowledged
// message is lost.

// SessionState is a persistent session as it moves between nodes.
type SessionState struct {
	ClientID   string
	User       string
	Version    byte
	Expiry     uint32
	Subs       []persist.Subscription
	Inbound    []uint16 // QoS 2 packet ids received and awaiting PUBREL
	Deliveries []MovedDelivery
	// Next is the sequence number of the session's next delivery at export:
	// the final round exports from here.
	Next uint64
}

// MovedDelivery is one stored delivery of a moving session.
type MovedDelivery struct {
	Seq uint64
	Out persist.Outbound
	Msg *persist.Message // nil in state AwaitingPubcomp
}

// ErrNoSession is returned by ExportSession for a client id without a
// persistent session on this node.
var ErrNoSession = errors.New("no persistent session for this client id")

// HasSession reports whether a persistent session of clientID lives here.
func (s *Server) HasSession(clientID string) bool {
	sess := s.sessions.get(clientID)
	if sess == nil {
		return false
	}
	sess.mu.Lock()
	defer sess.mu.Unlock()
	return !sess.dead && sess.persistent
}

// ExportSession reads clientID's persistent session for another node: its
// subscriptions, QoS 2 state and the stored deliveries from sequence from
// on. It first waits (up to two seconds) for the connection RemoteTakeover
// closed to let go of it. final ends the session here once read (store
// record, subscriptions, deliveries): call it only once the other node
// stored the first round. Safe from any goroutine; it blocks.
func (s *Server) ExportSession(clientID string, from uint64, final bool) (*SessionState, error) {
	sess := s.sessions.get(clientID)
	if sess == nil || s.store == nil {
		return nil, ErrNoSession
	}
	for i := 0; ; i++ {
		sess.mu.Lock()
		online := sess.owner != nil
		sess.mu.Unlock()
		if !online {
			break
		}
		if i == 200 {
			return nil, errors.New("the session's connection did not close")
		}
		time.Sleep(10 * time.Millisecond)
	}
	sess.mu.Lock()
	if sess.dead || !sess.persistent || sess.owner != nil {
		sess.mu.Unlock()
		return nil, ErrNoSession
	}
	st := &SessionState{ClientID: clientID, User: sess.user, Version: sess.version, Expiry: sess.expiry}
	for _, sub := range sess.subs {
		st.Subs = append(st.Subs, persist.Subscription{Filter: sub.filter, QoS: sub.qos, Options: sub.opts, ID: sub.id})
	}
	if f := sess.f; f != nil {
		st.Next = f.nextSeq
		st.Inbound = f.inbound.IDs()
	}
	var ended []sessionSub
	if final {
		sess.dead = true // no delivery reaches it from now on
		ended = sess.clearSubsLocked()
		sess.f = nil
	}
	sess.mu.Unlock()
	if final {
		for _, sub := range ended {
			s.unsubscribeTrie(sub.filter, sess)
		}
		s.sessions.removeIf(clientID, sess)
	}
	// The deliveries [from, Next) were all written before we looked;
	// batches still in the group commit are waited for (bounded).
	for try := 0; ; try++ {
		st.Deliveries = st.Deliveries[:0]
		last := uint64(0)
		_, _, err := s.store.ReadOutbound(clientID, from, int(min(st.Next-min(from, st.Next), 1<<20)), func(seq uint64, o persist.Outbound, rec *persist.Message, bad error) error {
			last = seq
			if bad != nil { // a record that does not decode does not move (backlog.go drops it too)
				s.log.Warn("stored delivery does not decode; not moved", "client_id", clientID, "seq", seq, "err", bad)
				return nil
			}
			st.Deliveries = append(st.Deliveries, MovedDelivery{Seq: seq, Out: o, Msg: rec})
			return nil
		})
		if err != nil {
			return nil, err
		}
		if st.Next <= from || last+1 >= st.Next || try == 50 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if final {
		var t txn
		t.batch(s).DeleteSession(clientID)
		if err := s.submitWait(&t); err != nil {
			return nil, err
		}
		s.log.Info("session moved to another node", "client_id", clientID, "deliveries", len(st.Deliveries))
	}
	return st, nil
}

// ImportSession stores a session another node exported, with its
// subscriptions live on this node, and returns once it is durable. A
// session of that client id already here is replaced by the first round
// (from == 0); a later round (more) appends deliveries to it. Safe from any
// goroutine; it blocks.
func (s *Server) ImportSession(st *SessionState, more bool) error {
	if s.store == nil {
		return errors.New("this node has no store (durability none): persistent sessions cannot move here")
	}
	var t txn
	if old := s.sessions.get(st.ClientID); old != nil && !more {
		s.endSession(&t, old) // stale: the client was elsewhere since
	}
	sess := s.sessions.get(st.ClientID)
	if sess == nil {
		sess = newSession(st.ClientID, &s.opts)
		sess.persistent, sess.stored = true, true
		sess.expiry, sess.user, sess.version = st.Expiry, st.User, st.Version
		sess.offlineAt = time.Now().UnixMilli()
		sh := s.sessions.shard(st.ClientID)
		sh.mu.Lock()
		if sh.m.get(st.ClientID) != nil {
			sh.mu.Unlock()
			return errors.New("a session of this client id appeared meanwhile")
		}
		sh.m.put(sess)
		sh.mu.Unlock()
		s.sessions.count.Add(1)
		for _, sub := range st.Subs {
			sess.subs = append(sess.subs, sessionSub{filter: sub.Filter, qos: sub.QoS, opts: sub.Options, id: sub.ID})
		}
		sess.mu.Lock()
		s.putSessionLocked(&t, sess, sess.offlineAt)
		sess.mu.Unlock()
		for _, sub := range st.Subs {
			s.subscribeTrie(sub.Filter, subFor(sess, sub.QoS, sub.Options, sub.ID))
		}
		s.scheduleExpiry(sess, sess.offlineAt+int64(sess.expiry)*1000)
	}
	sess.mu.Lock()
	f := sess.flowLocked(&s.opts)
	b := t.batch(s)
	for _, id := range st.Inbound {
		if isNew, _ := f.inbound.Receive(id); isNew {
			b.PutInbound(st.ClientID, id, persist.Inbound{ReceivedAt: time.Now().UnixMilli()})
		}
	}
	for _, d := range st.Deliveries {
		o := d.Out
		if d.Msg != nil {
			o.MessageID = b.PutMessage(d.Msg)
			b.AddRef(o.MessageID)
			f.diskBytes += int64(len(d.Msg.Topic) + len(d.Msg.Payload) + len(d.Msg.Properties) + 64)
		}
		b.PutOutbound(st.ClientID, d.Seq, o)
		if !f.spilled {
			f.spilled, f.diskFrom = true, d.Seq
		}
		if d.Seq >= f.nextSeq {
			f.nextSeq = d.Seq + 1
		}
	}
	if st.Next > f.nextSeq {
		f.nextSeq = st.Next
	}
	sess.mu.Unlock()
	return s.submitWait(&t)
}
