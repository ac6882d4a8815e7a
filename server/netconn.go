package server

// The standard-library transport: TLS today (and WebSocket next) cannot run
// on gnet's raw-fd reactor, because the bytes on the socket are not the
// bytes MQTT sees. Such connections are adapted to the two gnet interfaces
// the broker uses — gnet.Conn and gnet.EventLoop — so every line of
// connection, session and routing code serves them unchanged:
//
//	accept goroutine ──▶ netConn (per connection: one reader goroutine and
//	                     one writer goroutine, as crypto/tls requires)
//	reader: nc.Read ──▶ pending (bounded) ──post──▶ taskLoop goroutine:
//	                     OnTraffic(netConn) exactly as for a gnet connection
//	loop: Write ──▶ out buffer ──▶ writer goroutine: nc.Write (may block; the
//	                     loop never does; OutboundBuffered reports the backlog)
//
// A taskLoop is a goroutine that runs posted tasks one at a time: the
// same single-owner guarantee a gnet event loop gives. Costs per TLS
// connection: two goroutines (~16 KiB of stack) plus crypto/tls's buffers,
// so the plain-TCP path stays the one for very large fleets.

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"
)

// TLSListener is one TLS listener.
type TLSListener struct {
	Addr     string `yaml:"addr"`      // host:port
	CertFile string `yaml:"cert_file"` // PEM certificate chain
	KeyFile  string `yaml:"key_file"`  // PEM private key
	// Config, when set, is used instead of loading CertFile/KeyFile.
	Config *tls.Config `yaml:"-"`
}

var errNotSupported = errors.New("not supported on a standard-library connection")

// taskLoop implements gnet.EventLoop for standard-library connections.
type taskLoop struct {
	mu    sync.Mutex
	tasks []func()
	wake  chan struct{}
	done  chan struct{}
}

func newTaskLoop() *taskLoop {
	t := &taskLoop{wake: make(chan struct{}, 1), done: make(chan struct{})}
	go t.run()
	return t
}

func (t *taskLoop) post(fn func()) error {
	select {
	case <-t.done:
		return errClosed
	default:
	}
	t.mu.Lock()
	t.tasks = append(t.tasks, fn)
	t.mu.Unlock()
	select {
	case t.wake <- struct{}{}:
	default:
	}
	return nil
}

func (t *taskLoop) run() {
	var batch []func()
	for {
		select {
		case <-t.done:
			return
		case <-t.wake:
		}
		for {
			t.mu.Lock()
			batch, t.tasks = t.tasks, batch[:0]
			t.mu.Unlock()
			if len(batch) == 0 {
				break
			}
			for i, fn := range batch {
				fn()
				batch[i] = nil
			}
		}
	}
}

func (t *taskLoop) stop() { close(t.done) }

// Execute runs r on the loop goroutine.
func (t *taskLoop) Execute(ctx context.Context, r gnet.Runnable) error {
	return t.post(func() { _ = r.Run(ctx) })
}

// Close closes c, which must belong to this loop, running OnClose now.
func (t *taskLoop) Close(c gnet.Conn) error {
	if nc, ok := c.(*netConn); ok {
		nc.closeOnLoop(nil)
		return nil
	}
	return errNotSupported
}

// Register is not supported.
func (t *taskLoop) Register(context.Context, net.Addr) (<-chan gnet.RegisteredResult, error) {
	return nil, errNotSupported
}

// Enroll is not supported.
func (t *taskLoop) Enroll(context.Context, net.Conn) (<-chan gnet.RegisteredResult, error) {
	return nil, errNotSupported
}

// Schedule is not supported.
func (t *taskLoop) Schedule(context.Context, gnet.Runnable, time.Duration) error {
	return errNotSupported
}

// netConn adapts a net.Conn to gnet.Conn. The embedded interface is nil:
// only the methods the broker calls are implemented (a test lists them).
type netConn struct {
	gnet.Conn
	nc   net.Conn
	loop *taskLoop
	h    *handler
	t    *netTransport
	ctx  any

	in     []byte // received, not yet consumed; loop-owned
	closed bool   // OnClose ran; loop-owned

	rmu       sync.Mutex
	rcond     *sync.Cond
	pending   []byte // filled by the reader
	scheduled bool   // an onReadable task is posted
	rlimit    int    // reader pauses above this many pending bytes

	wmu     sync.Mutex
	wcond   *sync.Cond
	out     []byte
	writing int // bytes the writer is sending now
	wclosed bool
	dead    atomic.Bool
}

func newNetConn(nc net.Conn, l *taskLoop, h *handler, maxPacket int) *netConn {
	c := &netConn{nc: nc, loop: l, h: h, rlimit: 2*maxPacket + 64<<10}
	c.rcond = sync.NewCond(&c.rmu)
	c.wcond = sync.NewCond(&c.wmu)
	return c
}

// start opens the connection on its loop and starts its goroutines.
func (c *netConn) start() {
	_ = c.loop.post(func() {
		if _, act := c.h.OnOpen(c); act == gnet.Close {
			c.closeOnLoop(nil)
		}
	})
	go c.reader()
	go c.writer()
}

func (c *netConn) reader() {
	buf := make([]byte, 16<<10)
	for {
		n, err := c.nc.Read(buf)
		if n > 0 {
			c.rmu.Lock()
			for len(c.pending) > c.rlimit && !c.dead.Load() {
				c.rcond.Wait() // back-pressure: the loop has not caught up
			}
			c.pending = append(c.pending, buf[:n]...)
			post := !c.scheduled
			c.scheduled = true
			c.rmu.Unlock()
			if post {
				_ = c.loop.post(c.onReadable)
			}
		}
		if err != nil {
			_ = c.loop.post(func() { c.closeOnLoop(err) })
			return
		}
	}
}

func (c *netConn) onReadable() {
	c.rmu.Lock()
	c.in = append(c.in, c.pending...)
	c.pending = c.pending[:0]
	c.scheduled = false
	c.rcond.Signal()
	c.rmu.Unlock()
	if c.closed {
		return
	}
	if act := c.h.OnTraffic(c); act == gnet.Close {
		c.closeOnLoop(nil)
	}
}

func (c *netConn) writer() {
	var buf []byte
	for {
		c.wmu.Lock()
		for len(c.out) == 0 && !c.wclosed {
			c.wcond.Wait()
		}
		if len(c.out) == 0 && c.wclosed {
			c.wmu.Unlock()
			_ = c.nc.Close()
			return
		}
		buf, c.out = c.out, buf[:0]
		c.writing = len(buf)
		closing := c.wclosed
		c.wmu.Unlock()
		if closing { // flush what the broker said last, but do not hang on it
			_ = c.nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
		}
		_, err := c.nc.Write(buf)
		c.wmu.Lock()
		c.writing = 0
		c.wmu.Unlock()
		if err != nil {
			_ = c.nc.Close() // the reader sees it and closes on the loop
			c.wmu.Lock()
			c.wclosed, c.out = true, nil
			c.wmu.Unlock()
			return
		}
	}
}

// closeOnLoop runs OnClose once and lets the writer flush and close.
func (c *netConn) closeOnLoop(err error) {
	if c.closed {
		return
	}
	c.closed = true
	c.dead.Store(true)
	c.h.OnClose(c, err)
	if c.t != nil {
		c.t.mu.Lock()
		delete(c.t.conns, c) // no-op once stop took the map
		c.t.mu.Unlock()
	}
	c.rmu.Lock()
	c.rcond.Broadcast()
	c.rmu.Unlock()
	c.wmu.Lock()
	c.wclosed = true
	c.wcond.Signal()
	c.wmu.Unlock()
	_ = c.nc.SetReadDeadline(time.Now()) // unblock the reader
}

// Peek returns the buffered input (n ≤ 0: all of it). Loop only.
func (c *netConn) Peek(n int) ([]byte, error) {
	if n <= 0 || n > len(c.in) {
		return c.in, nil
	}
	return c.in[:n], nil
}

// Discard drops n bytes of buffered input. Loop only.
func (c *netConn) Discard(n int) (int, error) {
	if n >= len(c.in) {
		n = len(c.in)
		c.in = c.in[:0]
		return n, nil
	}
	c.in = append(c.in[:0], c.in[n:]...)
	return n, nil
}

// Write queues b for the writer goroutine; it never blocks on the network.
func (c *netConn) Write(b []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.wclosed {
		return 0, net.ErrClosed
	}
	c.out = append(c.out, b...)
	c.wcond.Signal()
	return len(b), nil
}

// AsyncWrite is Write (safe from any goroutine); cb, if any, runs on the loop.
func (c *netConn) AsyncWrite(b []byte, cb gnet.AsyncCallback) error {
	_, err := c.Write(b)
	if cb != nil {
		_ = c.loop.post(func() { _ = cb(c, err) })
	}
	return err
}

// OutboundBuffered is what waits to be written, for the slow-consumer policy.
func (c *netConn) OutboundBuffered() int {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return len(c.out) + c.writing
}

// Close closes the connection from any goroutine.
func (c *netConn) Close() error {
	return c.loop.post(func() { c.closeOnLoop(nil) })
}

// Context returns the broker's per-connection state. Loop only.
func (c *netConn) Context() any { return c.ctx }

// SetContext sets the broker's per-connection state. Loop only.
func (c *netConn) SetContext(v any) { c.ctx = v }

// EventLoop returns the task loop the connection belongs to.
func (c *netConn) EventLoop() gnet.EventLoop { return c.loop }

// LocalAddr is the listener side's address.
func (c *netConn) LocalAddr() net.Addr { return c.nc.LocalAddr() }

// RemoteAddr is the client's address.
func (c *netConn) RemoteAddr() net.Addr { return c.nc.RemoteAddr() }

// netTransport runs the standard-library listeners of a server.
type netTransport struct {
	s      *Server
	loops  []*taskLoop
	next   atomic.Uint32
	lns    []net.Listener
	mu     sync.Mutex
	conns  map[*netConn]struct{}
	wg     sync.WaitGroup
	closed atomic.Bool
}

// startTLS opens the TLS and WebSocket listeners (the standard-library
// transport); their bound addresses are in TLSAddrs and WebSocketAddrs.
func (s *Server) startTLS() error {
	if len(s.opts.TLSListeners) == 0 && len(s.opts.WebSocketListeners) == 0 {
		return nil
	}
	t := &netTransport{s: s, conns: map[*netConn]struct{}{}}
	n := s.opts.EventLoops
	if n <= 0 {
		n = 1
	}
	for i := 0; i < n; i++ {
		t.loops = append(t.loops, newTaskLoop())
	}
	for _, l := range s.opts.TLSListeners {
		cfg := l.Config
		if cfg == nil {
			cert, err := tls.LoadX509KeyPair(l.CertFile, l.KeyFile)
			if err != nil {
				t.stop()
				return err
			}
			cfg = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		}
		ln, err := tls.Listen("tcp", l.Addr, cfg)
		if err != nil {
			t.stop()
			return err
		}
		t.lns = append(t.lns, ln)
		s.tlsAddrs = append(s.tlsAddrs, ln.Addr())
		t.wg.Add(1)
		go t.accept(ln)
	}
	s.tlsT = t
	if len(s.tlsAddrs) > 0 {
		s.log.Info("tern listening (TLS)", "listeners", s.tlsAddrs)
	}
	if err := s.startWebSocket(t); err != nil {
		t.stop()
		s.tlsT = nil
		return err
	}
	return nil
}

func (t *netTransport) accept(ln net.Listener) {
	defer t.wg.Done()
	h := &handler{s: t.s}
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
			t.s.log.Error("TLS accept", "err", err)
			time.Sleep(50 * time.Millisecond)
			continue
		}
		if tc, ok := nc.(*tls.Conn); ok { // bound the handshake like CONNECT
			_ = tc.SetDeadline(time.Now().Add(t.s.opts.ConnectTimeout))
			go func() {
				if err := tc.Handshake(); err != nil {
					t.s.log.Debug("TLS handshake failed", "remote", tc.RemoteAddr().String(), "err", err)
					_ = tc.Close()
					return
				}
				_ = tc.SetDeadline(time.Time{})
				t.open(tc, h)
			}()
			continue
		}
		t.open(nc, h)
	}
}

func (t *netTransport) open(nc net.Conn, h *handler) {
	l := t.loops[int(t.next.Add(1))%len(t.loops)]
	c := newNetConn(nc, l, h, t.s.opts.MaxPacketSize)
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

// stop closes the listeners and every connection (firing wills as for
// gnet connections), then stops the loops.
func (t *netTransport) stop() {
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
