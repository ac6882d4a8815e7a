// Package tlsloop serves MQTT over TLS on gnet's event loops: no goroutine
// per connection once the handshake is done, and no idle read buffer.
//
// # Model
//
//	accept (one goroutine per listener) ──▶ gnet Engine.Register: the
//	socket joins an event loop like a plain TCP connection
//	OnOpen: the broker's OnOpen runs at once (admission, connect timer)
//	handshake: a handshake worker (a goroutine) runs crypto/tls's
//	  Handshake over a pipe fed by the loop (ciphertext in) and writing to
//	  the socket itself (ciphertext out; what the socket does not take at
//	  once goes through AsyncWrite); its CPU-heavy steps hold one of
//	  GOMAXPROCS tokens, waits for the peer hold none, so a thousand slow
//	  peers cost goroutines for at most the connect timeout, never the
//	  loops' time
//	established: on the loop, TLS 1.3 connections with an AEAD suite
//	  (AES-GCM, ChaCha20-Poly1305) go on with this package's record layer
//	  (below); others (TLS 1.2, anything unusual) keep crypto/tls's: it
//	  decrypts what gnet read (the pipe's Read gives what gnet buffered,
//	  then a temporary "would block" error, which crypto/tls returns
//	  without breaking the connection: a partial record stays in its input
//	  buffer). Either way the plaintext goes to the broker's OnTraffic
//	  through this package's gnet.Conn, and the broker's Writes are
//	  encrypted into gnet's output.
//
// # Record layer
//
// crypto/tls keeps the handshake: certificates, client certificates,
// tickets, key shares (X25519MLKEM768 included), every check. What it
// costs an idle connection afterwards is its record layer: the tls.Conn
// (~0.9 KB), and input and handshake-message buffers it grew during the
// handshake and never shrinks (~3.5 KB). So once a TLS 1.3 handshake
// returned, a small record layer of this package (record.go, RFC 8446 §5)
// takes over and the tls.Conn is dropped:
//
//   - Secrets: each TLS 1.3 handshake runs with a copy of the listener's
//     current config whose KeyLogWriter belongs to that connection
//     (handover.go); it keeps CLIENT_TRAFFIC_SECRET_0 and
//     SERVER_TRAFFIC_SECRET_0. They stay in the process. Keys and IVs come
//     from them by HKDF-Expand-Label (§7.1, §7.3), AEADs from crypto/aes +
//     crypto/cipher and x/crypto/chacha20poly1305: no cipher code here.
//   - An exact hand-over: during the handshake crypto/tls is fed whole
//     records only (the pipe's Read stops at a record's end), so when
//     Handshake returns it has read exactly up to the client's Finished and
//     holds no input; what the client sent after it waits in this
//     package's buffer and is the record layer's first input (client
//     sequence number 0). The server sends its NewSessionTicket under its
//     application key before Handshake returns (before or after reading a
//     client certificate): every record crypto/tls writes passes the pipe
//     whole, and those that open under the server's application key are
//     counted, which gives the server's next sequence number; the suite is
//     read from the ServerHello. Anything unexpected (a secret missing, a
//     write not made of whole records, a record under another key after
//     one under the application key) keeps the connection on crypto/tls.
//   - Records: opened from gnet's input (a partial record waits there)
//     straight into the plaintext buffer; nonce = IV XOR sequence number;
//     inner content type and padding stripped; a ciphertext over 2^14+256
//     or a plaintext over 2^14 bytes gets record_overflow, a record that
//     does not authenticate bad_record_mac, an unprotected record
//     (change_cipher_spec included) unexpected_message, and the connection
//     closes. Writes are sealed in place into a pooled buffer (up to four
//     16 KiB records, several broker slices sharing a record) handed to
//     gnet's Write: no allocation per record.
//   - Post-handshake messages: a client KeyUpdate changes the read key and,
//     if it asks, is answered with one before the write key changes
//     (§4.6.3); the server rekeys itself every 2^24 records (§5.5). Any
//     other post-handshake message (and a fragmented one) gets
//     unexpected_message. close_notify is answered with close_notify and
//     ends the input; user_canceled is ignored, other alerts are fatal.
//
// The plaintext buffer comes from a pool and goes back as soon as the
// broker consumed it, and a connection unused for IdleKeysAfter drops its
// two AEADs too (idle.go; rebuilt from the kept keys by its next record),
// as does one quiet for FreshKeysAfter (1 s) just after its handshake, so
// that a connect storm's heap is sized by idle connections (idle.go,
// "Fresh connections"),
// so an idle TLS 1.3 connection holds its keys and secrets, this
// package's conn and gnet's: ~1.6 KB of live heap in all with the
// broker's state (3 KB before the idle sweep; BenchmarkTLSIdleConnHeap;
// BENCHMARKS.md "TLS"); one still on crypto/tls ~7.8 KB. Renegotiation is refused: crypto/tls servers never
// renegotiate (a TLS 1.2 ClientHello after the handshake gets a fatal
// unexpected_message alert), and the record layer refuses a ClientHello
// like any other post-handshake message.
//
// # Handshake workers
//
// A goroutine starts with the smallest stack, and a TLS 1.3 server
// handshake grows it several times, each time copying it (newstack and
// copystack were ~4 % of the broker's CPU in a connect storm's profile).
// So a handshake's goroutine is not ended with it: it waits, idle, for the
// next handshake the loops dispatch, with the stack already grown, and
// ends after workerIdle (2 s) without one, or when the engine stops. A
// loop dispatches a handshake at the connection's first input, so the
// worker finds the ClientHello buffered rather than waiting for it, and a
// peer that sends nothing costs no worker. At most one worker per
// handshake in progress exists, plus those idle for less than 2 s.
//
// # Concurrency contract
//
// Listen, the wrapped handler's OnBoot and Stop are called by the broker's
// Serve/Close. Every conn method the broker calls runs on the connection's
// loop, as with gnet, except Close, AsyncWrite and EventLoop, which are
// safe from any goroutine. ReloadTLS, Stats and Addrs are safe from any
// goroutine.
package tlsloop

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/ternmq/tern/internal/listenutil"
	"github.com/ternmq/tern/server/stdnet"
)

// Config is what the engine needs from the broker.
type Config struct {
	// Handler is the broker's handler; connections of the TLS listeners
	// reach it as this package's conns (decrypted), the others unchanged.
	Handler gnet.EventHandler
	// Logger receives handshake failures (rate-limited) and listener logs.
	Logger *slog.Logger
	// MaxPlaintext bounds the decrypted input held for the handler: past
	// it decryption stops until the handler consumed some (back-pressure:
	// the ciphertext then waits in gnet's buffer). Default 2 MiB.
	MaxPlaintext int
	// HandshakeCPU is how many handshakes compute at once. Default
	// GOMAXPROCS.
	HandshakeCPU int
	// TicketKeys, when set, encrypt and decrypt session tickets on every
	// listener (the first encrypts): tickets then survive a restart and
	// resume on any node with the same keys.
	TicketKeys [][32]byte
	// ProxyTimeout bounds the read of a PROXY protocol header on a
	// listener with ProxyProtocol (the broker passes its connect timeout).
	// Default 10 s.
	ProxyTimeout time.Duration
	// IdleKeysAfter is how long a record-layer connection goes unused
	// before its AEAD state is dropped (idle.go). Default 30 s.
	IdleKeysAfter time.Duration
	// FreshKeysAfter is the same for a connection's first quiet moment
	// after its handshake: one that sends and receives nothing for this
	// long within 2×FreshKeysAfter of its hand-over to the record layer
	// drops its AEADs then (idle.go, "Fresh connections"). Default 1 s;
	// negative: only IdleKeysAfter applies.
	FreshKeysAfter time.Duration
	// ProxyRefused, when set, is told of a connection closed because its
	// listener expects a PROXY protocol header and it did not start with a
	// valid one. Any goroutine.
	ProxyRefused func(remote net.Addr, err error)
}

// Stats are the engine's counters.
type Stats struct {
	Open                 int64  // established TLS connections now
	Handshaking          int64  // handshakes in progress now
	Handshakes           uint64 // completed handshakes
	Resumed              uint64 // of which resumed a session (ticket)
	RecordLayer          uint64 // of which went on with this package's TLS 1.3 record layer
	IdleKeyDrops         uint64 // times an idle connection's AEADs were dropped (built again by use)
	FreshKeyDrops        uint64 // of which in the first quiet moment after the handshake (FreshKeysAfter)
	TLSHandshakeFailures uint64 // failed handshakes (bad client, timeout, closed)
	AcceptErrors         uint64 // failed Accepts (each backs off)
}

// Engine runs the TLS listeners on a gnet engine.
type Engine struct {
	cfg   Config
	acc   *listenutil.Acceptor // accept loops, PROXY headers, Stop
	srcs  []*stdnet.CertSource
	addrs []net.Addr
	hsWG  sync.WaitGroup // handshake workers
	cpu   chan struct{}  // handshake CPU tokens
	// hsJobs hands a handshake to an idle worker (unbuffered: a send
	// succeeds only if one waits); hsQuit, closed by WaitHandshakes, ends
	// the idle ones.
	hsJobs         chan *conn
	hsQuit         chan struct{}
	hsQuitOnce     sync.Once
	workersStarted atomic.Uint64 // handshake workers started (tests: reuse)
	plain          sync.Pool     // *[]byte plaintext buffers of plainBufSize

	reloadMu sync.Mutex

	open, handshaking                         atomic.Int64
	handshakes, resumed, failures, handedOver atomic.Uint64
	sealBufs                                  sync.Pool // *[]byte of sealBufSize: records on their way to gnet
	keysDropped, freshDropped                 atomic.Uint64
	idleMu                                    sync.Mutex
	idle                                      map[gnet.EventLoop]*idleList // per loop, idle.go
	logHS                                     listenutil.RateLog
}

// Listen binds the listeners (so their addresses, port 0 resolved, are
// known before the event loops start) and loads their certificates. It
// accepts nothing until the handler Wrap returns is booted by gnet.
func Listen(cfg Config, listeners []stdnet.TLSListener) (*Engine, error) {
	if cfg.Handler == nil {
		return nil, errors.New("tlsloop: Config.Handler is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MaxPlaintext <= 0 {
		cfg.MaxPlaintext = 2 << 20
	}
	if cfg.ProxyTimeout <= 0 {
		cfg.ProxyTimeout = 10 * time.Second
	}
	if cfg.IdleKeysAfter <= 0 {
		cfg.IdleKeysAfter = 30 * time.Second
	}
	if cfg.FreshKeysAfter == 0 {
		cfg.FreshKeysAfter = time.Second
	}
	if cfg.HandshakeCPU <= 0 {
		cfg.HandshakeCPU = runtime.GOMAXPROCS(0)
	}
	e := &Engine{cfg: cfg, cpu: make(chan struct{}, cfg.HandshakeCPU), hsJobs: make(chan *conn), hsQuit: make(chan struct{}),
		acc: listenutil.NewAcceptor("TLS", cfg.Logger, cfg.ProxyRefused)}
	e.plain.New = func() any { b := make([]byte, 0, plainBufSize); return &b }
	e.sealBufs.New = func() any { b := make([]byte, 0, sealBufSize); return &b }
	for _, l := range listeners {
		ln, err := net.Listen("tcp", l.Addr)
		if err != nil {
			e.acc.CloseListeners()
			return nil, fmt.Errorf("TLS listener: %w", err)
		}
		src, err := stdnet.NewCertSource(ln.Addr().String(), l, cfg.Logger)
		if err != nil {
			_ = ln.Close()
			e.acc.CloseListeners()
			return nil, fmt.Errorf("TLS listener %s: %w", l.Addr, err)
		}
		src.SetSessionTicketKeys(cfg.TicketKeys)
		src.CheckExpiry(time.Now())
		e.srcs, e.addrs = append(e.srcs, src), append(e.addrs, ln.Addr())
		m := &marker{src: src, front: keyLogFront(src.ServerConfig())}
		al := listenutil.Listener{Ln: ln, Context: m}
		if l.ProxyProtocol {
			al.Proxied = func(addr net.Addr) any { return &marker{src: m.src, front: m.front, proxied: addr} }
			al.ProxyTimeout = cfg.ProxyTimeout
		}
		e.acc.Add(al)
		cfg.Logger.Info("tern listening (TLS on the event loops)", "addr", ln.Addr().String())
	}
	return e, nil
}

// Addrs returns the bound listener addresses, in the order given.
func (e *Engine) Addrs() []net.Addr {
	if e == nil {
		return nil
	}
	return e.addrs
}

// Stats returns a snapshot of the counters.
func (e *Engine) Stats() Stats {
	if e == nil {
		return Stats{}
	}
	return Stats{Open: e.open.Load(), Handshaking: e.handshaking.Load(), Handshakes: e.handshakes.Load(),
		Resumed: e.resumed.Load(), RecordLayer: e.handedOver.Load(), IdleKeyDrops: e.keysDropped.Load(), FreshKeyDrops: e.freshDropped.Load(), TLSHandshakeFailures: e.failures.Load(), AcceptErrors: e.acc.AcceptErrors()}
}

// ReloadTLS re-reads every listener's certificate, key and client CA
// files, all or nothing (see stdnet.Transport.ReloadTLS).
func (e *Engine) ReloadTLS() error {
	if e == nil {
		return nil
	}
	e.reloadMu.Lock()
	defer e.reloadMu.Unlock()
	return stdnet.ReloadCertSources(e.cfg.Logger, e.srcs)
}

// Stop closes the listeners and waits for the accept loops and the
// handshakes in progress (gnet's shutdown closes their connections,
// which ends them). Idempotent.
func (e *Engine) Stop() {
	if e == nil {
		return
	}
	e.acc.Stop()
}

// WaitHandshakes ends the idle handshake workers and waits for all of
// them; call after the gnet engine stopped (its close of every connection
// ends the handshakes in progress).
func (e *Engine) WaitHandshakes() {
	if e != nil {
		e.hsQuitOnce.Do(func() { close(e.hsQuit) })
		e.hsWG.Wait()
	}
}

// GnetOptions are the options gnet must run with. The handler Wrap
// returns starts the accept loops once gnet's loops run and interposes
// TLS on the connections they enroll; gnet must run with gnet.WithTicker(true) (the first tick starts
// accepting) and a load balancer that tolerates Register from another
// goroutine (gnet.LeastConnections): GnetOptions lists both.
func (e *Engine) GnetOptions() []gnet.Option {
	return []gnet.Option{gnet.WithTicker(true), gnet.WithLoadBalancing(gnet.LeastConnections)}
}

// Wrap returns the handler to give gnet (see GnetOptions).
func (e *Engine) Wrap() gnet.EventHandler { return &handler{inner: e.cfg.Handler, e: e} }

// marker is the gnet context a TLS connection is enrolled with: OnOpen
// tells TLS connections from plain ones by it. proxied is the address a
// PROXY protocol header named (a marker per connection then).
type marker struct {
	src     *stdnet.CertSource
	front   *tls.Config
	proxied net.Addr
}

type handler struct {
	inner gnet.EventHandler
	e     *Engine
}

func (h *handler) OnBoot(eng gnet.Engine) gnet.Action {
	h.e.acc.Boot(eng)
	return h.inner.OnBoot(eng)
}

func (h *handler) OnShutdown(eng gnet.Engine) { h.inner.OnShutdown(eng) }

// OnTick starts the accept loops and the idle sweep on its first call
// (listenutil.Acceptor.Start says why there). The broker uses no gnet
// ticks (its ticker is its own), so later ticks are an hour apart.
func (h *handler) OnTick() (time.Duration, gnet.Action) {
	h.e.acc.Start(h.e.sweepIdle)
	d, act := h.inner.OnTick()
	if d <= 0 {
		d = time.Hour
	}
	return d, act
}

func (h *handler) OnOpen(raw gnet.Conn) ([]byte, gnet.Action) {
	m, ok := raw.Context().(*marker)
	if !ok {
		return h.inner.OnOpen(raw)
	}
	c := h.e.newConn(raw, m)
	c.proxied = m.proxied
	raw.SetContext(c)
	// The broker admits the connection now (limits, descriptor budget)
	// and starts its connect timer, which also bounds the handshake.
	_, act := h.inner.OnOpen(c)
	if act != gnet.None {
		c.state = stateClosed // OnClose still comes and finds no handshake
		return nil, act
	}
	h.e.handshaking.Add(1) // a worker takes it at its first input (feedHandshake)
	return nil, gnet.None
}

func (h *handler) OnTraffic(raw gnet.Conn) gnet.Action {
	c, ok := raw.Context().(*conn)
	if !ok {
		return h.inner.OnTraffic(raw)
	}
	switch c.state {
	case stateHandshake:
		return c.feedHandshake()
	case stateOpen:
		c.more = true
		return c.traffic()
	}
	_, _ = raw.Discard(-1)
	return gnet.None
}

func (h *handler) OnClose(raw gnet.Conn, err error) gnet.Action {
	c, ok := raw.Context().(*conn)
	if !ok {
		return h.inner.OnClose(raw, err)
	}
	c.closed(err)
	return h.inner.OnClose(c, err)
}
