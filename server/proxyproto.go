package server

import (
	"github.com/panjf2000/gnet/v2"

	"github.com/ternmq/tern/internal/proxyproto"
)

// PROXY protocol (HAProxy's spec, versions 1 and 2; the parser is
// internal/proxyproto's) on a plain TCP listener with
// ListenerSettings.ProxyProtocol (TLS and WebSocket listeners: their
// transports read the header, see stdnet/proxy.go, and report the proxied
// address as the conn's RemoteAddr): a load balancer in front
// of the broker sends, before the client's first byte, a header naming the
// client's address. The broker reads it before any MQTT (onTraffic), and
// from then on that address is the client's (client.remoteAddr): in logs,
// refusals, ConnectInfo.Remote and so the failed-login limiter.
//
// Bounds: a v1 header is one line of at most 107 bytes; a v2 header is 16
// bytes plus at most proxyV2MaxBody bytes of addresses and TLVs (TLVs are
// skipped). Until the header is complete the connection's connect timeout
// runs as usual, so a peer that never finishes it is closed by the same
// timer as one that never sends CONNECT. A connection whose first bytes
// are not a valid header (a client connecting directly, bypassing the
// balancer, or garbage) is closed at once, counted under limit
// proxy_protocol and logged, rate-limited.
//
// A v2 LOCAL command (the balancer's own health check) and v1 UNKNOWN
// carry no client address: the connection keeps its peer address.

// parseProxyHeader and errProxyIncomplete are internal/proxyproto's,
// shared with the TLS and WebSocket transports.
var (
	parseProxyHeader   = proxyproto.Parse
	errProxyIncomplete = proxyproto.ErrIncomplete
	proxyV2Sig         = proxyproto.V2Sig
)

const proxyV2MaxBody = proxyproto.V2MaxBody

// readProxyHeader consumes the PROXY header a ProxyProtocol listener's
// connection starts with. done reports that it was read (and the rest of
// the input may be MQTT); act is gnet.Close for an invalid header. Runs
// on c's loop, from onTraffic.
func (c *client) readProxyHeader() (act gnet.Action, done bool) {
	buf, _ := c.conn.Peek(min(c.conn.InboundBuffered(), 16+proxyV2MaxBody))
	n, addr, err := parseProxyHeader(buf)
	if err == errProxyIncomplete {
		return gnet.None, false
	}
	if err != nil {
		srv := c.loop.srv
		srv.refuse(limitProxyHeader, "", "", remoteString(c.conn), "closed: "+err.Error())
		c.setCloseWhy("invalid PROXY protocol header: " + err.Error())
		return gnet.Close, false
	}
	_, _ = c.conn.Discard(n)
	c.flags.clear(flagProxyWait)
	if addr != nil {
		c.coldState().proxied = addr
		c.hasProxied = true
	}
	return gnet.None, true
}
