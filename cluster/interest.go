package cluster

import (
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
// anything else (a gap, a restart = new incarnation, a node not seen
// before) makes it fetch a snapshot of that node's filters. Deltas are
// therefore only a fast path: the heartbeat makes every table converge.

// delta is one change of a node's filters.
type delta struct {
	Node   string `json:"node"`
	Inc    int64  `json:"inc"`
	Ver    uint64 `json:"ver"`
	Add    bool   `json:"add,omitempty"`
	Filter string `json:"f"`
	// A fence (fence.go) instead of a change: its token, and the node
	// the moving session leaves.
	Fence string `json:"fence,omitempty"`
	To    string `json:"to,omitempty"`
}

// snapshot is a node's whole filter set at version Ver, sent in chunks;
// the last has Last set.
type snapshot struct {
	Inc     int64    `json:"inc"`
	Ver     uint64   `json:"ver"`
	Filters []string `json:"filters"`
	Last    bool     `json:"last,omitempty"`
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
	b, _ := json.Marshal(delta{Node: n.self, Inc: n.inc, Ver: n.iver, Add: add, Filter: filter})
	// Under imu, so deltas leave in version order.
	_ = n.nc.Publish(n.subj.interest, b)
}

func (n *Node) onInterest(msg *nats.Msg) {
	var d delta
	if err := json.Unmarshal(msg.Data, &d); err != nil {
		n.stats.decodeErrors.Add(1)
		return
	}
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
		n.imu.Unlock()
		return
	}
	n.imu.Unlock()
	// Out of order, or a node we are not in step with: the heartbeat
	// brings the snapshot.
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
	need := !p.syncing && (fresh || p.ver != hb.Ver)
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
	var last snapshot
	for {
		msg, err := sub.NextMsg(5 * time.Second)
		if err != nil {
			n.log.Warn("cluster: snapshot request failed", "node", node, "err", err)
			return
		}
		var s snapshot
		if err := json.Unmarshal(msg.Data, &s); err != nil {
			n.stats.decodeErrors.Add(1)
			return
		}
		for _, f := range s.Filters {
			got[f] = struct{}{}
		}
		if s.Last {
			last = s
			break
		}
	}
	n.stats.snapshots.Add(1)
	n.imu.Lock()
	defer n.imu.Unlock()
	p := n.peers[node]
	if p == nil || p.inc != last.Inc || !p.alive {
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
	p.ver = last.Ver
}

// onSnapshotRequest streams this node's filters, in chunks, to the reply
// subject.
func (n *Node) onSnapshotRequest(msg *nats.Msg) {
	if msg.Reply == "" {
		return
	}
	n.imu.Lock()
	filters := make([]string, 0, len(n.local))
	for f := range n.local {
		filters = append(filters, f)
	}
	s := snapshot{Inc: n.inc, Ver: n.iver}
	n.imu.Unlock()
	size := 0
	for _, f := range filters {
		s.Filters = append(s.Filters, f)
		size += len(f) + 4
		if size >= chunkBytes {
			b, _ := json.Marshal(s)
			_ = n.nc.Publish(msg.Reply, b)
			s.Filters, size = s.Filters[:0], 0
		}
	}
	s.Last = true
	b, _ := json.Marshal(s)
	_ = n.nc.Publish(msg.Reply, b)
}
