package cluster

import (
	"encoding/binary"
	"errors"
	"runtime/debug"
	"time"

	"github.com/nats-io/nats.go"
)

// Client-id ownership. A CONNECT on any node first claims its client id:
// the claim is (timestamp, node), ordered by timestamp then node name, and
// every node votes. A node grants a claim unless it already granted a newer
// one for that id; granting one for another node closes its own connection
// of that id (RemoteTakeover: the will fires, a clean session ends). The
// CONNECT goes ahead once a majority of the configured nodes (this one
// included) granted, and is refused (Server unavailable) if one refused or
// no majority answered within ClaimTimeout.
//
// Two claims racing for one id: each node grants the newer whenever it
// arrives and refuses the older after the newer, so at most the newer can
// be kept; the older may still collect a majority from nodes that saw it
// first, but its node then sees the newer claim (its own table says it no
// longer owns the id, checked once the session is attached — Owns), or
// the newer claim's takeover closes it. Exactly one connection remains.
//
// In a partition only the side with a majority accepts CONNECTs; a node
// on the minority side refuses them (clients retry elsewhere) and keeps
// the connections it has.
//
// Clocks: a claim's timestamp is its node's clock. Nodes whose clocks are
// apart by more than the time between two CONNECTs of one client may order
// them wrongly (the later CONNECT refused; the client retries). Claims older
// than staleClaim are refused outright, so a claim delayed in the network
// cannot take a session back.

const (
	// A granted claim is remembered claimTTL (claims matter only while
	// CONNECTs race; the memory is per client id); a claim older than
	// staleClaim (well inside claimTTL, well past any ClaimTimeout) is
	// refused, so one delayed past its record cannot take an id back.
	claimTTL   = 20 * time.Second
	staleClaim = 10 * time.Second
)

var (
	errNewerClaim = errors.New("client id taken by a newer connection")
	errNoMajority = errors.New("no majority of cluster nodes reachable (partition or nodes down)")
)

// claim is a node's claim on a client id. Compact (a map of them holds a
// connect storm's client ids for claimTTL): at is unix nanoseconds.
type claim struct {
	ts   int64
	at   int64 // when this node recorded it, unix nanoseconds
	node string
}

func (c claim) newer(o claim) bool {
	if c.ts != o.ts {
		return c.ts > o.ts
	}
	return c.node > o.node
}

// ballot collects the votes on one of this node's claims.
type ballot struct {
	id       string
	grants   int
	voters   int // nodes that answered, this one included
	expect   int // nodes alive when the claim left, this one included
	resume   bool
	holder   string // a node that has a persistent session of id
	done     func(token uint64, err error)
	deadline time.Time
}

// claimReq is a claim on the claim subject, voteMsg a vote on the
// claiming node's vote subject. On the wire (binary, like forwarded
// messages: a connect storm sends one claim and gathers a vote from every
// node per CONNECT):
//
//	claim  claimWire, flags (1: resume), ts (uvarint), node, id
//	vote   claimWire, flags (1: grant, 2: has), ts (uvarint), node
//
// node and id are uvarint length + bytes.
type claimReq struct {
	ID     string
	TS     int64
	Node   string
	Resume bool // the CONNECT resumes a session: it moves; else it is discarded
}

type voteMsg struct {
	TS    int64 // the claim's timestamp: the ballot
	Grant bool
	Node  string
	Has   bool // the voter holds a persistent session of the id
}

// claimWire is the first byte of a claim or a vote.
const claimWire = 1

// appendClaimHead encodes what claims and votes begin with.
func appendClaimHead(b []byte, flags byte, ts int64, node string) []byte {
	b = append(b, claimWire, flags)
	b = binary.AppendUvarint(b, uint64(ts))
	return appendBytes(b, []byte(node))
}

// readClaimHead decodes what claims and votes begin with; the reader is
// left at what follows.
func readClaimHead(b []byte) (r reader, flags byte, ts int64, node string) {
	r = reader{b: b}
	if r.byte() != claimWire {
		r.err = errWire
		return
	}
	flags = r.byte()
	ts = int64(r.uvarint())
	node = string(r.bytes())
	return
}

func (c *claimReq) append(b []byte) []byte {
	var flags byte
	if c.Resume {
		flags |= 1
	}
	return appendBytes(appendClaimHead(b, flags, c.TS, c.Node), []byte(c.ID))
}

func (c *claimReq) decode(b []byte) error {
	r, flags, ts, node := readClaimHead(b)
	c.Resume, c.TS, c.Node = flags&1 != 0, ts, node
	c.ID = string(r.bytes())
	return r.err
}

func (v *voteMsg) append(b []byte) []byte {
	var flags byte
	if v.Grant {
		flags |= 1
	}
	if v.Has {
		flags |= 2
	}
	return appendClaimHead(b, flags, v.TS, v.Node)
}

func (v *voteMsg) decode(b []byte) error {
	r, flags, ts, node := readClaimHead(b)
	v.Grant, v.Has, v.TS, v.Node = flags&1 != 0, flags&2 != 0, ts, node
	return r.err
}

// Claim implements server.Cluster.
func (n *Node) Claim(id string, resume bool, done func(token uint64, err error)) {
	c := claim{ts: n.clock(), node: n.self}
	if !n.vote(id, c) {
		n.stats.claimsRefused.Add(1)
		done(0, errNewerClaim)
		return
	}
	var buf [128]byte
	req := (&claimReq{ID: id, TS: c.ts, Node: n.self, Resume: resume}).append(buf[:0])
	need := n.size/2 + 1
	alive := n.alivePeers()
	if need <= 1 && alive == 0 {
		// Alone in its cluster: nothing to wait for, but the others (if
		// any run) still hear of it.
		_ = n.nc.Publish(n.subj.claim, req)
		done(uint64(c.ts), nil)
		return
	}
	n.cmu.Lock()
	n.votesGrown++
	n.votes[uint64(c.ts)] = &ballot{id: id, grants: 1, voters: 1, expect: 1 + alive, resume: resume,
		done: done, deadline: time.Now().Add(n.opts.ClaimTimeout)}
	n.cmu.Unlock()
	if err := n.nc.PublishRequest(n.subj.claim, n.voteSubj, req); err != nil {
		n.finishBallot(uint64(c.ts), errNoMajority)
	}
}

// vote records c for id if nothing newer is known, reporting whether it
// did (granted).
func (n *Node) vote(id string, c claim) bool {
	now := time.Now().UnixNano()
	if c.ts < now-int64(staleClaim) {
		return false
	}
	n.cmu.Lock()
	defer n.cmu.Unlock()
	if cur, ok := n.claims[id]; ok && cur.newer(c) {
		return false
	}
	c.at = now
	if _, ok := n.claims[id]; !ok {
		n.claimsGrown++
	}
	n.claims[id] = c
	return true
}

// Owns implements server.Cluster.
func (n *Node) Owns(id string, token uint64) bool {
	n.cmu.Lock()
	cur, ok := n.claims[id]
	n.cmu.Unlock()
	return !ok || (cur.node == n.self && cur.ts == int64(token))
}

// onClaim votes on another node's claim and, granting it, closes this
// node's connection of that client id.
func (n *Node) onClaim(msg *nats.Msg) {
	var r claimReq
	if err := r.decode(msg.Data); err != nil {
		n.undecodable("claim", msg.Subject, msg.Data, err)
		return
	}
	if r.Node == n.self {
		return
	}
	grant := n.vote(r.ID, claim{ts: r.TS, node: r.Node})
	has := false
	if grant {
		has = r.Resume && n.srv.HasSession(r.ID)
		n.srv.RemoteTakeover(r.ID, r.Node, !r.Resume)
	}
	if msg.Reply != "" {
		var buf [64]byte
		_ = n.nc.Publish(msg.Reply, (&voteMsg{TS: r.TS, Grant: grant, Node: n.self, Has: has}).append(buf[:0]))
	}
}

// onVote counts a vote on one of this node's claims.
func (n *Node) onVote(msg *nats.Msg) {
	var v voteMsg
	if err := v.decode(msg.Data); err != nil {
		n.undecodable("vote", msg.Subject, msg.Data, err)
		return
	}
	key := uint64(v.TS)
	if !v.Grant {
		n.finishBallot(key, errNewerClaim)
		return
	}
	n.cmu.Lock()
	b := n.votes[key]
	if b == nil {
		n.cmu.Unlock()
		return
	}
	b.grants++
	b.voters++
	if v.Has {
		b.holder = v.Node
	}
	// A majority decides; a resuming CONNECT also waits (within the
	// deadline) for every live node, one of which may hold its session.
	won := b.grants >= n.size/2+1 && (!b.resume || b.holder != "" || b.voters >= b.expect)
	if won {
		delete(n.votes, key)
	}
	n.cmu.Unlock()
	if won {
		n.won(b, key)
	}
}

// won completes a claim that a majority granted: a session held by
// another node moves here first.
func (n *Node) won(b *ballot, key uint64) {
	if b.holder == "" {
		b.done(key, nil)
		return
	}
	go func() {
		if err := n.moveSession(b.id, b.holder); err != nil {
			n.log.Warn("cluster: moving a session failed; the client starts without it here", "client_id", b.id, "from", b.holder, "err", err)
		}
		b.done(key, nil)
	}()
}

// finishBallot ends a ballot with err.
func (n *Node) finishBallot(key uint64, err error) {
	n.cmu.Lock()
	b := n.votes[key]
	delete(n.votes, key)
	n.cmu.Unlock()
	if b != nil {
		n.stats.claimsRefused.Add(1)
		n.log.Info("cluster: CONNECT refused", "client_id", b.id, "reason", err.Error())
		b.done(0, err)
	}
}

// expireBallots ends the claims past their deadline: won if a majority
// granted (some live node did not answer), else refused.
func (n *Node) expireBallots(now time.Time) {
	var late []uint64
	var won []uint64
	var wonB []*ballot
	n.cmu.Lock()
	for k, b := range n.votes {
		if now.After(b.deadline) {
			if b.grants >= n.size/2+1 {
				delete(n.votes, k)
				won, wonB = append(won, k), append(wonB, b)
				continue
			}
			late = append(late, k)
		}
	}
	n.cmu.Unlock()
	for i, k := range won {
		n.won(wonB[i], k)
	}
	for _, k := range late {
		n.finishBallot(k, errNoMajority)
	}
}

// purgeClaims forgets claims older than claimTTL: a session's presence
// on a node is the truth after that; claims matter only while CONNECTs race.
func (n *Node) purgeClaims(now time.Time) {
	n.cmu.Lock()
	for id, c := range n.claims {
		if now.UnixNano()-c.at > int64(claimTTL) {
			delete(n.claims, id)
		}
	}
	before := n.claimsGrown
	n.claims = shrinkMap(n.claims, &n.claimsGrown)
	n.votes = shrinkMap(n.votes, &n.votesGrown)
	shrunk := n.claimsGrown != before
	n.cmu.Unlock()
	if shrunk && now.Sub(n.lastReturn) >= memReturnEvery {
		// A storm's claims just left (the map was copied smaller).
		n.lastReturn = now
		go n.returnMemory(before)
	}
}

// memReturnEvery is the least time between two returnMemory calls.
const memReturnEvery = time.Minute

// returnMemory runs a full collection and returns the free heap to the OS,
// once a connect storm's claims expired. The server does the same once a
// storm's connections settle (memory_return_after, server/memreturn.go),
// but the claims of the storm are alive then for claimTTL more (every
// node records every claim: ~100 B per CONNECT in a map of 15,000), and
// nothing would return their memory afterwards: an idle broker runs no
// collection for minutes, and the runtime keeps freed heap up to its heap
// goal, which the storm set (BENCHMARKS.md, "Cluster: p2p CPU and idle
// memory, 2026-12-02 late session"). Costs one collection of the live heap
// per storm and node (tens of ms of CPU at 15,000 connections), at most
// once a minute. Runs on its own goroutine: the collection stops the world
// briefly but must not delay heartbeats.
func (n *Node) returnMemory(claims int) {
	start := time.Now()
	debug.FreeOSMemory()
	n.log.Info("cluster: a connect storm's client-id claims expired: collected and returned the free heap to the OS",
		"claims", claims, "took", time.Since(start).Round(time.Millisecond))
}

// shrinkMap returns m, or a copy of it when many more entries were added
// since the last copy (*grown) than it holds now: a Go map keeps the
// memory of its largest size, and a connect storm of 15,000 clients
// would otherwise leave two maps of 15,000 slots behind on every node for
// good (about 100 bytes per client). grown restarts at the copy's size.
func shrinkMap[K comparable, V any](m map[K]V, grown *int) map[K]V {
	if *grown < 1024 || len(m) > *grown/4 {
		return m
	}
	c := make(map[K]V, len(m))
	for k, v := range m {
		c[k] = v
	}
	*grown = len(c)
	return c
}
