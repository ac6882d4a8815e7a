package cluster

import (
	"encoding/binary"
	"encoding/json"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ternmq/tern/trie"
)

// Interest tables. Every node holds one trie of every node's filters (of
// its own, only the $share ones) with the node's name as the subscriber: matching a topic
// there says which nodes must get a message, and for a $share group which
// one node serves it (the trie picks one member of a group, round-robin
// over the nodes that are alive).
//
// A node announces each change of its distinct filters as a delta carrying
// its interest version (+1 per change), and its current version with each
// heartbeat. A receiver applies a delta that follows the version it holds;
// a gap (the table still behind the previous heartbeat's version a period
// later), a restart (new incarnation) or a node not seen before makes it
// fetch a snapshot of that node's filters. Deltas are therefore only a fast
// path: the heartbeat makes every table converge.

// Interest wire format. A NATS message on the interest subject is one
// batch of a node's changes, in version order (Interest appends them under
// imu, the flusher or the heartbeat publishes the batch):
//
//	version  1 byte (interestWire)
//	node     uvarint length + bytes
//	inc      uvarint: the node's incarnation
//	records  until the end, each: a kind byte (recRemove, recAdd,
//	         recFence), the node's interest version (uvarint), then for a
//	         change the filter, for a fence its token and the node the
//	         moving session leaves (each uvarint length + bytes)
//
// A snapshot chunk (the reply to snap.<node>): interestWire, inc and
// version (uvarints), a last-chunk byte (0 or 1), then filters (each
// uvarint length + bytes) until the end. Binary rather than JSON: a connect
// storm of 15,000 subscribers made 15,000 JSON deltas on the publishing
// node (each its own NATS message), and encoding/json's buffers kept the
// largest snapshot alive afterwards.
const interestWire = 1

// Kinds of the records of an interest batch.
const (
	recRemove byte = 0
	recAdd    byte = 1
	recFence  byte = 2
)

// interestFlushBytes is the size at which Interest publishes its batch
// itself rather than waiting for the flusher, and snapChunk the size of
// one snapshot chunk: both below nats.go's write buffer (32 KiB), which
// otherwise grows to the largest message published and keeps that size.
const (
	interestFlushBytes = 16 << 10
	snapChunk          = 16 << 10
)

// delta is one record of an interest batch, decoded.
type delta struct {
	Node   string
	Inc    int64
	Ver    uint64
	Add    bool
	Filter string
	// A fence (fence.go) instead of a change: its token, and the node
	// the moving session leaves.
	Fence string
	To    string
}

// appendRecordLocked appends one record to the interest batch, starting
// the batch with its header if empty, and reports whether the batch was
// empty. imu held.
func (n *Node) appendRecordLocked(kind byte, a, b string) bool {
	empty := len(n.ibuf) == 0
	if empty {
		n.ibuf = append(n.ibuf, interestWire)
		n.ibuf = appendBytes(n.ibuf, []byte(n.self))
		n.ibuf = binary.AppendUvarint(n.ibuf, uint64(n.inc))
	}
	n.ibuf = append(n.ibuf, kind)
	n.ibuf = binary.AppendUvarint(n.ibuf, n.iver)
	n.ibuf = appendBytes(n.ibuf, []byte(a))
	if kind == recFence {
		n.ibuf = appendBytes(n.ibuf, []byte(b))
	}
	n.ipend.Store(true)
	return empty
}

// publishInterestLocked publishes the interest batch gathered so far. Under
// imu, so batches (and the heartbeats behind them) leave in version order.
func (n *Node) publishInterestLocked() {
	if len(n.ibuf) == 0 {
		return
	}
	_ = n.nc.Publish(n.subj.interest, n.ibuf)
	n.ipend.Store(false)
	if cap(n.ibuf) > 2*interestFlushBytes {
		n.ibuf = nil // a storm's buffer is let go
	} else {
		n.ibuf = n.ibuf[:0]
	}
}

// flushInterest publishes the interest batch, if any (the flusher).
func (n *Node) flushInterest() {
	if !n.ipend.Load() {
		return
	}
	n.imu.Lock()
	n.publishInterestLocked()
	n.imu.Unlock()
}

// Interest implements server.Cluster: one more or one fewer session of
// this node subscribes to filter. The first and the last are announced.
func (n *Node) Interest(filter string, add bool) {
	n.imu.Lock()
	defer n.imu.Unlock()
	c := n.local[filter]
	if add {
		n.local[filter] = c + 1
		if c > 0 {
			return
		}
		if isShared(filter) {
			// Only $share filters of this node go in the table (it
			// chooses the node that serves a group); for the others the
			// server's own trie is the truth, and a second copy would cost
			// memory per subscription.
			n.table.Subscribe(filter, trie.Sub[string]{Subscriber: n.self, QoS: 2})
		}
	} else {
		if c == 0 {
			return
		}
		if c > 1 {
			n.local[filter] = c - 1
			return
		}
		delete(n.local, filter)
		if isShared(filter) {
			n.table.Unsubscribe(filter, n.self)
		}
	}
	n.iver++
	kind := recRemove
	if add {
		kind = recAdd
	}
	switch {
	case len(n.ibuf) >= interestFlushBytes:
		n.appendRecordLocked(kind, filter, "")
		n.publishInterestLocked()
	case n.appendRecordLocked(kind, filter, ""):
		n.kick()
	}
}

// decodeInterest reads an interest batch, calling fn for each record in
// order; false if the batch is malformed (fn may have seen a prefix).
func decodeInterest(b []byte, fn func(d delta)) bool {
	r := reader{b: b}
	if r.byte() != interestWire {
		return false
	}
	d := delta{Node: string(r.bytes()), Inc: int64(r.uvarint())}
	for r.err == nil && len(r.b) > 0 {
		kind := r.byte()
		d.Ver = r.uvarint()
		d.Add, d.Filter, d.Fence, d.To = kind == recAdd, "", "", ""
		switch kind {
		case recAdd, recRemove:
			d.Filter = string(r.bytes())
		case recFence:
			d.Fence, d.To = string(r.bytes()), string(r.bytes())
		default:
			return false
		}
		if r.err != nil {
			return false
		}
		fn(d)
	}
	return r.err == nil
}

// onInterest applies another node's interest batch: each change that
// follows the version the table holds; a fence is answered (fence.go).
func (n *Node) onInterest(msg *nats.Msg) {
	ok := decodeInterest(msg.Data, func(d delta) {
		if d.Node == n.self {
			return
		}
		if d.Fence != "" {
			go n.onFence(d)
			return
		}
		n.imu.Lock()
		p := n.peers[d.Node]
		if p != nil && p.alive && !p.syncing && p.inc == d.Inc && d.Ver == p.ver+1 {
			p.ver = d.Ver
			n.applyLocked(p, d.Filter, d.Add)
		}
		// Else out of order, or a node we are not in step with: the
		// heartbeat brings the snapshot.
		n.imu.Unlock()
	})
	if !ok {
		n.undecodable("interest batch", msg.Subject, msg.Data, nil)
	}
}

// isShared reports whether filter is a $share subscription.
func isShared(filter string) bool {
	_, _, shared := trie.SplitShared(filter)
	return shared
}

// applyLocked adds or removes one filter of p in the table. imu held.
func (n *Node) applyLocked(p *peer, filter string, add bool) {
	if add {
		if _, ok := p.filters[filter]; !ok {
			p.filters[filter] = struct{}{}
			n.table.Subscribe(filter, trie.Sub[string]{Subscriber: p.name, QoS: 2})
		}
		return
	}
	if _, ok := p.filters[filter]; ok {
		delete(p.filters, filter)
		n.table.Unsubscribe(filter, p.name)
	}
}

// dropLocked removes all of p's filters from the table. imu held.
func (n *Node) dropLocked(p *peer) {
	for f := range p.filters {
		n.table.Unsubscribe(f, p.name)
	}
	clear(p.filters)
}

func (n *Node) onHeartbeat(msg *nats.Msg) {
	var hb heartbeat
	if err := json.Unmarshal(msg.Data, &hb); err != nil {
		n.stats.decodeErrors.Add(1)
		return
	}
	if hb.Node == n.self {
		return
	}
	now := time.Now()
	n.imu.Lock()
	p := n.peers[hb.Node]
	fresh := false
	if p == nil {
		p = &peer{name: hb.Node, filters: make(map[string]struct{})}
		n.peers[hb.Node] = p
	}
	if p.inc != hb.Inc || !p.alive {
		// A node new to us, restarted, or back from silence: its table
		// and its retained messages are fetched afresh.
		if p.inc != hb.Inc {
			n.dropLocked(p)
			p.ver = 0
		}
		p.inc, p.alive, fresh = hb.Inc, true, true
		n.log.Info("cluster: node joined", "node", hb.Node)
		if nodeHash(hb.Node) == n.hash {
			// Message origins would collide: a session moving between
			// nodes could drop a message as a copy of another.
			n.log.Error("cluster: two node names hash alike; rename one of them", "node", hb.Node, "this_node", n.self)
		}
	}
	p.lastSeen = now
	// A version ahead of the table is usually deltas still on their way
	// (they come on another subscription, handled by another goroutine):
	// only a table still behind the version of the previous heartbeat, a
	// period later, has missed one. Fetching a snapshot at every heartbeat
	// of a connect storm cost every node a snapshot of the whole filter set
	// per heartbeat, and their buffers.
	need := !p.syncing && (fresh || p.ver < p.hbVer)
	p.hbVer = hb.Ver
	if need {
		p.syncing = true
	}
	n.imu.Unlock()
	if need {
		go n.fetchSnapshot(hb.Node)
	}
	if fresh {
		go n.catchUpRetained(hb.Node)
	}
}

// checkPeers marks peers silent for three heartbeats as gone: their
// filters leave the table, so publishers stop waiting for them.
func (n *Node) checkPeers(now time.Time) {
	var gone []string
	n.imu.Lock()
	for _, p := range n.peers {
		if p.alive && now.Sub(p.lastSeen) > 3*n.opts.Heartbeat {
			p.alive = false
			n.dropLocked(p)
			p.ver = 0
			gone = append(gone, p.name)
			n.log.Warn("cluster: node gone silent", "node", p.name, "last_seen", p.lastSeen)
		}
	}
	n.imu.Unlock()
	for _, name := range gone {
		n.peerGone(name)
	}
}

// fetchSnapshot asks node for its filters and replaces what the table
// holds of it.
func (n *Node) fetchSnapshot(node string) {
	defer func() {
		n.imu.Lock()
		if p := n.peers[node]; p != nil {
			p.syncing = false
		}
		n.imu.Unlock()
	}()
	inbox := n.nc.NewRespInbox()
	sub, err := n.nc.SubscribeSync(inbox)
	if err != nil {
		return
	}
	defer sub.Unsubscribe()
	if err := n.nc.PublishRequest(n.subj.snapshot(node), inbox, nil); err != nil {
		return
	}
	got := make(map[string]struct{})
	var inc int64
	var ver uint64
	for last := false; !last; {
		msg, err := sub.NextMsg(5 * time.Second)
		if err != nil {
			n.log.Warn("cluster: snapshot request failed", "node", node, "err", err)
			return
		}
		r := reader{b: msg.Data}
		if r.byte() != interestWire {
			n.undecodable("interest snapshot", msg.Subject, msg.Data, nil)
			return
		}
		inc, ver, last = int64(r.uvarint()), r.uvarint(), r.byte() == 1
		for r.err == nil && len(r.b) > 0 {
			got[string(r.bytes())] = struct{}{}
		}
		if r.err != nil {
			n.stats.decodeErrors.Add(1)
			return
		}
	}
	n.stats.snapshots.Add(1)
	n.imu.Lock()
	defer n.imu.Unlock()
	p := n.peers[node]
	if p == nil || p.inc != inc || !p.alive {
		return // restarted or gone meanwhile: the next heartbeat starts over
	}
	for f := range p.filters {
		if _, ok := got[f]; !ok {
			n.applyLocked(p, f, false)
		}
	}
	for f := range got {
		n.applyLocked(p, f, true)
	}
	p.ver = ver
}

// onSnapshotRequest streams this node's filters, in chunks of about
// snapChunk bytes, to the reply subject.
func (n *Node) onSnapshotRequest(msg *nats.Msg) {
	if msg.Reply == "" {
		return
	}
	n.imu.Lock()
	filters := make([]string, 0, len(n.local))
	for f := range n.local {
		filters = append(filters, f)
	}
	inc, ver := n.inc, n.iver
	n.imu.Unlock()
	b := make([]byte, 0, snapChunk+256)
	head := func(last bool) {
		b = append(b[:0], interestWire)
		b = binary.AppendUvarint(b, uint64(inc))
		b = binary.AppendUvarint(b, ver)
		if last {
			b = append(b, 1)
		} else {
			b = append(b, 0)
		}
	}
	head(false)
	empty := len(b)
	for _, f := range filters {
		if len(b)+len(f)+binary.MaxVarintLen64 > snapChunk && len(b) > empty {
			_ = n.nc.Publish(msg.Reply, b)
			head(false)
		}
		b = appendBytes(b, []byte(f))
	}
	// The last chunk: its flag is the byte before the filters.
	b[empty-1] = 1
	_ = n.nc.Publish(msg.Reply, b)
}
