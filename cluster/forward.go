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

// pending is a forwarded QoS 1/2 message waiting for its confirmations:
// one slot of the ring (pendRing), written by Forward on the publisher's
// event loop and completed by the confirmation goroutine.
type pending struct {
	w        server.ClusterAcker
	ref      uint64 // ClusterMessage.Ref, handed back to w
	deadline int64  // unix nanoseconds
	left     uint64 // bit mask of the nodes (nodeIndex) that have not confirmed; 0: done
	code     byte   // the worst confirmation so far (ackOK, ackQuota, ackFailed)
}

// outcome is a completed pending, handed to its acker once fmu is released.
type outcome struct {
	w   server.ClusterAcker
	ref uint64
	err error
}

// pendRing holds the pendings in the order of their sequence numbers: the
// forwarding sequence only grows, so the pending of sequence k is slot
// k - head of the ring — found by a subtraction, not a map lookup with its
// hashing, deletes and growth (a map entry per forwarded message was the
// publishing node's costliest part of a confirmation: cache misses on
// scattered entries). Deadlines grow with the sequence too (to within a
// tick: Forward reads the tick's clock before it takes fmu), so expiry
// pops from the front, at most a tick later than a full scan would. A slot whose confirmations all came stays (left == 0)
// until the ones before it are done: the ring spans the oldest unconfirmed
// message to the newest, at most ConfirmTimeout of forwarding. fmu guards
// it.
type pendRing struct {
	slots []pending // len a power of two (or 0)
	head  uint32    // low 32 bits of the sequence of the oldest slot
	start int       // index of the oldest slot
	count int       // slots from the oldest to the newest, done ones included
	live  int       // slots still waiting
}

// push appends the pending of sequence seq (one past the newest).
func (r *pendRing) push(seq uint32, p pending) {
	if r.count == 0 {
		r.head, r.start = seq, 0
	}
	if r.count == len(r.slots) {
		r.grow()
	}
	r.slots[(r.start+r.count)&(len(r.slots)-1)] = p
	r.count++
	r.live++
}

func (r *pendRing) grow() {
	slots := make([]pending, max(2*len(r.slots), 256))
	for i := range r.count {
		slots[i] = r.slots[(r.start+i)&(len(r.slots)-1)]
	}
	r.slots, r.start = slots, 0
}

// at returns the pending of sequence seq, nil if it is not (or no longer)
// waiting.
func (r *pendRing) at(seq uint32) *pending {
	off := seq - r.head
	if uint64(off) >= uint64(r.count) {
		return nil
	}
	p := &r.slots[(r.start+int(off))&(len(r.slots)-1)]
	if p.left == 0 {
		return nil
	}
	return p
}

// done marks p (a slot of the ring) complete and pops the done slots at
// the front.
func (r *pendRing) done(p *pending) {
	*p = pending{}
	r.live--
	r.trim()
}

// trim pops the done slots at the front, and lets a ring that grew under a
// burst go once it is empty.
func (r *pendRing) trim() {
	for r.count > 0 && r.slots[r.start].left == 0 {
		r.start = (r.start + 1) & (len(r.slots) - 1)
		r.head++
		r.count--
	}
	if r.count == 0 && len(r.slots) > 4096 {
		r.slots = nil
	}
}

// maxNodes bounds the node names a pending's bit mask can name: a
// process meets at most this many distinct peer names in its lifetime
// (clusters are configured with a fixed list of nodes).
const maxNodes = 64

// nodeIndex returns node's bit in a pending's mask, giving it one the
// first time; -1 when maxNodes names are taken. fmu held.
func (n *Node) nodeIndex(node string) int {
	for i, x := range n.nodeNames {
		if x == node {
			return i
		}
	}
	if len(n.nodeNames) == maxNodes {
		return -1
	}
	n.nodeNames = append(n.nodeNames, node)
	return len(n.nodeNames) - 1
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
		// The tick's clock, a tick ahead so a confirmation is never
		// given up early (expirePending runs on the tick anyway).
		p := pending{w: w, ref: m.Ref, code: ackOK,
			deadline: n.tickNow.Load() + int64(n.tickEvery()) + int64(n.opts.ConfirmTimeout)}
		n.fmu.Lock()
		for _, t := range targets {
			if i := n.nodeIndex(t.node); i >= 0 {
				p.left |= 1 << i
			} else {
				p.code = ackFailed // never stored there: the publisher is not acknowledged
			}
		}
		if p.left == 0 {
			n.fmu.Unlock()
			n.log.Error("cluster: more distinct node names than a process tracks; a message is not forwarded", "max", maxNodes)
			w.Ack(m.Ref, errUnconfirmed)
			return localGroups, true
		}
		n.fseq++ // one per slot: the ring's sequences have no gaps
		seq = n.origin(n.fseq)
		n.pend.push(uint32(n.fseq), p)
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
	node := r.bytes()
	for r.err == nil && len(r.b) > 0 {
		done := n.ackDone[:0]
		n.fmu.Lock()
		bit := n.nodeBit(node)
		for k := 0; k < ackChunk && r.err == nil && len(r.b) > 0; k++ {
			seq := r.uvarint()
			code := r.byte()
			if r.err != nil {
				break
			}
			if o, ok := n.confirmLocked(seq, bit, code); ok {
				done = append(done, o)
			}
		}
		n.fmu.Unlock()
		for i, o := range done {
			o.w.Ack(o.ref, o.err)
			done[i] = outcome{}
		}
		n.ackDone = done[:0]
	}
	if r.err != nil {
		n.stats.decodeErrors.Add(1)
	}
}

// nodeBit is node's bit in the pendings' masks, 0 for a node this node
// never forwarded to. fmu held.
func (n *Node) nodeBit(node []byte) uint64 {
	for i, x := range n.nodeNames {
		if x == string(node) {
			return 1 << i
		}
	}
	return 0
}

// ackChunk bounds the confirmations applied under one hold of fmu (the
// event loops' Forward waits for it).
const ackChunk = 64

// confirm records node's confirmation of seq; the last one acknowledges
// the publisher (with the worst outcome: a failure over a quota refusal
// over success).
func (n *Node) confirm(seq uint64, node string, code byte) {
	n.fmu.Lock()
	o, ok := n.confirmLocked(seq, n.nodeBit([]byte(node)), code)
	n.fmu.Unlock()
	if ok {
		o.w.Ack(o.ref, o.err)
	}
}

// confirmLocked records the confirmation of seq by the node of bit and
// returns the outcome if it was the last one due (the caller hands it to
// the acker once fmu is released); false if more are due or seq is
// unknown (late, expired, another node's). fmu held.
func (n *Node) confirmLocked(seq uint64, bit uint64, code byte) (outcome, bool) {
	if uint32(seq>>32) != n.hash {
		return outcome{}, false
	}
	p := n.pend.at(uint32(seq))
	if p == nil || p.left&bit == 0 {
		return outcome{}, false
	}
	p.left &^= bit
	switch {
	case code == ackOK:
	case code == ackQuota && p.code == ackOK:
		p.code = ackQuota
	case code != ackQuota:
		p.code = ackFailed
	}
	if p.left != 0 {
		return outcome{}, false
	}
	o := outcome{w: p.w, ref: p.ref, err: p.err()}
	n.pend.done(p)
	return o, true
}

// peerGone stops waiting for a node declared gone: from now on messages
// are not sent to it at all (its filters left the table), so one sent just
// before is treated alike — its persistent sessions there miss it, as they
// miss what is published while the node is down (README, Cluster). The
// publishers on the surviving nodes are not held up or disconnected.
func (n *Node) peerGone(node string) {
	var done []outcome
	n.fmu.Lock()
	bit := n.nodeBit([]byte(node))
	r := &n.pend
	for i := range r.count {
		p := &r.slots[(r.start+i)&(len(r.slots)-1)]
		if p.left&bit == 0 {
			continue
		}
		p.left &^= bit
		n.stats.unconfirmedGone.Add(1)
		if p.left == 0 {
			done = append(done, outcome{w: p.w, ref: p.ref, err: p.err()})
			*p = pending{}
			r.live--
		}
	}
	r.trim()
	n.fmu.Unlock()
	for _, o := range done {
		o.w.Ack(o.ref, o.err)
	}
}

// expirePending fails the confirmations past their deadline: the oldest
// first, as deadlines follow the sequence.
func (n *Node) expirePending(now time.Time) {
	type late struct {
		o     outcome
		nodes []string
	}
	var expired []late
	n.fmu.Lock()
	r := &n.pend
	// The front slot is always one still waiting (trim).
	for r.count > 0 && now.UnixNano() > r.slots[r.start].deadline {
		p := &r.slots[r.start]
		var nodes []string
		for i, x := range n.nodeNames {
			if p.left&(1<<i) != 0 {
				nodes = append(nodes, x)
			}
		}
		expired = append(expired, late{outcome{w: p.w, ref: p.ref, err: errUnconfirmed}, nodes})
		r.done(p)
	}
	n.fmu.Unlock()
	for _, e := range expired {
		n.stats.confirmTimeouts.Add(1)
		n.log.Warn("cluster: a forwarded message was not confirmed in time", "nodes", e.nodes)
		e.o.w.Ack(e.o.ref, e.o.err)
	}
}
