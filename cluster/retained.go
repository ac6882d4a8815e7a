package cluster

import (
	"encoding/binary"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ternmq/tern/server"
)

// Retained messages are cluster-wide, last writer wins. Every set or clear
// gets a version (the setting node's clock in nanoseconds, then its name to
// break ties) and is broadcast; a node applies an update only if it is
// newer than the version it holds. A clear leaves a tombstone, kept
// tombstoneTTL, so a late older set cannot resurrect the topic. A node
// that sees another node join (start, restart, return from a partition)
// fetches that node's retained messages and tombstones and applies the
// newer ones: a restarted node catches up, and what it set while cut off
// spreads. Messages recovered from the store have no version (zero): any
// versioned update wins over them.

// tombstoneTTL is how long a clear is remembered.
const tombstoneTTL = time.Hour

// version orders retained updates.
type version struct {
	ts      int64
	node    string
	deleted bool
	at      time.Time // when a tombstone was made (purge)
}

func (v version) newer(o version) bool {
	if v.ts != o.ts {
		return v.ts > o.ts
	}
	return v.node > o.node
}

// Retained implements server.Cluster.
func (n *Node) Retained(m *server.ClusterMessage) {
	v := version{ts: n.clock(), node: n.self, deleted: len(m.Payload) == 0}
	if v.deleted {
		v.at = time.Now()
	}
	n.rmu.Lock()
	n.rver[string(m.Topic)] = v
	n.rmu.Unlock()
	b := appendRetained(nil, v, m)
	if len(b) > maxPayload {
		n.stats.oversize.Add(1)
		return
	}
	_ = n.nc.Publish(n.subj.retained, b)
}

// clock is a strictly increasing nanosecond clock of this node.
func (n *Node) clock() int64 {
	for {
		now, last := time.Now().UnixNano(), n.cseq.Load()
		if now <= last {
			now = last + 1
		}
		if n.cseq.CompareAndSwap(last, now) {
			return now
		}
	}
}

// appendRetained encodes one retained entry: version, then the message.
func appendRetained(b []byte, v version, m *server.ClusterMessage) []byte {
	b = binary.AppendUvarint(b, uint64(v.ts))
	b = appendBytes(b, []byte(v.node))
	return appendMessage(b, m, 0, nil, time.Now().UnixNano())
}

// decodeRetained reads one entry of appendRetained (msg is the rest of b).
func decodeRetained(b []byte, d *decoded) (version, error) {
	r := reader{b: b}
	v := version{ts: int64(r.uvarint())}
	v.node = string(r.bytes())
	if r.err != nil {
		return v, r.err
	}
	if err := decodeMessage(r.b, time.Now().UnixNano(), d); err != nil {
		return v, err
	}
	v.deleted = len(d.m.Payload) == 0
	return v, nil
}

func (n *Node) onRetained(msg *nats.Msg) {
	var d decoded
	v, err := decodeRetained(msg.Data, &d)
	if err != nil {
		n.stats.decodeErrors.Add(1)
		return
	}
	if v.node == n.self {
		return
	}
	n.applyRetained(v, &d.m)
}

// applyRetained applies an update from another node if it is newer.
func (n *Node) applyRetained(v version, m *server.ClusterMessage) {
	topic := string(m.Topic)
	n.rmu.Lock()
	cur, known := n.rver[topic]
	ifAbsent := false
	if !v.newer(cur) { // a missing entry is version zero (recovered, or never seen)
		if known || v.ts != 0 || v.deleted {
			n.rmu.Unlock()
			return
		}
		// Both of unknown age (recovered from stores): fill a gap, never
		// overwrite.
		ifAbsent = true
	}
	if v.deleted {
		v.at = time.Now()
	}
	if !ifAbsent {
		n.rver[topic] = v
	}
	// Applied under rmu so two updates of one topic reach the server in
	// version order.
	n.srv.RemoteRetain(m, ifAbsent)
	n.rmu.Unlock()
	n.stats.retainedIn.Add(1)
}

// purgeTombstones forgets clears older than tombstoneTTL.
func (n *Node) purgeTombstones(now time.Time) {
	n.rmu.Lock()
	for t, v := range n.rver {
		if v.deleted && now.Sub(v.at) > tombstoneTTL {
			delete(n.rver, t)
		}
	}
	n.rmu.Unlock()
}

// catchUpRetained fetches node's retained messages and tombstones and
// applies the newer ones.
func (n *Node) catchUpRetained(node string) {
	inbox := n.nc.NewRespInbox()
	sub, err := n.nc.SubscribeSync(inbox)
	if err != nil {
		return
	}
	defer sub.Unsubscribe()
	_ = sub.SetPendingLimits(-1, 256<<20)
	if err := n.nc.PublishRequest(n.subj.rsync(node), inbox, nil); err != nil {
		return
	}
	applied := 0
	for {
		msg, err := sub.NextMsg(10 * time.Second)
		if err != nil {
			n.log.Warn("cluster: retained catch-up failed", "node", node, "err", err)
			return
		}
		if len(msg.Data) == 0 {
			break // the end
		}
		r := reader{b: msg.Data}
		for len(r.b) > 0 && r.err == nil {
			entry := r.bytes()
			var d decoded
			v, err := decodeRetained(entry, &d)
			if err != nil {
				n.stats.decodeErrors.Add(1)
				continue
			}
			n.applyRetained(v, &d.m)
			applied++
		}
	}
	n.log.Info("cluster: retained messages caught up", "from", node, "entries", applied)
}

// onRetainedSync streams this node's retained messages and tombstones to
// the reply subject, in chunks, then an empty message.
func (n *Node) onRetainedSync(msg *nats.Msg) {
	if msg.Reply == "" {
		return
	}
	reply := msg.Reply
	go func() { // off the subscription's goroutine: the store's index walk may be long
		var chunk []byte
		flush := func() {
			if len(chunk) > 0 {
				_ = n.nc.Publish(reply, chunk)
				chunk = chunk[:0]
			}
		}
		add := func(v version, m *server.ClusterMessage) {
			e := appendRetained(nil, v, m)
			if len(e) > maxPayload-16 {
				return
			}
			if len(chunk)+len(e) > chunkBytes {
				flush()
			}
			chunk = appendBytes(chunk, e)
		}
		n.srv.RetainedEach(func(m *server.ClusterMessage) {
			n.rmu.Lock()
			v := n.rver[string(m.Topic)]
			n.rmu.Unlock()
			if !v.deleted {
				add(v, m)
			}
		})
		n.rmu.Lock()
		var tombs []string
		var vers []version
		for t, v := range n.rver {
			if v.deleted {
				tombs, vers = append(tombs, t), append(vers, v)
			}
		}
		n.rmu.Unlock()
		for i, t := range tombs {
			add(vers[i], &server.ClusterMessage{Topic: []byte(t)})
		}
		flush()
		_ = n.nc.Publish(reply, nil)
	}()
}
