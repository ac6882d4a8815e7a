package cluster

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/ternmq/tern/server"
	"github.com/ternmq/tern/trie"
)

// maxPayload is the largest NATS message the backplane sends or accepts:
// an MQTT message up to the broker's 256 MiB packet limit does not fit;
// MQTT messages over it are delivered on their own node only (counted in
// tern_cluster_oversize_total). Snapshots and catch-up stream in chunks
// below it.
const maxPayload = 8 << 20

// routeUser is the user name of route connections when a secret is set.
const routeUser = "tern"

// chunkBytes bounds one chunk of a snapshot or of a retained catch-up.
const chunkBytes = 1 << 20

// Node is one Tern node's side of the cluster: an embedded NATS server
// routed to the peers, a client connection to it, and the tables that
// decide what goes where. It implements server.Cluster. Start it, give it
// to the server with SetCluster before Serve, Close it after the server.
type Node struct {
	opts server.ClusterOptions
	srv  *server.Server
	log  *slog.Logger
	ns   *natsserver.Server
	nc   *nats.Conn
	self string
	inc  int64 // incarnation: this process's start, unix nanoseconds
	size int   // nodes in the cluster, for majorities
	subj subjects
	subs []*nats.Subscription
	done chan struct{}
	wg   sync.WaitGroup

	// Interest (interest.go): imu guards local, iver and peers.
	imu   sync.Mutex
	local map[string]int32 // filter → sessions of this node subscribed to it (int32: 40 B an entry, not 56)
	iver  uint64           // version of local, +1 per change announced
	peers map[string]*peer
	table *trie.Trie[string] // every node's filters, self included; the subscriber is the node's name
	ibuf  []byte             // interest changes not yet published (interest.go), imu held
	ipend atomic.Bool        // ibuf is not empty: the flusher takes imu only then

	// Forwarding (forward.go): hash names this node in message origins.
	hash uint32
	fmu  sync.Mutex
	fseq uint64
	pend pendRing
	// nodeNames gives each node forwarded to its bit in the pendings'
	// masks (nodeIndex); only grows, at most maxNodes.
	nodeNames []string
	// tickNow is the clock of the last tick (unix nanoseconds): the base of
	// confirmation deadlines, read per forwarded message without a clock call.
	tickNow atomic.Int64
	// ackDone is onAck's scratch: the outcomes a confirmation batch completed.
	ackDone []outcome
	msub    sync.Map // node → *[recvShards]string: its message subjects, built once
	recv    [recvShards]receiver

	// Batching (batch.go): omu guards the buffers being filled and their
	// spares; fl serialises flushes.
	omu      sync.Mutex
	fl       sync.Mutex
	out      map[outKey]*outBuf // forwarded messages, per (node, receive shard)
	acks     map[string]*outBuf // confirmations, per reply subject
	scratch  []byte
	flushing []flushItem // fl held
	flushc   chan struct{}
	ackSubj  string // this node's confirmation subject, the reply of its forwards
	voteSubj string // this node's vote subject, the reply of its claims

	// Session-move fences (fence.go): femu guards fences.
	femu     sync.Mutex
	fences   map[string]*fenceState
	fenceSeq atomic.Uint64

	// Retained (retained.go): rmu guards rver.
	rmu  sync.Mutex
	rver map[string]version

	// Client-id claims (claim.go): cmu guards claims and votes.
	cmu    sync.Mutex
	claims map[string]claim
	votes  map[uint64]*ballot
	// Entries added since the map was last copied (shrinkMap).
	claimsGrown, votesGrown int
	lastReturn              time.Time    // the last returnMemory (tick goroutine)
	cseq                    atomic.Int64 // last claim timestamp: strictly increasing on this node

	minority atomic.Bool // without a majority since the last tick (checkMajority)

	decodeLogAt atomic.Int64 // unix ns of the last undecodable-message log line

	stats struct {
		forwarded, oversize, remoteDrops, decodeErrors, claimsRefused          atomic.Uint64
		confirmTimeouts, retainedIn, snapshots, unconfirmedGone, sessionsMoved atomic.Uint64
		fenceTimeouts, moveCopiesDropped, minorityClosed                       atomic.Uint64
	}
}

// peer is what this node knows of another.
type peer struct {
	name     string
	inc      int64  // its incarnation; a new one is a restart
	ver      uint64 // the version of its filters the table holds
	hbVer    uint64 // the version its last heartbeat announced
	filters  map[string]struct{}
	lastSeen time.Time
	alive    bool
	syncing  bool // a snapshot request is out
}

// subjects are the NATS subjects of one cluster (its name is their prefix,
// so two clusters on one NATS never mix).
type subjects struct {
	prefix, hb, interest, claim, retained string
}

func newSubjects(cluster string) subjects {
	p := "tern." + cluster + "."
	return subjects{prefix: p, hb: p + "hb", interest: p + "int", claim: p + "claim", retained: p + "ret"}
}

// msgShard is the subject of one receive shard of node: topics hash onto
// recvShards subscriptions, each served by its own goroutine, so a node
// receives on several cores while each topic keeps its order.
func (s subjects) msgShard(node string, k int) string {
	return s.prefix + "m." + node + "." + strconv.Itoa(k)
}
func (s subjects) acks(node string) string     { return s.prefix + "ack." + node }
func (s subjects) snapshot(node string) string { return s.prefix + "snap." + node }
func (s subjects) rsync(node string) string    { return s.prefix + "rsync." + node }
func (s subjects) votes(node string) string    { return s.prefix + "vote." + node }
func (s subjects) session(node string) string  { return s.prefix + "sess." + node }

// heartbeat is what every node publishes each Heartbeat.
type heartbeat struct {
	Node string `json:"node"`
	Inc  int64  `json:"inc"`
	Ver  uint64 `json:"ver"` // its interest version
}

// Start starts the embedded NATS server on opts.Listen, routed to
// opts.Peers, and connects to it. The node does nothing until SetCluster
// hands it the server (Attach).
func Start(opts server.ClusterOptions, log *slog.Logger) (*Node, error) {
	opts.EnsureDefaults()
	if !opts.Enabled() {
		return nil, errors.New("cluster: no listen address")
	}
	host, portStr, err := net.SplitHostPort(opts.Listen)
	if err != nil {
		return nil, fmt.Errorf("cluster.listen: %w", err)
	}
	port, _ := strconv.Atoi(portStr)
	var routes []*url.URL
	for _, p := range opts.Peers {
		u, err := url.Parse("nats-route://" + p)
		if err != nil {
			return nil, fmt.Errorf("cluster.peers %q: %w", p, err)
		}
		if opts.Secret != "" {
			u.User = url.UserPassword(routeUser, opts.Secret)
		}
		routes = append(routes, u)
	}
	// The NATS client port cannot be switched off with routes (nats-server
	// starts routing once its client listener is up), so it listens on a
	// random loopback port behind a random token; the node itself connects
	// in-process.
	token := randomToken()
	nopts := &natsserver.Options{
		ServerName:    opts.Node,
		Host:          "127.0.0.1",
		Port:          natsserver.RANDOM_PORT,
		Authorization: token,
		NoSigs:        true,
		NoLog:         true,
		MaxPayload:    maxPayload,
		Cluster: natsserver.ClusterOpts{
			Name: opts.Name, Host: host, Port: port,
			// Peers listed on the command line are tried forever: a node
			// restarted later rejoins without operator action.
			ConnectRetries: -1,
		},
		Routes:          routes,
		NoSystemAccount: true,
	}
	if opts.Secret != "" {
		nopts.Cluster.Username, nopts.Cluster.Password = routeUser, opts.Secret
	}
	if opts.TLS.Enabled() {
		cfg, err := routeTLS(opts.TLS)
		if err != nil {
			return nil, err
		}
		nopts.Cluster.TLSConfig, nopts.Cluster.TLSTimeout = cfg, 5
	}
	ns, err := natsserver.NewServer(nopts)
	if err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	ns.SetLoggerV2(natsLogger{log}, false, false, false)
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		return nil, fmt.Errorf("cluster: NATS did not start on %s", opts.Listen)
	}
	n := &Node{
		opts: opts, log: log, ns: ns, self: opts.Node,
		inc: time.Now().UnixNano(), size: 1 + len(opts.Peers), subj: newSubjects(opts.Name),
		done:  make(chan struct{}),
		local: make(map[string]int32), peers: make(map[string]*peer),
		rver:   make(map[string]version),
		claims: make(map[string]claim), votes: make(map[uint64]*ballot),
		out: make(map[outKey]*outBuf), acks: make(map[string]*outBuf),
		flushc: make(chan struct{}, 1),
		fences: make(map[string]*fenceState),
	}
	n.hash = nodeHash(opts.Node)
	n.tickNow.Store(n.inc)
	n.ackSubj = n.subj.acks(n.self)
	n.voteSubj = n.subj.votes(n.self)
	n.fseq = uint64(n.inc) // a new incarnation's origins do not repeat the last one's
	n.table = trie.New[string](n.alive)
	// NoEcho: every handler ignores what this node published itself
	// (claims, interest deltas, heartbeats, retained updates), so the
	// server does not send it back — a connect storm's claims and deltas
	// would otherwise each come back to be decoded and dropped.
	nc, err := nats.Connect("", nats.InProcessServer(ns), nats.Token(token), nats.Name("tern-"+opts.Node), nats.MaxReconnects(-1), nats.NoEcho(),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			n.stats.remoteDrops.Add(1)
			log.Warn("cluster: NATS client error", "err", err)
		}))
	if err != nil {
		ns.Shutdown()
		return nil, fmt.Errorf("cluster: connect: %w", err)
	}
	n.nc = nc
	log.Info("cluster node started", "node", opts.Node, "cluster", opts.Name, "listen", opts.Listen, "peers", opts.Peers)
	return n, nil
}

// Attach subscribes the node's subjects and starts its heartbeat: from
// now on it serves srv. Call it once, before srv.SetCluster(n).
func (n *Node) Attach(srv *server.Server) error {
	n.srv = srv
	for _, s := range []struct {
		subj string
		fn   nats.MsgHandler
	}{
		{n.subj.hb, n.onHeartbeat},
		{n.subj.interest, n.onInterest},
		{n.subj.snapshot(n.self), n.onSnapshotRequest},
		{n.subj.acks(n.self), n.onAck},
		{n.subj.retained, n.onRetained},
		{n.subj.rsync(n.self), n.onRetainedSync},
		{n.subj.claim, n.onClaim},
		{n.subj.votes(n.self), n.onVote},
		{n.subj.session(n.self), n.onSessionRequest},
	} {
		sub, err := n.nc.Subscribe(s.subj, s.fn)
		if err != nil {
			return fmt.Errorf("cluster: subscribe %s: %w", s.subj, err)
		}
		// Bounded: past these a subscription drops (counted) rather than
		// growing without limit behind a stuck handler.
		_ = sub.SetPendingLimits(1<<20, 512<<20)
		n.subs = append(n.subs, sub)
	}
	for k := range recvShards {
		n.recv[k].batch = srv.NewRemoteBatch()
		sub, err := n.nc.Subscribe(n.subj.msgShard(n.self, k), func(msg *nats.Msg) { n.onMessage(msg, k) })
		if err != nil {
			return fmt.Errorf("cluster: subscribe: %w", err)
		}
		_ = sub.SetPendingLimits(1<<20, 512<<20)
		n.subs = append(n.subs, sub)
	}
	n.wg.Add(2)
	go n.tick()
	go n.flusher()
	return nil
}

// Close stops the node: no heartbeat, the NATS connection and server down.
// Call it after the server closed.
func (n *Node) Close() {
	select {
	case <-n.done:
		return
	default:
	}
	close(n.done)
	n.wg.Wait()
	n.nc.Close()
	n.ns.Shutdown()
	n.ns.WaitForShutdown()
}

// tick publishes the heartbeat, notices peers gone silent and expires
// confirmations, claims and tombstones past their time.
func (n *Node) tick() {
	defer n.wg.Done()
	hb := n.opts.Heartbeat
	t := time.NewTicker(n.tickEvery())
	defer t.Stop()
	var last time.Time
	for {
		select {
		case <-n.done:
			return
		case now := <-t.C:
			n.tickNow.Store(now.UnixNano())
			if now.Sub(last) >= hb {
				last = now
				n.beat()
				n.checkPeers(now)
				n.checkMajority()
				n.purgeClaims(now)
				n.purgeTombstones(now)
				n.purgeFences(now)
			}
			n.expirePending(now)
			n.expireBallots(now)
		}
	}
}

// tickEvery is the period of tick.
func (n *Node) tickEvery() time.Duration { return min(n.opts.Heartbeat, 250*time.Millisecond) }

func (n *Node) beat() {
	n.imu.Lock()
	// The changes the heartbeat's version counts leave before it.
	n.publishInterestLocked()
	b, _ := json.Marshal(heartbeat{Node: n.self, Inc: n.inc, Ver: n.iver})
	_ = n.nc.Publish(n.subj.hb, b)
	n.imu.Unlock()
}

// checkMajority closes this node's client connections when it finds itself
// without a majority of the configured nodes (the others silent for three
// heartbeats: a partition, or most nodes down). On the other side of a
// partition the majority admits CONNECTs and so may take any client id
// this node holds: closing them here bounds the time one id is connected on
// both sides to the detection delay (three heartbeats), and the clients
// reconnect on the majority side. While in the minority, CONNECTs are
// refused (Claim), so none stays. Runs on the tick goroutine.
func (n *Node) checkMajority() {
	if time.Since(time.Unix(0, n.inc)) < 3*n.opts.Heartbeat {
		return // just started: the peers are not heard from yet
	}
	minority := n.alivePeers()+1 < n.size/2+1
	was := n.minority.Swap(minority)
	if !minority || was {
		if was && !minority {
			n.log.Info("cluster: a majority of the nodes is reachable again; accepting CONNECTs")
		}
		return
	}
	k := n.srv.CloseClients("this cluster node lost the majority of its cluster (partition or nodes down)")
	n.stats.minorityClosed.Add(uint64(k))
	n.log.Warn("cluster: this node lost the majority of its cluster; its client connections are closed and CONNECTs refused until it is back",
		"reachable_nodes", n.alivePeers()+1, "nodes", n.size, "closed", k)
}

// alivePeers counts the other nodes heard from recently.
func (n *Node) alivePeers() int {
	n.imu.Lock()
	defer n.imu.Unlock()
	k := 0
	for _, p := range n.peers {
		if p.alive {
			k++
		}
	}
	return k
}

// alive reports whether node is up (the table's $share member choice skips
// members on nodes that are not).
func (n *Node) alive(node string) bool {
	if node == n.self {
		return true
	}
	n.imu.Lock()
	p := n.peers[node]
	ok := p != nil && p.alive
	n.imu.Unlock()
	return ok
}

// Metrics implements server.Cluster.
func (n *Node) Metrics() []server.ClusterMetric {
	n.imu.Lock()
	alive, entries := 0, 0
	for _, p := range n.peers {
		if p.alive {
			alive++
			entries += len(p.filters)
		}
	}
	localFilters := len(n.local)
	n.imu.Unlock()
	n.fmu.Lock()
	pending := n.pend.live
	n.fmu.Unlock()
	ns := n.nc.Stats()
	g := func(name, help string, v float64) server.ClusterMetric {
		return server.ClusterMetric{Name: name, Type: "gauge", Help: help, Value: v}
	}
	c := func(name, help string, v uint64) server.ClusterMetric {
		return server.ClusterMetric{Name: name, Type: "counter", Help: help, Value: float64(v)}
	}
	return []server.ClusterMetric{
		g("tern_cluster_nodes", "Nodes configured in the cluster (this one included).", float64(n.size)),
		g("tern_cluster_peers", "Other nodes heard from within three heartbeats.", float64(alive)),
		g("tern_cluster_majority", "1 while this node reaches a majority of the configured nodes (it admits CONNECTs), 0 in a minority.", b2f(!n.minority.Load())),
		g("tern_cluster_routes", "NATS routes up to other nodes.", float64(n.ns.NumRoutes())),
		g("tern_cluster_remote_interest_entries", "Filters of other nodes in this node's table.", float64(entries)),
		g("tern_cluster_local_filters", "Distinct filters of this node announced to the others.", float64(localFilters)),
		g("tern_cluster_confirms_pending", "Forwarded QoS 1/2 messages waiting for confirmations.", float64(pending)),
		c("tern_cluster_forwarded_total", "Messages sent to other nodes (one per node).", n.stats.forwarded.Load()),
		c("tern_cluster_backplane_sent_total", "NATS messages this node published: forwarded-message batches, confirmation batches and control traffic (forwarded_total / this is the batching).", ns.OutMsgs),
		c("tern_cluster_backplane_received_total", "NATS messages this node received: batches of forwarded messages and of confirmations, and control traffic.", ns.InMsgs),
		c("tern_cluster_oversize_total", "Messages too large for the backplane, delivered on their own node only.", n.stats.oversize.Load()),
		c("tern_cluster_confirm_expired_total", "Forwarded messages whose confirmations did not all come in time.", n.stats.confirmTimeouts.Load()),
		c("tern_cluster_unconfirmed_gone_total", "Forwarded messages acknowledged without the confirmation of a node that went silent meanwhile.", n.stats.unconfirmedGone.Load()),
		c("tern_cluster_sessions_moved_total", "Persistent sessions moved here from another node (takeover).", n.stats.sessionsMoved.Load()),
		c("tern_cluster_move_copies_dropped_total", "Deliveries of a moving session that reached it on both nodes, kept once.", n.stats.moveCopiesDropped.Load()),
		c("tern_cluster_minority_closed_total", "Client connections closed because this node lost the majority of its cluster.", n.stats.minorityClosed.Load()),
		c("tern_cluster_fence_timeouts_total", "Session moves whose fence did not complete in time (moved on without it).", n.stats.fenceTimeouts.Load()),
		c("tern_cluster_errors_total", "Backplane errors: slow-consumer drops and undecodable messages.", n.stats.remoteDrops.Load()+n.stats.decodeErrors.Load()),
		c("tern_cluster_claims_refused_total", "CONNECTs refused because the cluster did not give this node the client id.", n.stats.claimsRefused.Load()),
		c("tern_cluster_retained_received_total", "Retained updates applied from other nodes.", n.stats.retainedIn.Load()),
		c("tern_cluster_snapshots_total", "Interest snapshots fetched from other nodes (joins, restarts, gaps).", n.stats.snapshots.Load()),
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// nodeHash is the 32-bit FNV-1a hash of a node's name, never 0 (an
// origin of 0 means none). Two nodes whose names hash alike are reported
// when they meet (onHeartbeat).
func nodeHash(name string) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(name); i++ {
		h = (h ^ uint32(name[i])) * 16777619
	}
	return h | 1
}

// routeTLS builds the TLS configuration of the routes: this node's
// certificate for both directions, peers verified against the CA both ways
// (a node dialled must present a certificate naming the address dialled;
// one dialling in must present one the CA signed).
func routeTLS(t server.ClusterTLS) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(t.Cert, t.Key)
	if err != nil {
		return nil, fmt.Errorf("cluster.tls: %w", err)
	}
	pem, err := os.ReadFile(t.CA)
	if err != nil {
		return nil, fmt.Errorf("cluster.tls.ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("cluster.tls.ca: no certificate in %s", t.CA)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, ClientCAs: pool,
		ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12}, nil
}

// randomToken returns 32 random hex digits.
func randomToken() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// natsLogger passes the embedded NATS server's warnings and errors to slog.
type natsLogger struct{ log *slog.Logger }

func (l natsLogger) Noticef(format string, v ...any) {
	l.log.Debug("nats: " + fmt.Sprintf(format, v...))
}
func (l natsLogger) Warnf(format string, v ...any) { l.log.Warn("nats: " + fmt.Sprintf(format, v...)) }
func (l natsLogger) Fatalf(format string, v ...any) {
	l.log.Error("nats: " + fmt.Sprintf(format, v...))
}
func (l natsLogger) Errorf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	if strings.Contains(msg, "trying to connect to route") {
		// Retried every second while a peer is down: its silence is
		// logged once by the cluster ("node gone silent").
		l.log.Debug("nats: " + msg)
		return
	}
	l.log.Error("nats: " + msg)
}
func (l natsLogger) Debugf(format string, v ...any) {}
func (l natsLogger) Tracef(format string, v ...any) {}

// undecodable counts an interest batch, claim or vote this node cannot
// decode and logs it at most once a minute. The usual cause is a node of
// another Tern version: the wire formats carry a version byte and changed
// from JSON to binary in the late session of 2026-12-02, and every node of
// a cluster must run the same version (doc.go). Safe for concurrent use.
func (n *Node) undecodable(what, subject string, data []byte, err error) {
	n.stats.decodeErrors.Add(1)
	now := time.Now().UnixNano()
	last := n.decodeLogAt.Load()
	if now-last < int64(time.Minute) || !n.decodeLogAt.CompareAndSwap(last, now) {
		return
	}
	first := -1
	if len(data) > 0 {
		first = int(data[0])
	}
	n.log.Warn("cluster: undecodable "+what+" from the backplane; every node must run the same Tern version (is one of another version?)",
		"subject", subject, "first_byte", first, "err", err)
}
