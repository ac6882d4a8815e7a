package server

import (
	"errors"

	"github.com/ternmq/tern/codec"
	"github.com/ternmq/tern/qos"
	"github.com/ternmq/tern/trie"
)

// publishMessage applies a message's retain flag and routes it. l is the
// loop the caller runs on, nil outside the event loops; t gathers the
// durable writes.
func (s *Server) publishMessage(l *loop, t *txn, m *message) {
	if m.retain {
		topic := string(m.topic)
		if len(m.payload) == 0 {
			s.retained.Delete(topic) // [MQTT-3.3.1-10]
			if s.store != nil {
				t.batch(s).DeleteRetained(topic)
			}
		} else {
			s.retained.Set(topic, m) // replaces [MQTT-3.3.1-5]
			if s.store != nil {
				t.batch(s).PutRetained(messageRecord(m))
			}
		}
	}
	s.route(l, t, m)
}

// route delivers m to every session with a matching subscription, once per
// session at the highest granted QoS of its matching subscriptions
// [MQTT-3.3.5-1], with all their subscription identifiers.
func (s *Server) route(l *loop, t *txn, m *message) {
	var subs []trie.Sub[*session]
	if l != nil {
		subs = s.subs.Match(m.topic, l.match[:0])
		l.match = subs[:0]
	} else {
		subs = s.subs.Match(m.topic, nil)
	}
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

func (s *Server) deliverSub(l *loop, t *txn, m *message, sub *trie.Sub[*session], ids []uint32) {
	target := sub.Subscriber
	if sub.Options&optNoLocal != 0 && m.from == target {
		return // No Local [MQTT-3.8.3-3]
	}
	retain := m.retain && sub.Options&optRetainAsPublished != 0
	s.deliver(l, t, target, m, min(m.qos, sub.QoS), retain, sub.ID, ids)
}

// deliver queues one delivery on target and wakes its connection's loop if
// it is online and not already scheduled. Offline sessions keep QoS 1/2
// deliveries only (QoS 0 is not queued for absent clients). A QoS 1/2
// delivery to a persistent session is written to the store in t; its owner
// is woken when t is submitted.
//
// subID is the matching subscription's identifier; ids, when not nil, are
// all the identifiers of several overlapping subscriptions and win.
func (s *Server) deliver(l *loop, t *txn, target *session, m *message, q byte, retain bool, subID uint32, ids []uint32) {
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
	om := outMsg{m: m, retain: retain, subIDs: ids}
	if ids == nil {
		om.subID = subID
	}
	durable := q > 0 && s.store != nil && target.storable()
	f := target.flowLocked(&s.opts)
	if q > 0 {
		om.seq = f.nextSeq
	}
	if durable {
		om.stored, om.ticket = true, t.tick()
	}
	dropped, hasDropped, queued := f.queue.Push(qos.Item[outMsg]{Msg: om, QoS: q, Size: m.size()}, s.opts.QueuePolicy)
	if queued && q > 0 {
		f.nextSeq++
		if durable {
			s.storeDelivery(t, target, &om, q)
		}
	}
	if hasDropped {
		f.dropped++
		if dropped.Msg.m != m || queued { // an older delivery made room
			s.forgetDelivery(t, target, dropped.Msg, false)
		}
	}
	wake := false
	if owner != nil && queued {
		if durable {
			t.wakes = append(t.wakes, owner)
		} else {
			wake = owner.wakeQueued.CompareAndSwap(false, true)
		}
	}
	target.mu.Unlock()
	if hasDropped {
		s.stats.dropped.Add(1)
	}
	if wake {
		owner.loop.schedule(owner, l)
	}
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
	var t txn
	s.publishMessage(nil, &t, newMessage([]byte(topic), payload, qos, retain, nil, nanotime(), nil))
	return s.submitWait(&t)
}
