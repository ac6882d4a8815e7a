package stdnet

import (
	"errors"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"
)

const (
	// writeChunk is the most one Write hands the stream at a time, so the
	// write deadline measures progress ("the peer accepted 64 KiB within
	// WriteTimeout"), not the size of a backlog.
	writeChunk = 64 << 10
	// lingerTimeout bounds everything after the handler closed a
	// connection: flushing what it wrote last, the WebSocket close
	// handshake and TLS close_notify. Then the socket is closed regardless,
	// which is what unblocks a writer stuck on a peer that stopped reading.
	lingerTimeout = 2 * time.Second
	// keepWriteBuffer is the largest output buffer kept between writes; a
	// burst that grew one beyond it gives the memory back afterwards.
	keepWriteBuffer = 256 << 10
)

// conn adapts a net.Conn (TLS or WebSocket stream) to gnet.Conn. The
// embedded interface is nil: only the methods the broker calls are
// implemented (TestTLSConnAdapter calls each of them); anything else panics.
//
// Ownership: in, closed and ctx belong to the loop goroutine; pending and
// scheduled are shared with the reader under rmu; out, writing and the
// close fields are shared with the writer under wmu.
type conn struct {
	gnet.Conn
	stream net.Conn // what is read and written: *tls.Conn or *wsStream
	raw    net.Conn // the TCP socket under it; closing it unblocks Read and Write at once
	ws     wsCloser // non-nil for WebSocket connections (close frames)
	loop   *taskLoop
	t      *Transport
	ctx    any

	writeTimeout time.Duration
	identity     string // from the client certificate (CertIdentity); set before OnOpen
	onReadableFn func() // c.onReadable, bound once so posting it does not allocate

	in     []byte // received, not yet consumed; loop-owned
	closed bool   // OnClose ran; loop-owned

	rmu        sync.Mutex
	rcond      *sync.Cond
	pending    []byte // filled by the reader
	scheduled  bool   // an onReadable task is posted
	rlimit     int    // the reader pauses above this many pending bytes
	readerDone chan struct{}

	wmu     sync.Mutex
	wcond   *sync.Cond
	out     []byte
	writing int  // bytes of the current batch the writer has not sent yet
	wclosed bool // no more Writes; the writer flushes, says goodbye and closes
	wsCode  int  // WebSocket close frame to send after the flush (0: none)
	wsText  string
	linger  *time.Timer // force-closes raw lingerTimeout after the close

	dead atomic.Bool // closeOnLoop ran: the reader drops input and never waits
}

func newConn(t *Transport, l *taskLoop, stream, raw net.Conn, ws wsCloser, writeTimeout time.Duration) *conn {
	c := &conn{stream: stream, raw: raw, ws: ws, loop: l, t: t, writeTimeout: writeTimeout,
		rlimit: 2*t.cfg.MaxPacketSize + 64<<10, readerDone: make(chan struct{})}
	c.onReadableFn = c.onReadable
	c.rcond = sync.NewCond(&c.rmu)
	c.wcond = sync.NewCond(&c.wmu)
	return c
}

// startIO starts the connection's reader and writer; Transport.open has
// already queued OnOpen on the loop (so it runs before any OnTraffic) and
// counted both goroutines in connWG.
func (c *conn) startIO() {
	go c.reader()
	go c.writer()
}

// open runs OnOpen on the loop.
func (c *conn) open() {
	out, act := c.t.cfg.Handler.OnOpen(c)
	if len(out) > 0 {
		_, _ = c.Write(out)
	}
	if act == gnet.Close {
		c.closeOnLoop(nil)
	}
}

// reader moves bytes from the stream to pending and posts onReadable,
// pausing while more than rlimit bytes wait (back-pressure on the peer
// through TCP, as gnet applies by not reading). After the close it only
// drains: a WebSocket peer's answer to the close frame ends it.
func (c *conn) reader() {
	defer c.t.connWG.Done()
	defer close(c.readerDone)
	buf := make([]byte, 16<<10)
	for {
		n, err := c.stream.Read(buf)
		if n > 0 && !c.dead.Load() {
			c.rmu.Lock()
			for len(c.pending) > c.rlimit && !c.dead.Load() {
				c.rcond.Wait()
			}
			post := false
			if !c.dead.Load() {
				c.pending = append(c.pending, buf[:n]...)
				post = !c.scheduled
				c.scheduled = true
			}
			c.rmu.Unlock()
			if post {
				_ = c.loop.postFn(c.onReadableFn)
			}
		}
		if err != nil {
			if !c.dead.Load() {
				_ = c.loop.postFn(func() { c.closeOnLoop(err) })
			}
			return
		}
	}
}

// onReadable hands what the reader gathered to OnTraffic. Loop only.
func (c *conn) onReadable() {
	c.rmu.Lock()
	c.in = append(c.in, c.pending...)
	c.pending = c.pending[:0]
	c.scheduled = false
	c.rcond.Signal()
	c.rmu.Unlock()
	if c.closed {
		return
	}
	if act := c.t.cfg.Handler.OnTraffic(c); act == gnet.Close {
		c.closeOnLoop(nil)
	}
}

// writer sends what Write queued, in chunks with a deadline each; after
// the close it flushes, sends the WebSocket close frame and closes.
func (c *conn) writer() {
	defer c.t.connWG.Done()
	var buf []byte
	for {
		c.wmu.Lock()
		for len(c.out) == 0 && !c.wclosed {
			c.wcond.Wait()
		}
		if len(c.out) == 0 {
			code, text := c.wsCode, c.wsText
			c.wmu.Unlock()
			c.finish(code, text)
			return
		}
		buf, c.out = c.out, buf[:0]
		c.writing = len(buf)
		c.wmu.Unlock()
		if err := c.writeAll(buf); err != nil {
			c.writeFailed(err)
			return
		}
		if cap(buf) > keepWriteBuffer {
			buf = nil
		}
	}
}

// writeAll writes buf in chunks, each with its own deadline, keeping
// c.writing current for OutboundBuffered.
func (c *conn) writeAll(buf []byte) error {
	for len(buf) > 0 {
		n := min(len(buf), writeChunk)
		if c.writeTimeout > 0 {
			_ = c.stream.SetWriteDeadline(time.Now().Add(c.writeTimeout))
		}
		if _, err := c.stream.Write(buf[:n]); err != nil {
			return err
		}
		buf = buf[n:]
		c.wmu.Lock()
		c.writing = len(buf)
		c.wmu.Unlock()
	}
	return nil
}

// writeFailed ends a connection whose write failed or timed out: the peer
// is gone or stopped reading, so nothing more can be said to it.
func (c *conn) writeFailed(err error) {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		c.t.stats.writeTimeouts.Add(1)
		c.t.logWriteTimeout.Log(c.t.cfg.Logger, slog.LevelInfo, "closing a connection whose peer stopped reading",
			"remote", addrString(c.raw.RemoteAddr()), "write_timeout", c.writeTimeout)
	}
	c.wmu.Lock()
	c.wclosed, c.out, c.writing = true, nil, 0
	lt := c.linger
	c.wmu.Unlock()
	// Queued before closing the socket, so that OnClose gets this error and
	// not the reader's "use of closed network connection".
	_ = c.loop.postFn(func() { c.closeOnLoop(err) })
	_ = c.raw.Close() // the reader fails at once
	if lt != nil {
		lt.Stop()
	}
}

// finish runs on the writer after the close and the flush. A WebSocket
// peer gets a close frame and the chance to answer it (RFC 6455 §7.1.1:
// the server closes the TCP connection once the handshake completed);
// the reader's deadline and the linger timer bound the wait.
func (c *conn) finish(code int, text string) {
	if c.ws != nil && code != 0 {
		if c.ws.closeFrame(code, text, time.Now().Add(lingerTimeout)) == nil {
			<-c.readerDone
		}
	}
	_ = c.stream.Close() // TLS: close_notify (bounded by the linger timer)
	_ = c.raw.Close()
	c.wmu.Lock()
	lt := c.linger
	c.wmu.Unlock()
	if lt != nil {
		lt.Stop()
	}
}

// forceClose is the linger timer: whatever still blocks gives up now.
func (c *conn) forceClose() { _ = c.raw.Close() }

// closeOnLoop runs OnClose once, then lets the writer flush, say goodbye
// and close within lingerTimeout. Loop only.
func (c *conn) closeOnLoop(err error) {
	if c.closed {
		return
	}
	c.closed = true
	code, text := 0, ""
	if c.ws != nil {
		// Decided before OnClose, while the handler's context still
		// says why it closed.
		code, text = c.t.closeStatus(c, err)
	}
	c.dead.Store(true)
	c.t.cfg.Handler.OnClose(c, err)
	c.t.forget(c)
	c.rmu.Lock()
	c.pending = nil
	c.rcond.Broadcast()
	c.rmu.Unlock()
	c.wmu.Lock()
	c.wclosed = true
	c.wsCode, c.wsText = code, text
	if c.linger == nil {
		c.linger = time.AfterFunc(lingerTimeout, c.forceClose)
	}
	c.wcond.Signal()
	c.wmu.Unlock()
	if code != 0 {
		// Keep reading for the peer's close frame (the reader drops data).
		_ = c.raw.SetReadDeadline(time.Now().Add(lingerTimeout))
	} else {
		_ = c.raw.SetReadDeadline(time.Now()) // unblock the reader now
	}
}

// Peek returns the buffered input (n ≤ 0: all of it). Loop only.
func (c *conn) Peek(n int) ([]byte, error) {
	if n <= 0 || n > len(c.in) {
		return c.in, nil
	}
	return c.in[:n], nil
}

// Discard drops n bytes of buffered input. Loop only.
func (c *conn) Discard(n int) (int, error) {
	if n >= len(c.in) {
		n = len(c.in)
		c.in = c.in[:0]
		return n, nil
	}
	c.in = append(c.in[:0], c.in[n:]...)
	return n, nil
}

// InboundBuffered is how many received bytes wait for the handler. Loop only.
func (c *conn) InboundBuffered() int { return len(c.in) }

// Write queues b for the writer goroutine; it never blocks on the network.
// Safe from any goroutine (gnet allows it on the loop only; this is laxer).
func (c *conn) Write(b []byte) (int, error) {
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
func (c *conn) AsyncWrite(b []byte, cb gnet.AsyncCallback) error {
	_, err := c.Write(b)
	if cb != nil {
		_ = c.loop.postFn(func() { _ = cb(c, err) })
	}
	return err
}

// OutboundBuffered is what waits to be written, for the slow-consumer
// policy. Safe from any goroutine.
func (c *conn) OutboundBuffered() int {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return len(c.out) + c.writing
}

// Close closes the connection from any goroutine (OnClose runs on the loop).
func (c *conn) Close() error {
	return c.loop.postFn(func() { c.closeOnLoop(nil) })
}

// Context returns the handler's per-connection state. Loop only.
func (c *conn) Context() any { return c.ctx }

// SetContext sets the handler's per-connection state. Loop only.
func (c *conn) SetContext(v any) { c.ctx = v }

// EventLoop returns the task loop the connection belongs to.
func (c *conn) EventLoop() gnet.EventLoop { return c.loop }

// LocalAddr is the listener side's address.
func (c *conn) LocalAddr() net.Addr { return c.raw.LocalAddr() }

// RemoteAddr is the client's address.
func (c *conn) RemoteAddr() net.Addr { return c.raw.RemoteAddr() }

// CertIdentity is the client's identity from its verified certificate, as
// the listener's IdentityFrom chose it, or "" (no certificate, or the
// listener takes no identity from certificates). Immutable: safe from any
// goroutine.
func (c *conn) CertIdentity() string { return c.identity }

func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}
