package server

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ternmq/tern/codec"
	"github.com/ternmq/tern/server/auth"
)

func proxyV2(cmd, fam byte, addrs []byte, tlv []byte) []byte {
	b := append([]byte(nil), proxyV2Sig...)
	b = append(b, 0x20|cmd, fam)
	b = binary.BigEndian.AppendUint16(b, uint16(len(addrs)+len(tlv)))
	b = append(b, addrs...)
	return append(b, tlv...)
}

func v2TCP4(src, dst string, sport, dport uint16) []byte {
	a := append(net.ParseIP(src).To4(), net.ParseIP(dst).To4()...)
	a = binary.BigEndian.AppendUint16(a, sport)
	return binary.BigEndian.AppendUint16(a, dport)
}

func TestParseProxyHeader(t *testing.T) {
	v6 := append(net.ParseIP("2001:db8::1").To16(), net.ParseIP("2001:db8::2").To16()...)
	v6 = binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint16(v6, 4000), 1883)
	good := []struct {
		name string
		in   []byte
		want string // "" = keep the peer address
	}{
		{"v1 tcp4", []byte("PROXY TCP4 203.0.113.7 10.0.0.1 51000 1883\r\n"), "203.0.113.7:51000"},
		{"v1 tcp6", []byte("PROXY TCP6 2001:db8::1 2001:db8::2 4000 1883\r\n"), "[2001:db8::1]:4000"},
		{"v1 unknown", []byte("PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n"), ""},
		{"v2 tcp4", proxyV2(1, 0x11, v2TCP4("198.51.100.9", "10.0.0.1", 40000, 1883), nil), "198.51.100.9:40000"},
		{"v2 tcp4 + TLV", proxyV2(1, 0x11, v2TCP4("198.51.100.9", "10.0.0.1", 1, 1883), []byte{0x04, 0, 3, 'a', 'b', 'c'}), "198.51.100.9:1"},
		{"v2 tcp6", proxyV2(1, 0x21, v6, nil), "[2001:db8::1]:4000"},
		{"v2 local", proxyV2(0, 0x00, nil, nil), ""},
		{"v2 unix", proxyV2(1, 0x31, make([]byte, 216), nil), ""},
	}
	for _, tc := range good {
		in := append(tc.in, 0x10, 0x00) // MQTT follows
		n, addr, err := parseProxyHeader(in)
		if err != nil || n != len(tc.in) {
			t.Errorf("%s: n %d (want %d), err %v", tc.name, n, len(tc.in), err)
			continue
		}
		got := ""
		if addr != nil {
			got = addr.String()
		}
		if got != tc.want {
			t.Errorf("%s: address %q, want %q", tc.name, got, tc.want)
		}
		for i := range len(tc.in) { // every prefix is incomplete, not invalid
			if _, _, err := parseProxyHeader(tc.in[:i]); err != errProxyIncomplete {
				t.Errorf("%s: prefix of %d bytes: %v", tc.name, i, err)
				break
			}
		}
	}
	bad := map[string][]byte{
		"mqtt":           {0x10, 0x0c, 0, 4, 'M', 'Q', 'T', 'T'},
		"http":           []byte("GET / HTTP/1.1\r\n"),
		"v1 no crlf":     []byte("PROXY TCP4 1.2.3.4 5.6.7.8 1 2" + strings.Repeat(" ", 80)),
		"v1 family":      []byte("PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n"),
		"v1 v6 in tcp4":  []byte("PROXY TCP4 2001:db8::1 5.6.7.8 1 2\r\n"),
		"v1 v4 in tcp6":  []byte("PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n"),
		"v1 port":        []byte("PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n"),
		"v1 port zero":   []byte("PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n"),
		"v1 fields":      []byte("PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n"),
		"v1 lowercase":   []byte("proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n"),
		"v2 version":     append(append([]byte(nil), proxyV2Sig...), 0x11, 0x11, 0, 0),
		"v2 command":     append(append([]byte(nil), proxyV2Sig...), 0x22, 0x11, 0, 0),
		"v2 too long":    append(append([]byte(nil), proxyV2Sig...), 0x21, 0x11, 0x02, 0x01),
		"v2 short addrs": proxyV2(1, 0x11, []byte{1, 2, 3, 4}, nil),
		"v2 bad sig":     []byte("\r\n\r\n\x00\r\nQUIX\n\x21\x11\x00\x0c"),
	}
	for name, in := range bad {
		if _, _, err := parseProxyHeader(in); err == nil || err == errProxyIncomplete {
			t.Errorf("%s accepted: %v", name, err)
		}
	}
}

// remotes records the address every CONNECT's ConnectInfo carries: what
// the failed-login limiter keys on.
type remotes struct {
	mu  sync.Mutex
	got []string
}

func (r *remotes) Authenticate(c auth.ConnectInfo) error {
	r.mu.Lock()
	r.got = append(r.got, c.Remote.String())
	r.mu.Unlock()
	if string(c.Password) != "ok" {
		return errors.New("bad password")
	}
	return nil
}

func (r *remotes) last() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.got) == 0 {
		return ""
	}
	return r.got[len(r.got)-1]
}

func connectPacket(id string) []byte {
	p := codec.Connect{ProtocolName: []byte("MQTT"), ProtocolVersion: codec.Version311, ClientID: []byte(id), CleanStart: true,
		KeepAlive: 30, UsernameFlag: true, Username: []byte("u"), PasswordFlag: true, Password: []byte("ok")}
	return p.Append(nil)
}

// readConnack reads one CONNACK from nc, or reports that the broker closed.
func readConnack(t *testing.T, nc net.Conn) (code byte, closed bool) {
	t.Helper()
	_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 4)
	if _, err := io.ReadFull(nc, buf); err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatal("no CONNACK and no close within 5s")
		}
		return 0, true
	}
	if buf[0] != 0x20 {
		t.Fatalf("not a CONNACK: % x", buf)
	}
	return buf[3], false
}

// A raw TCP client behind a (simulated) load balancer: PROXY v1 and v2
// headers, also split across writes, name the address the broker uses;
// a connection without a valid header is closed and counted.
func TestProxyProtocolListener(t *testing.T) {
	rec := &remotes{}
	srv, addr := startBroker(t, func(o *Options) {
		o.Authenticator = rec
		o.ListenerSettings = map[string]ListenerSettings{"127.0.0.1:0": {ProxyProtocol: true}}
	})
	dial := func() net.Conn {
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { nc.Close() })
		return nc
	}
	for _, tc := range []struct {
		name   string
		header []byte
		want   string
	}{
		{"v1", []byte("PROXY TCP4 203.0.113.7 10.0.0.1 51000 1883\r\n"), "203.0.113.7:51000"},
		{"v1 tcp6", []byte("PROXY TCP6 2001:db8::7 2001:db8::1 6000 1883\r\n"), "[2001:db8::7]:6000"},
		{"v2", proxyV2(1, 0x11, v2TCP4("198.51.100.9", "10.0.0.1", 40000, 1883), []byte{0x04, 0, 1, 'x'}), "198.51.100.9:40000"},
	} {
		nc := dial()
		// The header in two writes, the CONNECT right behind its end.
		half := len(tc.header) / 2
		if _, err := nc.Write(tc.header[:half]); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
		if _, err := nc.Write(append(tc.header[half:], connectPacket("pp-"+tc.name)...)); err != nil {
			t.Fatal(err)
		}
		if code, closed := readConnack(t, nc); closed || code != 0 {
			t.Fatalf("%s: CONNACK %d closed %v", tc.name, code, closed)
		}
		if got := rec.last(); got != tc.want {
			t.Errorf("%s: the Authenticator saw %s, want the proxied %s", tc.name, got, tc.want)
		}
	}
	// v2 LOCAL (a health check): the peer address stays.
	nc := dial()
	_, _ = nc.Write(append(proxyV2(0, 0, nil, nil), connectPacket("pp-local")...))
	if code, closed := readConnack(t, nc); closed || code != 0 {
		t.Fatalf("LOCAL: CONNACK %d closed %v", code, closed)
	}
	if got := rec.last(); !strings.HasPrefix(got, "127.0.0.1:") {
		t.Errorf("LOCAL: %s, want the peer address", got)
	}
	// No header, a bad header, an over-long v1 line: closed before CONNECT.
	before := srv.Refused()["proxy_protocol"]
	for _, bad := range [][]byte{
		connectPacket("direct"),
		[]byte("PROXY TCP4 1.2.3.4 5.6.7.8 99999 1\r\n"),
		[]byte("PROXY TCP4 " + strings.Repeat("1", 120)),
	} {
		nc := dial()
		_, _ = nc.Write(bad)
		if _, closed := readConnack(t, nc); !closed {
			t.Errorf("%q: answered", bad)
		}
	}
	if n := srv.Refused()["proxy_protocol"] - before; n != 3 {
		t.Errorf("proxy_protocol refusals: %d, want 3", n)
	}
}

// The failed-login limiter sees the proxied address: an address locked
// out after failures stays locked, another address behind the same
// balancer connects.
func TestProxyProtocolLimiterUsesClientAddress(t *testing.T) {
	line, err := auth.HashPassword("u", "ok", 1000)
	if err != nil {
		t.Fatal(err)
	}
	pf, err := auth.ParsePasswordFile(strings.NewReader(line))
	if err != nil {
		t.Fatal(err)
	}
	pf.SetLimiter(auth.NewLimiter(auth.LimiterConfig{PerUser: -1, PerAddress: 2, Window: time.Hour, Logger: quietLogger()}))
	_, addr := startBroker(t, func(o *Options) {
		o.Authenticator = pf
		o.ListenerSettings = map[string]ListenerSettings{"127.0.0.1:0": {ProxyProtocol: true}}
	})
	try := func(src, pass string) byte {
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		p := codec.Connect{ProtocolName: []byte("MQTT"), ProtocolVersion: codec.Version311, ClientID: []byte("lim"), CleanStart: true,
			UsernameFlag: true, Username: []byte("other-" + src), PasswordFlag: true, Password: []byte(pass)}
		_, _ = nc.Write(append([]byte("PROXY TCP4 "+src+" 10.0.0.1 1000 1883\r\n"), p.Append(nil)...))
		code, closed := readConnack(t, nc)
		if closed {
			t.Fatal("closed without CONNACK")
		}
		return code
	}
	for range 3 {
		try("192.0.2.1", "wrong")
	}
	if st := pf.Limiter().Stats(); st.Lockouts == 0 {
		t.Fatalf("no lockout after failures from one address: %+v", st)
	}
	refusedBefore := pf.Limiter().Stats().Refused
	try("192.0.2.1", "wrong")
	if pf.Limiter().Stats().Refused == refusedBefore {
		t.Error("the locked-out proxied address was not refused as locked out")
	}
	// Another client address behind the same balancer is not locked out.
	refusedBefore = pf.Limiter().Stats().Refused
	try("192.0.2.2", "wrong")
	if pf.Limiter().Stats().Refused != refusedBefore {
		t.Error("a second proxied address was refused as locked out: the limiter keyed the balancer's address")
	}
}

// proxyFront is a minimal load balancer: every connection it accepts is
// forwarded to the broker behind a PROXY v2 header naming src.
func proxyFront(t *testing.T, broker, src string, port uint16) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", broker)
			if err != nil {
				in.Close()
				continue
			}
			_, _ = out.Write(proxyV2(1, 0x11, v2TCP4(src, "10.0.0.1", port, 1883), nil))
			go func() { _, _ = io.Copy(out, in); out.Close() }()
			go func() { _, _ = io.Copy(in, out); in.Close() }()
		}
	}()
	return ln.Addr().String()
}

// A real client (paho) behind a balancer speaking PROXY v2: it connects,
// publishes and receives as usual, and the broker knows its real address.
func TestProxyProtocolPahoBehindBalancer(t *testing.T) {
	rec := &remotes{}
	_, addr := startBroker(t, func(o *Options) {
		o.Authenticator = rec
		o.ListenerSettings = map[string]ListenerSettings{"127.0.0.1:0": {ProxyProtocol: true}}
	})
	front := proxyFront(t, addr, "203.0.113.50", 61000)
	got := newReceived()
	c := pahoClient(t, front, "behind-lb", withUser("u", "ok"))
	if r := rec.last(); r != "203.0.113.50:61000" {
		t.Fatalf("the broker saw %s, want the client address from the header", r)
	}
	subscribe(t, c, "lb/#", 1, got)
	wait(t, c.Publish("lb/1", 1, false, "through the balancer"), "publish")
	if m := got.waitN(t, 1, 5*time.Second)[0]; string(m.Payload()) != "through the balancer" {
		t.Fatalf("payload %q", m.Payload())
	}
}
