package stdnet

import (
	"bufio"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/panjf2000/gnet/v2"
)

func dialWS(t testing.TB, url string, hdr http.Header, d *websocket.Dialer) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	if d == nil {
		d = &websocket.Dialer{}
	}
	d.Subprotocols = []string{"mqtt"}
	d.HandshakeTimeout = 5 * time.Second
	ws, resp, err := d.Dial(url, hdr)
	if err == nil {
		t.Cleanup(func() { ws.Close() })
		_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
		if typ, msg, err := ws.ReadMessage(); err != nil || typ != websocket.BinaryMessage || string(msg) != "HELLO\n" {
			t.Fatalf("greeting %d %q %v", typ, msg, err)
		}
	}
	return ws, resp, err
}

// readClose reads until the server's close frame and returns it.
func readClose(t testing.TB, ws *websocket.Conn) *websocket.CloseError {
	t.Helper()
	for {
		_, _, err := ws.ReadMessage()
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if !errors.As(err, &ce) {
			t.Fatalf("connection ended without a close frame: %v", err)
		}
		return ce
	}
}

// The broker's closes are WebSocket closes (RFC 6455 §7): a close frame
// with the status CloseStatus picks (1000 by default), 1001 at shutdown;
// a client's close frame is answered; a text frame gets 1003.
func TestWebSocketCloseHandshake(t *testing.T) {
	h := newEcho()
	tr := startTransport(t, Config{Handler: h}, nil, []WebSocketListener{{Addr: "127.0.0.1:0"}})
	url := "ws://" + tr.WebSocketAddrs()[0].String() + "/mqtt"

	// Echo over the stream, across messages.
	ws, _, err := dialWS(t, url, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = ws.WriteMessage(websocket.BinaryMessage, []byte("ab"))
	_ = ws.WriteMessage(websocket.BinaryMessage, []byte("c\n"))
	var got []byte
	for len(got) < 4 {
		_, m, err := ws.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, m...)
	}
	if string(got) != "abc\n" {
		t.Fatalf("echo %q", got)
	}

	// The handler closes: 1000.
	_ = ws.WriteMessage(websocket.BinaryMessage, []byte("CLOSE\n"))
	if ce := readClose(t, ws); ce.Code != websocket.CloseNormalClosure {
		t.Fatalf("close code %d, want 1000", ce.Code)
	}

	// The client closes: the server answers with a close frame and OnClose
	// sees the client's close.
	ws2, _, err := dialWS(t, url, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = ws2.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "bye"), time.Now().Add(time.Second))
	if ce := readClose(t, ws2); ce.Code != websocket.CloseNormalClosure {
		t.Fatalf("answer to the client's close: %d", ce.Code)
	}
	eventually(t, 5*time.Second, "two OnClose", func() bool { _, n := h.counts(); return n == 2 })
	h.mu.Lock()
	var ce *websocket.CloseError
	if !errors.As(h.errs[1], &ce) || ce.Code != websocket.CloseNormalClosure {
		t.Fatalf("OnClose error %v, want the client's close frame", h.errs[1])
	}
	h.mu.Unlock()

	// A text frame: 1003 [MQTT-6.0.0-1].
	ws3, _, err := dialWS(t, url, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = ws3.WriteMessage(websocket.TextMessage, []byte("hello"))
	if ce := readClose(t, ws3); ce.Code != websocket.CloseUnsupportedData {
		t.Fatalf("text frame: close %d, want 1003", ce.Code)
	}

	// A message over MaxPacketSize: 1009 (gorilla's read limit).
	ws4, _, err := dialWS(t, url, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = ws4.WriteMessage(websocket.BinaryMessage, make([]byte, DefaultMaxPacketSize+100))
	if ce := readClose(t, ws4); ce.Code != websocket.CloseMessageTooBig {
		t.Fatalf("oversized message: close %d, want 1009", ce.Code)
	}

	// Shutdown: 1001.
	ws5, _, err := dialWS(t, url, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	go tr.Stop()
	if ce := readClose(t, ws5); ce.Code != websocket.CloseGoingAway {
		t.Fatalf("shutdown: close %d, want 1001", ce.Code)
	}
}

// Config.CloseStatus picks the code and reason of a handler's close.
func TestWebSocketCloseStatusHook(t *testing.T) {
	h := newEcho()
	tr := startTransport(t, Config{Handler: h, CloseStatus: func(gnet.Conn) (int, string) {
		return websocket.ClosePolicyViolation, strings.Repeat("r", 200)
	}}, nil, []WebSocketListener{{Addr: "127.0.0.1:0"}})
	ws, _, err := dialWS(t, "ws://"+tr.WebSocketAddrs()[0].String()+"/mqtt", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = ws.WriteMessage(websocket.BinaryMessage, []byte("CLOSE\n"))
	ce := readClose(t, ws)
	if ce.Code != websocket.ClosePolicyViolation || len(ce.Text) != 123 {
		t.Fatalf("close %d %q, want 1008 with the reason clipped to 123 bytes", ce.Code, ce.Text)
	}
}

// Cross-origin upgrades are refused with 403 unless allow-listed; requests
// without Origin (non-browser clients) and same-host pages are allowed.
func TestWebSocketOrigin(t *testing.T) {
	logs := &logBuf{}
	tr := startTransport(t, Config{Handler: newEcho(), Logger: testLogger(logs)}, nil, []WebSocketListener{
		{Addr: "127.0.0.1:0"},
		{Addr: "127.0.0.1:0", AllowedOrigins: []string{"https://app.example.com", "dash.example.com"}},
		{Addr: "127.0.0.1:0", AllowedOrigins: []string{"*"}},
	})
	plain, listed, all := tr.WebSocketAddrs()[0].String(), tr.WebSocketAddrs()[1].String(), tr.WebSocketAddrs()[2].String()
	try := func(addr, origin string) int {
		t.Helper()
		hdr := http.Header{}
		if origin != "" {
			hdr.Set("Origin", origin)
		}
		_, resp, err := dialWS(t, "ws://"+addr+"/mqtt", hdr, nil)
		if err == nil {
			return http.StatusSwitchingProtocols
		}
		if resp == nil {
			t.Fatalf("dial %s with origin %q: %v", addr, origin, err)
		}
		return resp.StatusCode
	}
	for _, tc := range []struct {
		addr, origin string
		want         int
	}{
		{plain, "", 101},
		{plain, "http://" + plain, 101},
		{plain, "https://evil.example", 403},
		{plain, "null", 403},
		{listed, "https://app.example.com", 101},
		{listed, "http://app.example.com", 403}, // the scheme is part of a listed origin
		{listed, "http://dash.example.com", 101},
		{listed, "https://evil.example", 403},
		{all, "https://evil.example", 101},
	} {
		if got := try(tc.addr, tc.origin); got != tc.want {
			t.Errorf("origin %q on %s: status %d, want %d", tc.origin, tc.addr, got, tc.want)
		}
	}
	if st := tr.Stats(); st.WebSocketOriginRefused != 4 {
		t.Fatalf("origin refusals %d, want 4", st.WebSocketOriginRefused)
	}
	if out := logs.String(); strings.Count(out, "cross-origin") != 1 || !strings.Contains(out, "evil.example") {
		t.Fatalf("want one rate-limited refusal log line naming the origin, got:\n%s", out)
	}
}

// A wrong path gets 404 (counted, logged with the remote address); a plain
// HTTP request 426 with a short explanation; a missing mqtt subprotocol 400.
func TestWebSocketBadRequests(t *testing.T) {
	logs := &logBuf{}
	tr := startTransport(t, Config{Handler: newEcho(), Logger: testLogger(logs)}, nil, []WebSocketListener{{Addr: "127.0.0.1:0"}})
	addr := tr.WebSocketAddrs()[0].String()
	if _, resp, err := dialWS(t, "ws://"+addr+"/other", nil, nil); err == nil || resp == nil || resp.StatusCode != 404 {
		t.Fatalf("wrong path: %v %v", resp, err)
	}
	resp, err := http.Get("http://" + addr + "/mqtt")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUpgradeRequired || resp.Header.Get("Upgrade") != "websocket" || !strings.Contains(string(body), "WebSocket") {
		t.Fatalf("plain GET: %d %q %q", resp.StatusCode, resp.Header.Get("Upgrade"), body)
	}
	d := &websocket.Dialer{HandshakeTimeout: 5 * time.Second, Subprotocols: []string{"chat"}}
	if _, resp, err := d.Dial("ws://"+addr+"/mqtt", nil); err == nil || resp == nil || resp.StatusCode != 400 {
		t.Fatalf("no mqtt subprotocol: %v %v", resp, err)
	}
	st := tr.Stats()
	if st.WebSocketNotFound != 1 || st.WebSocketBadRequest != 2 {
		t.Fatalf("stats %+v, want 1 not found and 2 bad requests", st)
	}
	if out := logs.String(); !strings.Contains(out, "unknown path") || !strings.Contains(out, "remote=127.0.0.1:") {
		t.Fatalf("wrong path not logged with the remote address:\n%s", out)
	}
}

// HTTP connections on a WebSocket port cannot be held open: a connection
// that sends no request is closed after HeaderTimeout, a keep-alive one
// idle between requests after IdleTimeout.
func TestWebSocketHTTPTimeouts(t *testing.T) {
	tr := startTransport(t, Config{Handler: newEcho()}, nil, []WebSocketListener{
		{Addr: "127.0.0.1:0", HeaderTimeout: 300 * time.Millisecond, IdleTimeout: 300 * time.Millisecond}})
	addr := tr.WebSocketAddrs()[0].String()
	silent, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	slow, _ := net.Dial("tcp", addr)
	defer slow.Close()
	_, _ = slow.Write([]byte("GET /mqtt HTTP/1.1\r\nHost: x\r\n")) // headers never finish
	idle, _ := net.Dial("tcp", addr)
	defer idle.Close()
	_, _ = idle.Write([]byte("GET /mqtt HTTP/1.1\r\nHost: x\r\n\r\n"))
	r := bufio.NewReader(idle)
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.Close {
		t.Fatal("server did not keep the connection alive; the idle case is not tested")
	}
	start := time.Now()
	for _, c := range []struct {
		name string
		nc   net.Conn
		r    io.Reader
	}{{"silent", silent, silent}, {"slow headers", slow, slow}, {"idle keep-alive", idle, r}} {
		_ = c.nc.SetReadDeadline(time.Now().Add(3 * time.Second))
		_, err := io.Copy(io.Discard, c.r)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("%s connection still open after 3 s", c.name)
		}
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("connections closed after %v, want about 300 ms", d)
	}
}

// A failed wss:// handshake is counted like a TLS one.
func TestWSSHandshakeFailureCounted(t *testing.T) {
	cfg, pool := testCert(t, time.Now().Add(365*24*time.Hour))
	tr := startTransport(t, Config{Handler: newEcho()}, nil, []WebSocketListener{{Addr: "127.0.0.1:0", Config: cfg}})
	addr := tr.WebSocketAddrs()[0].String()
	if _, _, err := dialWS(t, "wss://"+addr+"/mqtt", nil, &websocket.Dialer{TLSClientConfig: &tls.Config{RootCAs: pool}}); err != nil {
		t.Fatal(err)
	}
	if _, err := tls.Dial("tcp", addr, &tls.Config{}); err == nil { // does not trust the certificate
		t.Fatal("untrusted handshake succeeded")
	}
	eventually(t, 5*time.Second, "handshake failure counted", func() bool { return tr.Stats().TLSHandshakeFailures == 1 })
	if st := tr.Stats(); st.Accepted != 1 {
		t.Fatalf("accepted %d, want 1", st.Accepted)
	}
}
