package wsloop

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/ternmq/tern/server/stdnet"
)

type connState uint8

const (
	stateHTTP    connState = iota // reading upgrade requests
	stateOpen                     // upgraded: frames
	stateClosing                  // the broker closed it: our close frame sent, waiting for the peer's (closeLinger)
	stateClosed                   // closed: no more traffic
	stateRefused                  // the broker's OnOpen refused it: no OnClose for the broker
)

// WebSocket close codes (RFC 6455 §7.4.1).
const (
	CloseNormal          = 1000
	CloseGoingAway       = 1001
	CloseProtocolError   = 1002
	CloseUnsupportedData = 1003
	CloseInvalidPayload  = 1007
	CloseMessageTooBig   = 1009
)

const (
	// plainBufSize is a pooled payload buffer: a few small packets, or the
	// start of a large one (it grows past this, and the bigger buffer goes
	// to the GC once consumed).
	plainBufSize = 8 << 10
	// slack is what a frame or message may carry beyond MaxPacketSize.
	slack = 16
	// compressMin is the smallest Write compressed with permessage-deflate:
	// below it the block overhead and CPU buy nothing.
	compressMin = 256
	// closeLinger bounds the closing handshake of a close the broker
	// decided: after it the socket closes whether or not the peer answered.
	closeLinger = 2 * time.Second
)

var plainPool = sync.Pool{New: func() any { b := make([]byte, 0, plainBufSize); return &b }}

// wsError is why framing ended a connection: the close code to send
// (0: none, the peer's close was answered already).
type wsError struct {
	code int
	why  string
}

func (e *wsError) Error() string { return "websocket: " + e.why }

// conn is a WebSocket connection on a gnet loop, as the broker sees it:
// the methods it calls on a gnet.Conn read and write the MQTT byte stream;
// the others (Fd, addresses, OutboundBuffered, EventLoop, socket options)
// are the lower connection's (gnet's, or tlsloop's for wss://), embedded.
type conn struct {
	gnet.Conn // lower: bytes on the wire (decrypted for wss://)
	e         *Engine
	l         *listener
	ctx       any
	proxied   net.Addr
	timer     *time.Timer // header / idle timer while in stateHTTP

	in    []byte // unmasked payload, not yet consumed by the broker
	inBuf *[]byte
	z     *[]byte // compressed message being collected (deflate), pooled

	// Frame being read.
	remaining uint64 // payload bytes left in the current data frame
	msgLen    int    // bytes of the current message so far (compressed ones with deflate)
	mask      [4]byte
	pos       uint8 // position in mask
	inFrame   bool  // a data frame's header was read; its payload follows
	fin       bool  // the current frame ends its message
	inMsg     bool  // between a message's first frame and its last
	zmsg      bool  // the current message is compressed

	state     connState
	deflate   bool // permessage-deflate negotiated
	more      bool // lower may hold input not framed yet
	idle      bool // stateHTTP: between keep-alive requests (idle timeout running)
	closeSent bool
	wrapped   bool  // lower is itself a wrapper (tlsloop): one Write per frame
	held      int32 // bytes of an incomplete request header counted in Engine.headerHeld

	hdr [10]byte  // frame header scratch for Write
	iov [2][]byte // header and payload for Writev
}

func newConn(e *Engine, lower gnet.Conn, l *listener) *conn {
	c := &conn{Conn: lower, e: e, l: l}
	_, c.wrapped = lower.(interface{ Unwrap() gnet.Conn })
	return c
}

// raw returns the gnet connection at the bottom of the wrappers, which
// gnet.EventLoop.Close needs.
func (c *conn) raw() gnet.Conn {
	var g gnet.Conn = c.Conn
	for {
		u, ok := g.(interface{ Unwrap() gnet.Conn })
		if !ok {
			return g
		}
		g = u.Unwrap()
	}
}

// Unwrap returns the lower connection (gnet's, or tlsloop's).
func (c *conn) Unwrap() gnet.Conn { return c.Conn }

// CertIdentity is the identity of a wss:// client certificate, if the
// lower connection (tlsloop's) has one. Loop only.
func (c *conn) CertIdentity() string {
	if ci, ok := c.Conn.(interface{ CertIdentity() string }); ok {
		return ci.CertIdentity()
	}
	return ""
}

// RemoteAddr is the client's address: the one its PROXY protocol header
// named, if any, else the lower connection's.
func (c *conn) RemoteAddr() net.Addr {
	if c.proxied != nil {
		return c.proxied
	}
	return c.Conn.RemoteAddr()
}

// Context returns the broker's per-connection state. Loop only.
func (c *conn) Context() any { return c.ctx }

// SetContext sets the broker's per-connection state. Loop only.
func (c *conn) SetContext(v any) { c.ctx = v }

// armTimer (re)starts the header timer: the connection is closed if it is
// still reading HTTP after d. Loop only.
func (c *conn) armTimer(d time.Duration) {
	if c.timer != nil {
		c.timer.Reset(d)
		return
	}
	c.timer = time.AfterFunc(d, func() {
		_ = c.EventLoop().Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
			c.timedOut()
			return nil
		}))
	})
}

func (c *conn) stopTimer() {
	if c.timer != nil {
		c.timer.Stop()
		c.timer = nil
	}
}

// timedOut runs on the loop when the timer fires: the header (or idle)
// timeout of a connection still reading HTTP, or the end of a closing
// handshake the peer did not finish.
func (c *conn) timedOut() {
	if c.timer == nil {
		return // upgraded or closed meanwhile
	}
	switch c.state {
	case stateHTTP:
		c.e.hdrTimeout.Add(1)
		what := "no complete upgrade request within the header timeout " + c.l.headerTimeout.String()
		if c.idle {
			what = "keep-alive HTTP connection idle for " + c.l.idleTimeout.String()
		}
		c.refuse(LimitHeaderTimeout, what)
		c.state = stateClosed // no close frame: it never was a WebSocket
	case stateClosing:
	default:
		return
	}
	_ = c.EventLoop().Close(c.raw())
}

func (c *conn) refuse(limit, detail string) {
	if c.e.cfg.Refused != nil {
		c.e.cfg.Refused(limit, c.RemoteAddr(), detail)
	}
}

// closed runs in OnClose, before the broker's (which does not run again
// for a connection in stateClosing: CloseHandshake ran it). Loop only.
func (c *conn) closed() {
	c.stopTimer()
	c.holdHeader(0)
	if c.state == stateOpen {
		c.e.open.Add(-1)
		if !c.closeSent { // gnet is stopping, or the peer went: say why if it can hear
			code, reason := c.closeStatus()
			c.sendClose(code, reason)
		}
	}
	c.state = stateClosed
	c.release()
	c.releaseZ()
}

// closeStatus is the close frame for a close the broker decided.
func (c *conn) closeStatus() (int, string) {
	if c.e.acc.Stopped() {
		return CloseGoingAway, "server shutting down"
	}
	if c.e.cfg.CloseStatus != nil {
		if code, reason := c.e.cfg.CloseStatus(c); code != 0 {
			return code, reason
		}
	}
	return CloseNormal, ""
}

// CloseHandshake closes the connection as the broker asked, the WebSocket
// way (RFC 6455 §7.1.2): it sends the close frame (Config.CloseStatus
// picks the code), runs the handler's OnClose at once — for the broker the
// connection is gone, as after gnet.EventLoop.Close — and keeps the socket
// until the peer answers with its close frame (or closes), at most
// closeLinger, discarding what else arrives. A peer that is still writing
// when the socket closes would otherwise get a reset instead of a clean
// close (MQTT.js reports EPIPE). It returns false, having done nothing, if
// the connection is not an open WebSocket (the caller then closes it).
// Loop only.
func (c *conn) CloseHandshake() bool {
	if c.state != stateOpen {
		return false
	}
	if !c.closeSent {
		code, reason := c.closeStatus()
		c.sendClose(code, reason)
	}
	c.state = stateClosing
	c.e.open.Add(-1)
	c.release()
	c.armTimer(closeLinger)
	c.e.cfg.Handler.OnClose(c, nil)
	return true
}

// sendClose writes a close frame (once).
func (c *conn) sendClose(code int, reason string) {
	if c.closeSent {
		return
	}
	c.closeSent = true
	if len(reason) > stdnet.WSMaxControl-2 {
		reason = reason[:stdnet.WSMaxControl-2]
	}
	var b [stdnet.WSMaxControl]byte
	binary.BigEndian.PutUint16(b[:], uint16(code))
	n := 2 + copy(b[2:], reason)
	_ = c.writeFrame(stdnet.WSOpClose, false, b[:n])
}

// onTraffic handles what arrived on the lower connection. Loop only.
func (c *conn) onTraffic() gnet.Action {
	switch c.state {
	case stateHTTP:
		if act := c.readHTTP(); act != gnet.None || c.state != stateOpen {
			return act
		}
		fallthrough // frames may follow the request in the same read
	case stateOpen:
		c.more = true
		return c.traffic()
	case stateClosing: // until the peer's close frame: read frames, drop data
		c.more = true
		err := c.decode()
		c.release()
		if err != nil {
			return gnet.Close
		}
		return gnet.None
	}
	_, _ = c.Conn.Discard(-1)
	return gnet.None
}

// traffic frames what arrived and hands the payload to the broker, again
// while the broker consumed everything and more input waits. Loop only.
func (c *conn) traffic() gnet.Action {
	for {
		err := c.decode()
		act := gnet.None
		if len(c.in) > 0 {
			act = c.e.cfg.Handler.OnTraffic(c)
		}
		c.releaseIfEmpty()
		if act != gnet.None {
			if c.CloseHandshake() {
				return gnet.None
			}
			return act
		}
		if err != nil {
			var we *wsError
			if errors.As(err, &we) && we.code != 0 {
				c.sendClose(we.code, we.why)
			}
			c.closeSent = true // nothing more goes out
			return gnet.Close
		}
		if !c.more || len(c.in) > 0 || c.state != stateOpen {
			return gnet.None
		}
	}
}

// header is a parsed frame header.
type header struct {
	n          int // header bytes, 0 while incomplete
	fin, rsv1  bool
	op         byte
	masked     bool
	length     uint64
	mask       [4]byte
	rsv23, bad bool
}

// parseHeader parses the frame header at the start of b (n == 0 while it
// is incomplete).
func parseHeader(b []byte) header {
	var h header
	if len(b) < 2 {
		return h
	}
	h.fin, h.rsv1, h.rsv23 = b[0]&stdnet.WSBitFin != 0, b[0]&stdnet.WSBitRSV1 != 0, b[0]&stdnet.WSBitsRSV23 != 0
	h.op, h.masked = b[0]&0x0F, b[1]&stdnet.WSBitMask != 0
	n := 2
	switch l := b[1] & 0x7F; l {
	case 126:
		if len(b) < 4 {
			return h
		}
		h.length, n = uint64(binary.BigEndian.Uint16(b[2:])), 4
	case 127:
		if len(b) < 10 {
			return h
		}
		h.length, n = binary.BigEndian.Uint64(b[2:]), 10
		h.bad = h.length>>63 != 0
	default:
		h.length = uint64(l)
	}
	if h.masked {
		if len(b) < n+4 {
			return h
		}
		copy(h.mask[:], b[n:n+4])
		n += 4
	}
	h.n = n
	return h
}

func protoErr(why string) error { return &wsError{code: CloseProtocolError, why: why} }

// decode moves frames' payload from the lower connection into c.in until
// none is left or MaxPlaintext is held, answering control frames. A
// non-nil error ends the connection (with its close code). Loop only.
func (c *conn) decode() error {
	if !c.more || (c.state != stateOpen && c.state != stateClosing) {
		return nil
	}
	limit := c.e.cfg.MaxPacketSize + slack
	for {
		if !c.inFrame {
			if len(c.in) >= c.e.cfg.MaxPlaintext {
				return nil // back-pressure: more stays set
			}
			avail := c.Conn.InboundBuffered()
			b, _ := c.Conn.Peek(min(avail, 14))
			h := parseHeader(b)
			if h.n == 0 {
				c.more = false
				return nil
			}
			switch {
			case !h.masked: // a client masks every frame (RFC 6455 §5.1)
				c.e.protoErr.Add(1)
				return protoErr("unmasked client frame")
			case h.rsv23, h.bad:
				c.e.protoErr.Add(1)
				return protoErr("reserved bits set")
			}
			if h.op >= stdnet.WSOpClose { // control frame: short, whole, never compressed (§5.5)
				if !h.fin || h.length > stdnet.WSMaxControl || h.rsv1 {
					c.e.protoErr.Add(1)
					return protoErr("bad control frame")
				}
				total := h.n + int(h.length)
				if avail < total {
					c.more = false
					return nil // wait for all of it
				}
				b, _ = c.Conn.Peek(total)
				var payload [stdnet.WSMaxControl]byte
				p := payload[:copy(payload[:], b[h.n:])]
				maskBytes(h.mask, 0, p)
				_, _ = c.Conn.Discard(total)
				if err := c.control(h.op, p); err != nil {
					return err
				}
				continue
			}
			switch {
			case h.op == stdnet.WSOpContinuation && !c.inMsg, h.op != stdnet.WSOpContinuation && c.inMsg:
				c.e.protoErr.Add(1)
				return protoErr("unexpected continuation or interleaved message")
			case h.op == stdnet.WSOpText:
				// MQTT is carried in binary frames only [MQTT-6.0.0-1].
				c.e.protoErr.Add(1)
				return &wsError{code: CloseUnsupportedData, why: "MQTT needs binary frames"}
			case h.op != stdnet.WSOpBinary && h.op != stdnet.WSOpContinuation:
				c.e.protoErr.Add(1)
				return protoErr("unknown opcode")
			case h.rsv1 && (!c.deflate || h.op == stdnet.WSOpContinuation):
				// RSV1 marks the first frame of a compressed message only
				// (RFC 7692 §6.1), and only once deflate was negotiated.
				c.e.protoErr.Add(1)
				return protoErr("RSV1 without permessage-deflate or on a continuation")
			case h.length > uint64(limit):
				return c.tooBig("frame of " + itoa(h.length) + " bytes")
			}
			_, _ = c.Conn.Discard(h.n)
			if h.op == stdnet.WSOpBinary {
				c.inMsg, c.zmsg, c.msgLen = true, h.rsv1, 0
			}
			c.remaining, c.mask, c.pos, c.fin, c.inFrame = h.length, h.mask, 0, h.fin, true
		}
		if c.remaining > 0 {
			avail := c.Conn.InboundBuffered()
			if avail == 0 {
				c.more = false
				return nil
			}
			take := int(min(c.remaining, uint64(avail)))
			if c.zmsg {
				if c.msgLen+take > limit {
					return c.tooBig("compressed message over " + itoa(uint64(limit)) + " bytes")
				}
			} else {
				room := c.e.cfg.MaxPlaintext - len(c.in)
				if room <= 0 {
					return nil // back-pressure
				}
				take = min(take, room)
			}
			b, _ := c.Conn.Peek(take)
			take = len(b)
			var dst []byte
			if c.zmsg {
				c.growZ(take)
				z := *c.z
				dst = z[len(z) : len(z)+take]
				*c.z = z[:len(z)+take]
			} else {
				c.grow(take)
				dst = c.in[len(c.in) : len(c.in)+take]
				c.in = c.in[:len(c.in)+take]
			}
			copy(dst, b)
			c.pos = maskBytes(c.mask, c.pos, dst)
			_, _ = c.Conn.Discard(take)
			c.remaining -= uint64(take)
			c.msgLen += take
			if c.remaining > 0 {
				continue
			}
		}
		c.inFrame = false
		if c.fin {
			c.inMsg = false
			if c.zmsg {
				c.zmsg = false
				if err := c.inflate(limit); err != nil {
					return err
				}
			}
		}
	}
}

// tooBig counts and refuses a frame or message over the limit: close 1009.
func (c *conn) tooBig(what string) error {
	c.e.big.Add(1)
	c.refuse(LimitMessageSize, what+": over max_packet_size")
	return &wsError{code: CloseMessageTooBig, why: "message too big"}
}

// control answers a ping with a pong and a close with a close (§5.5); a
// pong is ignored.
func (c *conn) control(op byte, p []byte) error {
	switch op {
	case stdnet.WSOpPing:
		return c.writeFrame(stdnet.WSOpPong, false, p)
	case stdnet.WSOpPong:
		return nil
	case stdnet.WSOpClose:
		code := CloseNormal
		if len(p) == 1 || (len(p) >= 2 && !validUTF8(p[2:])) {
			code = CloseProtocolError // §5.5.1: a code, then UTF-8 text
		}
		c.sendClose(code, "")
		return &wsError{why: "closed by the peer"}
	}
	c.e.protoErr.Add(1)
	return protoErr("unknown control opcode")
}

// maskBytes XORs b with the mask from position pos (RFC 6455 §5.3), eight
// bytes at a time, and returns the position after b.
func maskBytes(mask [4]byte, pos uint8, b []byte) uint8 {
	if len(b) >= 16 {
		var k [8]byte
		for i := range k {
			k[i] = mask[(int(pos)+i)&3]
		}
		key := binary.LittleEndian.Uint64(k[:])
		for len(b) >= 8 {
			binary.LittleEndian.PutUint64(b, binary.LittleEndian.Uint64(b)^key)
			b = b[8:]
		}
	}
	for i := range b {
		b[i] ^= mask[pos&3]
		pos++
	}
	return pos & 3
}

// grow makes room for n more payload bytes in c.in.
func (c *conn) grow(n int) {
	if c.in == nil {
		c.inBuf = plainPool.Get().(*[]byte)
		c.in = (*c.inBuf)[:0]
	}
	if cap(c.in)-len(c.in) >= n {
		return
	}
	bigger := make([]byte, len(c.in), max(2*cap(c.in), len(c.in)+n))
	copy(bigger, c.in)
	c.release()
	c.in = bigger
}

// release gives a pooled payload buffer back (others go to the GC).
func (c *conn) release() {
	if c.inBuf != nil {
		*c.inBuf = (*c.inBuf)[:0]
		plainPool.Put(c.inBuf)
		c.inBuf = nil
	}
	c.in = nil
}

func (c *conn) releaseIfEmpty() {
	if len(c.in) == 0 && c.in != nil {
		c.release()
	}
}

// Peek returns payload bytes (n ≤ 0: all of them). Loop only.
func (c *conn) Peek(n int) ([]byte, error) {
	if err := c.decode(); err != nil {
		c.failLater(err)
	}
	if n <= 0 || n > len(c.in) {
		return c.in, nil
	}
	return c.in[:n], nil
}

// failLater records a framing error met outside a read event (the broker
// peeking): the connection is closed with its close code at once.
func (c *conn) failLater(err error) {
	var we *wsError
	if errors.As(err, &we) && we.code != 0 {
		c.sendClose(we.code, we.why)
	}
	c.closeSent = true
	_ = c.EventLoop().Close(c.raw())
}

// Discard drops n payload bytes (n ≤ 0 or past the end: all). Loop only.
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

// Next returns and consumes n payload bytes (n ≤ 0: all) as a copy.
func (c *conn) Next(n int) ([]byte, error) {
	b, _ := c.Peek(n)
	out := append([]byte(nil), b...)
	_, _ = c.Discard(len(out))
	if len(out) == 0 {
		return nil, io.ErrShortBuffer
	}
	return out, nil
}

// Read reads payload bytes. Loop only.
func (c *conn) Read(p []byte) (int, error) {
	b, _ := c.Peek(len(p))
	n := copy(p, b)
	_, _ = c.Discard(n)
	if n == 0 && len(p) > 0 {
		return 0, io.ErrShortBuffer
	}
	return n, nil
}

// InboundBuffered is how many payload bytes wait. Loop only.
func (c *conn) InboundBuffered() int {
	if err := c.decode(); err != nil {
		c.failLater(err)
	}
	return len(c.in)
}

// Write sends b as one binary frame (compressed with permessage-deflate
// from compressMin bytes). Loop only (as gnet's Write).
func (c *conn) Write(b []byte) (int, error) {
	if c.state != stateOpen || c.closeSent {
		return 0, net.ErrClosed
	}
	if c.deflate && len(b) >= compressMin {
		if err := c.writeCompressed(b); err != nil {
			return 0, err
		}
		return len(b), nil
	}
	if err := c.writeFrame(stdnet.WSOpBinary, false, b); err != nil {
		return 0, err
	}
	return len(b), nil
}

// Writev sends the concatenation of bs as one frame. Loop only.
func (c *conn) Writev(bs [][]byte) (int, error) {
	if len(bs) == 1 {
		return c.Write(bs[0])
	}
	var all []byte
	for _, b := range bs {
		all = append(all, b...)
	}
	return c.Write(all)
}

// writeFrame writes one final, unmasked frame (a server never masks,
// §5.1): its header and p in one writev into gnet's output, or, over
// tlsloop, in one Write (one TLS record rather than two).
func (c *conn) writeFrame(op byte, rsv1 bool, p []byte) error {
	h := c.hdr[:0]
	b0 := stdnet.WSBitFin | op
	if rsv1 {
		b0 |= stdnet.WSBitRSV1
	}
	h = append(h, b0)
	switch n := len(p); {
	case n < 126:
		h = append(h, byte(n))
	case n <= 0xFFFF:
		h = append(h, 126, byte(n>>8), byte(n))
	default:
		h = append(h, 127)
		h = binary.BigEndian.AppendUint64(h, uint64(n))
	}
	if c.wrapped {
		bp := plainPool.Get().(*[]byte)
		buf := append(append((*bp)[:0], h...), p...)
		_, err := c.Conn.Write(buf)
		if cap(buf) <= 4*plainBufSize {
			*bp = buf[:0]
			plainPool.Put(bp)
		}
		return err
	}
	c.iov[0], c.iov[1] = h, p
	_, err := c.Conn.Writev(c.iov[:])
	c.iov[0], c.iov[1] = nil, nil // keep no reference to the broker's buffer
	return err
}

// AsyncWrite sends b as a frame on the loop; safe from any goroutine. b
// is copied.
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

// ReadFrom and WriteTo are not used by the broker; they would bypass the
// framing.
func (c *conn) ReadFrom(io.Reader) (int64, error) { return 0, errors.ErrUnsupported }
func (c *conn) WriteTo(io.Writer) (int64, error)  { return 0, errors.ErrUnsupported }

// SendTo is for datagrams.
func (c *conn) SendTo([]byte, net.Addr) (int, error) { return 0, errors.ErrUnsupported }

func itoa(v uint64) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + v%10)
		v /= 10
		if v == 0 {
			return string(b[i:])
		}
	}
}
