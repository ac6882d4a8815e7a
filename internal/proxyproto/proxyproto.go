// Package proxyproto parses the PROXY protocol header (HAProxy's spec,
// versions 1 and 2) a load balancer sends before a client's first byte.
// It is a leaf: the broker's gnet path parses from its input buffer with
// Parse, the TLS and WebSocket transports read from a net.Conn with
// ReadHeader.
//
// Bounds: a v1 header is one line of at most V1Max bytes; a v2 header is
// 16 bytes plus at most V2MaxBody bytes of addresses and TLVs (TLVs are
// skipped). A v2 LOCAL command and v1 UNKNOWN carry no client address.
package proxyproto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// Header bounds.
const (
	V1Max     = 107 // "PROXY TCP6 <39> <39> <5> <5>\r\n" [proxy-protocol §2.1]
	V2MaxBody = 512 // addresses (at most 216) and TLVs we read past
)

// V2Sig is the 12-byte signature a v2 header starts with.
var V2Sig = []byte("\r\n\r\n\x00\r\nQUIT\n")

// ErrIncomplete is Parse's answer while its input is a valid prefix of a
// header: more bytes are needed.
var ErrIncomplete = errors.New("incomplete PROXY header")

// Parse parses the PROXY header at the start of b. It returns
// the header's length and the source address it names (nil: keep the peer
// address), ErrIncomplete while b is a valid prefix, or another error
// for a header that is not valid.
func Parse(b []byte) (int, net.Addr, error) {
	switch {
	case len(b) == 0:
		return 0, nil, ErrIncomplete
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
	end := bytes.Index(b[:min(len(b), V1Max)], []byte("\r\n"))
	if end < 0 {
		if len(b) >= V1Max {
			return 0, nil, errors.New("PROXY v1 header longer than 107 bytes")
		}
		return 0, nil, ErrIncomplete
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
	if n := min(len(b), len(V2Sig)); !bytes.Equal(b[:n], V2Sig[:n]) {
		return 0, nil, errors.New("not a PROXY protocol header")
	}
	if len(b) < 16 {
		return 0, nil, ErrIncomplete
	}
	verCmd, fam := b[12], b[13]
	body := int(binary.BigEndian.Uint16(b[14:16]))
	if verCmd>>4 != 2 {
		return 0, nil, errors.New("PROXY v2 header: version " + strconv.Itoa(int(verCmd>>4)))
	}
	if body > V2MaxBody {
		return 0, nil, errors.New("PROXY v2 header: " + strconv.Itoa(body) + " bytes of addresses and TLVs, more than 512")
	}
	if len(b) < 16+body {
		return 0, nil, ErrIncomplete
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

// ReadHeader reads the PROXY header nc starts with, byte-exactly: not one
// byte past it is consumed, so what follows (a TLS ClientHello, an HTTP
// request) is read from nc as if no header had been there. The whole read
// is bounded by timeout: nc's read deadline is set to now+timeout and left
// so (the caller sets the next one; a header followed by nothing is then
// still bounded). It returns
// the source address the header names, nil to keep the peer's.
//
// A v1 header is read a byte at a time (at most V1Max reads, once per
// connection); a v2 header in two reads of known length.
func ReadHeader(nc net.Conn, timeout time.Duration) (net.Addr, error) {
	_ = nc.SetReadDeadline(time.Now().Add(timeout))
	var buf [16 + V2MaxBody]byte
	if _, err := io.ReadFull(nc, buf[:1]); err != nil {
		return nil, err
	}
	n := 1
	if buf[0] == '\r' {
		if _, err := io.ReadFull(nc, buf[1:16]); err != nil {
			return nil, err
		}
		if _, addr, err := Parse(buf[:16]); err != ErrIncomplete {
			return addr, err
		}
		body := int(binary.BigEndian.Uint16(buf[14:16])) // ≤ V2MaxBody: Parse checked
		if _, err := io.ReadFull(nc, buf[16:16+body]); err != nil {
			return nil, err
		}
		_, addr, err := Parse(buf[:16+body])
		return addr, err
	}
	for {
		_, addr, err := Parse(buf[:n])
		if err != ErrIncomplete {
			return addr, err
		}
		if _, err := io.ReadFull(nc, buf[n:n+1]); err != nil {
			return nil, err
		}
		n++
	}
}

// Conn is a connection whose PROXY header was read: RemoteAddr reports
// the address the header named (the peer's when it named none).
type Conn struct {
	net.Conn
	Remote net.Addr
}

// RemoteAddr is the proxied client's address.
func (c *Conn) RemoteAddr() net.Addr { return c.Remote }
