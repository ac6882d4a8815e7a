package cluster

import (
	"errors"
	"sync"
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
// They are recycled (pendingPool) once their acker has been called.
type pending struct {
	left     []string // nodes that have not confirmed
	code     byte     // the worst confirmation so far (ackOK, ackQuota, ackFailed)
	w        server.ClusterAcker
	ref      uint64 // ClusterMessage.Ref, handed back to w
	deadline int64  // unix nanoseconds
	leftBuf  [2]string
}

// pendingPool recycles pendings: one per forwarded QoS 1/2 message would
// otherwise be the forwarding path's largest allocation.
var pendingPool = sync.Pool{New: func() any { return new(pending) }}

// finish hands p's outcome to its acker and recycles p; p must be out of
// Node.pend (no other goroutine can reach it).
func (p *pending) finish(err error) {
	p.w.Ack(p.ref, err)
	clear(p.left)
	*p = pending{}
	pendingPool.Put(p)
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
var matchPool = sync.Pool{New: func() any { b := make([]trie.Sub[string], 0, 16); return &b }}

// Forward implements server.Cluster.
func (n *Node) Forward(m *server.ClusterMessage, w server.ClusterAcker) (localGroups []string, wait bool) {
	mp := matchPool.Get().(*[]trie.Sub[string])
	subs := n.table.Match(m.Topic, (*mp)[:0])
	defer func() {
		if cap(subs) <= 1024 {
			clear(subs)
			*mp = subs[:0]
			matchPool.Put(mp)
		}
	}()
	if len(subs) == 0 {
		return nil, false
	}
	var tbuf [4]target // room for a cluster of five without allocating
	targets := tbuf[:0]
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
	var now int64 // the clock is read only for an expiry to send (a vDSO call is not free here)
	if m.ExpiresAt != 0 {
		now = time.Now().UnixNano()
	}
	if w != nil && m.QoS > 0 {
		p := pendingPool.Get().(*pending)
		// The tick's clock, a tick ahead so a confirmation is never
		// given up early (expirePending runs on the tick anyway).
		p.w, p.ref, p.code = w, m.Ref, ackOK
		p.deadline = n.tickNow.Load() + int64(n.tickEvery()) + int64(n.opts.ConfirmTimeout)
		p.left = p.leftBuf[:0]
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

// receiver is one receive shard's state, used only by the shard's
// subscription goroutine: the server batch its messages are delivered
// into, and the sequences that batch owes a confirmation.
type receiver struct {
	batch *server.RemoteBatch
	d     decoded
	owed  []uint64
}

// commitEvery bounds the messages delivered before their batch is
// committed: the loops of their subscribers are woken and their store
// writes submitted at least that often within one long NATS message.
const commitEvery = 64

// onMessage delivers the messages of a batch another node forwarded here
// and confirms, once durable, those that ask for it. They are delivered as
// server batches of up to commitEvery messages (one store commit, one
// wake-up per subscriber's loop each). k is the receive shard the batch
// came on; runs on that shard's subscription goroutine.
func (n *Node) onMessage(msg *nats.Msg, k int) {
	rc := &n.recv[k]
	r := reader{b: msg.Data}
	reply := msg.Reply
	now := time.Now().UnixNano()
	for len(r.b) > 0 {
		frame := r.bytes()
		if r.err != nil {
			n.stats.decodeErrors.Add(1)
			break
		}
		if len(frame) > 0 && frame[0] == frameFence {
			// Everything before the frame is delivered and submitted
			// before the fence counts (fence.go).
			n.commitRecv(rc, reply)
			n.onFenceFrame(frame[1:], k)
			continue
		}
		d := &rc.d
		if err := decodeMessage(frame, now, d); err != nil {
			n.stats.decodeErrors.Add(1)
			n.log.Warn("cluster: undecodable message", "subject", msg.Subject, "err", err)
			continue
		}
		d.m.Origin = d.seq
		seq := d.seq
		if reply == "" {
			seq = 0
		}
		if err := rc.batch.Deliver(&d.m, d.groups); err != nil {
			if seq != 0 {
				n.batchAck(reply, seq, ackCode(err))
			}
			continue
		}
		if seq != 0 {
			rc.owed = append(rc.owed, seq)
		}
		if rc.batch.Len() >= commitEvery {
			n.commitRecv(rc, reply)
		}
	}
	n.commitRecv(rc, reply)
}

// owedPool recycles the sequence lists of committed receive batches.
var owedPool = sync.Pool{New: func() any { return new([]uint64) }}

// commitRecv commits rc's batch and confirms its owed sequences on reply
// once the commit is durable.
func (n *Node) commitRecv(rc *receiver, reply string) {
	if rc.batch.Len() == 0 {
		return
	}
	if len(rc.owed) == 0 {
		rc.batch.Commit(ignoreDone)
		return
	}
	p := owedPool.Get().(*[]uint64)
	owed := append((*p)[:0], rc.owed...)
	rc.owed = rc.owed[:0]
	rc.batch.Commit(func(err error) {
		n.batchAcks(reply, owed, ackCode(err))
		*p = owed[:0]
		owedPool.Put(p)
	})
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
// forwarded: the node's name, then (sequence, ok) pairs. They are applied
// under one lock per ackChunk, and the publishers acknowledged after it.
// Runs on the confirmation subscription's goroutine (it owns n.ackDone).
func (n *Node) onAck(msg *nats.Msg) {
	r := reader{b: msg.Data}
	node := string(r.bytes())
	for r.err == nil && len(r.b) > 0 {
		done := n.ackDone[:0]
		n.fmu.Lock()
		for k := 0; k < ackChunk && r.err == nil && len(r.b) > 0; k++ {
			seq := r.uvarint()
			code := r.byte()
			if r.err != nil {
				break
			}
			if p := n.confirmLocked(seq, node, code); p != nil {
				done = append(done, p)
			}
		}
		n.fmu.Unlock()
		for i, p := range done {
			p.finish(p.err())
			done[i] = nil
		}
		n.ackDone = done[:0]
	}
	if r.err != nil {
		n.stats.decodeErrors.Add(1)
	}
}

// ackChunk bounds the confirmations applied under one hold of fmu (the
// event loops' Forward waits for it).
const ackChunk = 64

// confirm records node's confirmation of seq; the last one acknowledges
// the publisher (with the worst outcome: a failure over a quota refusal
// over success).
func (n *Node) confirm(seq uint64, node string, code byte) {
	n.fmu.Lock()
	p := n.confirmLocked(seq, node, code)
	n.fmu.Unlock()
	if p != nil {
		p.finish(p.err())
	}
}

// confirmLocked records node's confirmation of seq and returns the pending
// it completed (out of n.pend; the caller finishes it once fmu is
// released), nil if more are due or seq is unknown (late, expired). fmu
// held.
func (n *Node) confirmLocked(seq uint64, node string, code byte) *pending {
	p := n.pend[seq]
	if p == nil {
		return nil
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
	if len(p.left) != 0 {
		return nil
	}
	delete(n.pend, seq)
	return p
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
		p.finish(p.err())
	}
}

// expirePending fails the confirmations past their deadline.
func (n *Node) expirePending(now time.Time) {
	var late []*pending
	n.fmu.Lock()
	for seq, p := range n.pend {
		if now.UnixNano() > p.deadline {
			delete(n.pend, seq)
			late = append(late, p)
		}
	}
	n.fmu.Unlock()
	for _, p := range late {
		n.stats.confirmTimeouts.Add(1)
		n.log.Warn("cluster: a forwarded message was not confirmed in time", "nodes", p.left)
		p.finish(errUnconfirmed)
	}
}
