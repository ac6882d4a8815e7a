package server

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ternmq/tern/persist"
)

// Moving a persistent session between cluster nodes. The new node (where
// the client connects) imports what the old node exports, in two rounds:
//
//	new: Claim ─▶ old: RemoteTakeover (connection closed, session kept)
//	new ─▶ old: ExportSession(from 0)    subscriptions, QoS 2 ids, stored deliveries;
//	                                      the old node logs the origin of every
//	                                      later delivery (moveLogs)
//	new: ImportSession                    same sequence numbers (same packet ids),
//	                                      subscriptions → its interest; its own
//	                                      deliveries from now on are numbered from
//	                                      Next+moveGap and their origins logged
//	new: fence (package cluster)          every node has seen the new interest and
//	                                      sent the old node everything it routed
//	                                      before: from now on every message for the
//	                                      session reaches the new node too
//	new ─▶ old: ExportSession(from next, final)   what arrived meanwhile, with
//	                                      origins; the old copy is deleted now
//	new: ImportSession (append)           drops what it already has (same origin),
//	                                      then the CONNACK, Session Present 1
//
// A message that reached the session on both nodes during the move is
// thus kept once (the new node's copy: the old node's extra ones are older,
// so each publisher's order holds), and none that either node acknowledged
// is lost: QoS 2 stays exactly once across the move.

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
	// Origin is the message's cluster-wide name (ClusterMessage.Origin),
	// known for deliveries made while the session moved; 0 otherwise.
	Origin uint64 `json:",omitempty"`
}

// moveGap separates, on the node a session moves to, the sequence numbers
// of its own deliveries during the move from those the old node hands over
// in the final round (numbered by the old node from SessionState.Next): the
// old node's fit below, the new node's follow, and pageIn steps over the
// hole between them like any settled hole (backlog.go). Packet ids derive
// from sequence numbers modulo 65535, so the gap costs nothing.
const moveGap = 1 << 32

const (
	// moveLogMax bounds one session's move log (8 bytes an entry): past
	// it the log is dropped and the move cannot deduplicate (logged).
	moveLogMax = 1 << 20
	// moveLogTTL ends a log whose move never finished (the other node
	// died between the rounds).
	moveLogTTL = time.Minute
)

// moveLog records the origin of each delivery to a moving session, in
// sequence order from sequence from on.
type moveLog struct {
	from    uint64
	origins []uint64
	started int64 // nanotime
}

// moveLogs are the logs of the sessions moving now, on either side of a
// move. n counts them, so deliveries pay one atomic load when none moves.
//
// Concurrency: mu is a leaf, taken under session.mu (record) or alone.
type moveLogs struct {
	n  atomic.Int32
	mu sync.Mutex
	m  map[*session]*moveLog
}

// start begins a log of sess's deliveries from sequence from on,
// replacing one left by an earlier move. Call it under sess.mu, where from
// was read, so no delivery is missed.
func (ml *moveLogs) start(sess *session, from uint64) {
	now := nanotime()
	ml.mu.Lock()
	defer ml.mu.Unlock()
	if ml.m == nil {
		ml.m = make(map[*session]*moveLog)
	}
	for x, l := range ml.m { // moves that never finished
		if now-l.started > int64(moveLogTTL) {
			delete(ml.m, x)
		}
	}
	ml.m[sess] = &moveLog{from: from, started: now}
	ml.n.Store(int32(len(ml.m)))
}

// record notes the origin of sess's delivery seq, if sess moves. sess.mu held.
func (ml *moveLogs) record(sess *session, seq, origin uint64) {
	ml.mu.Lock()
	defer ml.mu.Unlock()
	l := ml.m[sess]
	if l == nil {
		return
	}
	if seq != l.from+uint64(len(l.origins)) || len(l.origins) >= moveLogMax || nanotime()-l.started > int64(moveLogTTL) {
		// Out of step, too long or stale: this move cannot deduplicate.
		l.origins, l.from = nil, ^uint64(0)
		return
	}
	l.origins = append(l.origins, origin)
}

// take ends sess's log and returns it (nil if none).
func (ml *moveLogs) take(sess *session) *moveLog {
	ml.mu.Lock()
	defer ml.mu.Unlock()
	l := ml.m[sess]
	delete(ml.m, sess)
	ml.n.Store(int32(len(ml.m)))
	return l
}

// origin returns the logged origin of seq (0: not logged).
func (l *moveLog) origin(seq uint64) uint64 {
	if l == nil || seq < l.from || seq-l.from >= uint64(len(l.origins)) {
		return 0
	}
	return l.origins[seq-l.from]
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
	var log *moveLog
	if final {
		sess.dead = true // no delivery reaches it from now on
		ended = sess.clearSubsLocked()
		sess.f = nil
		log = s.moves.take(sess)
	} else if from == 0 {
		// Deliveries from Next on may reach the session on the new node
		// too once it subscribes: their origins tell the copies apart.
		s.moves.start(sess, st.Next)
	}
	sess.mu.Unlock()
	if final {
		for _, sub := range ended {
			s.unsubscribeTrie(sub.filter, sess)
		}
		s.sessions.removeIf(clientID, sess)
	}
	// The deliveries [from, Next) all took their sequence numbers before
	// we looked; their batches may still be on their way to the store. Let
	// the loops finish the events that made them (their batches are then
	// submitted) and wait until everything submitted is applied; then read.
	// The final round's range has no holes (the session was offline all
	// along), so it must be complete: a straggler (a delivery from another
	// node whose batch was not yet submitted, a matter of microseconds) is
	// waited for, bounded. The first round's range has holes (acknowledged
	// deliveries), so it is read once.
	s.SyncLoops(2 * time.Second)
	if err := s.storeBarrier(clientID); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		st.Deliveries = st.Deliveries[:0]
		last := uint64(0)
		_, _, err := s.store.ReadOutbound(clientID, from, int(min(st.Next-min(from, st.Next), 1<<20)), func(seq uint64, o persist.Outbound, rec *persist.Message, bad error) error {
			if seq >= st.Next {
				return errMoveRead // a later delivery: the final round's
			}
			last = seq
			if bad != nil { // a record that does not decode does not move (backlog.go drops it too)
				s.log.Warn("stored delivery does not decode; not moved", "client_id", clientID, "seq", seq, "err", bad)
				return nil
			}
			st.Deliveries = append(st.Deliveries, MovedDelivery{Seq: seq, Out: o, Msg: rec, Origin: log.origin(seq)})
			return nil
		})
		if err != nil && err != errMoveRead {
			return nil, err
		}
		if !final || st.Next <= from || uint64(len(st.Deliveries)) >= st.Next-from {
			break
		}
		if time.Now().After(deadline) {
			s.log.Error("a moving session's stored deliveries are not all readable in time; it stays here", "client_id", clientID, "from", from, "next", st.Next, "read", len(st.Deliveries), "last", last)
			return nil, errors.New("the session's stored deliveries are not all readable in time")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if final {
		var t txn
		t.batch(s).DeleteSession(clientID)
		if err := s.submitWait(&t); err != nil {
			return nil, err
		}
		if log != nil && log.from == ^uint64(0) {
			s.log.Warn("a moving session's deliveries were not all logged: messages that reached it on both nodes during the move may arrive twice", "client_id", clientID)
		}
		s.log.Info("session moved to another node", "client_id", clientID, "deliveries", len(st.Deliveries))
	}
	return st, nil
}

// errMoveRead ends an ExportSession read at the end of its range.
var errMoveRead = errors.New("end of the range")

// storeBarrier returns once every batch submitted before it is applied
// (the store applies batches in submission order): a batch that writes
// nothing real (a delete of a key no delivery uses).
func (s *Server) storeBarrier(clientID string) error {
	var t txn
	t.batch(s).DeleteOutbound(clientID, ^uint64(0))
	return s.submitWait(&t)
}

// ImportSession stores a session another node exported, with its
// subscriptions live on this node, and returns once it is durable. The
// first round (more false) replaces a session of that client id already
// here; its own deliveries from then on are numbered from Next+moveGap
// and logged. The final round (more true) appends the old node's later
// deliveries below them, dropping those this node already has (the same
// origin): the copies of the move's overlap. It reports how many it
// dropped. Safe from any goroutine; it blocks.
func (s *Server) ImportSession(st *SessionState, more bool) (dropped int, err error) {
	if s.store == nil {
		return 0, errors.New("this node has no store (durability none): persistent sessions cannot move here")
	}
	var t txn
	if old := s.sessions.get(st.ClientID); old != nil && !more {
		s.endSession(&t, old) // stale: the client was elsewhere since
	}
	sess := s.sessions.get(st.ClientID)
	if sess == nil {
		if more {
			return 0, errors.New("the session's first round is gone")
		}
		sess = newSession(st.ClientID, &s.opts)
		sess.persistent, sess.stored = true, true
		sess.expiry, sess.user, sess.version = st.Expiry, st.User, st.Version
		sess.offlineAt = time.Now().UnixMilli()
		sh := s.sessions.shard(st.ClientID)
		sh.mu.Lock()
		if sh.m.get(st.ClientID) != nil {
			sh.mu.Unlock()
			return 0, errors.New("a session of this client id appeared meanwhile")
		}
		sh.m.put(sess)
		sh.mu.Unlock()
		s.sessions.count.Add(1)
		for _, sub := range st.Subs {
			sess.subs = append(sess.subs, sessionSub{filter: sub.Filter, qos: sub.QoS, opts: sub.Options, id: sub.ID})
		}
		sess.mu.Lock()
		s.putSessionLocked(&t, sess, sess.offlineAt)
		// Its own deliveries, from the subscriptions below on, leave room
		// for the old node's final round and are logged.
		f := sess.flowLocked(&s.opts)
		f.nextSeq = max(f.nextSeq, st.Next+moveGap)
		s.moves.start(sess, f.nextSeq)
		sess.mu.Unlock()
		for _, sub := range st.Subs {
			s.subscribeTrie(sub.Filter, subFor(sess, sub.QoS, sub.Options, sub.ID))
		}
		s.scheduleExpiry(sess, sess.offlineAt+int64(sess.expiry)*1000)
	}
	sess.mu.Lock()
	var have map[uint64]struct{}
	if more {
		if log := s.moves.take(sess); log != nil && len(log.origins) > 0 {
			have = make(map[uint64]struct{}, len(log.origins))
			for _, o := range log.origins {
				if o != 0 {
					have[o] = struct{}{}
				}
			}
		}
	}
	f := sess.flowLocked(&s.opts)
	b := t.batch(s)
	for _, id := range st.Inbound {
		if isNew, _ := f.inbound.Receive(id); isNew {
			b.PutInbound(st.ClientID, id, persist.Inbound{ReceivedAt: time.Now().UnixMilli()})
		}
	}
	imported := false
	for _, d := range st.Deliveries {
		if _, dup := have[d.Origin]; dup && d.Origin != 0 {
			dropped++ // this node has it too, from the same publish
			continue
		}
		o := d.Out
		if d.Msg != nil {
			o.MessageID = b.PutMessage(d.Msg)
			b.AddRef(o.MessageID)
			f.diskBytes += int64(len(d.Msg.Topic) + len(d.Msg.Payload) + len(d.Msg.Properties) + 64)
		}
		b.PutOutbound(st.ClientID, d.Seq, o)
		if !f.spilled || d.Seq < f.diskFrom {
			f.spilled, f.diskFrom = true, d.Seq
		}
		if d.Seq >= f.nextSeq {
			f.nextSeq = d.Seq + 1
		}
		imported = true
	}
	if imported {
		// The numbers the old node's acknowledged deliveries left free,
		// those dropped, and those between the old node's last delivery
		// and this node's first are holes for good once this batch is
		// applied: pageIn settles and steps over them.
		f.holeEnd = max(f.holeEnd, st.Next+moveGap)
		f.settled = false
		f.settleGen++
	}
	if !more && st.Next > f.nextSeq {
		f.nextSeq = st.Next
	}
	sess.mu.Unlock()
	return dropped, s.submitWait(&t)
}
