package cluster

import (
	"strconv"
	"time"
)

// Fencing a session move (server/cluster_session.go tells the whole move).
// Between the two rounds the session is subscribed on the old node and on
// the new one; the old node may stop taking messages for it only once none
// can still reach the old node alone. So the new node announces a fence on
// the interest subject right behind the interest deltas of the session's
// subscriptions (one NATS connection, one subject: every node handles it
// after them). Each other node then waits until its table holds the new
// node's interest at that version or later, lets its event loops finish
// the routes they had begun (Server.SyncLoops: those may have matched the
// table before), and sends the old node a fence frame on each of its
// message subjects, behind everything it forwarded there before. The old
// node does the same wait for its own routes, and its final export waits
// for the frames of every live node: from then on, whatever it no longer
// takes was sent to the new node as well. A fence not complete within
// fenceTimeout is not waited for any longer (counted in
// tern_cluster_fence_timeouts_total, logged): the move then goes on as
// without a fence, and a message routed to the old node alone in that
// moment may be lost with its acknowledgement — the case a fence exists to
// rule out, so it needs a node that is up but not answering.

// fenceTimeout bounds every wait of a fence.
const fenceTimeout = 3 * time.Second

// frameFence is the first byte of a fence frame in a message batch (a
// message frame starts with wireVersion): token and sending node follow,
// each uvarint length + bytes.
const frameFence = 0xFE

// fenceState is what the old node of a move has seen of one fence.
type fenceState struct {
	shards map[string]uint32 // node → bit mask of the receive shards its frame came on
	self   bool              // this node's own routes are fenced
	at     time.Time
}

const allShards = 1<<recvShards - 1

// fenceLocked returns the state of token, creating it. femu held.
func (n *Node) fenceLocked(token string) *fenceState {
	st := n.fences[token]
	if st == nil {
		st = &fenceState{shards: make(map[string]uint32), at: time.Now()}
		n.fences[token] = st
	}
	return st
}

// announceFence starts the fence of a session moving from old to this
// node: call it once the session's subscriptions are in the table.
func (n *Node) announceFence(old string) string {
	token := n.self + "." + strconv.FormatInt(n.inc, 36) + "." + strconv.FormatUint(n.fenceSeq.Add(1), 36)
	n.imu.Lock()
	n.appendRecordLocked(recFence, token, old) // behind the deltas, in their batch
	n.publishInterestLocked()
	n.imu.Unlock()
	go n.sendFence(token, old) // this node's own routes, like any other node's
	return token
}

// onFence handles a fence announced by node d.Node (onInterest).
func (n *Node) onFence(d delta) {
	if !n.waitInterest(d.Node, d.Inc, d.Ver) {
		n.log.Warn("cluster: a fence found the moving session's new node not in step; not answered", "node", d.Node)
		return
	}
	if d.To == n.self {
		n.srv.SyncLoops(fenceTimeout)
		n.femu.Lock()
		n.fenceLocked(d.Fence).self = true
		n.femu.Unlock()
		return
	}
	n.sendFence(d.Fence, d.To)
}

// waitInterest waits (at most fenceTimeout) until the table holds node's
// interest of incarnation inc at version ver or later.
func (n *Node) waitInterest(node string, inc int64, ver uint64) bool {
	deadline := time.Now().Add(fenceTimeout)
	for {
		n.imu.Lock()
		p := n.peers[node]
		ok := p != nil && p.alive && p.inc == inc && p.ver >= ver && !p.syncing
		n.imu.Unlock()
		if ok {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		select {
		case <-n.done:
			return false
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// sendFence lets this node's loops finish the routes they began, then
// sends a fence frame on each of old's message subjects, behind whatever
// was forwarded there before.
func (n *Node) sendFence(token, old string) {
	n.srv.SyncLoops(fenceTimeout)
	n.omu.Lock()
	for k := range recvShards {
		ob := n.outLocked(old, k)
		n.scratch = append(n.scratch[:0], frameFence)
		n.scratch = appendBytes(n.scratch, []byte(token))
		n.scratch = appendBytes(n.scratch, []byte(n.self))
		ob.buf = appendBytes(ob.buf, n.scratch)
	}
	n.omu.Unlock()
	n.kick()
}

// onFenceFrame records a fence frame that came on receive shard k.
func (n *Node) onFenceFrame(b []byte, k int) {
	r := reader{b: b}
	token, node := string(r.bytes()), string(r.bytes())
	if r.err != nil {
		n.stats.decodeErrors.Add(1)
		return
	}
	n.femu.Lock()
	n.fenceLocked(token).shards[node] |= 1 << k
	n.femu.Unlock()
}

// waitFence waits until the fence token is complete: this node's routes
// and every live node's frames on every shard (at most fenceTimeout).
func (n *Node) waitFence(token string) {
	deadline := time.Now().Add(fenceTimeout)
	for {
		var missing []string
		n.femu.Lock()
		st := n.fenceLocked(token)
		if !st.self {
			missing = append(missing, n.self)
		}
		shards := make(map[string]uint32, len(st.shards))
		for k, v := range st.shards {
			shards[k] = v
		}
		n.femu.Unlock()
		n.imu.Lock()
		for _, p := range n.peers {
			if p.alive && shards[p.name] != allShards {
				missing = append(missing, p.name)
			}
		}
		n.imu.Unlock()
		if len(missing) == 0 {
			break
		}
		if time.Now().After(deadline) {
			n.stats.fenceTimeouts.Add(1)
			n.log.Warn("cluster: a session move's fence is incomplete; moving on without it", "waiting_for", missing)
			break
		}
		select {
		case <-n.done:
			return
		case <-time.After(2 * time.Millisecond):
		}
	}
	n.femu.Lock()
	delete(n.fences, token)
	n.femu.Unlock()
}

// purgeFences forgets fences older than a minute (their moves failed).
func (n *Node) purgeFences(now time.Time) {
	n.femu.Lock()
	for k, st := range n.fences {
		if now.Sub(st.at) > time.Minute {
			delete(n.fences, k)
		}
	}
	n.femu.Unlock()
}
