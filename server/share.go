package server

import "github.com/ternmq/tern/qos"

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
		m := om.m
		delivered := false
		for _, sub := range s.subs.Match(m.topic, nil) {
			if sub.Group != om.share || sub.Subscriber == gone {
				continue
			}
			s.deliver(nil, t, sub.Subscriber, m, min(m.qos, sub.QoS), false, sub.ID, nil, sub.Group)
			delivered = true
			break
		}
		if delivered {
			s.stats.redispatched.Add(1)
		} else {
			s.stats.dropped.Add(1) // the group has no member left
		}
	}
}
