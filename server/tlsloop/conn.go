package tlsloop

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"

	"github.com/ternmq/tern/server/stdnet"
)

const (
	// plainBufSize is a pooled plaintext buffer: one full TLS record
	// (16 KiB) and room for the partial packet before it.
	plainBufSize = 20 << 10
	// recordPlain is the free space a decrypt needs: crypto/tls returns at
	// most one record's plaintext per Read, and never more than asked.
	recordPlain = 16 << 10
	// maxHandshakeInput bounds what a peer may send while its handshake
	// runs (a ClientHello, a certificate chain): more is an attack.
	maxHandshakeInput = 64 << 10
	// workerIdle is how long an idle handshake worker waits for the next
	// handshake before it ends.
	workerIdle = 2 * time.Second
	// idlePad is the stack an idle handshake worker keeps in use (see
	// nextHandshake): a quarter of the 32 KiB a TLS 1.3 server handshake
	// grows a goroutine's stack to.
	idlePad = 8 << 10
)

type connState uint8

const (
	stateHandshake connState = iota
	stateOpen
	stateClosed
)

// errWouldBlock is what the pipe's Read returns when the loop has no
// more ciphertext: a temporary net.Error, which crypto/tls passes up
// without recording it as the connection's error (a partial record stays
// in its input buffer for the next Read).
var errWouldBlock net.Error = wouldBlock{}

type wouldBlock struct{}

func (wouldBlock) Error() string   { return "tlsloop: no more input buffered" }
func (wouldBlock) Timeout() bool   { return true }
func (wouldBlock) Temporary() bool { return true }

// conn is a TLS connection on a gnet loop, as the broker sees it: the
// methods it calls on a gnet.Conn read and write plaintext; the others
// (Fd, addresses, OutboundBuffered, Close, EventLoop, socket options) are
// the raw connection's, embedded.
type conn struct {
	gnet.Conn // the raw gnet connection: ciphertext
	e         *Engine
	src       *stdnet.CertSource
	tc        *tls.Conn    // until the handshake ends; after it only if rl is nil
	rl        *recordLayer // the record layer that took over from crypto/tls, or nil
	p         pipe
	ctx       any
	proxied   net.Addr // the PROXY protocol header's address; nil: the peer's

	in       []byte // decrypted, not yet consumed (a pooled buffer, or nil)
	inBuf    *[]byte
	identity string // from the client certificate; set when the handshake completes
	hs       *handshake
	state    connState
	more     bool  // crypto/tls or gnet may hold ciphertext not decrypted yet
	failed   bool  // the record layer met a fatal error: closing
	used     uint8 // the record layer sealed or opened since: usedSweep, usedFresh (idle.go)

	il         *idleList // its loop's record-layer connections (idle.go)
	prev, next *conn
}

func (e *Engine) newConn(raw gnet.Conn, m *marker) *conn {
	c := &conn{Conn: raw, e: e, src: m.src, hs: &handshake{}}
	c.hs.cond = sync.NewCond(&c.hs.mu)
	c.p.c, c.p.async, c.p.hs = c, true, c.hs
	c.tc = tls.Server(&c.p, m.front)
	return c
}

// handshake is the state shared by the loop and the handshake goroutine.
type handshake struct {
	mu     sync.Mutex
	cond   *sync.Cond
	buf    []byte // ciphertext from the loop that crypto/tls has not read
	closed bool   // the connection closed: Read fails
	// viaLoop: the socket once did not take all of a write; the rest and
	// every later write go through the loop (writeDirect).
	viaLoop    bool
	dispatched bool   // given to a worker (at the first input). Loop only.
	cut        cutter // where the record crypto/tls reads ends

	// For the hand-over (handover.go), written by the handshake goroutine.
	clientSecret, serverSecret []byte     // application traffic secrets (key log)
	suite                      uint16     // from the ServerHello crypto/tls wrote
	out                        *direction // the server's application key, counting its records
	noHandover                 bool       // something unexpected: stay on crypto/tls
}

// dispatchHandshake hands c's handshake to an idle handshake worker, or
// starts one (see "Handshake workers"), at its first input: the worker
// then finds the ClientHello buffered instead of waiting for it, and a
// peer that never sends costs no worker. Loop only.
func (e *Engine) dispatchHandshake(c *conn) {
	c.hs.dispatched = true
	select {
	case e.hsJobs <- c:
	default:
		e.hsWG.Add(1)
		go e.handshakeWorker(c)
	}
}

// handshakeWorker runs c's handshake, then those dispatched to it while
// it waits idle, until it stays idle for workerIdle or the engine stops.
func (e *Engine) handshakeWorker(c *conn) {
	defer e.hsWG.Done()
	e.workersStarted.Add(1)
	idle := time.NewTimer(workerIdle)
	defer idle.Stop()
	for c != nil {
		e.startHandshake(c)
		c = e.nextHandshake(idle)
	}
}

// startHandshake runs c's handshake on the calling worker and queues its
// completion on c's loop. (Its name is what server's
// TestTLSLoopsCloseDuringHandshake counts in goroutine stacks: handshakes
// in progress.)
func (e *Engine) startHandshake(c *conn) {
	e.cpu <- struct{}{}
	err := c.tc.Handshake()
	<-e.cpu
	ran := c.EventLoop().Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
		c.handshakeDone(err)
		return nil
	}))
	if ran != nil { // the engine is shutting down: OnClose comes or came
		e.handshaking.Add(-1)
	}
}

// nextHandshake waits, idle, for the next handshake dispatched to this
// worker; nil after workerIdle or once the engine stops. It holds idlePad
// bytes of stack meanwhile: the garbage collector halves the stack of a
// goroutine that uses less than a quarter of it, and the stack the
// handshakes grew is what the worker is kept for.
func (e *Engine) nextHandshake(idle *time.Timer) *conn {
	var pad [idlePad]byte
	idle.Reset(workerIdle)
	var c *conn
	select {
	case c = <-e.hsJobs:
	case <-idle.C:
	case <-e.acc.Done():
	case <-e.hsQuit:
	}
	idle.Stop()
	keepStack(&pad)
	return c
}

// keepStack keeps pad live across the wait (the compiler cannot drop it).
//
//go:noinline
func keepStack(pad *[idlePad]byte) { pad[0]++ }

// feedHandshake passes what the peer sent to the handshake goroutine.
// Loop only.
func (c *conn) feedHandshake() gnet.Action {
	b, _ := c.Conn.Next(-1)
	hs := c.hs
	hs.mu.Lock()
	if len(hs.buf)+len(b) > maxHandshakeInput {
		hs.mu.Unlock()
		return gnet.Close
	}
	hs.buf = append(hs.buf, b...)
	hs.cond.Signal()
	hs.mu.Unlock()
	if !hs.dispatched {
		c.e.dispatchHandshake(c)
	}
	return gnet.None
}

// handshakeDone runs on the loop when Handshake returned.
func (c *conn) handshakeDone(err error) {
	e := c.e
	e.handshaking.Add(-1)
	if err != nil {
		// Also when the connection closed first (the peer gave up, or
		// the connect timeout closed it): the handshake failed all the same.
		e.failures.Add(1)
		e.logHS.Log(e.cfg.Logger, slog.LevelInfo, "TLS handshake failed",
			"remote", addrString(c.RemoteAddr()), "err", err)
		if c.state == stateHandshake {
			_ = c.EventLoop().Close(c.Conn)
		}
		return
	}
	if c.state != stateHandshake {
		return // completed as the connection closed
	}
	cs := c.tc.ConnectionState()
	e.handshakes.Add(1)
	if cs.DidResume {
		e.resumed.Add(1)
	}
	e.open.Add(1)
	c.identity = c.src.Identity(&cs)
	c.state = stateOpen
	if c.rl = c.handover(&cs); c.rl != nil {
		c.tc = nil // its buffers, keys and config copy go to the GC
		e.handedOver.Add(1)
		c.used = usedAll
		e.listFor(c.EventLoop()).add(c, e.cfg.FreshKeysAfter > 0)
	}
	c.hs.mu.Lock()
	if len(c.hs.buf) > 0 {
		c.p.leftover = c.hs.buf // what came after crypto/tls's last read
	} // else: let the handshake's input buffer go (an idle connection keeps none)
	c.hs.mu.Unlock()
	c.p.async, c.p.hs, c.hs = false, nil, nil
	c.more = true // and what it read past the handshake
	if c.traffic() == gnet.Close {
		_ = c.EventLoop().Close(c.Conn)
	}
}

// closed runs in OnClose, before the broker's: a handshake in progress
// fails at its next read.
func (c *conn) closed(error) {
	switch c.state {
	case stateHandshake:
		hs := c.hs
		hs.mu.Lock()
		hs.closed = true
		hs.buf = nil
		hs.cond.Signal()
		hs.mu.Unlock()
		if !hs.dispatched { // it never started: fails here
			c.state = stateClosed
			c.handshakeDone(net.ErrClosed)
		}
	case stateOpen:
		c.e.open.Add(-1)
	}
	c.state = stateClosed
	c.release()
	c.p.leftover = nil
	c.rl = nil
	if c.il != nil {
		c.il.remove(c)
	}
}

// traffic decrypts what arrived and hands it to the broker. Loop only.
func (c *conn) traffic() gnet.Action {
	err := c.decrypt()
	act := gnet.None
	if len(c.in) > 0 {
		act = c.e.cfg.Handler.OnTraffic(c)
	}
	c.releaseIfEmpty()
	if (err != nil || c.failed) && act == gnet.None {
		// EOF (close_notify), a bad record, an alert: crypto/tls sent
		// its alert already; nothing more can be read.
		act = gnet.Close
	}
	return act
}

// decrypt moves ciphertext through crypto/tls into c.in until none is
// left or MaxPlaintext is held. A non-nil error is fatal for the
// connection. Loop only.
func (c *conn) decrypt() error {
	if !c.more || c.state != stateOpen {
		return nil
	}
	if c.rl != nil {
		return c.openRecords()
	}
	for len(c.in) < c.e.cfg.MaxPlaintext {
		if cap(c.in)-len(c.in) < recordPlain {
			c.grow()
		}
		n, err := c.tc.Read(c.in[len(c.in):cap(c.in)])
		c.in = c.in[:len(c.in)+n]
		if err != nil {
			if errors.Is(err, errWouldBlock) {
				c.more = false
				return nil
			}
			c.more = false
			return err
		}
	}
	return nil // over the limit: more stays set, the broker's next Peek goes on
}

// grow makes room for one more record in c.in.
func (c *conn) grow() { c.growFor(recordPlain) }

// growFor makes room for need more bytes in c.in (need ≤ plainBufSize
// when c.in is empty).
func (c *conn) growFor(need int) {
	if c.in == nil {
		c.inBuf = c.e.plain.Get().(*[]byte)
		c.in = (*c.inBuf)[:0]
		return
	}
	bigger := make([]byte, len(c.in), 2*cap(c.in)+need)
	copy(bigger, c.in)
	c.release()
	c.in = bigger
}

// release gives a pooled plaintext buffer back (others go to the GC).
func (c *conn) release() {
	if c.inBuf != nil {
		*c.inBuf = (*c.inBuf)[:0]
		c.e.plain.Put(c.inBuf)
		c.inBuf = nil
	}
	c.in = nil
}

// releaseIfEmpty drops the plaintext buffer once everything in it was
// consumed: an idle connection holds none.
func (c *conn) releaseIfEmpty() {
	if len(c.in) == 0 && c.in != nil {
		c.release()
	}
}

// Unwrap returns the raw gnet connection, for gnet.EventLoop.Close.
func (c *conn) Unwrap() gnet.Conn { return c.Conn }

// CertIdentity is the identity the client certificate carries (see
// stdnet.TLSListener.IdentityFrom), "" if none. Loop only.
func (c *conn) CertIdentity() string { return c.identity }

// Context returns the broker's per-connection state. Loop only.
func (c *conn) Context() any { return c.ctx }

// SetContext sets the broker's per-connection state. Loop only.
func (c *conn) SetContext(v any) { c.ctx = v }

// Peek returns decrypted input (n ≤ 0: all of it). Loop only.
func (c *conn) Peek(n int) ([]byte, error) {
	_ = c.decrypt() // an error shows at the next read event
	if n <= 0 || n > len(c.in) {
		return c.in, nil
	}
	return c.in[:n], nil
}

// Discard drops n bytes of decrypted input (n ≤ 0 or past the end: all,
// as gnet does). Loop only.
func (c *conn) Discard(n int) (int, error) {
	if n <= 0 || n >= len(c.in) {
		n = len(c.in)
		c.in = c.in[:0]
		c.releaseIfEmpty()
		return n, nil
	}
	c.in = c.in[:copy(c.in, c.in[n:])]
	return n, nil
}

// Next returns and consumes n bytes (n ≤ 0: all) as a copy. Loop only.
func (c *conn) Next(n int) ([]byte, error) {
	b, _ := c.Peek(n)
	out := append([]byte(nil), b...)
	_, _ = c.Discard(len(out))
	if len(out) == 0 {
		return nil, io.ErrShortBuffer
	}
	return out, nil
}

// Read reads decrypted input. Loop only.
func (c *conn) Read(p []byte) (int, error) {
	b, _ := c.Peek(len(p))
	n := copy(p, b)
	_, _ = c.Discard(n)
	if n == 0 && len(p) > 0 {
		return 0, io.ErrShortBuffer
	}
	return n, nil
}

// InboundBuffered is how much decrypted input waits. Loop only.
func (c *conn) InboundBuffered() int {
	_ = c.decrypt()
	return len(c.in)
}

// Write encrypts b into gnet's output. Loop only (as gnet's Write).
func (c *conn) Write(b []byte) (int, error) {
	if c.state != stateOpen {
		return 0, net.ErrClosed
	}
	if c.rl != nil {
		return c.sealWrite(recordApplicationData, b, nil)
	}
	return c.tc.Write(b)
}

// Writev encrypts bs in order. Loop only.
func (c *conn) Writev(bs [][]byte) (int, error) {
	if c.rl != nil {
		if c.state != stateOpen {
			return 0, net.ErrClosed
		}
		return c.sealWrite(recordApplicationData, nil, bs)
	}
	n := 0
	for _, b := range bs {
		m, err := c.Write(b)
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// AsyncWrite encrypts and sends b on the loop; safe from any goroutine.
// b is copied.
func (c *conn) AsyncWrite(b []byte, cb gnet.AsyncCallback) error {
	cp := append([]byte(nil), b...)
	return c.EventLoop().Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
		_, err := c.Write(cp)
		if cb != nil {
			return cb(c, err)
		}
		return nil
	}))
}

// AsyncWritev is AsyncWrite of the concatenation of bs.
func (c *conn) AsyncWritev(bs [][]byte, cb gnet.AsyncCallback) error {
	var all []byte
	for _, b := range bs {
		all = append(all, b...)
	}
	return c.AsyncWrite(all, cb)
}

// ReadFrom and WriteTo are not used by the broker; they would bypass TLS.
func (c *conn) ReadFrom(io.Reader) (int64, error) { return 0, errors.ErrUnsupported }
func (c *conn) WriteTo(io.Writer) (int64, error)  { return 0, errors.ErrUnsupported }

// SendTo is for datagrams.
func (c *conn) SendTo([]byte, net.Addr) (int, error) { return 0, errors.ErrUnsupported }

// pipe is the net.Conn crypto/tls runs over: ciphertext to and from gnet.
type pipe struct {
	c *conn
	// async: the handshake goroutine drives crypto/tls. Set before it
	// starts, cleared by the loop once it finished (handshakeDone), so
	// both sides read it without a race.
	async    bool
	hs       *handshake
	leftover []byte // handshake input crypto/tls had not read when it finished
}

// Read: during the handshake (its goroutine) it blocks for the loop's
// feed, holding no CPU token while it waits; afterwards (the loop) it
// returns what is buffered, or errWouldBlock.
func (p *pipe) Read(b []byte) (int, error) {
	c := p.c
	if p.async {
		return p.hs.read(c.e, b)
	}
	if len(p.leftover) > 0 {
		n := copy(b, p.leftover)
		p.leftover = p.leftover[n:]
		if len(p.leftover) == 0 {
			p.leftover = nil
		}
		return n, nil
	}
	n, _ := c.Conn.Read(b)
	if n == 0 {
		return 0, errWouldBlock
	}
	return n, nil
}

// read is the handshake goroutine's blocking read.
func (hs *handshake) read(e *Engine, b []byte) (int, error) {
	hs.mu.Lock()
	if len(hs.buf) == 0 && !hs.closed {
		<-e.cpu // waiting for the peer: let another handshake compute
		for len(hs.buf) == 0 && !hs.closed {
			hs.cond.Wait()
		}
		hs.mu.Unlock()
		e.cpu <- struct{}{}
		hs.mu.Lock()
	}
	defer hs.mu.Unlock()
	if hs.closed {
		return 0, net.ErrClosed
	}
	// Never past the end of a record: crypto/tls then holds no input
	// when its handshake returns, and the record layer takes over at the
	// next record.
	n := hs.cut.take(hs.buf[:min(len(b), len(hs.buf))])
	copy(b, hs.buf[:n])
	hs.buf = hs.buf[:copy(hs.buf, hs.buf[n:])]
	return n, nil
}

// Write: during the handshake (its goroutine) it writes b to the socket
// itself (writeDirect) and queues on the loop what the socket did not
// take (gnet's AsyncWrite keeps the order); afterwards (the loop) it
// writes straight into gnet's output.
func (p *pipe) Write(b []byte) (int, error) {
	c := p.c
	if p.async {
		p.hs.watchWrite(b)
		rest, err := p.hs.writeDirect(c.Conn.Fd(), b)
		if err != nil {
			return 0, err
		}
		if len(rest) > 0 {
			if err := c.Conn.AsyncWrite(append([]byte(nil), rest...), nil); err != nil {
				return 0, err
			}
		}
		return len(b), nil
	}
	return c.Conn.Write(b)
}

// writeDirect writes b to the socket from the handshake goroutine: a
// server flight through AsyncWrite cost a copy, a task and often a
// wake-up of the loop. hs.mu orders it with closed (OnClose), which gnet
// calls before it closes the descriptor, so a write never reaches a
// descriptor number another connection reuses; nothing else writes to a
// connection during its handshake (the broker's Writes fail until it is
// open). It returns what the socket did not take; once something is
// left, this and every later write go through the loop (viaLoop), in
// order. A write error is returned: crypto/tls fails the handshake.
func (hs *handshake) writeDirect(fd int, b []byte) ([]byte, error) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	if hs.closed {
		return nil, net.ErrClosed
	}
	for len(b) > 0 && !hs.viaLoop {
		n, err := unix.Write(fd, b)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			hs.viaLoop = true
		case err != nil:
			return nil, err
		default:
			b = b[n:]
		}
	}
	return b, nil
}

func (p *pipe) Close() error                     { return nil } // the loop closes the socket
func (p *pipe) LocalAddr() net.Addr              { return p.c.Conn.LocalAddr() }
func (p *pipe) RemoteAddr() net.Addr             { return p.c.Conn.RemoteAddr() }
func (p *pipe) SetDeadline(time.Time) error      { return nil } // the connect timer bounds the handshake
func (p *pipe) SetReadDeadline(time.Time) error  { return nil }
func (p *pipe) SetWriteDeadline(time.Time) error { return nil }

func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}

// RemoteAddr is the client's address: the one its PROXY protocol header
// named, if its listener takes one, else the peer's.
func (c *conn) RemoteAddr() net.Addr {
	if c.proxied != nil {
		return c.proxied
	}
	return c.Conn.RemoteAddr()
}
