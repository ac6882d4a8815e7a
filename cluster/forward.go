package cluster

import (
	"errors"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ternmq/tern/server"
	"github.com/ternmq/tern/trie"
)

// Forwarding. A message published on this node goes, once, to each other
// node whose filters match it (the table), on that node's own subject; the
// receiving node matches its own sessions and delivers, never forwarding
// again. A QoS 1/2 message carries a sequence number and a reply subject:
// every receiving node confirms once its deliveries are durable (with
// durability sync: fsynced), and the publisher's acknowledgement waits for
// all of them, at most ConfirmTimeout.
//
// NATS keeps the order of messages from one connection on one subject, so
// the messages of one publisher reach each node in order, as MQTT requires
// per topic and QoS.

// pending is a forwarded QoS 1/2 message waiting for its confirmations.
type pending struct {
	left     []string // nodes that have not confirmed
	code     byte     // the worst confirmation so far (ackOK, ackQuota, ackFailed)
	w        server.ClusterAcker
	ref      uint64 // ClusterMessage.Ref, handed back to w
	deadline time.Time
}

// errUnconfirmed is a forwarded message's outcome when a node did not
// store it (or did not answer in time).
var errUnconfirmed = errors.New("a cluster node did not confirm a message")

// err is the outcome pending's acker gets.
func (p *pending) err() error {
	switch p.code {
	case ackOK:
		return nil
	case ackQuota:
		return server.ErrQuotaExceeded
	}
	return errUnconfirmed
}

// target is one node a message goes to, and the $share groups it serves.
type target struct {
	node   string
	groups []string
}

// matchPool holds trie match buffers.
var matchPool = make(chan []trie.Sub[string], 64)

func getMatch() []trie.Sub[string] {
	select {
	case b := <-matchPool:
		return b[:0]
	default:
		return make([]trie.Sub[string], 0, 16)
	}
}

func putMatch(b []trie.Sub[string]) {
	if cap(b) > 1024 {
		return
	}
	select {
	case matchPool <- b:
	default:
	}
}

// Forward implements server.Cluster.
func (n *Node) Forward(m *server.ClusterMessage, w server.ClusterAcker) (localGroups []string, wait bool) {
	subs := n.table.Match(m.Topic, getMatch())
	defer putMatch(subs)
	if len(subs) == 0 {
		return nil, false
	}
	var targets []target
	for _, sub := range subs {
		if sub.Subscriber == n.self {
			if sub.Group != "" && !contains(localGroups, sub.Group) {
				localGroups = append(localGroups, sub.Group)
			}
			continue
		}
		i := 0
		for i < len(targets) && targets[i].node != sub.Subscriber {
			i++
		}
		if i == len(targets) {
			targets = append(targets, target{node: sub.Subscriber})
		}
		if sub.Group != "" && !contains(targets[i].groups, sub.Group) {
			targets[i].groups = append(targets[i].groups, sub.Group)
		}
	}
	if len(targets) == 0 {
		return localGroups, false
	}
	var seq uint64
	if w != nil && m.QoS > 0 {
		p := &pending{w: w, ref: m.Ref, code: ackOK, deadline: time.Now().Add(n.opts.ConfirmTimeout)}
		for _, t := range targets {
			p.left = append(p.left, t.node)
		}
		n.fmu.Lock()
		n.fseq++
		seq = n.origin(n.fseq)
		n.pend[seq] = p
		n.fmu.Unlock()
		wait = true
		m.Origin = seq
	}
	now := time.Now().UnixNano()
	shard := topicShard(m.Topic)
	for _, t := range targets {
		if !n.batchMessage(t.node, shard, m, seq, t.groups, now) && seq != 0 {
			n.confirm(seq, t.node, ackFailed)
		}
	}
	return localGroups, wait
}

// origin makes a message's cluster-wide name (ClusterMessage.Origin) of
// this node's forwarding sequence k: the node's name hash above, the low 32
// bits of k below (k starts at a random point each incarnation, and a move
// compares origins over seconds, not billions of messages). Also the key
// of its confirmations.
func (n *Node) origin(k uint64) uint64 { return uint64(n.hash)<<32 | uint64(uint32(k)) }

// recvShards is how many subscriptions (goroutines) a node receives
// forwarded messages on.
const recvShards = 4

// topicShard picks a receive shard for topic (FNV-1a): one topic, one
// shard, so its messages stay in order.
func topicShard(topic []byte) int {
	h := uint32(2166136261)
	for _, c := range topic {
		h = (h ^ uint32(c)) * 16777619
	}
	return int(h % recvShards)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// onMessage delivers the messages of a batch another node forwarded here
// and confirms, once durable, those that ask for it.
// k is the receive shard the batch came on.
func (n *Node) onMessage(msg *nats.Msg, k int) {
	r := reader{b: msg.Data}
	now := time.Now().UnixNano()
	var d decoded
	for len(r.b) > 0 {
		frame := r.bytes()
		if r.err != nil {
			n.stats.decodeErrors.Add(1)
			return
		}
		if len(frame) > 0 && frame[0] == frameFence {
			n.onFenceFrame(frame[1:], k) // fence.go: everything before it was delivered
			continue
		}
		if err := decodeMessage(frame, now, &d); err != nil {
			n.stats.decodeErrors.Add(1)
			n.log.Warn("cluster: undecodable message", "subject", msg.Subject, "err", err)
			continue
		}
		d.m.Origin = d.seq
		reply, seq := msg.Reply, d.seq
		if reply == "" || seq == 0 {
			n.srv.RemoteDeliver(&d.m, d.groups, ignoreDone)
			continue
		}
		n.srv.RemoteDeliver(&d.m, d.groups, func(err error) { n.batchAck(reply, seq, ackCode(err)) })
	}
}

func ignoreDone(error) {}

// msgSubject returns node's message subject for shard without building a
// string per message.
func (n *Node) msgSubject(node string, shard int) string {
	if v, ok := n.msub.Load(node); ok {
		return v.(*[recvShards]string)[shard]
	}
	var s [recvShards]string
	for k := range s {
		s[k] = n.subj.msgShard(node, k)
	}
	n.msub.Store(node, &s)
	return s[shard]
}

// onAck is a batch of a node's confirmations of messages this node
// forwarded: the node's name, then (sequence, ok) pairs.
func (n *Node) onAck(msg *nats.Msg) {
	r := reader{b: msg.Data}
	node := string(r.bytes())
	for r.err == nil && len(r.b) > 0 {
		seq := r.uvarint()
		code := r.byte()
		if r.err != nil {
			break
		}
		n.confirm(seq, node, code)
	}
	if r.err != nil {
		n.stats.decodeErrors.Add(1)
	}
}

// confirm records node's confirmation of seq; the last one acknowledges
// the publisher (with the worst outcome: a failure over a quota refusal
// over success).
func (n *Node) confirm(seq uint64, node string, code byte) {
	n.fmu.Lock()
	p := n.pend[seq]
	if p == nil {
		n.fmu.Unlock()
		return // late (expired) or unknown
	}
	for i, x := range p.left {
		if x == node {
			p.left = append(p.left[:i], p.left[i+1:]...)
			break
		}
	}
	switch {
	case code == ackOK:
	case code == ackQuota && p.code == ackOK:
		p.code = ackQuota
	case code != ackQuota:
		p.code = ackFailed
	}
	done := len(p.left) == 0
	if done {
		delete(n.pend, seq)
	}
	n.fmu.Unlock()
	if done {
		p.w.Ack(p.ref, p.err())
	}
}

// peerGone stops waiting for a node declared gone: from now on messages
// are not sent to it at all (its filters left the table), so one sent just
// before is treated alike — its persistent sessions there miss it, as they
// miss what is published while the node is down (README, Cluster). The
// publishers on the surviving nodes are not held up or disconnected.
func (n *Node) peerGone(node string) {
	var done []*pending
	n.fmu.Lock()
	for seq, p := range n.pend {
		for i, x := range p.left {
			if x == node {
				p.left = append(p.left[:i], p.left[i+1:]...)
				n.stats.unconfirmedGone.Add(1)
				break
			}
		}
		if len(p.left) == 0 {
			delete(n.pend, seq)
			done = append(done, p)
		}
	}
	n.fmu.Unlock()
	for _, p := range done {
		p.w.Ack(p.ref, p.err())
	}
}

// expirePending fails the confirmations past their deadline.
func (n *Node) expirePending(now time.Time) {
	var late []*pending
	n.fmu.Lock()
	for seq, p := range n.pend {
		if now.After(p.deadline) {
			delete(n.pend, seq)
			late = append(late, p)
		}
	}
	n.fmu.Unlock()
	for _, p := range late {
		n.stats.confirmTimeouts.Add(1)
		n.log.Warn("cluster: a forwarded message was not confirmed in time", "nodes", p.left)
		p.w.Ack(p.ref, errUnconfirmed)
	}
}
