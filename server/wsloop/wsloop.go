// Package wsloop serves MQTT over WebSocket (ws:// and, on top of
// server/tlsloop, wss://) on gnet's event loops: no goroutine per
// connection, from the first byte of the HTTP upgrade request to the close
// handshake.
//
// # Model
//
//	ws://:  accept (one goroutine per listener) ──▶ gnet Engine.Register:
//	        the socket joins an event loop like a plain TCP connection
//	wss://: server/tlsloop accepts and handshakes; its decrypted
//	        connections (a gnet.Conn) reach this package's handler, which
//	        knows them by their listener's address
//	OnOpen: the broker's OnOpen runs at once with this package's conn
//	        (admission, connect timer); a header timer starts
//	HTTP:   the upgrade request is parsed on the loop once its header has
//	        fully arrived (bounded by the listener's MaxHeaderBytes, and all
//	        connections' partial headers together by MaxHeaderBytesTotal);
//	        a connection that does not finish its header within the
//	        header timeout is closed and counted
//	open:   RFC 6455 frames are parsed incrementally from what gnet (or
//	        tlsloop) buffered: frame headers are read only once whole,
//	        payloads are unmasked into a pooled buffer as they arrive (a
//	        frame may span reads, an MQTT packet may span frames
//	        [MQTT-6.0.0-2]), and the broker reads that buffer through this
//	        package's gnet.Conn exactly as it reads a TCP socket. What the
//	        broker writes leaves as one binary frame per Write, its header
//	        and the payload handed to gnet together (one writev).
//
// The payload buffer comes from a pool and goes back once the broker has
// consumed it, so an idle connection holds this package's conn (~200 B)
// and gnet's (or tlsloop's) state, nothing per frame.
//
// # Framing rules (RFC 6455, MQTT §6)
//
//   - the subprotocol must be "mqtt" (or the older "mqttv3.1");
//     the server answers "mqtt" when offered [MQTT-6.0.0-3], [MQTT-6.0.0-4];
//   - MQTT travels in binary frames only: a text frame gets close 1003
//     [MQTT-6.0.0-1];
//   - every client frame must be masked (§5.1): an unmasked one gets close
//     1002, as do reserved bits, unknown opcodes, a continuation without a
//     message or a new message inside one, and fragmented or oversized
//     control frames (§5.5);
//   - a data frame longer than MaxPacketSize (+16 bytes of slack) gets close
//     1009 before its payload is read, and is counted;
//   - ping is answered by pong with the same payload, pong is ignored, and
//     a close frame is answered with a close frame and ends the connection
//     (§5.5.1); the broker's own closes send a close frame whose code says
//     why (Config.CloseStatus), 1001 while the engine stops, and start the
//     closing handshake (§7.1.2, conn.CloseHandshake): the broker's OnClose
//     runs at once, the socket stays until the peer's close frame arrives
//     (then closes at once) or for at most 2 s, reading and dropping
//     frames; a peer still writing would otherwise get a reset.
//
// # permessage-deflate (RFC 7692)
//
// With WebSocketListener.Compression, an offer of permessage-deflate is
// accepted in its bounded-memory form, "server_no_context_takeover;
// client_no_context_takeover" (an offer that limits the server's window
// below 15 bits is declined: the compressor uses the full window). No
// compressor or decompressor state outlives a message, so an idle
// connection holds no flate window:
//
//   - outgoing: a Write of at least 256 bytes is compressed by
//     klauspost/compress's flate.StatelessDeflate into a pooled buffer;
//   - incoming: a compressed message is collected (its compressed size
//     bounded like a frame) and inflated when its last frame arrives by a
//     pooled inflater into the payload buffer, reading at most
//     MaxPacketSize+16 bytes: a message that inflates past that (a zip
//     bomb) gets close 1009 and is counted, having cost the bound and no
//     more.
//
// # Concurrency contract
//
// Listen, AddTLSListener, the wrapped handler's OnBoot and Stop are called
// by the broker's Serve/Close (AddTLSListener before gnet starts). Every
// conn method the broker calls runs on the connection's loop, as with gnet,
// except AsyncWrite, AsyncWritev and EventLoop, which are safe from any
// goroutine. Stats and Addrs are safe from any goroutine.
package wsloop

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/ternmq/tern/internal/listenutil"
	"github.com/ternmq/tern/server/stdnet"
)

// Names of the limits this package refuses things by (Config.Refused).
const (
	// LimitHeader: an upgrade request's header over the listener's
	// MaxHeaderBytes, or all partial headers together over
	// MaxHeaderBytesTotal.
	LimitHeader = "websocket_header"
	// LimitHeaderTimeout: no complete request within the header timeout
	// (or, between keep-alive requests, the idle timeout).
	LimitHeaderTimeout = "websocket_header_timeout"
	// LimitMessageSize: a frame, or a compressed message before or after
	// inflating, over MaxPacketSize+16.
	LimitMessageSize = "websocket_message_size"
)

// Defaults of Config's zero values.
const (
	DefaultMaxHeaderBytesTotal = 64 << 20
	DefaultMaxPacketSize       = 1 << 20
)

// Config is what the engine needs from the broker.
type Config struct {
	// Handler is the broker's handler; WebSocket connections reach it as
	// this package's conns (the MQTT byte stream), others unchanged.
	Handler gnet.EventHandler
	// Logger receives refusals of the listeners (rate-limited) and
	// listener logs. Default: slog.Default().
	Logger *slog.Logger
	// MaxPacketSize bounds a frame and a compressed message (each plus 16
	// bytes): the broker's max packet size. Default 1 MiB.
	MaxPacketSize int
	// MaxPlaintext bounds the unmasked input held for the handler: past it
	// framing stops until the handler consumed some (the rest waits in
	// gnet's buffer). Default 2×MaxPacketSize + 64 KiB.
	MaxPlaintext int
	// HeaderTimeout is a listener's header timeout when it sets none (the
	// broker passes its connect timeout). Default 10 s.
	HeaderTimeout time.Duration
	// MaxHeaderBytesTotal bounds the bytes of incomplete request headers
	// all connections hold together; a connection that would go past it is
	// closed (431) and counted. Default 64 MiB.
	MaxHeaderBytesTotal int64
	// CloseStatus picks the close frame (RFC 6455 status code, reason of
	// at most 123 bytes) of a connection the handler closes. It runs on the
	// loop before the handler's OnClose. Default: 1000.
	CloseStatus func(c gnet.Conn) (code int, reason string)
	// Refused, when set, is told of every connection refused by a limit
	// (LimitHeader, LimitHeaderTimeout, LimitMessageSize). Runs on the
	// connection's loop.
	Refused func(limit string, remote net.Addr, detail string)
	// ProxyRefused, when set, is told of a connection closed because its
	// ws:// listener expects a PROXY protocol header and it did not start
	// with a valid one. Any goroutine.
	ProxyRefused func(remote net.Addr, err error)
}

// Stats are the engine's counters.
type Stats struct {
	Open           int64  // upgraded WebSocket connections now
	Upgrades       uint64 // completed upgrades
	OriginRefused  uint64 // upgrades refused as cross-origin (403)
	NotFound       uint64 // requests for another path (404)
	BadRequest     uint64 // requests that were not a valid MQTT WebSocket upgrade (400/426/405/431)
	HeaderTimeouts uint64 // connections closed by the header or idle timeout
	TooBig         uint64 // connections closed for a frame or message too big (1009), inflated ones included
	ProtocolErrors uint64 // connections closed for a WebSocket protocol error (1002/1003/1007)
	AcceptErrors   uint64 // failed Accepts (each backs off)
}

// listener is one WebSocket listener as the engine runs it.
type listener struct {
	spec          stdnet.WebSocketListener
	paths         []string
	bound         *net.TCPAddr
	headerTimeout time.Duration
	idleTimeout   time.Duration
	maxHeader     int
}

// Engine runs the WebSocket listeners on a gnet engine.
type Engine struct {
	cfg   Config
	acc   *listenutil.Acceptor // ws:// accept loops, PROXY headers, Stop
	tls   []*listener          // wss:// listeners, accepted by tlsloop
	addrs []net.Addr

	headerHeld atomic.Int64 // bytes of incomplete request headers, all connections

	open                                                atomic.Int64
	upgrades, origin, notFound, badReq, hdrTimeout, big atomic.Uint64
	protoErr                                            atomic.Uint64
	logPath, logOrigin                                  listenutil.RateLog
}

// Listen binds the ws:// listeners among ls (those without certificates;
// pass wss:// ones to server/tlsloop and then to AddTLSListener). Nothing
// is accepted until the handler Wrap returns is booted by gnet.
func Listen(cfg Config, ls []stdnet.WebSocketListener) (*Engine, error) {
	if cfg.Handler == nil {
		return nil, errors.New("wsloop: Config.Handler is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MaxPacketSize <= 0 {
		cfg.MaxPacketSize = DefaultMaxPacketSize
	}
	if cfg.MaxPlaintext <= 0 {
		cfg.MaxPlaintext = 2*cfg.MaxPacketSize + 64<<10
	}
	if cfg.HeaderTimeout <= 0 {
		cfg.HeaderTimeout = stdnet.DefaultHandshake
	}
	if cfg.MaxHeaderBytesTotal <= 0 {
		cfg.MaxHeaderBytesTotal = DefaultMaxHeaderBytesTotal
	}
	e := &Engine{cfg: cfg, acc: listenutil.NewAcceptor("WebSocket", cfg.Logger, cfg.ProxyRefused)}
	for _, spec := range ls {
		if IsTLS(spec) {
			return nil, fmt.Errorf("wsloop: listener %s is wss://: serve it through tlsloop and AddTLSListener", spec.Addr)
		}
		ln, err := net.Listen("tcp", spec.Addr)
		if err != nil {
			e.acc.CloseListeners()
			return nil, fmt.Errorf("WebSocket listener: %w", err)
		}
		l := e.newListener(spec, ln.Addr())
		e.addrs = append(e.addrs, ln.Addr())
		al := listenutil.Listener{Ln: ln, Context: &marker{l: l}}
		if spec.ProxyProtocol {
			al.Proxied = func(addr net.Addr) any { return &marker{l: l, proxied: addr} }
			al.ProxyTimeout = l.headerTimeout // as tlsloop bounds it by the connect timeout
		}
		e.acc.Add(al)
		cfg.Logger.Info("tern listening (WebSocket on the event loops)", "addr", ln.Addr().String(),
			"paths", fmt.Sprint(l.paths), "compression", spec.Compression)
	}
	return e, nil
}

// IsTLS reports whether the listener serves wss://.
func IsTLS(l stdnet.WebSocketListener) bool { return l.CertFile != "" || l.Config != nil }

func (e *Engine) newListener(spec stdnet.WebSocketListener, bound net.Addr) *listener {
	l := &listener{spec: spec, paths: spec.RequestPaths(), headerTimeout: spec.HeaderTimeout,
		idleTimeout: spec.IdleTimeout, maxHeader: spec.MaxHeaderBytes}
	l.bound, _ = bound.(*net.TCPAddr)
	if l.headerTimeout <= 0 {
		l.headerTimeout = e.cfg.HeaderTimeout
	}
	if l.idleTimeout <= 0 {
		l.idleTimeout = stdnet.DefaultIdleTimeout
	}
	if l.maxHeader <= 0 {
		l.maxHeader = stdnet.DefaultMaxHeaderBytes
	}
	return l
}

// AddTLSListener registers a wss:// listener that server/tlsloop serves on
// bound: its decrypted connections, reaching the wrapped handler, are
// upgraded here. Call before gnet starts.
func (e *Engine) AddTLSListener(spec stdnet.WebSocketListener, bound net.Addr) {
	l := e.newListener(spec, bound)
	e.tls = append(e.tls, l)
	e.cfg.Logger.Info("tern listening (WebSocket over TLS on the event loops)", "addr", bound.String(),
		"paths", fmt.Sprint(l.paths), "compression", spec.Compression)
}

// Addrs returns the bound ws:// listener addresses, in the order given.
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
	return Stats{Open: e.open.Load(), Upgrades: e.upgrades.Load(), OriginRefused: e.origin.Load(),
		NotFound: e.notFound.Load(), BadRequest: e.badReq.Load(), HeaderTimeouts: e.hdrTimeout.Load(),
		TooBig: e.big.Load(), ProtocolErrors: e.protoErr.Load(), AcceptErrors: e.acc.AcceptErrors()}
}

// Stop closes the listeners and waits for the accept loops; connections
// close with gnet's engine, with close code 1001. Idempotent.
func (e *Engine) Stop() {
	if e == nil {
		return
	}
	e.acc.Stop()
}

// GnetOptions are the options gnet must run with: a ticker (the first tick
// starts accepting) and a load balancer that tolerates Register from
// another goroutine.
func (e *Engine) GnetOptions() []gnet.Option {
	return []gnet.Option{gnet.WithTicker(true), gnet.WithLoadBalancing(gnet.LeastConnections)}
}

// Wrap returns the handler to give gnet (or server/tlsloop as its
// Config.Handler, so that wss:// connections reach it decrypted).
func (e *Engine) Wrap() gnet.EventHandler { return &handler{inner: e.cfg.Handler, e: e} }

// marker is the gnet context a ws:// connection is enrolled with;
// proxied is the address its PROXY protocol header named.
type marker struct {
	l       *listener
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

// OnTick starts the accept loops on its first call, once gnet's loops are
// all registered (listenutil.Acceptor.Start says why).
func (h *handler) OnTick() (time.Duration, gnet.Action) {
	h.e.acc.Start()
	d, act := h.inner.OnTick()
	if d <= 0 {
		d = time.Hour
	}
	return d, act
}

// listenerOf tells WebSocket connections from others: a ws:// one by its
// enrolment marker, a wss:// one (tlsloop's conn) by its local address.
func (e *Engine) listenerOf(c gnet.Conn) (*listener, net.Addr) {
	if m, ok := c.Context().(*marker); ok {
		return m.l, m.proxied
	}
	if len(e.tls) == 0 {
		return nil, nil
	}
	la, ok := c.LocalAddr().(*net.TCPAddr)
	if !ok {
		return nil, nil
	}
	for _, l := range e.tls {
		if l.bound != nil && l.bound.Port == la.Port && (l.bound.IP.IsUnspecified() || l.bound.IP.Equal(la.IP)) {
			return l, nil
		}
	}
	return nil, nil
}

func (h *handler) OnOpen(lower gnet.Conn) ([]byte, gnet.Action) {
	l, proxied := h.e.listenerOf(lower)
	if l == nil {
		return h.inner.OnOpen(lower)
	}
	c := newConn(h.e, lower, l)
	c.proxied = proxied
	lower.SetContext(c)
	// The broker admits the connection now (limits, descriptor budget)
	// and starts its connect timer, which also bounds the upgrade.
	_, act := h.inner.OnOpen(c)
	if act != gnet.None {
		c.state = stateRefused
		return nil, act
	}
	c.armTimer(l.headerTimeout)
	return nil, gnet.None
}

func (h *handler) OnTraffic(lower gnet.Conn) gnet.Action {
	c, ok := lower.Context().(*conn)
	if !ok {
		return h.inner.OnTraffic(lower)
	}
	return c.onTraffic()
}

func (h *handler) OnClose(lower gnet.Conn, err error) gnet.Action {
	c, ok := lower.Context().(*conn)
	if !ok {
		return h.inner.OnClose(lower, err)
	}
	prev := c.state
	c.closed()
	if prev == stateRefused || prev == stateClosing {
		return gnet.None // refused in OnOpen, or the broker's OnClose ran already (CloseHandshake)
	}
	return h.inner.OnClose(c, err)
}
