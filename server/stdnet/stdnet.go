// Package stdnet is the broker's standard-library transport: MQTT over TLS
// and over WebSocket (ws:// and wss://), whose bytes on the socket are not
// the bytes MQTT sees, so they cannot run on gnet's raw-fd reactor.
//
// # Model
//
// Each such connection is adapted to the two gnet interfaces a handler
// uses — gnet.Conn and gnet.EventLoop — and drives any gnet.EventHandler
// (OnOpen, OnTraffic, OnClose; never OnBoot, OnShutdown or OnTick), so
// the broker's connection, session and routing code serves TLS and
// WebSocket clients unchanged:
//
//	accept ──▶ TLS handshake goroutine (deadline) ─┐
//	HTTP upgrade handler (net/http, gorilla) ──────┴▶ conn:
//	  reader goroutine: stream.Read ──▶ pending (bounded) ──post──▶ task loop:
//	                      OnTraffic(conn) exactly as on a gnet loop
//	  loop: conn.Write ──▶ out buffer ──▶ writer goroutine: stream.Write in
//	                      64 KiB chunks, each with a write deadline
//
// A task loop is a goroutine that runs posted tasks one at a time: the
// single-owner guarantee of a gnet event loop. There are as many task
// loops as Config.Loops (the broker passes its event-loop count);
// connections are spread over them round robin.
//
// # Costs
//
// Per connection: two goroutines (reader and writer, as crypto/tls needs a
// blocking reader), a 16 KiB read buffer, crypto/tls's or gorilla's
// buffers, and the output buffer (given back after a burst over 256 KiB).
// While a TLS handshake is in progress it also costs one goroutine, for at
// most Config.HandshakeTimeout. The plain-TCP gnet path stays the one for
// very large fleets.
//
// # Closing
//
// When the handler closes a connection (gnet.Close or EventLoop.Close),
// OnClose runs at once on the loop; the writer then flushes what was
// written last, sends a WebSocket close frame (Config.CloseStatus picks the
// code) and waits for the peer's answer, and closes. All of that is bounded
// by a 2 s linger, after which the socket is closed regardless — a peer
// that stopped reading cannot hold a goroutine or a descriptor. A write
// that makes no progress for the listener's WriteTimeout closes the
// connection too (the peer stopped reading while the broker still thought
// it alive).
//
// # Concurrency contract
//
// Start and Stop are called by one goroutine (the broker's Serve/Close).
// Stats, TLSAddrs and WebSocketAddrs are safe from any goroutine. The
// handler's methods run on the connection's loop; conn.Write, AsyncWrite,
// OutboundBuffered, Close and EventLoop().Execute are safe from any
// goroutine; Peek, Discard, Context, SetContext and EventLoop().Close are
// for the loop only, as with gnet.
//
// The package never imports the broker: the broker hands it a handler,
// listener descriptions and limits.
package stdnet

import (
	"errors"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ternmq/tern/internal/listenutil"

	"github.com/gorilla/websocket"
	"github.com/panjf2000/gnet/v2"
)

// Defaults of the zero values in Config and the listener structs.
const (
	DefaultWriteTimeout   = 30 * time.Second
	DefaultHandshake      = 10 * time.Second
	DefaultIdleTimeout    = 60 * time.Second
	DefaultMaxHeaderBytes = 64 << 10
	DefaultMaxPacketSize  = 1 << 20
)

// Config is what the transport needs from its user.
type Config struct {
	// Handler receives OnOpen, OnTraffic and OnClose for every connection,
	// on the connection's task loop. Required.
	Handler gnet.EventHandler
	// Loops is the number of task loops. Default (≤ 0): GOMAXPROCS.
	Loops int
	// MaxPacketSize bounds a WebSocket message and how far the reader runs
	// ahead of the handler (2× plus 64 KiB). Default: 1 MiB.
	MaxPacketSize int
	// HandshakeTimeout bounds a TLS handshake and the wait for a WebSocket
	// upgrade request's headers. Default: 10 s.
	HandshakeTimeout time.Duration
	// Logger receives the transport's logs. Default: slog.Default().
	Logger *slog.Logger
	// CloseStatus, when set, picks the WebSocket close frame (RFC 6455
	// status code, reason of at most 123 bytes) for a connection the
	// handler closed. It runs on the loop just before OnClose, so the
	// connection's context still says why. Default: 1000 (normal closure).
	// Closes the peer caused get no frame from it: the peer's own close
	// frame was answered, and a WebSocket protocol error, an oversized
	// message or a text frame were answered with 1002, 1009 or 1003.
	CloseStatus func(c gnet.Conn) (code int, reason string)
	// TicketKeys, when set, encrypt and decrypt session tickets on every
	// TLS and wss:// listener (the first encrypts), so that tickets
	// survive a restart and resume on any node with the same keys.
	TicketKeys [][32]byte
	// ProxyRefused, when set, is told of a connection closed because its
	// listener expects a PROXY protocol header (ProxyProtocol) and the
	// connection did not start with a valid one. Any goroutine.
	ProxyRefused func(remote net.Addr, err error)
}

// Stats are the transport's counters since Start.
type Stats struct {
	Open                   int64  // connections open now (after handshake/upgrade)
	Accepted               uint64 // connections handed to the handler
	AcceptErrors           uint64 // failed Accepts on TLS and WebSocket listeners (e.g. EMFILE); each backs off
	TLSHandshakeFailures   uint64 // TLS handshakes that failed or timed out (TLS and wss listeners)
	WriteTimeouts          uint64 // connections closed because a write made no progress for WriteTimeout
	WebSocketOriginRefused uint64 // upgrades refused with 403 (cross-origin)
	WebSocketNotFound      uint64 // requests for another path than the listener's (404)
	WebSocketBadRequest    uint64 // requests that were not a valid MQTT WebSocket upgrade (400/426)
}

type counters struct {
	open                                      atomic.Int64
	accepted, acceptErrors, handshakeFailures atomic.Uint64
	writeTimeouts                             atomic.Uint64
	wsOrigin, wsNotFound, wsBadRequest        atomic.Uint64
}

// Transport runs a set of TLS and WebSocket listeners and their connections.
type Transport struct {
	cfg      Config
	loops    []*taskLoop
	next     atomic.Uint32
	tlsAddrs []net.Addr
	wsAddrs  []net.Addr
	lns      []net.Listener
	https    []*http.Server
	done     chan struct{} // closed by Stop: accept back-off sleeps end

	tlsSources []*CertSource // TLS and wss:// listeners' certificates; fixed after Start
	reloadMu   sync.Mutex    // serialises ReloadTLS and the expiry checks

	wg     sync.WaitGroup // accept loops and HTTP servers
	hsWG   sync.WaitGroup // TLS handshakes in progress
	connWG sync.WaitGroup // every conn's reader and writer

	mu          sync.Mutex
	stopping    bool // under mu; stopped mirrors it for lock-free readers
	conns       map[*conn]struct{}
	handshaking map[net.Conn]struct{}
	stopped     atomic.Bool

	stats counters

	logAccept, logHandshake, logWriteTimeout listenutil.RateLog
	logWSPath, logWSOrigin, logHTTP          listenutil.RateLog
}

// Start opens the listeners and returns the running transport, or nil (and
// no error) when there are no listeners: every method of a nil *Transport
// is a no-op. On error nothing is left open.
// Ticket keys are set on each listener's certificates (Config.TicketKeys).
func Start(cfg Config, tlsListeners []TLSListener, wsListeners []WebSocketListener) (*Transport, error) {
	if len(tlsListeners) == 0 && len(wsListeners) == 0 {
		return nil, nil
	}
	if cfg.Handler == nil {
		return nil, errors.New("stdnet: Config.Handler is required")
	}
	if cfg.Loops <= 0 {
		cfg.Loops = runtime.GOMAXPROCS(0)
	}
	if cfg.MaxPacketSize <= 0 {
		cfg.MaxPacketSize = DefaultMaxPacketSize
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = DefaultHandshake
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	t := &Transport{cfg: cfg, done: make(chan struct{}),
		conns: map[*conn]struct{}{}, handshaking: map[net.Conn]struct{}{}}
	for i := 0; i < cfg.Loops; i++ {
		t.loops = append(t.loops, newTaskLoop())
	}
	for _, l := range tlsListeners {
		if err := t.listenTLS(l); err != nil {
			t.Stop()
			return nil, err
		}
	}
	for _, l := range wsListeners {
		if err := t.listenWebSocket(l); err != nil {
			t.Stop()
			return nil, err
		}
	}
	if len(t.tlsSources) > 0 {
		t.wg.Add(1)
		go t.watchExpiry()
	}
	return t, nil
}

// TLSAddrs returns the bound TLS listener addresses, in the order given.
func (t *Transport) TLSAddrs() []net.Addr {
	if t == nil {
		return nil
	}
	return t.tlsAddrs
}

// WebSocketAddrs returns the bound WebSocket listener addresses, in the order given.
func (t *Transport) WebSocketAddrs() []net.Addr {
	if t == nil {
		return nil
	}
	return t.wsAddrs
}

// Stats returns a snapshot of the counters. Safe from any goroutine.
func (t *Transport) Stats() Stats {
	if t == nil {
		return Stats{}
	}
	s := &t.stats
	return Stats{
		Open:                   s.open.Load(),
		Accepted:               s.accepted.Load(),
		AcceptErrors:           s.acceptErrors.Load(),
		TLSHandshakeFailures:   s.handshakeFailures.Load(),
		WriteTimeouts:          s.writeTimeouts.Load(),
		WebSocketOriginRefused: s.wsOrigin.Load(),
		WebSocketNotFound:      s.wsNotFound.Load(),
		WebSocketBadRequest:    s.wsBadRequest.Load(),
	}
}

// Stop closes the listeners, abandons handshakes in progress, closes every
// connection on its loop (OnClose runs, WebSocket peers get 1001 going
// away), stops the loops and returns once every connection goroutine
// exited — at most the 2 s linger after the last close. Idempotent.
// It must not be called from a loop (it waits for the loops).
func (t *Transport) Stop() {
	if t == nil {
		return
	}
	t.mu.Lock()
	if t.stopping {
		t.mu.Unlock()
		return
	}
	t.stopping = true
	t.stopped.Store(true)
	close(t.done)
	for raw := range t.handshaking {
		_ = raw.Close()
	}
	t.mu.Unlock()
	for _, ln := range t.lns {
		_ = ln.Close()
	}
	for _, hs := range t.https {
		_ = hs.Close() // its listener and idle keep-alive connections
	}
	t.wg.Wait()
	t.hsWG.Wait()
	t.mu.Lock()
	conns := t.conns
	t.conns = nil
	t.mu.Unlock()
	var closed sync.WaitGroup
	for c := range conns {
		closed.Add(1)
		if c.loop.postFn(func() { c.closeOnLoop(nil); closed.Done() }) != nil {
			closed.Done()
		}
	}
	closed.Wait()
	for _, l := range t.loops {
		l.stop()
	}
	t.connWG.Wait()
}

// open hands an established stream to the handler on the next loop.
// raw is the TCP socket under stream; ws is set for WebSocket streams.
// identity is what the client certificate says the client is ("" none).
func (t *Transport) open(stream, raw net.Conn, ws wsCloser, identity string, writeTimeout time.Duration) {
	l := t.loops[int(t.next.Add(1))%len(t.loops)]
	c := newConn(t, l, stream, raw, ws, writeTimeout)
	c.identity = identity
	t.mu.Lock()
	// Under mu, so that Stop's close of this conn is queued after OnOpen.
	if t.stopping || l.postFn(c.open) != nil {
		t.mu.Unlock()
		_ = raw.Close()
		return
	}
	t.conns[c] = struct{}{}
	t.connWG.Add(2)
	t.mu.Unlock()
	t.stats.open.Add(1)
	t.stats.accepted.Add(1)
	c.startIO()
}

// forget drops a closed conn from the set Stop closes. Once per conn.
func (t *Transport) forget(c *conn) {
	t.stats.open.Add(-1)
	t.mu.Lock()
	delete(t.conns, c) // no-op once Stop took the map
	t.mu.Unlock()
}

// closeStatus picks the WebSocket close frame for c, closed because of
// err (nil: by the handler or by Stop). 0: send none.
func (t *Transport) closeStatus(c *conn, err error) (int, string) {
	if err != nil {
		// The peer closed (its close frame was answered), the read failed
		// (gorilla already sent 1002/1009, wsStream 1003) or a write
		// failed: there is nothing to say, or no way to say it.
		return 0, ""
	}
	if t.stopped.Load() {
		return websocket.CloseGoingAway, "server shutting down"
	}
	if t.cfg.CloseStatus != nil {
		if code, reason := t.cfg.CloseStatus(c); code != 0 {
			if len(reason) > 123 { // control frame payload ≤ 125 bytes (RFC 6455 §5.5)
				reason = reason[:123]
			}
			return code, reason
		}
	}
	return websocket.CloseNormalClosure, ""
}

// sleep waits d or until Stop; false once stopping.
func (t *Transport) sleep(d time.Duration) bool { return listenutil.Sleep(t.done, d) }
