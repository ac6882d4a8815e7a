package server

import (
	"time"

	"github.com/ternmq/tern/persist"
	"github.com/ternmq/tern/qos"
	"github.com/ternmq/tern/trie"
)

// Shared subscriptions without loss ($share/<group>/<filter>, 5.0 §4.8.2).
//
// A group delivers each message to one member, chosen round-robin by the
// trie among members that can take it now: connected and not congested
// (session.congested: a clean session over its queue limit, a persistent
// one with a backlog on disk). When no member can, one is chosen anyway and
// the message waits in its queue — paced or on disk, never dropped.
//
// When a member's session ends (a clean session disconnecting, a session
// taken over with clean start, an expired one), the QoS 1/2 messages the
// group gave it that it had not acknowledged — queued, or sent and awaiting
// PUBACK/PUBREC — go to another member of the same group, as the spec allows
// [MQTT-4.8.2-4 note: "the Server SHOULD send the Application Message to
// another Client that is subscribed to the same Shared Subscription"]. A
// message the member already acknowledged with PUBREC stays its own. A
// persistent member that merely goes offline keeps its messages (they wait
// in the store for it, as for any persistent session).
//
// An offline persistent member holds its messages in the store only
// (backlog.go). Each stored delivery records whether a group gave it
// (persist.Outbound.Shared); when such a member's session expires, its
// stored $share deliveries not yet acknowledged are read back, page by
// page in sequence order, and handed to another member before the session
// and its backlog are deleted (redispatchStored). The group of a delivery
// is the member's first $share subscription whose filter matches the
// topic (several groups of one member matching one topic: the deliveries
// of one message go to them in subscription order). A member that expired
// while the broker was down is kept when the store is opened, recovered
// with the others and expired right after recovery, the same way
// (recover.go). Not redispatched: a persistent member taken over by a
// clean-start connection (the connecting loop must not read a backlog of
// up to max_session_backlog_bytes); its stored group messages are deleted
// with the session, not read back and so not counted.

// sharedLeftovers collects what a departing session still owed its shared
// groups. s.mu held; call before the flow is dropped.
func sharedLeftovers(f *flow) []outMsg {
	if f == nil {
		return nil
	}
	var out []outMsg
	for _, e := range f.window.Entries() {
		if e.Msg.share != "" && e.State != qos.AwaitPubcomp && e.Msg.m != nil {
			out = append(out, e.Msg)
		}
	}
	for {
		it, ok := f.queue.Pop()
		if !ok {
			break
		}
		if it.Msg.share != "" && it.QoS > 0 {
			out = append(out, it.Msg)
		}
	}
	return out
}

// redispatchShared hands each leftover to another member of its group, in
// t. The departed session must already be out of the trie. Safe from any
// goroutine; no session lock held.
func (s *Server) redispatchShared(t *txn, gone *session, left []outMsg) {
	for _, om := range left {
		s.redispatchOne(t, gone, om.m, om.share)
	}
}

// redispatchOne delivers m, in t, to a member of group other than gone,
// counting it as redispatched, or as dropped when the group has no member
// left. No session lock held.
func (s *Server) redispatchOne(t *txn, gone *session, m *message, group string) bool {
	for _, sub := range s.subs.Match(m.topic, nil) {
		if sub.Group != group || sub.Subscriber == gone {
			continue
		}
		s.deliver(nil, t, sub.Subscriber, m, min(m.qos, sub.QoS), false, sub.ID, nil, sub.Group)
		s.stats.redispatched.Add(1)
		return true
	}
	s.stats.dropped.Add(1) // the group has no member left
	return false
}

// sharedGroupOf returns the ShareName of the k-th (modulo their number)
// $share subscription in subs whose filter matches topic, "" if none.
func sharedGroupOf(subs []sessionSub, topic []byte, k int) string {
	var groups []string
	for _, sub := range subs {
		if g, filter, ok := trie.SplitShared(sub.filter); ok && trie.MatchTopic(filter, string(topic)) {
			if k == 0 && groups == nil {
				return g // the common case: the first one, nothing allocated
			}
			groups = append(groups, g)
		}
	}
	if len(groups) == 0 {
		return ""
	}
	return groups[k%len(groups)]
}

// storedShare is what redispatchStored needs of an ending member: its
// stored deliveries [from, to), the batch of the latest, and its $share
// subscriptions.
type storedShare struct {
	from, to uint64
	last     *ticket
	subs     []sessionSub
}

// storedShareLocked captures it, before the session's flow is dropped:
// only for an offline persistent session with $share subscriptions and a
// backlog in the store (the zero value otherwise). s.mu held.
func (srv *Server) storedShareLocked(s *session) storedShare {
	f := s.f
	if srv.store == nil || f == nil || !s.persistent || !s.stored || s.owner != nil || !f.spilled || f.diskFrom >= f.nextSeq {
		return storedShare{}
	}
	var subs []sessionSub
	for _, sub := range s.subs {
		if _, _, ok := trie.SplitShared(sub.filter); ok {
			subs = append(subs, sub)
		}
	}
	if subs == nil {
		return storedShare{}
	}
	return storedShare{from: f.diskFrom, to: f.nextSeq, last: f.lastTk, subs: subs}
}

// redispatchPage is how many stored deliveries redispatchStored reads and
// commits at a time.
const redispatchPage = 512

// redispatchStored hands the $share deliveries stored for gone — not
// acknowledged, not at PUBREL — to other members of their groups, in
// sequence order, one committed page at a time, so that the deletion of
// gone's backlog that follows finds every one already referenced again.
// gone must be dead and out of the trie (no delivery reaches it any more).
// It blocks on the store: it runs on a goroutine of its own started by
// session expiry, never on an event loop or the ticker.
func (srv *Server) redispatchStored(gone *session, st storedShare) {
	// The latest delivery's batch may still be on its way (a publisher's
	// event that chose gone just before it died): wait until it is
	// submitted, then until everything submitted is applied.
	for wait := 0; st.last != nil && !st.last.submitted.Load() && wait < 5000; wait++ {
		time.Sleep(time.Millisecond)
	}
	marker := srv.store.NewBatch()
	marker.DeleteOutbound(gone.id, ^uint64(0)) // a key no delivery uses
	if err := srv.store.CommitWait(marker); err != nil {
		srv.log.Error("redispatching an expired $share member's backlog", "client_id", gone.id, "err", err)
		return
	}
	var t txn
	var moved, lost int
	multi := map[uint64]int{} // deliveries of one message so far, only where several groups match
	for from := st.from; from < st.to; {
		next, n, err := srv.store.ReadOutbound(gone.id, from, redispatchPage, func(seq uint64, o persist.Outbound, rec *persist.Message, bad error) error {
			if seq >= st.to || bad != nil || !o.Shared || o.State == persist.AwaitingPubcomp {
				return nil // not a group's, or nothing left to deliver
			}
			m, err := messageFromRecord(o.MessageID, rec)
			if err != nil {
				return nil
			}
			k := 0
			if len(st.subs) > 1 {
				k = multi[o.MessageID]
				multi[o.MessageID]++
			}
			if srv.redispatchOne(&t, gone, m, sharedGroupOf(st.subs, m.topic, k)) {
				moved++
			} else {
				lost++
			}
			return nil
		})
		if serr := srv.submitWait(&t); serr != nil && err == nil {
			err = serr
		}
		if err != nil {
			srv.log.Error("redispatching an expired $share member's backlog", "client_id", gone.id, "err", err)
			break
		}
		if n < redispatchPage {
			break
		}
		from = next
	}
	if moved+lost > 0 {
		srv.log.Info("expired $share member: its stored messages went to other members", "client_id", gone.id,
			"redispatched", moved, "no_member_left", lost)
	}
}
