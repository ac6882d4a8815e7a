package server

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"strconv"
	"strings"

	"github.com/panjf2000/gnet/v2"
)

// PROXY protocol (HAProxy's spec, versions 1 and 2) on a plain TCP
// listener with ListenerSettings.ProxyProtocol: a load balancer in front
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

const (
	proxyV1Max     = 107 // "PROXY TCP6 <39> <39> <5> <5>\r\n" [proxy-protocol §2.1]
	proxyV2MaxBody = 512 // addresses (at most 216) and TLVs we read past
)

var proxyV2Sig = []byte("\r\n\r\n\x00\r\nQUIT\n")

// errProxyIncomplete: more bytes are needed.
var errProxyIncomplete = errors.New("incomplete PROXY header")

// parseProxyHeader parses the PROXY header at the start of b. It returns
// the header's length and the source address it names (nil: keep the peer
// address), errProxyIncomplete while b is a valid prefix, or another error
// for a header that is not valid.
func parseProxyHeader(b []byte) (int, net.Addr, error) {
	switch {
	case len(b) == 0:
		return 0, nil, errProxyIncomplete
	case b[0] == '\r':
		return parseProxyV2(b)
	case b[0] == 'P':
		return parseProxyV1(b)
	}
	return 0, nil, errors.New("not a PROXY protocol header (first byte " + strconv.Quote(string(b[:1])) + ")")
}

func parseProxyV1(b []byte) (int, net.Addr, error) {
	const prefix = "PROXY "
	if n := min(len(b), len(prefix)); string(b[:n]) != prefix[:n] {
		return 0, nil, errors.New("not a PROXY protocol header")
	}
	end := bytes.Index(b[:min(len(b), proxyV1Max)], []byte("\r\n"))
	if end < 0 {
		if len(b) >= proxyV1Max {
			return 0, nil, errors.New("PROXY v1 header longer than 107 bytes")
		}
		return 0, nil, errProxyIncomplete
	}
	f := strings.Split(string(b[len(prefix):end]), " ")
	if len(f) >= 1 && f[0] == "UNKNOWN" {
		return end + 2, nil, nil // the sender cannot tell: keep the peer address
	}
	if len(f) != 5 || (f[0] != "TCP4" && f[0] != "TCP6") {
		return 0, nil, errors.New("PROXY v1 header: want TCP4|TCP6 <src> <dst> <sport> <dport>")
	}
	src, dst := net.ParseIP(f[1]), net.ParseIP(f[2])
	v4 := f[0] == "TCP4"
	if src == nil || dst == nil || (src.To4() != nil) != v4 || (dst.To4() != nil) != v4 ||
		(!v4 && (strings.Contains(f[1], ".") || strings.Contains(f[2], "."))) {
		return 0, nil, errors.New("PROXY v1 header: bad " + f[0] + " address")
	}
	sport, err1 := proxyPort(f[3])
	_, err2 := proxyPort(f[4])
	if err1 != nil || err2 != nil {
		return 0, nil, errors.New("PROXY v1 header: bad port")
	}
	return end + 2, &net.TCPAddr{IP: src, Port: sport}, nil
}

// proxyPort parses a v1 port: decimal, 0–65535, no sign or leading zero.
func proxyPort(s string) (int, error) {
	p, err := strconv.Atoi(s)
	if err != nil || p < 0 || p > 65535 || s != strconv.Itoa(p) {
		return 0, errors.New("bad port")
	}
	return p, nil
}

func parseProxyV2(b []byte) (int, net.Addr, error) {
	if n := min(len(b), len(proxyV2Sig)); !bytes.Equal(b[:n], proxyV2Sig[:n]) {
		return 0, nil, errors.New("not a PROXY protocol header")
	}
	if len(b) < 16 {
		return 0, nil, errProxyIncomplete
	}
	verCmd, fam := b[12], b[13]
	body := int(binary.BigEndian.Uint16(b[14:16]))
	if verCmd>>4 != 2 {
		return 0, nil, errors.New("PROXY v2 header: version " + strconv.Itoa(int(verCmd>>4)))
	}
	if body > proxyV2MaxBody {
		return 0, nil, errors.New("PROXY v2 header: " + strconv.Itoa(body) + " bytes of addresses and TLVs, more than 512")
	}
	if len(b) < 16+body {
		return 0, nil, errProxyIncomplete
	}
	n, a := 16+body, b[16:16+body]
	switch verCmd & 0xF {
	case 0: // LOCAL: the balancer's own connection
		return n, nil, nil
	case 1: // PROXY
	default:
		return 0, nil, errors.New("PROXY v2 header: unknown command")
	}
	switch fam {
	case 0x11: // TCP over IPv4
		if len(a) < 12 {
			return 0, nil, errors.New("PROXY v2 header: short IPv4 addresses")
		}
		return n, &net.TCPAddr{IP: net.IP(bytes.Clone(a[0:4])), Port: int(binary.BigEndian.Uint16(a[8:10]))}, nil
	case 0x21: // TCP over IPv6
		if len(a) < 36 {
			return 0, nil, errors.New("PROXY v2 header: short IPv6 addresses")
		}
		return n, &net.TCPAddr{IP: net.IP(bytes.Clone(a[0:16])), Port: int(binary.BigEndian.Uint16(a[32:34]))}, nil
	}
	// UNSPEC, UDP, Unix sockets: no TCP client address to use [spec §2.2:
	// the receiver keeps the connection's own address].
	return n, nil, nil
}

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
	c.proxyWait = false
	if addr != nil {
		c.coldState().proxied = addr
	}
	return gnet.None, true
}
