package server

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/ternmq/tern/persist"
	"github.com/ternmq/tern/server/auth"
	"github.com/ternmq/tern/server/stdnet"
	"github.com/ternmq/tern/server/tlsloop"
	"github.com/ternmq/tern/server/wsloop"
	"github.com/ternmq/tern/trie"
)

// Server is an MQTT broker. Create it with New, run it with Serve, stop it
// with Close. All exported methods are safe for concurrent use.
type Server struct {
	opts Options
	log  *slog.Logger

	store    persist.Store // nil with DurabilityNone
	subs     *trie.Trie[*session]
	retained *trie.Retained[*message]
	sessions *registry

	loopsMu sync.Mutex
	loops   map[gnet.EventLoop]*loop
	loopSet atomic.Pointer[[]*loop] // copy-on-write list for the ticker

	eng       gnet.Engine
	ready     chan struct{}
	done      chan struct{}
	addrs     []net.Addr
	closing   atomic.Bool
	storeOnce sync.Once
	dirLock   *DataDirLock // held while the store the broker opened is open

	metricsOnce    sync.Once    // builds metricsHandler on the first scrape (metrics.go)
	metricsHandler http.Handler // /metrics
	started        time.Time
	tlsT           *stdnet.Transport // TLS and WebSocket listeners (listeners.go)
	tlsL           *tlsloop.Engine   // TLS listeners on the event loops (tls_engine: loops; listeners.go)
	wsL            *wsloop.Engine    // WebSocket listeners on the event loops (websocket_engine: loops; listeners.go)
	tlsAddrs       []net.Addr
	wsAddrs        []net.Addr
	adminAddr      net.Addr // the admin HTTP listener's bound address (introspect.go)

	listenersOnce sync.Once // listenerNames, built once Ready (introspect.go)
	listenerNames []string

	wills willTimers // 5.0 delayed wills (will.go)

	expiry sessionExpiry // offline sessions by expiry (expiry.go)

	stats   stats
	refused refusals // what each limit refused (limits.go)

	// Connection admission and input bounds (engine.go, client.go).
	conns           atomic.Int64  // open network connections, every listener
	maxConns        int64         // Limits.MaxConnections as resolved by Serve
	fdGuard         int           // OnOpen refuses a descriptor numbered this or higher
	backlog         int           // listen backlog OnBoot sets (0: the kernel's)
	listenBacklog   listenBacklog // the backlog raised while descriptors are plenty (listenbacklog.go)
	partialBytes    atomic.Int64  // bytes all connections hold in incomplete packets
	partialPeak     atomic.Int64  // partialBytes' high-water mark since the last release
	partialGC       time.Time     // when releasePartialMemory last ran collections (ticker only)
	memReturn       memReturn     // returnMemory's state (memreturn.go; ticker only)
	engineErr       engineErrors  // gnet's last error lines: why the loops stopped
	retainQuota     retainQuota   // retained index accounting (publish.go)
	pacing          pacingSet     // clean sessions holding publishers back (pace.go)
	storeFull       atomic.Bool   // the store is over MaxStoreBytes or under MinFreeDiskBytes (backlog.go)
	auth            *authPool     // runs the Authenticator off the loops (authpool.go); nil without one
	publicPorts     map[int]bool  // ports of listeners not bound to loopback (connect.go)
	publicPortsOnce sync.Once

	// Reload (reload.go). authz is the Authorizer in force, swapped whole by
	// Reload and read lock-free by the loops; reloadMu serialises reloads
	// and guards reloaders.
	authz          atomic.Pointer[authzRef]
	pwFile         *auth.PasswordFile // loaded from Options.PasswordFile; nil without one
	reloadMu       sync.Mutex
	reloaders      []reloader
	reloads        atomic.Uint64
	reloadFailures atomic.Uint64

	// Protection knobs (ratelimit.go): per-listener settings by local
	// address (written before the first accept, read-only after) and the
	// per-client publish rate.
	listeners atomic.Pointer[listenerTable]
	pubGates  publishGates
	inproc    inprocState // in-process clients and their loops (inproc.go)
	hooks     *hookChain  // Options.Hooks, fixed by New (hooks.go)
	cluster   Cluster     // nil for a single broker (cluster.go)
	moves     moveLogs    // sessions moving between cluster nodes (cluster_session.go)
}

type stats struct {
	connected       atomic.Int64
	msgsIn, msgsOut atomic.Uint64
	bytesIn         atomic.Uint64
	dropped         atomic.Uint64
	connects        atomic.Uint64
	paced           atomic.Uint64 // publishers held back by full subscriber queues
	redispatched    atomic.Uint64 // $share deliveries handed to another member (share.go)
	corrupt         atomic.Uint64 // stored records that do not decode: skipped at recovery, deleted when paged in (backlog.go)
	// Cluster counters (cluster.go).
	clusterIn, clusterTimeouts, clusterTakeovers atomic.Uint64
}

// Stats is a snapshot of the broker's counters.
type Stats struct {
	Connected       int64         // connections that completed CONNECT
	Sessions        int64         // sessions known, online or not
	Subscriptions   int           // subscriptions in the trie
	Retained        int           // retained messages
	MessagesIn      uint64        // PUBLISH packets received
	MessagesOut     uint64        // PUBLISH packets sent
	MessagesDropped uint64        // deliveries given up to queue or outbound limits
	Store           persist.Stats // group-commit counters (zero with DurabilityNone)
}

// New checks opts and returns a server that is not yet listening.
func New(opts Options) (*Server, error) {
	opts.EnsureDefaults()
	if err := opts.Validate(); err != nil {
		return nil, fmt.Errorf("invalid options: %w", err)
	}
	s := &Server{
		opts:     opts,
		log:      opts.Logger,
		subs:     trie.New[*session](subscriberAvailable),
		retained: trie.NewRetained[*message](),
		sessions: newRegistry(),
		loops:    make(map[gnet.EventLoop]*loop),
		ready:    make(chan struct{}),
		done:     make(chan struct{}),
	}
	s.pubGates = s.opts.Limits.publishGates() // ratelimit.go
	if err := s.loadAuthFiles(); err != nil { // reload.go: password_file, acl_file
		return nil, err
	}
	opts = s.opts
	// Certificates reload with the password and ACL files; a no-op
	// without TLS listeners (listeners.go).
	s.reloaders = append(s.reloaders, reloader{"tls_certificates", s.reloadTLS})
	if opts.Authorizer != nil && opts.Authenticator == nil && len(opts.EnhancedAuth) == 0 && !opts.certIdentities() {
		opts.Logger.Warn("ACL without authentication: usernames are not verified, so every client is anonymous to the ACL; configure a password file")
	}
	s.hooks = newHookChain(opts.Hooks, opts.HookOptions) // hooks.go
	switch {
	case s.hooks.blocking():
		s.auth = newAuthPool(opts.HookOptions.Workers) // hooks may block: many workers
	case opts.Authenticator != nil:
		s.auth = newAuthPool(max(2, runtime.GOMAXPROCS(0))) // CPU-bound hashing
	}
	if err := s.openStore(); err != nil {
		if s.store != nil {
			_ = s.store.Close()
		}
		_ = s.dirLock.Release()
		return nil, err
	}
	return s, nil
}

// Serve listens on the configured addresses and runs the broker until Close.
// It returns nil after a clean Close, and an error when it could not start
// or when the event loops stopped without Close (gnet stops them on an
// accept error other than descriptor or memory exhaustion, which the gnet
// patched in third_party/gnet refuses and goes on from): a supervisor that
// restarts on failure then restarts the broker instead of taking it for a
// clean exit.
func (s *Server) Serve() error {
	addrs := make([]string, len(s.opts.Listeners))
	for i, l := range s.opts.Listeners {
		addrs[i] = "tcp://" + l
	}
	loops := s.opts.EventLoops // resolved by EnsureDefaults
	s.started = time.Now()
	s.resolveMaxConnections() // engine.go; before any listener accepts
	if err := s.startNetListeners(); err != nil {
		s.closeStore()
		return fmt.Errorf("TLS listener: %w", err)
	}
	if s.opts.AdminListen != "" {
		ln, err := net.Listen("tcp", s.opts.AdminListen)
		if err != nil {
			s.stopNetListeners()
			s.closeStore()
			return fmt.Errorf("admin listener %s: %w", s.opts.AdminListen, err)
		}
		s.adminAddr = ln.Addr()
		s.log.Info("admin listening", "addr", ln.Addr().String(), "paths", "/metrics /healthz /api/v1/")
		go s.serveAdmin(ln)
	}
	go s.ticker()
	var h gnet.EventHandler = &handler{s: s}
	opts := []gnet.Option{
		gnet.WithMulticore(true),
		gnet.WithNumEventLoop(loops),
		gnet.WithTCPNoDelay(gnet.TCPNoDelay),
		gnet.WithReuseAddr(true),
		gnet.WithLogger(gnetLogger{s}),
	}
	if s.tlsL != nil {
		// TLS connections join the loops through Engine.Register from
		// tlsloop's accept goroutines, started by gnet's first tick (see
		// tlsloop.Engine.GnetOptions).
		h = s.tlsL.Wrap()
		opts = append(opts, s.tlsL.GnetOptions()...)
	} else if s.wsL != nil {
		// ws:// connections join the loops the same way (wsloop); with
		// tlsloop too, its handler wraps wsloop's (listeners.go).
		h = s.wsL.Wrap()
		opts = append(opts, s.wsL.GnetOptions()...)
	}
	err := gnet.Rotate(h, addrs, opts...)
	select {
	case <-s.ready:
	default:
		close(s.ready) // failed before boot: unblock Ready waiters
	}
	if s.closing.Load() {
		return nil
	}
	if err == nil {
		err = s.stoppedByItself() // engine.go
	}
	if err != nil {
		s.stopNetListeners()
		s.closeStore()
		return fmt.Errorf("serve %v: %w", s.opts.Listeners, err)
	}
	return nil
}

// closeStore flushes and closes the store once, after the loops stopped.
func (s *Server) closeStore() {
	s.storeOnce.Do(func() {
		if s.store == nil {
			return
		}
		st := s.store.Stats()
		perSync := 0.0
		if st.Syncs > 0 {
			perSync = float64(st.Batches) / float64(st.Syncs)
		}
		s.log.Info("store closing", "batches", st.Batches, "syncs", st.Syncs, "batches_per_sync", fmt.Sprintf("%.1f", perSync),
			"max_group", st.MaxGroup, "failed_batches", st.FailedBatches, "live_messages", st.LiveMessages)
		if err := s.store.Close(); err != nil {
			s.log.Error("closing store", "err", err)
		}
		_ = s.dirLock.Release() // after the store's files are closed
	})
}

// TLSAddrs returns the bound TLS listener addresses, valid after Ready.
func (s *Server) TLSAddrs() []net.Addr { return s.tlsAddrs }

// WebSocketAddrs returns the bound WebSocket listener addresses, valid after Ready.
func (s *Server) WebSocketAddrs() []net.Addr { return s.wsAddrs }

// Ready is closed once the broker accepts connections (or Serve failed).
func (s *Server) Ready() <-chan struct{} { return s.ready }

// Addrs returns the bound listener addresses (useful with port 0), valid
// after Ready.
func (s *Server) Addrs() []net.Addr { return s.addrs }

// Close stops accepting, closes every connection (firing wills of clients
// that did not DISCONNECT) and returns when the event loops have stopped.
func (s *Server) Close() error {
	if !s.closing.CompareAndSwap(false, true) {
		return nil
	}
	close(s.done)
	<-s.ready
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s.closeInproc() // inproc.go: their sessions go offline before the store closes
	if err := s.eng.Validate(); err != nil {
		s.stopNetListeners()
		s.closeStore()
		return nil // never booted
	}
	s.stopNetListeners()
	err := s.eng.Stop(ctx)
	s.tlsL.WaitHandshakes() // gnet closed their connections
	if s.auth != nil {
		s.auth.stop()
	}
	s.closeStore()
	return err
}

// Stats returns a snapshot of the broker's counters.
func (s *Server) Stats() Stats {
	return Stats{
		Connected:       s.stats.connected.Load(),
		Sessions:        s.sessions.count.Load(),
		Subscriptions:   s.subs.Len(),
		Retained:        s.retained.Len(),
		MessagesIn:      s.stats.msgsIn.Load(),
		MessagesOut:     s.stats.msgsOut.Load(),
		MessagesDropped: s.stats.dropped.Load(),
		Store:           s.storeStats(),
	}
}

func (s *Server) storeStats() persist.Stats {
	if s.store == nil {
		return persist.Stats{}
	}
	return s.store.Stats()
}

// ticker drives every loop's timing wheel once a second and expires
// abandoned sessions.
func (s *Server) ticker() {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var lastSys time.Time
	for {
		select {
		case <-s.done:
			return
		case now := <-t.C:
			if p := s.loopSet.Load(); p != nil {
				for _, l := range *p {
					_ = l.el.Execute(context.Background(), l.tickFn)
				}
			}
			s.expireSessions(now.UnixMilli())
			if iv := s.opts.SysInterval; iv > 0 && now.Sub(lastSys) >= iv {
				lastSys = now
				s.publishSys(now)
			}
			s.fireDelayedWills(now.UnixNano())   // will.go
			s.checkSlowConsumers(now.UnixNano()) // pace.go
			s.checkStoreSpace()                  // backlog.go
			s.releasePartialMemory(now)          // client.go
			s.returnMemory(now)                  // memreturn.go
		}
	}
}
