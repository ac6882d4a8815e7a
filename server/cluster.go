package server

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ternmq/tern/codec"
	"github.com/ternmq/tern/trie"
)

// Clustering hooks. The server knows a cluster only through the Cluster
// interface below; the backplane (package cluster, on embedded NATS) calls
// back through the Remote… methods. Without a cluster every hook is one nil
// check, and this package never imports the backplane.
//
// What crosses nodes:
//
//	route          ─▶ Cluster.Forward: the message goes to the nodes whose
//	                  filters match; $share groups get one member cluster-wide
//	publishMessage ─▶ Cluster.Retained: retained set/clear, cluster-wide
//	trie changes   ─▶ Cluster.Interest: the node's filter table
//	CONNECT        ─▶ Cluster.Claim: a majority agrees the client id is here
//	                  now; the node that had it gets RemoteTakeover
//	from peers     ─▶ RemoteDeliver, RemoteRetain, RemoteTakeover

// Cluster is a backplane joining brokers into one. Every method may be
// called from any goroutine, concurrently; none may block on the network
// (they queue, and report through the callbacks they are given).
type Cluster interface {
	// Forward sends m to every other node with a matching filter. It
	// returns the $share groups whose one member cluster-wide is chosen on
	// this node (the local route delivers only to those groups), and
	// whether w will be called: for a QoS 1/2 message the cluster calls
	// w.Ack exactly once, when every node that must store it confirmed
	// (true) or one did not in time (false).
	Forward(m *ClusterMessage, w ClusterAcker) (localGroups []string, wait bool)
	// Retained announces a retained message set on this node (an empty
	// Payload clears the topic).
	Retained(m *ClusterMessage)
	// Interest tells the cluster that one more (add) or one fewer session
	// of this node subscribes to filter.
	Interest(filter string, add bool)
	// Claim asks the cluster for client id clientID on this node. done is
	// called once, from any goroutine: with a token for Owns, or with an
	// error when the cluster refuses (a newer claim, no majority). With
	// resume, a persistent session of clientID on another node is moved
	// here (ImportSession) before done; without, it is discarded there.
	Claim(clientID string, resume bool, done func(token uint64, err error))
	// Owns reports whether the claim token still holds clientID here (no
	// newer claim arrived since): checked once the session is attached, so
	// a claim that raced past ends one of the two connections.
	Owns(clientID string, token uint64) bool
	// Metrics returns the cluster's gauges and counters for /metrics.
	Metrics() []ClusterMetric
}

// ClusterMetric is one Prometheus sample of the cluster (tern_cluster_…).
type ClusterMetric struct {
	Name, Type, Help string // Type: gauge or counter
	Value            float64
}

// ClusterAcker receives a forwarded message's outcome: nil once every node
// that must store it did, ErrQuotaExceeded when one refused it for its
// store quota (and none failed), another error when one did not store it
// or did not answer in time. ref is the message's ClusterMessage.Ref.
type ClusterAcker interface{ Ack(ref uint64, err error) }

// ClusterMessage is a message as it crosses nodes. Its slices are
// read-only views: the receiver copies what it keeps.
type ClusterMessage struct {
	Topic   []byte
	Payload []byte
	Props   *codec.Properties // forwarded 5.0 properties; nil for none
	// ExpiresAt is the unix-nanosecond expiry (0: never); the cluster sends
	// the remaining interval, so clocks need not agree to the second.
	ExpiresAt int64
	QoS       byte
	Retain    bool
	// Ref is the server's own tag of a message (the PUBLISH's packet id
	// and QoS), handed back with its outcome (ClusterAcker); the cluster
	// does not read it.
	Ref uint64
	// Origin names a QoS 1/2 message cluster-wide (its publishing node and
	// that node's sequence): Forward sets it when it sends the message to
	// another node, RemoteDeliver receives it. 0: none. A session moving
	// between nodes drops the second copy of a message by it.
	Origin uint64
}

// ErrNoCluster is returned by the Remote… methods of a server that has no
// cluster set.
var ErrNoCluster = errors.New("no cluster configured")

// SetCluster joins the server to a cluster. Call it before Serve: it
// announces the filters of the sessions recovered from the store.
func (s *Server) SetCluster(c Cluster) {
	s.cluster = c
	for i := range s.sessions.shards {
		sh := &s.sessions.shards[i]
		sh.mu.Lock()
		for _, sess := range sh.m.all {
			sess.mu.Lock()
			for _, sub := range sess.subs {
				c.Interest(sub.filter, true)
			}
			sess.mu.Unlock()
		}
		sh.mu.Unlock()
	}
}

// subscribeTrie adds sub to the trie and, for a new (filter, session),
// to the node's cluster interest.
func (s *Server) subscribeTrie(filter string, sub trie.Sub[*session]) {
	if !s.subs.Subscribe(filter, sub) && s.cluster != nil {
		s.cluster.Interest(filter, true)
	}
}

// unsubscribeTrie removes sess's subscription to filter from the trie and
// the cluster interest.
func (s *Server) unsubscribeTrie(filter string, sess *session) {
	if s.subs.Unsubscribe(filter, sess) && s.cluster != nil {
		s.cluster.Interest(filter, false)
	}
}

// clusterWait gathers the confirmations of the messages one event forwarded:
// the event's replies wait for all of them (pendingReplies). pending starts
// at one for the event itself, released by arm.
type clusterWait struct {
	pending atomic.Int64
	failed  atomic.Bool // a node did not store a message
	mu      sync.Mutex
	refused []uint64 // refs of the messages a node refused for its quota (rare)
	done    func(w *clusterWait)
}

// Ack is one forwarded message's outcome; called by the cluster from any
// goroutine.
func (w *clusterWait) Ack(ref uint64, err error) {
	switch {
	case err == nil:
	case errors.Is(err, ErrQuotaExceeded):
		w.mu.Lock()
		w.refused = append(w.refused, ref)
		w.mu.Unlock()
	default:
		w.failed.Store(true)
	}
	if w.pending.Add(-1) == 0 && w.done != nil {
		w.done(w)
	}
}

// takeRefused returns the refs of the refused messages.
func (w *clusterWait) takeRefused() []uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	r := w.refused
	w.refused = nil
	return r
}

// takeClusterWait returns the event's confirmations to wait for and clears
// them; nil when none is outstanding (no forwarded message needed one), so
// such an event's replies do not take a detour through the loop's mailbox.
func (t *txn) takeClusterWait() *clusterWait {
	w := t.cwait
	t.cwait = nil
	if w != nil && w.pending.Load() == 1 && !w.failed.Load() {
		w.mu.Lock()
		none := len(w.refused) == 0
		w.mu.Unlock()
		if none {
			return nil // only the event's own count: nothing was sent to wait for
		}
	}
	return w
}

// arm sets what runs once every confirmation is in, and releases the
// event's own count (done may run at once, on this goroutine).
func (w *clusterWait) arm(done func(w *clusterWait)) {
	w.done = done
	w.Ack(0, nil)
}

// forward hands m to the cluster and drops from subs the $share groups
// whose member was chosen on another node. A QoS 1/2 message that other
// nodes must confirm adds to the txn's wait.
func (s *Server) forward(t *txn, m *message, subs []trie.Sub[*session]) []trie.Sub[*session] {
	if isSysTopic(m.topic) && !isNodeSysTopic(m.topic) {
		return subs // $SYS/broker/... is each node's own
	}
	cm := clusterMessagePool.Get().(*ClusterMessage)
	*cm = ClusterMessage{Topic: m.topic, Payload: m.payload, Props: m.props, ExpiresAt: m.expiresAt, QoS: m.qos, Retain: m.retain, Ref: t.ref}
	var w ClusterAcker
	if m.qos > 0 {
		if t.cwait == nil {
			t.cwait = &clusterWait{}
			t.cwait.pending.Store(1)
		}
		t.cwait.pending.Add(1)
		w = t.cwait
	}
	groups, wait := s.cluster.Forward(cm, w)
	if w != nil && !wait {
		t.cwait.pending.Add(-1)
	}
	// Not yet shared with anyone (route runs before the retained index or
	// a queue sees m): the local deliveries carry the origin the other
	// nodes see.
	m.origin = cm.Origin
	*cm = ClusterMessage{}
	clusterMessagePool.Put(cm) // Forward keeps no reference (ClusterMessage)
	return keepGroups(subs, groups)
}

// clusterMessagePool recycles the ClusterMessage handed to Forward: passed
// through an interface it would otherwise be allocated per message.
var clusterMessagePool = sync.Pool{New: func() any { return new(ClusterMessage) }}

// keepGroups drops the shared subscriptions of groups not in groups.
func keepGroups(subs []trie.Sub[*session], groups []string) []trie.Sub[*session] {
	out := subs[:0]
	for _, sub := range subs {
		if sub.Group != "" && !containsString(groups, sub.Group) {
			continue
		}
		out = append(out, sub)
	}
	return out
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// armClusterWait makes the replies p of c's event wait for the cluster's
// confirmations gathered in cw: released when all came, and the connection
// closed when one did not (nothing is acknowledged that a node did not
// store; the client sends it again [MQTT-4.4.0-1]). A message a node
// refused for its store quota is refused to its publisher as on one node
// (clusterRefused). Runs on c's loop.
func (c *client) armClusterWait(cw *clusterWait, p *pendingReplies) {
	l := c.loop
	cw.arm(func(w *clusterWait) {
		failed, refused := w.failed.Load(), w.takeRefused()
		l.post(func() {
			if c.state == stateClosed {
				return
			}
			if failed {
				c.loop.srv.stats.clusterTimeouts.Add(1)
				c.closeNow(codec.UnspecifiedError, "a cluster node did not confirm a message in time")
				return
			}
			if len(refused) > 0 && c.clusterRefused(p, refused) {
				return
			}
			c.releaseReplies(p)
		})
	})
}

// clusterRefused turns the held acknowledgements of the messages another
// node refused for its store quota (a persistent session's backlog, or its
// store, is full) into refusals, as on one node (publish.go quotaRefused):
// 5.0 PUBACK/PUBREC with Quota exceeded (0x97), the QoS 2 flow ended;
// 3.1.1 has no refusal code, so the connection closes with those messages
// unacknowledged (the client sends them again later). Unlike on one node,
// the subscribers on the other nodes may have the message already. It
// reports whether it closed the connection. Runs on c's loop.
func (c *client) clusterRefused(p *pendingReplies, refs []uint64) bool {
	srv, s := c.loop.srv, c.sess
	ids := make(map[uint16]bool, len(refs))
	for _, ref := range refs {
		if ref == 0 {
			continue // not a PUBLISH of this client's (a will): nobody to tell
		}
		id, q := uint16(ref), byte(ref>>16)
		ids[id] = true
		srv.refuse(limitRemoteQuota, c.id, c.username(), c.remote(), "message refused by another cluster node: a persistent session's store quota is full")
		if q == 2 {
			s.mu.Lock()
			if s.flowLocked(&srv.opts).inbound.Release(id) && s.storable() && srv.store != nil {
				c.loop.tx.batch(srv).DeleteInbound(s.id, id) // a failed PUBREC ends the flow
			}
			s.mu.Unlock()
		}
	}
	if len(ids) == 0 {
		return false
	}
	if c.version < codec.Version5 {
		c.closeNow(codec.QuotaExceeded, "store quota exceeded on another cluster node")
		return true
	}
	p.out = c.refuseAcks(p.out, ids)
	return false
}

// refuseAcks rewrites, in the encoded replies out, the PUBACK or PUBREC of
// each packet id in ids as a Quota exceeded refusal (5.0).
func (c *client) refuseAcks(out []byte, ids map[uint16]bool) []byte {
	res := make([]byte, 0, len(out)+32*len(ids))
	for len(out) > 0 {
		h, body, total, err := codec.ReadPacket(out, 0)
		if err != nil { // our own encoding: cannot happen; keep the rest as it is
			return append(res, out...)
		}
		if (h.Type == codec.PUBACK || h.Type == codec.PUBREC) && len(body) >= 2 {
			if id := uint16(body[0])<<8 | uint16(body[1]); ids[id] {
				a := codec.Ack{Type: h.Type, PacketID: id, ReasonCode: codec.QuotaExceeded}
				c.setReason(&a.Props, "quota exceeded on another cluster node")
				res = a.Append(res, c.version)
				out = out[total:]
				continue
			}
		}
		res = append(res, out[:total]...)
		out = out[total:]
	}
	return res
}

// RemoteDeliver delivers a message another node forwarded to this node's
// matching sessions, and nowhere else (it is not forwarded again). Only
// the $share groups in groups are served here. done is called once the
// deliveries are durable (with DurabilitySync: synced), from any goroutine.
// A batch of messages goes through RemoteBatch instead.
func (s *Server) RemoteDeliver(cm *ClusterMessage, groups []string, done func(error)) {
	b := s.NewRemoteBatch()
	if err := b.Deliver(cm, groups); err != nil {
		done(err)
		return
	}
	b.Commit(done)
}

// remoteDeliver delivers cm into t; l is a RemoteBatch's collector.
// ErrQuotaExceeded, delivering nothing, when a persistent recipient's
// store quota cannot take it.
func (s *Server) remoteDeliver(l *loop, t *txn, cm *ClusterMessage, groups []string) error {
	m := newMessage(cm.Topic, cm.Payload, cm.QoS, cm.Retain, cm.Props, l.now, nil)
	if cm.ExpiresAt != 0 {
		m.expiresAt = cm.ExpiresAt
	}
	m.origin = cm.Origin
	s.stats.clusterIn.Add(1)
	if m.retain && isNodeSysTopic(m.topic) {
		s.retained.Set(string(m.topic), m) // another node's $SYS value: in memory, as this node's own
	}
	subs := s.subs.Match(m.topic, l.match[:0])
	l.match = subs[:0]
	subs = keepGroups(subs, groups)
	if m.qos > 0 && s.store != nil {
		if why := s.quotaRefusal(subs, m); why != 0 {
			s.refuse(why, "", "", "", "message from another node refused: "+string(m.topic))
			return ErrQuotaExceeded
		}
	}
	s.deliverAll(l, t, m, subs)
	return nil
}

// RemoteBatch delivers the messages of one backplane batch (several
// messages another node forwarded at once) as one event: their store
// writes share one commit, and each event loop with a subscriber among the
// recipients is woken once per batch rather than once per message (the
// loops' routing hand-off, loop.go), so a loop writes many deliveries per
// wake-up and per system call.
//
// Concurrency: one RemoteBatch belongs to one goroutine (the cluster has
// one per receive shard); Deliver and Commit must not run concurrently on
// it. Different batches run concurrently.
type RemoteBatch struct {
	s *Server
	// l collects the batch's cross-loop wake-ups (schedule's handoff while
	// routing) and lends its match and dedup scratch; it is never run as
	// an event loop, it only lists the loops to wake for Commit.
	l *loop
	t txn
	n int
}

// NewRemoteBatch returns a batch for one receiving goroutine.
func (s *Server) NewRemoteBatch() *RemoteBatch {
	return &RemoteBatch{s: s, l: &loop{srv: s, id: -1, dedup: make(map[*session]int)}}
}

// Deliver delivers cm as RemoteDeliver does, as part of the batch: the
// deliveries reach their subscribers' loops, and the store, at Commit. It
// returns ErrQuotaExceeded, delivering nothing, when a persistent
// recipient's store quota cannot take cm (that message needs no Commit).
func (b *RemoteBatch) Deliver(cm *ClusterMessage, groups []string) error {
	if b.n == 0 {
		b.l.now = nanotime() // one clock read per batch, as a loop per event
	}
	b.l.routing = true
	err := b.s.remoteDeliver(b.l, &b.t, cm, groups)
	b.l.routing = false
	// Remote deliveries do not pace the publisher (it is on another node;
	// its confirmations are the back-pressure there).
	clear(b.l.paceOn)
	b.l.paceOn = b.l.paceOn[:0]
	if err == nil {
		b.n++
	}
	return err
}

// Len is how many messages Deliver took since the last Commit.
func (b *RemoteBatch) Len() int { return b.n }

// Commit wakes the loops of the batch's recipients and submits its store
// writes; done is called once they are durable (with DurabilitySync:
// synced), from any goroutine, and at once when there were none.
func (b *RemoteBatch) Commit(done func(error)) {
	b.l.flushHandoff()
	b.n = 0
	b.s.submit(nil, &b.t, done)
}

// nodeSysPrefix starts the $SYS topics a cluster node publishes for the
// whole cluster: each $SYS/broker/... value of node n is also published,
// retained in memory, as $SYS/nodes/<n>/broker/... and reaches the nodes
// with a matching subscription, which retain it in memory too. A client on
// any node subscribes to $SYS/nodes/+/broker/uptime, say, to watch every
// node; $SYS/broker/... stays the node's own.
const nodeSysPrefix = "$SYS/nodes/"

// isNodeSysTopic reports whether topic is under nodeSysPrefix.
func isNodeSysTopic(topic []byte) bool {
	return len(topic) > len(nodeSysPrefix) && string(topic[:len(nodeSysPrefix)]) == nodeSysPrefix
}

// SyncLoops returns once every event loop has run a task posted now, so
// every route a loop had begun has handed its messages to the cluster
// (Forward), or after timeout (false). Safe from any goroutine but a loop's.
func (s *Server) SyncLoops(timeout time.Duration) bool {
	p := s.loopSet.Load()
	if p == nil {
		return true
	}
	done := make(chan struct{}, len(*p))
	for _, l := range *p {
		l.post(func() { done <- struct{}{} })
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	for range *p {
		select {
		case <-done:
		case <-t.C:
			return false
		}
	}
	return true
}

// RemoteRetain applies a retained message set (non-empty Payload) or
// cleared on another node, with no further announcement. The cluster has
// already decided it is newer than what this node holds; ifAbsent applies
// it only where this node retains nothing on the topic (an update of
// unknown age). It returns without waiting for the store.
func (s *Server) RemoteRetain(cm *ClusterMessage, ifAbsent bool) {
	topic := string(cm.Topic)
	if _, had := s.retained.Get(topic); had && ifAbsent {
		return
	}
	var t txn
	if len(cm.Payload) == 0 {
		s.retainQuota.remove(s, topic)
		if s.store != nil {
			t.batch(s).DeleteRetained(topic)
		}
	} else {
		m := newMessage(cm.Topic, cm.Payload, cm.QoS, true, cm.Props, nanotime(), nil)
		if cm.ExpiresAt != 0 {
			m.expiresAt = cm.ExpiresAt
		}
		if !s.retainQuota.set(s, topic, m) {
			s.refuse(limitRetained, "", "", "", "retained topic from another node over the retained limits: "+topic)
			return
		}
		if s.store != nil {
			t.batch(s).PutRetained(messageRecord(m))
		}
	}
	s.submit(nil, &t, func(err error) {
		if err != nil {
			s.log.Error("storing a retained message from another node", "topic", topic, "err", err)
		}
	})
}

// RetainedEach calls fn with every retained message of this node, for a
// node that catches up; fn must not keep the message's slices.
func (s *Server) RetainedEach(fn func(cm *ClusterMessage)) {
	s.retained.Each(func(_ string, m *message) bool {
		if !isSysTopic(m.topic) {
			fn(&ClusterMessage{Topic: m.topic, Payload: m.payload, Props: m.props, ExpiresAt: m.expiresAt, QoS: m.qos, Retain: true})
		}
		return true
	})
}

// RemoteTakeover closes this node's connection of clientID, which another
// node now holds: the will is published as for any takeover
// [MQTT-3.1.4-3], a clean session ends, a persistent one goes offline here
// (to be moved by ExportSession) or, with discard (the new connection
// asked for a clean start [MQTT-3.1.2-4]), ends too. It reports whether a
// connection was closed. Safe from any goroutine.
func (s *Server) RemoteTakeover(clientID, node string, discard bool) bool {
	sess := s.sessions.get(clientID)
	if sess == nil {
		return false
	}
	sess.mu.Lock()
	c := sess.owner
	sess.mu.Unlock()
	if discard {
		go s.discardWhenOffline(sess)
	}
	if c == nil {
		return false
	}
	s.stats.clusterTakeovers.Add(1)
	c.takenOver.Store(true)
	c.loop.post(func() { c.closeNow(codec.SessionTakenOver, "session taken over by a connection on node "+node) })
	return true
}

// CloseClients closes every client connection of this node with reason
// (5.0: DISCONNECT Use another server, 0x9C); wills are published as for
// any connection the server closes. The cluster calls it when this node
// lost the majority: the client ids it holds may be taken on the other
// side of a partition, so its clients go and reconnect where a majority
// is. It returns how many it closed. Safe from any goroutine.
func (s *Server) CloseClients(reason string) int {
	var owners []*client
	for i := range s.sessions.shards {
		sh := &s.sessions.shards[i]
		sh.mu.Lock()
		for _, sess := range sh.m.all {
			sess.mu.Lock()
			if c := sess.owner; c != nil {
				owners = append(owners, c)
			}
			sess.mu.Unlock()
		}
		sh.mu.Unlock()
	}
	for _, c := range owners {
		c.loop.post(func() { c.closeNow(codec.UseAnotherServer, reason) })
	}
	return len(owners)
}

// discardWhenOffline ends sess once its connection let go of it (at most
// two seconds).
func (s *Server) discardWhenOffline(sess *session) {
	for range 200 {
		sess.mu.Lock()
		online := sess.owner != nil
		sess.mu.Unlock()
		if !online {
			var t txn
			s.endSession(&t, sess)
			if err := s.submitWait(&t); err != nil {
				s.log.Error("discarding a session taken over on another node", "client_id", sess.id, "err", err)
			}
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ClusterStats are the cluster counters the server keeps.
type ClusterStats struct {
	Received  uint64 // messages other nodes forwarded here
	Timeouts  uint64 // publishers closed because a node did not confirm in time
	Takeovers uint64 // connections closed because another node took their client id
}

// ClusterStats returns the cluster counters.
func (s *Server) ClusterStats() ClusterStats {
	return ClusterStats{Received: s.stats.clusterIn.Load(), Timeouts: s.stats.clusterTimeouts.Load(), Takeovers: s.stats.clusterTakeovers.Load()}
}

// clusterSamples are the cluster's metrics: the server's own cluster
// counters and the backplane's (Cluster.Metrics).
func (s *Server) clusterSamples() []ClusterMetric {
	c := func(name, help string, v uint64) ClusterMetric {
		return ClusterMetric{Name: name, Type: "counter", Help: help, Value: float64(v)}
	}
	return append([]ClusterMetric{
		c("tern_cluster_received_total", "Messages other nodes forwarded to this node.", s.stats.clusterIn.Load()),
		c("tern_cluster_confirm_timeouts_total", "Publishers disconnected because a node did not confirm a message in time.", s.stats.clusterTimeouts.Load()),
		c("tern_cluster_takeovers_total", "Connections closed because another node took their client id.", s.stats.clusterTakeovers.Load()),
	}, s.cluster.Metrics()...)
}

// clusterCollector serves the cluster's metrics on /metrics (registered by
// metricsRegistry when a cluster is set). The families are fixed once the
// cluster is set; their descriptions are built once.
//
// Concurrency: Collect may run on several scrape goroutines at once; it
// reads atomics and calls Cluster.Metrics, which is safe for that.
type clusterCollector struct {
	s     *Server
	descs map[string]*prometheus.Desc
}

func newClusterCollector(s *Server) *clusterCollector {
	c := &clusterCollector{s: s, descs: make(map[string]*prometheus.Desc)}
	for _, m := range s.clusterSamples() {
		c.descs[m.Name] = prometheus.NewDesc(m.Name, m.Help, nil, nil)
	}
	return c
}

// Describe implements prometheus.Collector.
func (c *clusterCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *clusterCollector) Collect(ch chan<- prometheus.Metric) {
	for _, m := range c.s.clusterSamples() {
		d := c.descs[m.Name]
		if d == nil {
			continue // a family the cluster did not report at registration
		}
		typ := prometheus.GaugeValue
		if m.Type == "counter" {
			typ = prometheus.CounterValue
		}
		ch <- prometheus.MustNewConstMetric(d, typ, m.Value)
	}
}

// claimThenConnect asks the cluster for the client id before the session is
// attached; the CONNECT completes on c's loop with the verdict. Input is
// not read meanwhile, as while an Authenticator decides.
func (c *client) claimThenConnect(p *codec.Connect, assigned bool) gnet.Action {
	cp := cloneConnect(p)
	c.flags.set(flagAuthenticating)
	c.loop.srv.cluster.Claim(c.id, !p.CleanStart, func(token uint64, err error) {
		c.loop.post(func() { c.claimed(cp, assigned, token, err) })
	})
	return gnet.None
}

// claimed runs on c's loop with the cluster's verdict on c's client id.
func (c *client) claimed(p *codec.Connect, assigned bool, token uint64, err error) {
	c.resumeConnect(func() gnet.Action {
		if err != nil {
			return c.refuse(p.ProtocolVersion, codec.ServerUnavailable, "cluster: "+err.Error())
		}
		return c.attachConnect(p, assigned, token)
	})
}

// clusterOwns is checked once the session is attached: a newer claim from
// another node that arrived meanwhile found nothing to close, so this
// connection closes itself.
func (c *client) clusterOwns(token uint64) bool {
	srv := c.loop.srv
	return srv.cluster == nil || srv.cluster.Owns(c.id, token)
}

// Cluster defaults.
const (
	// DefaultClusterName is the name every node of one cluster shares.
	DefaultClusterName = "tern"
	// DefaultConfirmTimeout is how long a publisher's acknowledgement waits
	// for the nodes that must store its message.
	DefaultConfirmTimeout = 5 * time.Second
	// DefaultClaimTimeout is how long a CONNECT waits for a majority to
	// agree that its client id is on this node.
	DefaultClaimTimeout = 2 * time.Second
	// DefaultHeartbeat is how often a node tells the others it is alive;
	// a node silent for three heartbeats counts as gone.
	DefaultHeartbeat = time.Second
)

// ClusterOptions configure a node of a cluster (the cluster: section of the
// configuration file). A broker without Listen is a single broker and
// starts no cluster at all.
type ClusterOptions struct {
	// Node is this node's name, unique in the cluster: letters, digits,
	// '-' and '_'. Required with Listen.
	Node string `yaml:"node"`
	// Name is the cluster's name; nodes of different names do not join.
	// Default: DefaultClusterName.
	Name string `yaml:"name"`
	// Listen is the host:port other nodes connect to. Default: "" (no cluster).
	Listen string `yaml:"listen"`
	// Peers are the Listen addresses of the other nodes. The cluster's
	// size, for majorities, is 1 + len(Peers).
	Peers []string `yaml:"peers"`
	// Secret, when set, is required of every node connecting to Listen
	// (the same on every node): without it anyone who reaches the port can
	// join the cluster. It travels in clear unless TLS is set.
	// Default: "" (no check; bind Listen to a private network).
	Secret string `yaml:"secret"`
	// TLS, when set (all three files), encrypts the routes between nodes
	// and verifies both ends: a node joins only with a certificate the CA
	// signed, and checks that the peer it dials has one naming its address.
	TLS ClusterTLS `yaml:"tls"`
	// ConfirmTimeout bounds the wait for the nodes that must store a QoS
	// 1/2 message; past it the publisher is disconnected without an
	// acknowledgement (it sends the message again). Default: DefaultConfirmTimeout.
	ConfirmTimeout time.Duration `yaml:"confirm_timeout"`
	// ClaimTimeout bounds the wait for a majority at CONNECT; past it the
	// CONNECT is refused with Server unavailable. At most 5s (claims older
	// than 10s are refused). Default: DefaultClaimTimeout.
	ClaimTimeout time.Duration `yaml:"claim_timeout"`
	// Heartbeat is how often a node announces itself. Default: DefaultHeartbeat.
	Heartbeat time.Duration `yaml:"heartbeat"`
}

// ClusterTLS names the PEM files of TLS on cluster routes.
type ClusterTLS struct {
	// Cert is this node's certificate; it serves both as the server's
	// (peers dialling in verify it against CA and the address they dial)
	// and as the client's (the peer it dials requires it). Default: "".
	Cert string `yaml:"cert"`
	// Key is Cert's private key. Default: "".
	Key string `yaml:"key"`
	// CA is the bundle that signed every node's certificate. Default: "".
	CA string `yaml:"ca"`
}

// Enabled reports whether TLS on routes is configured.
func (t *ClusterTLS) Enabled() bool { return t.Cert != "" || t.Key != "" || t.CA != "" }

// Enabled reports whether these options start a cluster.
func (o *ClusterOptions) Enabled() bool { return o.Listen != "" }

// EnsureDefaults fills every zero field with its default.
func (o *ClusterOptions) EnsureDefaults() {
	if o.Name == "" {
		o.Name = DefaultClusterName
	}
	if o.ConfirmTimeout == 0 {
		o.ConfirmTimeout = DefaultConfirmTimeout
	}
	if o.ClaimTimeout == 0 {
		o.ClaimTimeout = DefaultClaimTimeout
	}
	if o.Heartbeat == 0 {
		o.Heartbeat = DefaultHeartbeat
	}
}

// validate reports problems under the cluster.* keys.
func (o *ClusterOptions) validate(bad func(key, format string, args ...any)) {
	for _, d := range []struct {
		key string
		v   time.Duration
	}{{"cluster.confirm_timeout", o.ConfirmTimeout}, {"cluster.claim_timeout", o.ClaimTimeout}, {"cluster.heartbeat", o.Heartbeat}} {
		if d.v <= 0 {
			bad(d.key, "must be a positive duration, got %v", d.v)
		}
	}
	if o.ClaimTimeout > 5*time.Second {
		bad("cluster.claim_timeout", "must be at most 5s (older claims are refused as stale), got %v", o.ClaimTimeout)
	}
	if !validNodeName(o.Name) {
		bad("cluster.name", "must be 1-64 letters, digits, '-' or '_', got %q", o.Name)
	}
	if !o.Enabled() {
		if o.Node != "" || len(o.Peers) > 0 {
			bad("cluster.listen", "must be set when cluster.node or cluster.peers is")
		}
		return
	}
	checkAddr(bad, "cluster.listen", o.Listen)
	if o.TLS.Enabled() && (o.TLS.Cert == "" || o.TLS.Key == "" || o.TLS.CA == "") {
		bad("cluster.tls", "needs cert, key and ca together, got cert %q key %q ca %q", o.TLS.Cert, o.TLS.Key, o.TLS.CA)
	}
	if !validNodeName(o.Node) {
		bad("cluster.node", "must be 1-64 letters, digits, '-' or '_' (it names the node in the cluster), got %q", o.Node)
	}
	for i, p := range o.Peers {
		checkAddr(bad, fmt.Sprintf("cluster.peers[%d]", i), p)
	}
}

// validNodeName reports whether s can name a node or a cluster: it is part
// of the backplane's subjects, so only a safe alphabet.
func validNodeName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}
