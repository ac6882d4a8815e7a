//go:build linux

package bench

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ternmq/tern/codec"
)

// TLS on the event loops (Config.TLS). A TLS client is the same conn plus a
// tlsState: crypto/tls's record layer runs over tlsPipe, an in-memory
// net.Conn whose input the loop fills from the socket and whose output the
// loop writes to the socket. No cryptography is done here.
//
// The handshake is the one part crypto/tls cannot resume after a "would
// block" (its error is sticky), so it runs on a short-lived goroutine per
// connection in its handshake, blocking in tlsPipe.Read until the loop
// feeds it and posting the loop when it has output or has finished. The
// number of such goroutines is bounded by the connections in their connect
// phase (Config.Parallel). After the handshake only the loop touches the
// tls.Conn: tlsPipe.Read then returns errWouldBlock (a temporary net.Error,
// which crypto/tls does not make sticky) when the loop has nothing more.
//
// Flow on the loop after the handshake: readFrom → pipe.feed(ciphertext) →
// tls.Conn.Read until errWouldBlock → consume(plaintext); flush → tls.Conn.Write
// (c.out plaintext → pipe.wire ciphertext) → write(2) of pipe.wire.

// errWouldBlock is what tlsPipe.Read returns after the handshake when the
// loop has fed nothing more: crypto/tls keeps a partial record and returns.
var errWouldBlock = &net.OpError{Op: "read", Net: "tlspipe", Err: wouldBlock{}}

type wouldBlock struct{}

func (wouldBlock) Error() string   { return "would block" }
func (wouldBlock) Timeout() bool   { return true }
func (wouldBlock) Temporary() bool { return true }

// tlsState is the TLS side of one connection.
type tlsState struct {
	pipe  *tlsPipe
	conn  *tls.Conn
	sock  []byte // ciphertext the socket did not take yet
	start int64  // when the handshake started (TCP connected)
}

// tlsPipe is the transport under one tls.Conn. mu guards everything: during
// the handshake the handshake goroutine and the loop share it; afterwards
// only the loop uses it (the lock is then uncontended).
type tlsPipe struct {
	mu       sync.Mutex
	cond     sync.Cond
	in       []byte // ciphertext read from the socket, not yet consumed by crypto/tls
	wire     []byte // ciphertext crypto/tls wrote, not yet written to the socket
	blocking bool   // handshake: Read waits for input instead of errWouldBlock
	closed   bool
	remote   net.Addr
	// onOutput is called (without mu held) after a Write while blocking:
	// it posts the loop to write pipe.wire to the socket.
	onOutput func()
	posted   bool // an onOutput post is pending
}

func newTLSPipe(remote net.Addr, onOutput func()) *tlsPipe {
	p := &tlsPipe{blocking: true, remote: remote, onOutput: onOutput}
	p.cond.L = &p.mu
	return p
}

// Read returns fed ciphertext; with none it waits (handshake) or returns
// errWouldBlock (after it).
func (p *tlsPipe) Read(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for len(p.in) == 0 {
		if p.closed {
			return 0, net.ErrClosed
		}
		if !p.blocking {
			return 0, errWouldBlock
		}
		p.cond.Wait()
	}
	n := copy(b, p.in)
	p.in = p.in[:copy(p.in, p.in[n:])]
	return n, nil
}

// Write queues ciphertext for the socket. It never blocks.
func (p *tlsPipe) Write(b []byte) (int, error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return 0, net.ErrClosed
	}
	p.wire = append(p.wire, b...)
	post := p.blocking && !p.posted
	if post {
		p.posted = true
	}
	p.mu.Unlock()
	if post {
		p.onOutput()
	}
	return len(b), nil
}

// feed appends ciphertext read from the socket and wakes a waiting handshake.
func (p *tlsPipe) feed(b []byte) {
	p.mu.Lock()
	p.in = append(p.in, b...)
	p.mu.Unlock()
	p.cond.Signal()
}

// takeWire moves the pending ciphertext to dst (the socket buffer) and
// returns it.
func (p *tlsPipe) takeWire(dst []byte) []byte {
	p.mu.Lock()
	dst = append(dst, p.wire...)
	p.wire = p.wire[:0]
	p.posted = false
	p.mu.Unlock()
	return dst
}

// hasWire reports whether crypto/tls left output to write.
func (p *tlsPipe) hasWire() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.wire) > 0
}

// setBlocking switches Read between waiting (handshake) and errWouldBlock.
func (p *tlsPipe) setBlocking(b bool) {
	p.mu.Lock()
	p.blocking = b
	p.mu.Unlock()
}

// Close ends a handshake still waiting for input.
func (p *tlsPipe) Close() error {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.cond.Broadcast()
	return nil
}

// LocalAddr, RemoteAddr and the deadline methods complete net.Conn;
// RemoteAddr is also crypto/tls's session-cache key when no ServerName is
// set.
func (p *tlsPipe) LocalAddr() net.Addr              { return p.remote }
func (p *tlsPipe) RemoteAddr() net.Addr             { return p.remote }
func (p *tlsPipe) SetDeadline(time.Time) error      { return nil }
func (p *tlsPipe) SetReadDeadline(time.Time) error  { return nil }
func (p *tlsPipe) SetWriteDeadline(time.Time) error { return nil }

// startTLS begins c's TLS handshake once its TCP connect completed, on a
// goroutine of its own (see above); the loop goes on.
func (l *loop) startTLS(c *conn, now int64) {
	c.state = stTLS
	st := &tlsState{start: now}
	st.pipe = newTLSPipe(c.conf.addr, func() { l.post(func(l *loop) { l.tlsOutput(c, st) }) })
	st.conn = tls.Client(st.pipe, c.conf.tls)
	c.tls = st
	go func() {
		err := st.conn.Handshake()
		l.post(func(l *loop) { l.tlsDone(c, st, err) })
	}()
}

// tlsOutput runs on the loop when the handshake goroutine wrote records.
func (l *loop) tlsOutput(c *conn, st *tlsState) {
	if c.tls == st && c.state == stTLS {
		l.markDirty(c, time.Now().UnixNano())
	}
}

// tlsDone runs on the loop when c's handshake ended: on success the
// connection goes on with CONNECT over TLS.
func (l *loop) tlsDone(c *conn, st *tlsState, err error) {
	if c.tls != st || c.state != stTLS {
		return // closed (timed out) meanwhile
	}
	if err != nil {
		l.fail(c, "TLS handshake: "+err.Error())
		return
	}
	now := time.Now().UnixNano()
	st.pipe.setBlocking(false) // the loop owns the tls.Conn from here
	l.tlsLat.Record(now - st.start)
	cs := st.conn.ConnectionState()
	if l.tlsGroups == nil {
		l.tlsGroups = map[string]int64{}
	}
	l.tlsGroups[cs.CurveID.String()+" "+tls.VersionName(cs.Version)]++
	if cs.DidResume {
		l.tlsResumed++
	} else {
		l.tlsFull++
	}
	c.state = stConnack
	l.sendConnect(c)
	l.tlsRead(c, nil, now) // records that arrived after the handshake's last read
}

// tlsRead feeds ciphertext read from c's socket to crypto/tls and consumes
// the plaintext it yields. During the handshake the handshake goroutine
// reads it instead.
func (l *loop) tlsRead(c *conn, raw []byte, now int64) {
	st := c.tls
	if len(raw) > 0 {
		st.pipe.feed(raw)
	}
	if c.state == stTLS {
		return
	}
	for c.state != stClosed && (c.lim == nil || !c.lim.paused) {
		n, err := st.conn.Read(l.plain)
		if n > 0 {
			l.consume(c, l.plain[:n])
		}
		if err == nil {
			continue
		}
		if errors.Is(err, errWouldBlock) {
			break
		}
		if errors.Is(err, io.EOF) {
			l.lostConn(c, "closed by broker (TLS close_notify)")
		} else {
			l.lostConn(c, "TLS: "+err.Error())
		}
		return
	}
	if c.state != stClosed && st.pipe.hasWire() {
		l.markDirty(c, now) // crypto/tls answered something (an alert, a key update)
	}
}

// seal encrypts c's queued plaintext into TLS records and moves every
// pending record to c.tls.sock, the bytes for the socket. It reports false
// when the connection was lost.
func (l *loop) seal(c *conn) bool {
	st := c.tls
	if c.state >= stConnack && len(c.out) > 0 {
		if _, err := st.conn.Write(c.out); err != nil {
			l.lostConn(c, "TLS write: "+err.Error())
			return false
		}
		c.out = c.out[:0]
	}
	st.sock = st.pipe.takeWire(st.sock)
	return true
}

// tlsTarget is the TLS configuration of one broker address.
type tlsTarget struct {
	tls  *tls.Config
	addr net.Addr
}

// prepareTLS gives every broker address its TLS configuration and, with
// session resumption, primes the shared session cache with one full
// handshake and MQTT CONNECT per broker, so that the measured clients
// resume. It also fails early, with crypto/tls's reason, when the broker's
// certificate does not verify.
func prepareTLS(ctx context.Context, cfg *Config, brokers [][]target) error {
	var cache tls.ClientSessionCache
	if cfg.TLSOptions.Resume {
		cache = tls.NewLRUClientSessionCache(64)
	}
	confs := map[string]*tlsTarget{}
	for _, set := range brokers {
		for i := range set {
			t := &set[i]
			if tt := confs[t.addr]; tt != nil {
				t.conf = tt
				continue
			}
			c, err := cfg.TLSOptions.clientConfig(t.addr, cache)
			if err != nil {
				return err
			}
			t.conf = &tlsTarget{tls: c, addr: tcpAddrOf(t.sa)}
			confs[t.addr] = t.conf
			if cache != nil {
				if err := primeTLS(ctx, cfg, t.addr, c); err != nil {
					return fmt.Errorf("bench: TLS to %s: %w", t.addr, err)
				}
			}
		}
	}
	return nil
}

// primeTLS connects once with conf, sends CONNECT and reads the CONNACK
// (which makes crypto/tls process the session tickets sent before it).
func primeTLS(ctx context.Context, cfg *Config, addr string, conf *tls.Config) error {
	d := tls.Dialer{Config: conf, NetDialer: &net.Dialer{Timeout: cfg.ConnectTimeout}}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(cfg.ConnectTimeout))
	p := codec.Connect{ProtocolName: []byte("MQTT"), ProtocolVersion: cfg.Protocol, CleanStart: true,
		ClientID: []byte(cfg.ClientIDPrefix + "tls-prime")}
	if cfg.Username != "" {
		p.UsernameFlag, p.Username = true, []byte(cfg.Username)
	}
	if cfg.Password != "" {
		p.PasswordFlag, p.Password = true, []byte(cfg.Password)
	}
	if _, err := nc.Write(p.Append(nil)); err != nil {
		return err
	}
	var b [64]byte
	if _, err := io.ReadAtLeast(nc, b[:], 4); err != nil {
		return fmt.Errorf("no CONNACK: %w", err)
	}
	if codec.PacketType(b[0]>>4) != codec.CONNACK {
		return fmt.Errorf("first packet type %d, want CONNACK", b[0]>>4)
	}
	var d0 codec.Disconnect
	nc.Write(d0.Append(nil, cfg.Protocol))
	return nil
}

// tcpAddrOf converts a socket address back to a net.Addr.
func tcpAddrOf(sa unix.Sockaddr) net.Addr {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return &net.TCPAddr{IP: net.IP(a.Addr[:]).To16(), Port: a.Port}
	case *unix.SockaddrInet6:
		return &net.TCPAddr{IP: net.IP(a.Addr[:]), Port: a.Port}
	}
	return &net.TCPAddr{}
}
