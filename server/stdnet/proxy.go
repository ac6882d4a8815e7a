package stdnet

import (
	"net"
	"sync"

	"github.com/ternmq/tern/internal/proxyproto"
)

// PROXY protocol on TLS and WebSocket listeners (TLSListener.ProxyProtocol,
// WebSocketListener.ProxyProtocol): the header a load balancer sends is
// read from the socket before the TLS handshake or the HTTP request,
// byte-exactly (proxyproto.ReadHeader), so crypto/tls and net/http read
// the rest of the stream untouched. The connection's RemoteAddr is then the
// address the header names, which the broker uses everywhere (logs,
// limits, the failed-login limiter, the admin listing). A connection
// without a valid header is closed and reported to Config.ProxyRefused.

// readProxy reads raw's PROXY header within HandshakeTimeout: the conn to
// go on with (reporting the proxied address), or false once raw is closed
// and refused.
func (t *Transport) readProxy(raw net.Conn) (net.Conn, bool) {
	addr, err := proxyproto.ReadHeader(raw, t.cfg.HandshakeTimeout)
	if err != nil {
		_ = raw.Close()
		if !t.stopped.Load() && t.cfg.ProxyRefused != nil {
			t.cfg.ProxyRefused(raw.RemoteAddr(), err)
		}
		return nil, false
	}
	if addr == nil {
		return raw, true // LOCAL / UNKNOWN: the peer's own address
	}
	return &proxyproto.Conn{Conn: raw, Remote: addr}, true
}

// proxyListener wraps a WebSocket listener's TCP listener: each accepted
// conn reads its PROXY header on its first Read, i.e. on the HTTP
// server's goroutine for that connection, under the deadline net/http set
// for the TLS handshake or the request headers, never in the accept loop.
type proxyListener struct {
	net.Listener
	t *Transport
}

func (l proxyListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &lazyProxyConn{Conn: c, t: l.t}, nil
}

// lazyProxyConn reads the PROXY header before the first byte it returns.
// Its reads are sequential (net/http's, then after the upgrade the
// connection's reader), as are those of any net.Conn reader.
type lazyProxyConn struct {
	net.Conn
	t    *Transport
	once sync.Once
	addr net.Addr // the proxied address; nil: the peer's
	err  error    // the header was not valid: every Read fails with it
}

func (c *lazyProxyConn) Read(p []byte) (int, error) {
	c.once.Do(c.readHeader)
	if c.err != nil {
		return 0, c.err
	}
	return c.Conn.Read(p)
}

func (c *lazyProxyConn) readHeader() {
	t := c.t
	var err error
	c.addr, err = proxyproto.ReadHeader(c.Conn, t.cfg.HandshakeTimeout)
	if err != nil {
		c.err = err
		_ = c.Conn.Close()
		if !t.stopped.Load() && t.cfg.ProxyRefused != nil {
			t.cfg.ProxyRefused(c.Conn.RemoteAddr(), err)
		}
	}
}

// RemoteAddr is the proxied address once the header was read. The reads
// that set it happen before the upgrade hands the connection on.
func (c *lazyProxyConn) RemoteAddr() net.Addr {
	if c.addr != nil {
		return c.addr
	}
	return c.Conn.RemoteAddr()
}

// proxyFailed: the conn (or the one under a TLS conn) was refused for its
// PROXY header, already counted as such.
func proxyFailed(c net.Conn) bool {
	if tc, ok := c.(interface{ NetConn() net.Conn }); ok {
		c = tc.NetConn()
	}
	lc, ok := c.(*lazyProxyConn)
	return ok && lc.err != nil
}
