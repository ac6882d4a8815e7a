// Package stdnet is the broker's standard-library transport: MQTT over TLS
// and over WebSocket, whose bytes on the socket are not the bytes MQTT
// sees, so they cannot run on gnet's raw-fd reactor. Such connections are
// adapted to the two gnet interfaces a handler uses — gnet.Conn and
// gnet.EventLoop — and drive any gnet.EventHandler (OnOpen, OnTraffic,
// OnClose), so the broker's connection code serves them unchanged:
//
//	accept goroutine ──▶ conn (per connection: one reader goroutine and
//	                     one writer goroutine, as crypto/tls requires)
//	reader: nc.Read ──▶ pending (bounded) ──post──▶ taskLoop goroutine:
//	                     OnTraffic(conn) exactly as for a gnet connection
//	loop: Write ──▶ out buffer ──▶ writer goroutine: nc.Write (may block; the
//	                     loop never does; OutboundBuffered reports the backlog)
//
// A taskLoop is a goroutine that runs posted tasks one at a time: the
// same single-owner guarantee a gnet event loop gives. Costs per
// connection: two goroutines (~16 KiB of stack) plus crypto/tls's buffers,
// so the plain-TCP path stays the one for very large fleets.
package stdnet

import (
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"
)

// Config is what the transport needs from its user.
type Config struct {
	// Handler receives OnOpen, OnTraffic and OnClose for every connection,
	// on the connection's task loop. Required.
	Handler gnet.EventHandler
	// Loops is the number of task loops. Default (≤ 0): 1.
	Loops int
	// MaxPacketSize bounds a WebSocket message and how far the reader runs
	// ahead of the handler (2× plus 64 KiB).
	MaxPacketSize int
	// HandshakeTimeout bounds a TLS handshake and a WebSocket upgrade.
	HandshakeTimeout time.Duration
	// Logger receives the transport's logs.
	Logger *slog.Logger
}

// Transport runs the standard-library listeners and their connections.
type Transport struct {
	cfg      Config
	loops    []*taskLoop
	next     atomic.Uint32
	lns      []net.Listener
	tlsAddrs []net.Addr
	wsAddrs  []net.Addr
	mu       sync.Mutex
	conns    map[*conn]struct{}
	wg       sync.WaitGroup
	closed   atomic.Bool
}

// Start opens the TLS and WebSocket listeners; nil (and no error) when
// there are none: every method of a nil *Transport is a no-op.
func Start(cfg Config, tlsListeners []TLSListener, wsListeners []WebSocketListener) (*Transport, error) {
	if len(tlsListeners) == 0 && len(wsListeners) == 0 {
		return nil, nil
	}
	if cfg.Handler == nil {
		return nil, errors.New("stdnet: Config.Handler is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	t := &Transport{cfg: cfg, conns: map[*conn]struct{}{}}
	n := cfg.Loops
	if n <= 0 {
		n = 1
	}
	for i := 0; i < n; i++ {
		t.loops = append(t.loops, newTaskLoop())
	}
	for _, l := range tlsListeners {
		cfg := l.Config
		if cfg == nil {
			cert, err := tls.LoadX509KeyPair(l.CertFile, l.KeyFile)
			if err != nil {
				t.Stop()
				return nil, err
			}
			cfg = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		}
		ln, err := tls.Listen("tcp", l.Addr, cfg)
		if err != nil {
			t.Stop()
			return nil, err
		}
		t.lns = append(t.lns, ln)
		t.tlsAddrs = append(t.tlsAddrs, ln.Addr())
		t.wg.Add(1)
		go t.accept(ln)
	}
	if len(t.tlsAddrs) > 0 {
		t.cfg.Logger.Info("tern listening (TLS)", "listeners", t.tlsAddrs)
	}
	if err := t.startWebSocket(wsListeners); err != nil {
		t.Stop()
		return nil, err
	}
	return t, nil
}

// TLSAddrs returns the bound TLS listener addresses.
func (t *Transport) TLSAddrs() []net.Addr {
	if t == nil {
		return nil
	}
	return t.tlsAddrs
}

// WebSocketAddrs returns the bound WebSocket listener addresses.
func (t *Transport) WebSocketAddrs() []net.Addr {
	if t == nil {
		return nil
	}
	return t.wsAddrs
}

func (t *Transport) accept(ln net.Listener) {
	defer t.wg.Done()
	for {
		nc, err := ln.Accept()
		if err != nil {
			if t.closed.Load() {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			t.cfg.Logger.Error("TLS accept", "err", err)
			time.Sleep(50 * time.Millisecond)
			continue
		}
		if tc, ok := nc.(*tls.Conn); ok { // bound the handshake like CONNECT
			_ = tc.SetDeadline(time.Now().Add(t.cfg.HandshakeTimeout))
			go func() {
				if err := tc.Handshake(); err != nil {
					t.cfg.Logger.Debug("TLS handshake failed", "remote", tc.RemoteAddr().String(), "err", err)
					_ = tc.Close()
					return
				}
				_ = tc.SetDeadline(time.Time{})
				t.open(tc)
			}()
			continue
		}
		t.open(nc)
	}
}

func (t *Transport) open(nc net.Conn) {
	l := t.loops[int(t.next.Add(1))%len(t.loops)]
	c := newConn(nc, l, t.cfg.Handler, t.cfg.MaxPacketSize)
	c.t = t
	t.mu.Lock()
	if t.closed.Load() {
		t.mu.Unlock()
		_ = nc.Close()
		return
	}
	t.conns[c] = struct{}{}
	t.mu.Unlock()
	c.start()
}

// Stop closes the listeners and every connection (OnClose runs for each,
// on its loop), then stops the loops.
func (t *Transport) Stop() {
	if t == nil {
		return
	}
	t.closed.Store(true)
	for _, ln := range t.lns {
		_ = ln.Close()
	}
	t.wg.Wait()
	t.mu.Lock()
	conns := t.conns
	t.conns = nil
	t.mu.Unlock()
	var done sync.WaitGroup
	for c := range conns {
		done.Add(1)
		if c.loop.post(func() { c.closeOnLoop(nil); done.Done() }) != nil {
			done.Done()
		}
	}
	done.Wait()
	for _, l := range t.loops {
		l.stop()
	}
}
