package server

import (
	"github.com/ternmq/tern/trie"
)

// route delivers m to every session with a matching subscription, once per
// session at the highest granted QoS of its matching subscriptions
// [MQTT-3.3.5-1], with all their subscription identifiers. A QoS 1/2
// message that a persistent recipient's store quota cannot take is refused
// as a whole, before any delivery: route then returns the limit that
// refused it (0: routed), so the publisher is not acknowledged.
func (s *Server) route(l *loop, t *txn, m *message) limitID {
	var subs []trie.Sub[*session]
	if l != nil {
		subs = s.subs.Match(m.topic, l.match[:0])
		l.match = subs[:0]
	} else {
		subs = s.subs.Match(m.topic, nil)
	}
	if m.qos > 0 && s.store != nil {
		if why := s.quotaRefusal(subs, m); why != 0 {
			return why
		}
	}
	if s.cluster != nil {
		subs = s.forward(t, m, subs) // cluster.go: other nodes, and $share placement
	}
	if l == nil {
		s.deliverAll(l, t, m, subs)
		return 0
	}
	// Wake-ups of subscribers on other loops are gathered and handed over
	// once the message is routed: one lock and at most one wake-up per
	// target loop (loop.go), and those loops start writing while this one
	// still routes or writes to its own subscribers.
	traceRouteStart(l, m)
	l.routing = true
	s.deliverAll(l, t, m, subs)
	l.routing = false
	l.flushHandoff()
	traceRouted(m)
	return 0
}

// deliverAll delivers m to the matched subscriptions subs.
func (s *Server) deliverAll(l *loop, t *txn, m *message, subs []trie.Sub[*session]) {
	switch len(subs) {
	case 0:
		return
	case 1:
		s.deliverSub(l, t, m, &subs[0], nil)
		return
	}
	// Overlapping subscriptions of one session collapse into one delivery.
	// Small fan-outs dedupe by scanning; large ones with the loop's map.
	var seen map[*session]int
	if len(subs) > 16 {
		if l != nil {
			seen = l.dedup
			clear(seen)
		} else {
			seen = make(map[*session]int, len(subs))
		}
	}
	uniq := subs[:0]
	var ids map[int][]uint32
	for _, sub := range subs {
		j := -1
		if seen != nil {
			if k, ok := seen[sub.Subscriber]; ok {
				j = k
			}
		} else {
			for k := range uniq {
				if uniq[k].Subscriber == sub.Subscriber {
					j = k
					break
				}
			}
		}
		if j < 0 {
			if seen != nil {
				seen[sub.Subscriber] = len(uniq)
			}
			uniq = append(uniq, sub)
			continue
		}
		u := &uniq[j]
		if sub.QoS > u.QoS {
			u.QoS = sub.QoS
		}
		u.Options |= sub.Options & optRetainAsPublished
		if sub.ID != 0 {
			if ids == nil {
				ids = make(map[int][]uint32)
			}
			if len(ids[j]) == 0 && u.ID != 0 {
				ids[j] = append(ids[j], u.ID)
			}
			ids[j] = append(ids[j], sub.ID)
		}
	}
	for i := range uniq {
		s.deliverSub(l, t, m, &uniq[i], ids[i])
	}
}

// quotaRefusal checks, before any delivery, that every persistent recipient
// that would store m can (backlog.go); it returns the refusing limit or 0.
func (s *Server) quotaRefusal(subs []trie.Sub[*session], m *message) limitID {
	for i := range subs {
		sub := &subs[i]
		if min(m.qos, sub.QoS) == 0 {
			continue
		}
		target := sub.Subscriber
		target.mu.Lock()
		why := limitID(0)
		if !target.dead && target.storable() {
			why = s.backlogRefusalLocked(target, m)
		}
		target.mu.Unlock()
		if why != 0 {
			return why
		}
	}
	return 0
}

func (s *Server) deliverSub(l *loop, t *txn, m *message, sub *trie.Sub[*session], ids []uint32) {
	target := sub.Subscriber
	if sub.Options&optNoLocal != 0 && m.from == target {
		return // No Local [MQTT-3.8.3-3]
	}
	retain := m.retain && sub.Options&optRetainAsPublished != 0
	s.deliver(l, t, target, m, min(m.qos, sub.QoS), retain, sub.ID, ids, sub.Group)
}
