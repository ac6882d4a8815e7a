package server

import (
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/gorilla/websocket"

	"github.com/ternmq/tern/codec"
	"github.com/ternmq/tern/internal/mqtttest"
)

// MQTT over WebSocket [MQTT-6.0.0-1..-4]: a paho client on ws:// exchanges
// messages with a plain TCP client; a request without the "mqtt"
// subprotocol is refused.
func TestWebSocketListener(t *testing.T) {
	srv, addr := startBroker(t, func(o *Options) {
		o.WebSocketListeners = []WebSocketListener{{Addr: "127.0.0.1:0"}}
	})
	wsAddr := srv.WebSocketAddrs()[0].String()
	overWS := func(o *mqtt.ClientOptions) {
		o.Servers = nil
		o.AddBroker("ws://" + wsAddr + "/mqtt")
	}
	r := newReceived()
	sub := pahoClient(t, addr, "ws-sub", overWS)
	subscribe(t, sub, "ws/#", 2, r)
	pub := pahoClient(t, addr, "ws-tcp-pub")
	for i := 0; i < 20; i++ {
		wait(t, pub.Publish("ws/x", byte(i%3), false, strings.Repeat("p", 1+i*500)), "publish")
	}
	got := r.waitN(t, 20, 5*time.Second)
	if len(got[19].Payload()) != 1+19*500 {
		t.Fatalf("payload of %d bytes arrived as %d", 1+19*500, len(got[19].Payload()))
	}
	back := newReceived()
	tcpSub := pahoClient(t, addr, "ws-back")
	subscribe(t, tcpSub, "back", 1, back)
	wait(t, sub.Publish("back", 1, false, "from ws"), "publish over ws")
	back.waitN(t, 1, 5*time.Second)

	req, _ := http.NewRequest("GET", "http://"+wsAddr+"/mqtt", nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Sec-WebSocket-Version", "13")
	req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	req.Header.Set("Sec-WebSocket-Protocol", "chat")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("non-mqtt subprotocol: status %d, want 400", resp.StatusCode)
	}
}

// wsConn carries MQTT over a gorilla WebSocket client as a net.Conn, so
// that mqtttest can drive it; reads return the WebSocket error (a
// *websocket.CloseError when the broker sent a close frame).
type wsConn struct {
	*websocket.Conn
	r io.Reader
}

func (w *wsConn) Read(p []byte) (int, error) {
	for {
		if w.r == nil {
			_, r, err := w.NextReader()
			if err != nil {
				return 0, err
			}
			w.r = r
		}
		n, err := w.r.Read(p)
		if err == io.EOF {
			w.r = nil
			if n == 0 {
				continue
			}
			err = nil
		}
		return n, err
	}
}

func (w *wsConn) Write(p []byte) (int, error) {
	if err := w.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (w *wsConn) SetDeadline(t time.Time) error {
	_ = w.SetWriteDeadline(t)
	return w.SetReadDeadline(t)
}

// dialWS opens an MQTT-over-WebSocket connection (subprotocol mqtt) with
// extra request headers; the response is returned when the upgrade fails.
func dialWS(t testing.TB, addr, path string, hdr http.Header) (*wsConn, *http.Response, error) {
	t.Helper()
	d := websocket.Dialer{Subprotocols: []string{"mqtt"}, HandshakeTimeout: 5 * time.Second}
	ws, resp, err := d.Dial("ws://"+addr+path, hdr)
	if err != nil {
		return nil, resp, err
	}
	t.Cleanup(func() { ws.Close() })
	return &wsConn{Conn: ws}, resp, nil
}

// closeFrame reads until the broker's close frame and returns its code.
func closeFrame(t testing.TB, c *wsConn) int {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := io.Copy(io.Discard, c)
	var ce *websocket.CloseError
	if !errors.As(err, &ce) {
		t.Fatalf("connection ended without a close frame: %v", err)
	}
	return ce.Code
}

// The broker ends WebSocket connections with the close handshake (RFC 6455
// §7), so browser clients (MQTT.js end()) see a clean close instead of
// EPIPE: 1000 after DISCONNECT, 1002 for an MQTT protocol error, 1009 for
// a packet over MaxPacketSize, 1008 for a refused CONNECT, 1001 at
// shutdown; a client's close frame is answered.
func TestWebSocketCloseCodes(t *testing.T) {
	srv, _ := startBroker(t, func(o *Options) {
		o.WebSocketListeners = []WebSocketListener{{Addr: "127.0.0.1:0"}}
		o.MaxPacketSize = 1 << 10
		o.Authenticator = refuseUser("mallory")
	})
	wsAddr := srv.WebSocketAddrs()[0].String()
	connect := func(id, user string, want codec.ReasonCode) *wsConn {
		t.Helper()
		c, _, err := dialWS(t, wsAddr, "/mqtt", nil)
		if err != nil {
			t.Fatal(err)
		}
		mc := mqtttest.New(c)
		ack, err := mc.Connect(codec.Connect{ClientID: []byte(id), CleanStart: true, UsernameFlag: user != "", Username: []byte(user)})
		if err != nil {
			t.Fatal(err)
		}
		if ack.ReasonCode != want {
			t.Fatalf("CONNACK %#x, want %#x", ack.ReasonCode, want)
		}
		return c
	}

	c := connect("ws-bye", "", 0)
	_ = mqtttest.New(c).Send(&codec.Disconnect{})
	if code := closeFrame(t, c); code != websocket.CloseNormalClosure {
		t.Fatalf("after DISCONNECT: close %d, want 1000", code)
	}

	c = connect("ws-twice", "", 0)
	_ = mqtttest.New(c).Send(&codec.Connect{ClientID: []byte("ws-twice"), ProtocolVersion: codec.Version311})
	if code := closeFrame(t, c); code != websocket.CloseProtocolError {
		t.Fatalf("second CONNECT [MQTT-3.1.0-2]: close %d, want 1002", code)
	}

	c = connect("ws-big", "", 0)
	_, _ = c.Write([]byte{0x30, 0x80, 0x80, 0x01}) // PUBLISH header announcing 16 KiB
	if code := closeFrame(t, c); code != websocket.CloseMessageTooBig {
		t.Fatalf("packet over MaxPacketSize: close %d, want 1009", code)
	}

	c = connect("ws-mallory", "mallory", codec.ConnRefusedBadUserPass311)
	if code := closeFrame(t, c); code != websocket.ClosePolicyViolation {
		t.Fatalf("refused CONNECT: close %d, want 1008", code)
	}

	c = connect("ws-client-closes", "", 0)
	_ = c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	if code := closeFrame(t, c); code != websocket.CloseNormalClosure {
		t.Fatalf("answer to the client's close: %d, want 1000", code)
	}

	c = connect("ws-shutdown", "", 0)
	go srv.Close()
	if code := closeFrame(t, c); code != websocket.CloseGoingAway {
		t.Fatalf("shutdown: close %d, want 1001", code)
	}
}

// refuseUser is an Authenticator refusing one user name.
type refuseUser string

func (r refuseUser) Authenticate(c ConnectInfo) error {
	if c.Username == string(r) {
		return errors.New("refused")
	}
	return nil
}

// Cross-origin upgrades are refused (403) unless the origin is listed;
// non-browser clients (no Origin) and pages of the listener's own host are
// accepted. Refusals are counted on /metrics and logged.
func TestWebSocketOriginCheck(t *testing.T) {
	logs := &syncBuffer{}
	admin := freeAddr(t)
	srv, _ := startBroker(t, func(o *Options) {
		o.WebSocketListeners = []WebSocketListener{{Addr: "127.0.0.1:0"},
			{Addr: "127.0.0.1:0", AllowedOrigins: []string{"https://app.example.com"}}}
		o.AdminListen = admin
		o.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	})
	strict, listed := srv.WebSocketAddrs()[0].String(), srv.WebSocketAddrs()[1].String()
	status := func(addr, origin string) int {
		t.Helper()
		hdr := http.Header{}
		if origin != "" {
			hdr.Set("Origin", origin)
		}
		c, resp, err := dialWS(t, addr, "/mqtt", hdr)
		if err == nil {
			c.Close()
			return http.StatusSwitchingProtocols
		}
		if resp == nil {
			t.Fatal(err)
		}
		return resp.StatusCode
	}
	for _, tc := range []struct {
		addr, origin string
		want         int
	}{
		{strict, "", 101},
		{strict, "http://" + strict, 101},
		{strict, "https://evil.example", 403},
		{listed, "https://app.example.com", 101},
		{listed, "https://evil.example", 403},
	} {
		if got := status(tc.addr, tc.origin); got != tc.want {
			t.Errorf("origin %q: status %d, want %d", tc.origin, got, tc.want)
		}
	}
	if m := httpGet(t, "http://"+admin+"/metrics"); !strings.Contains(m, "tern_websocket_origin_refused_total 2\n") {
		t.Fatalf("refusals not on /metrics:\n%s", m)
	}
	if !strings.Contains(logs.String(), "cross-origin") || !strings.Contains(logs.String(), "evil.example") {
		t.Fatalf("refusal not logged:\n%s", logs)
	}
}

// A wrong path gets 404, counted and logged with the remote address; a
// plain HTTP request 426 with a short explanation. HTTP connections that
// send nothing, never finish their headers or idle between requests are
// closed by the header and idle timeouts.
func TestWebSocketBadRequestsAndHTTPTimeouts(t *testing.T) {
	logs := &syncBuffer{}
	admin := freeAddr(t)
	srv, _ := startBroker(t, func(o *Options) {
		o.WebSocketListeners = []WebSocketListener{{Addr: "127.0.0.1:0",
			HeaderTimeout: 300 * time.Millisecond, IdleTimeout: 300 * time.Millisecond}}
		o.AdminListen = admin
		o.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	})
	wsAddr := srv.WebSocketAddrs()[0].String()
	if _, resp, err := dialWS(t, wsAddr, "/wrong", nil); err == nil || resp == nil || resp.StatusCode != http.StatusNotFound {
		t.Fatalf("wrong path: %v %v", resp, err)
	}
	if out := logs.String(); !strings.Contains(out, "unknown path") || !strings.Contains(out, "remote=127.0.0.1:") {
		t.Fatalf("wrong path not logged with the remote address:\n%s", out)
	}
	resp, err := http.Get("http://" + wsAddr + "/mqtt")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUpgradeRequired || len(body) > 200 || !strings.Contains(string(body), "WebSocket") {
		t.Fatalf("plain GET: %d %q", resp.StatusCode, body)
	}
	m := httpGet(t, "http://"+admin+"/metrics")
	for _, want := range []string{"tern_websocket_not_found_total 1\n", "tern_websocket_bad_requests_total 1\n"} {
		if !strings.Contains(m, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}

	silent, slow, idle, idleR := holdHTTP(t, wsAddr, "/mqtt")
	start := time.Now()
	expectServerCloses(t, "silent", silent, silent, 3*time.Second)
	expectServerCloses(t, "slow headers", slow, slow, 3*time.Second)
	expectServerCloses(t, "idle keep-alive", idle, idleR, 3*time.Second)
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("closed after %v, want about 300 ms", d)
	}
}
