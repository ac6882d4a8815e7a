package stdnet

import (
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"
)

// conn adapts a net.Conn to gnet.Conn. The embedded interface is nil:
// only the methods the broker calls are implemented (a test lists them).
type conn struct {
	gnet.Conn
	nc   net.Conn
	loop *taskLoop
	h    gnet.EventHandler
	t    *Transport
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

func newConn(nc net.Conn, l *taskLoop, h gnet.EventHandler, maxPacket int) *conn {
	c := &conn{nc: nc, loop: l, h: h, rlimit: 2*maxPacket + 64<<10}
	c.rcond = sync.NewCond(&c.rmu)
	c.wcond = sync.NewCond(&c.wmu)
	return c
}

// start opens the connection on its loop and starts its goroutines.
func (c *conn) start() {
	_ = c.loop.post(func() {
		if _, act := c.h.OnOpen(c); act == gnet.Close {
			c.closeOnLoop(nil)
		}
	})
	go c.reader()
	go c.writer()
}

func (c *conn) reader() {
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
	if act := c.h.OnTraffic(c); act == gnet.Close {
		c.closeOnLoop(nil)
	}
}

func (c *conn) writer() {
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
func (c *conn) closeOnLoop(err error) {
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

// Write queues b for the writer goroutine; it never blocks on the network.
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
		_ = c.loop.post(func() { _ = cb(c, err) })
	}
	return err
}

// OutboundBuffered is what waits to be written, for the slow-consumer policy.
func (c *conn) OutboundBuffered() int {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return len(c.out) + c.writing
}

// Close closes the connection from any goroutine.
func (c *conn) Close() error {
	return c.loop.post(func() { c.closeOnLoop(nil) })
}

// Context returns the broker's per-connection state. Loop only.
func (c *conn) Context() any { return c.ctx }

// SetContext sets the broker's per-connection state. Loop only.
func (c *conn) SetContext(v any) { c.ctx = v }

// EventLoop returns the task loop the connection belongs to.
func (c *conn) EventLoop() gnet.EventLoop { return c.loop }

// LocalAddr is the listener side's address.
func (c *conn) LocalAddr() net.Addr { return c.nc.LocalAddr() }

// RemoteAddr is the client's address.
func (c *conn) RemoteAddr() net.Addr { return c.nc.RemoteAddr() }
