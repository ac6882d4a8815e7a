package server

import (
	"context"
	"crypto/tls"
	"net"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// proxyCases are the headers a load balancer sends, and the address the
// broker must then see.
var proxyCases = []struct {
	name   string
	header []byte
	want   string
}{
	{"v1", []byte("PROXY TCP4 203.0.113.7 10.0.0.1 51000 8883\r\n"), "203.0.113.7:51000"},
	{"v2", proxyV2(1, 0x11, v2TCP4("198.51.100.9", "10.0.0.1", 40000, 8883), []byte{0x04, 0, 1, 'x'}), "198.51.100.9:40000"},
}

// proxyBadHeaders are closed before the TLS handshake or HTTP request.
var proxyBadHeaders = [][]byte{
	[]byte("PROXY TCP4 1.2.3.4 5.6.7.8 99999 1\r\n"),
	[]byte("GET / HTTP/1.1\r\n\r\n"), // a client bypassing the balancer
}

// A TLS listener with proxy_protocol behind a (simulated) load balancer:
// a raw TCP client writes a PROXY v1 or v2 header, then runs the TLS
// handshake and MQTT CONNECT over the same socket; the broker sees the
// proxied address (Authenticator, ClientInfo). A bad header is closed
// before the handshake and counted under proxy_protocol. Both engines.
func TestProxyProtocolTLSListener(t *testing.T) { forEachTLSEngine(t, testProxyProtocolTLS) }

func testProxyProtocolTLS(t *testing.T, engine string) {
	cfg, pool := selfSigned(t)
	rec := &remotes{}
	srv, _ := startBroker(t, func(o *Options) {
		o.Authenticator = rec
		o.TLSListeners = []TLSListener{{Addr: "127.0.0.1:0", Config: cfg}}
		o.TLSEngine = engine
		o.ListenerSettings = map[string]ListenerSettings{"127.0.0.1:0": {ProxyProtocol: true}}
	})
	addr := srv.TLSAddrs()[0].String()
	for _, tc := range proxyCases {
		nc := dialTCP(t, addr)
		if _, err := nc.Write(tc.header); err != nil {
			t.Fatal(err)
		}
		tc2 := tls.Client(nc, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
		if err := tc2.Handshake(); err != nil {
			t.Fatalf("%s: handshake after the header: %v", tc.name, err)
		}
		id := "pp-tls-" + tc.name
		if _, err := tc2.Write(connectPacket(id)); err != nil {
			t.Fatal(err)
		}
		if code, closed := readConnack(t, tc2); closed || code != 0 {
			t.Fatalf("%s: CONNACK %d closed %v", tc.name, code, closed)
		}
		if got := rec.last(); got != tc.want {
			t.Errorf("%s: the Authenticator saw %s, want the proxied %s", tc.name, got, tc.want)
		}
		if info, ok := srv.ClientInfo(id); !ok || info.RemoteAddr != tc.want {
			t.Errorf("%s: ClientInfo %+v %v, want RemoteAddr %s", tc.name, info, ok, tc.want)
		}
	}
	// A direct TLS client (no header): its ClientHello is not a header.
	before := srv.Refused()["proxy_protocol"]
	nc := dialTCP(t, addr)
	direct := tls.Client(nc, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
	_ = direct.SetDeadline(time.Now().Add(5 * time.Second))
	if err := direct.Handshake(); err == nil {
		t.Error("a TLS client without a PROXY header completed its handshake")
	}
	for _, bad := range proxyBadHeaders {
		nc := dialTCP(t, addr)
		_, _ = nc.Write(bad)
		if _, closed := readConnack(t, nc); !closed {
			t.Errorf("%q: answered", bad)
		}
	}
	waitRefused(t, srv, before, 1+len(proxyBadHeaders))
}

// The same for ws:// and wss:// listeners: a gorilla client whose NetDial
// writes the header before the TLS handshake or the HTTP upgrade request.
func TestProxyProtocolWebSocketListener(t *testing.T) {
	t.Run("ws", func(t *testing.T) { testProxyProtocolWebSocket(t, false) })
	t.Run("wss", func(t *testing.T) { testProxyProtocolWebSocket(t, true) })
}

func testProxyProtocolWebSocket(t *testing.T, secure bool) {
	rec := &remotes{}
	scheme, l := "ws://", WebSocketListener{Addr: "127.0.0.1:0"}
	var clientTLS *tls.Config
	if secure {
		cfg, pool := selfSigned(t)
		scheme, l.Config = "wss://", cfg
		clientTLS = &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}
	}
	srv, _ := startBroker(t, func(o *Options) {
		o.Authenticator = rec
		o.WebSocketListeners = []WebSocketListener{l}
		o.ListenerSettings = map[string]ListenerSettings{"127.0.0.1:0": {ProxyProtocol: true}}
	})
	addr := srv.WebSocketAddrs()[0].String()
	dialer := func(header []byte) *websocket.Dialer {
		return &websocket.Dialer{Subprotocols: []string{"mqtt"}, HandshakeTimeout: 5 * time.Second, TLSClientConfig: clientTLS,
			NetDialContext: func(ctx context.Context, network, a string) (net.Conn, error) {
				nc, err := (&net.Dialer{}).DialContext(ctx, network, a)
				if err == nil && header != nil {
					_, err = nc.Write(header)
				}
				return nc, err
			}}
	}
	for _, tc := range proxyCases {
		ws, _, err := dialer(tc.header).Dial(scheme+addr+"/mqtt", nil)
		if err != nil {
			t.Fatalf("%s: upgrade after the header: %v", tc.name, err)
		}
		t.Cleanup(func() { ws.Close() })
		id := "pp-ws-" + tc.name
		if err := ws.WriteMessage(websocket.BinaryMessage, connectPacket(id)); err != nil {
			t.Fatal(err)
		}
		_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, msg, err := ws.ReadMessage()
		if err != nil || len(msg) != 4 || msg[0] != 0x20 || msg[3] != 0 {
			t.Fatalf("%s: CONNACK % x %v", tc.name, msg, err)
		}
		if got := rec.last(); got != tc.want {
			t.Errorf("%s: the Authenticator saw %s, want the proxied %s", tc.name, got, tc.want)
		}
		if info, ok := srv.ClientInfo(id); !ok || info.RemoteAddr != tc.want {
			t.Errorf("%s: ClientInfo %+v %v, want RemoteAddr %s", tc.name, info, ok, tc.want)
		}
	}
	before := srv.Refused()["proxy_protocol"]
	if _, _, err := dialer(nil).Dial(scheme+addr+"/mqtt", nil); err == nil {
		t.Error("an upgrade without a PROXY header succeeded")
	}
	for _, bad := range proxyBadHeaders {
		if _, _, err := dialer(bad).Dial(scheme+addr+"/mqtt", nil); err == nil {
			t.Errorf("%q: upgraded", bad)
		}
	}
	waitRefused(t, srv, before, 1+len(proxyBadHeaders))
}

func dialTCP(t *testing.T, addr string) net.Conn {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return nc
}

// waitRefused waits for n more proxy_protocol refusals than before (the
// transport reports them from its own goroutines).
func waitRefused(t *testing.T, srv *Server, before uint64, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := srv.Refused()["proxy_protocol"] - before
		if got == uint64(n) {
			return
		}
		if got > uint64(n) || time.Now().After(deadline) {
			t.Fatalf("proxy_protocol refusals: %d, want %d", got, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
