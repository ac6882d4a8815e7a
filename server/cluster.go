package server

import (
	"errors"
	"fmt"
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

// ClusterAcker receives a forwarded message's confirmation.
type ClusterAcker interface{ Ack(ok bool) }

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
	failed  atomic.Bool
	done    func(ok bool)
}

// Ack is one forwarded message's confirmation; called by the cluster from
// any goroutine.
func (w *clusterWait) Ack(ok bool) {
	if !ok {
		w.failed.Store(true)
	}
	if w.pending.Add(-1) == 0 && w.done != nil {
		w.done(!w.failed.Load())
	}
}

// takeClusterWait returns the event's confirmations to wait for and clears
// them; nil when none is outstanding (no forwarded message needed one), so
// such an event's replies do not take a detour through the loop's mailbox.
func (t *txn) takeClusterWait() *clusterWait {
	w := t.cwait
	t.cwait = nil
	if w != nil && w.pending.Load() == 1 && !w.failed.Load() {
		return nil // only the event's own count: nothing was sent to wait for
	}
	return w
}

// arm sets what runs once every confirmation is in, and releases the
// event's own count (done may run at once, on this goroutine).
func (w *clusterWait) arm(done func(ok bool)) {
	w.done = done
	w.Ack(true)
}

// forward hands m to the cluster and drops from subs the $share groups
// whose member was chosen on another node. A QoS 1/2 message that other
// nodes must confirm adds to the txn's wait.
func (s *Server) forward(t *txn, m *message, subs []trie.Sub[*session]) []trie.Sub[*session] {
	if isSysTopic(m.topic) {
		return subs // $SYS is each node's own
	}
	cm := ClusterMessage{Topic: m.topic, Payload: m.payload, Props: m.props, ExpiresAt: m.expiresAt, QoS: m.qos, Retain: m.retain}
	var w ClusterAcker
	if m.qos > 0 {
		if t.cwait == nil {
			t.cwait = &clusterWait{}
			t.cwait.pending.Store(1)
		}
		t.cwait.pending.Add(1)
		w = t.cwait
	}
	groups, wait := s.cluster.Forward(&cm, w)
	if w != nil && !wait {
		t.cwait.pending.Add(-1)
	}
	return keepGroups(subs, groups)
}

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
// store; the client sends it again [MQTT-4.4.0-1]). Runs on c's loop.
func (c *client) armClusterWait(cw *clusterWait, p *pendingReplies) {
	l := c.loop
	cw.arm(func(ok bool) {
		l.post(func() {
			if c.state == stateClosed {
				return
			}
			if !ok {
				c.loop.srv.stats.clusterTimeouts.Add(1)
				c.closeNow(codec.UnspecifiedError, "a cluster node did not confirm a message in time")
				return
			}
			c.releaseReplies(p)
		})
	})
}

// RemoteDeliver delivers a message another node forwarded to this node's
// matching sessions, and nowhere else (it is not forwarded again). Only
// the $share groups in groups are served here. done is called once the
// deliveries are durable (with DurabilitySync: synced), from any goroutine.
func (s *Server) RemoteDeliver(cm *ClusterMessage, groups []string, done func(error)) {
	now := nanotime()
	m := newMessage(cm.Topic, cm.Payload, cm.QoS, cm.Retain, cm.Props, now, nil)
	if cm.ExpiresAt != 0 {
		m.expiresAt = cm.ExpiresAt
	}
	s.stats.clusterIn.Add(1)
	subs := keepGroups(s.subs.Match(m.topic, nil), groups)
	if m.qos > 0 && s.store != nil {
		if why := s.quotaRefusal(subs, m); why != 0 {
			s.refuse(why, "", "", "", "message from another node refused: "+string(m.topic))
			done(ErrQuotaExceeded)
			return
		}
	}
	var t txn
	s.deliverAll(nil, &t, m, subs)
	s.submit(nil, &t, done)
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
	c.authenticating = true
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
	// join the cluster. It travels in clear (no TLS on routes yet).
	// Default: "" (no check; bind Listen to a private network).
	Secret string `yaml:"secret"`
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
