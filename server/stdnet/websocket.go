package stdnet

// MQTT over WebSocket (MQTT §6): an HTTP listener upgrades requests on its
// path to WebSocket with the "mqtt" subprotocol [MQTT-6.0.0-3]; MQTT packets
// travel in binary frames [MQTT-6.0.0-1], a packet may span frames and a
// frame may hold several packets [MQTT-6.0.0-2], so the frames are read as
// one byte stream (wsStream, a net.Conn) and the connection joins the
// transport like a TLS one.

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/gorilla/websocket"
)

// WebSocketListener is one MQTT-over-WebSocket listener.
type WebSocketListener struct {
	Addr string `yaml:"addr"` // host:port
	Path string `yaml:"path"` // default "/mqtt" (unless Paths lists some)
	// Paths are more request paths the listener upgrades, besides Path
	// (clients differ: "/mqtt", "/ws", "/"). Exact matches; any other
	// path gets 404.
	Paths []string `yaml:"paths"`
	// Compression negotiates permessage-deflate (RFC 7692) with clients
	// that offer it, in its bounded-memory form: no context takeover
	// either way, so no compressor or decompressor state outlives one
	// message and an idle connection holds none (ws_deflate.go, with
	// klauspost/compress). It costs CPU per message and pays off for
	// large, repetitive payloads (JSON) on slow links. Default: false.
	Compression bool `yaml:"compression"`
	// CertFile and KeyFile (or Config) make it wss://.
	CertFile string      `yaml:"cert_file"`
	KeyFile  string      `yaml:"key_file"`
	Config   *tls.Config `yaml:"-"`
	// MinVersion is the oldest TLS version of a wss:// listener: "1.2"
	// (default) or "1.3".
	MinVersion string `yaml:"min_version"`
	// AllowedOrigins lists the browser origins, besides the listener's own
	// host, that may open a connection: "https://app.example.com" (scheme
	// and host must match), "app.example.com:8443" (host[:port], any
	// scheme), or "*" for any. A request whose Origin header names another
	// host:port than its Host header and is not listed is refused with 403:
	// otherwise any web page a user visits could connect with that user's
	// network position and cookies. A page served from another port of the
	// same name is another origin and must be listed. Requests without
	// Origin (non-browser clients) are always allowed.
	AllowedOrigins []string `yaml:"allowed_origins"`
	// CheckOrigin, when set, replaces the Origin rule above.
	CheckOrigin func(*http.Request) bool `yaml:"-"`
	// WriteTimeout closes a connection whose peer accepts less than 64 KiB
	// in this long. Default: 30 s.
	WriteTimeout time.Duration `yaml:"write_timeout"`
	// ProxyProtocol: every connection starts with a PROXY protocol header
	// (v1 or v2), read before the TLS handshake (wss://) or the HTTP
	// request, within the header timeout; the address it names is the
	// connection's RemoteAddr. The broker sets it from listener_settings.
	ProxyProtocol bool `yaml:"-"`
	// HeaderTimeout bounds reading an HTTP request (and the TLS handshake
	// of wss://). Default: Config.HandshakeTimeout (the broker's
	// ConnectTimeout).
	HeaderTimeout time.Duration `yaml:"header_timeout"`
	// IdleTimeout closes a keep-alive HTTP connection idle between
	// requests. Default: 60 s.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// MaxHeaderBytes bounds an HTTP request's header. Default: 64 KiB.
	MaxHeaderBytes int `yaml:"max_header_bytes"`
}

// wsStream reads a WebSocket connection's binary messages as one stream.
//
// Concurrency: Read and SetReadDeadline belong to the reader goroutine;
// Write, SetWriteDeadline and closeFrame to the writer goroutine (gorilla
// allows one of each, and WriteControl from anywhere).
type wsStream struct {
	ws *websocket.Conn
	r  io.Reader
}

// wsCloser is a WebSocket stream's side the connection closes through:
// wsStream (gorilla's framing) or deflateStream (ws_deflate.go).
type wsCloser interface {
	closeFrame(code int, reason string, deadline time.Time) error
}

// wsCompressMin is the smallest message compressed: below it the deflate
// block overhead and CPU buy nothing.
const wsCompressMin = 256

var errTextFrame = errors.New("websocket: non-binary frame")

func (w *wsStream) Read(p []byte) (int, error) {
	for {
		if w.r == nil {
			typ, r, err := w.ws.NextReader()
			if err != nil {
				return 0, err
			}
			if typ != websocket.BinaryMessage {
				// MQTT is carried in binary frames only [MQTT-6.0.0-1].
				_ = w.ws.WriteControl(websocket.CloseMessage,
					websocket.FormatCloseMessage(websocket.CloseUnsupportedData, "MQTT needs binary frames"),
					time.Now().Add(time.Second))
				return 0, errTextFrame
			}
			w.r = r
		}
		n, err := w.r.Read(p)
		if err == io.EOF {
			w.r = nil
			if n > 0 {
				return n, nil
			}
			continue
		}
		return n, err
	}
}

// Write sends p as one binary message.
func (w *wsStream) Write(p []byte) (int, error) {
	if err := w.ws.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// closeFrame starts the closing handshake (RFC 6455 §5.5.1).
func (w *wsStream) closeFrame(code int, reason string, deadline time.Time) error {
	return w.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), deadline)
}

func (w *wsStream) Close() error                       { return w.ws.Close() }
func (w *wsStream) LocalAddr() net.Addr                { return w.ws.LocalAddr() }
func (w *wsStream) RemoteAddr() net.Addr               { return w.ws.RemoteAddr() }
func (w *wsStream) SetReadDeadline(t time.Time) error  { return w.ws.SetReadDeadline(t) }
func (w *wsStream) SetWriteDeadline(t time.Time) error { return w.ws.SetWriteDeadline(t) }
func (w *wsStream) SetDeadline(t time.Time) error {
	_ = w.ws.SetWriteDeadline(t)
	return w.ws.SetReadDeadline(t)
}

// wsHandler answers every request of one WebSocket listener.
type wsHandler struct {
	t            *Transport
	paths        []string // exact request paths served
	up           websocket.Upgrader
	allowed      []string
	check        func(*http.Request) bool
	writeTimeout time.Duration
	compress     bool // permessage-deflate negotiated with clients that offer it
}

// RequestPaths is the listener's path list: Path then Paths, without
// duplicates; "/mqtt" when both are empty.
func (l WebSocketListener) RequestPaths() []string {
	var out []string
	for _, p := range append([]string{l.Path}, l.Paths...) {
		if p != "" && !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	if len(out) == 0 {
		out = []string{"/mqtt"}
	}
	return out
}

// listenWebSocket opens one WebSocket listener.
func (t *Transport) listenWebSocket(l WebSocketListener) error {
	h := &wsHandler{t: t, paths: l.RequestPaths(), allowed: l.AllowedOrigins, check: l.CheckOrigin, writeTimeout: l.WriteTimeout,
		compress: l.Compression}
	if h.writeTimeout <= 0 {
		h.writeTimeout = DefaultWriteTimeout
	}
	headerTimeout := l.HeaderTimeout
	if headerTimeout <= 0 {
		headerTimeout = t.cfg.HandshakeTimeout
	}
	idle := l.IdleTimeout
	if idle <= 0 {
		idle = DefaultIdleTimeout
	}
	maxHeader := l.MaxHeaderBytes
	if maxHeader <= 0 {
		maxHeader = DefaultMaxHeaderBytes
	}
	h.up = websocket.Upgrader{Subprotocols: []string{"mqtt", "mqttv3.1"},
		CheckOrigin:    func(*http.Request) bool { return true }, // decided in ServeHTTP
		ReadBufferSize: 4096, WriteBufferSize: 4096, HandshakeTimeout: headerTimeout,
		// gorilla answers an offer with "permessage-deflate;
		// server_no_context_takeover; client_no_context_takeover" and
		// nothing else: the bounded form (see Compression). The framing
		// of such a connection is then ws_deflate.go's.
		EnableCompression: l.Compression}
	var src *CertSource
	if l.Config != nil || l.CertFile != "" {
		var err error
		spec := TLSListener{Config: l.Config, CertFile: l.CertFile, KeyFile: l.KeyFile, MinVersion: l.MinVersion}
		if src, err = NewCertSource(l.Addr, spec, t.cfg.Logger); err != nil {
			return fmt.Errorf("WebSocket listener %s: %w", l.Addr, err)
		}
	}
	tcp, err := net.Listen("tcp", l.Addr)
	if err != nil {
		return fmt.Errorf("WebSocket listener: %w", err)
	}
	var ln net.Listener = countingListener{tcp, t}
	if l.ProxyProtocol {
		ln = proxyListener{ln, t}
	}
	if src != nil {
		src.addr = tcp.Addr().String()
		src.SetSessionTicketKeys(t.cfg.TicketKeys)
		src.CheckExpiry(time.Now())
		t.tlsSources = append(t.tlsSources, src)
		ln = tls.NewListener(ln, src.front)
	}
	hs := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: headerTimeout,
		ReadTimeout:       headerTimeout, // an upgrade has no body; hijacking clears the deadline
		WriteTimeout:      headerTimeout,
		IdleTimeout:       idle,
		MaxHeaderBytes:    maxHeader,
		ErrorLog:          log.New(httpErrorLog{t}, "", 0),
		ConnState:         t.wssConnState,
	}
	t.https = append(t.https, hs)
	t.wsAddrs = append(t.wsAddrs, tcp.Addr())
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		if err := hs.Serve(ln); err != nil && !t.stopped.Load() {
			t.cfg.Logger.Error("WebSocket listener stopped", "addr", tcp.Addr().String(), "err", err)
		}
	}()
	t.cfg.Logger.Info("tern listening (WebSocket)", "addr", tcp.Addr().String(), "paths", strings.Join(h.paths, " "), "tls", src != nil, "compression", h.compress)
	return nil
}

// ServeHTTP upgrades a valid MQTT WebSocket request and hands the stream
// to the transport; anything else gets a short answer, is counted and,
// rate-limited, logged.
func (h *wsHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	t := h.t
	if !slices.Contains(h.paths, r.URL.Path) {
		t.stats.wsNotFound.Add(1)
		t.logWSPath.Log(t.cfg.Logger, slog.LevelInfo, "WebSocket request for an unknown path",
			"remote", r.RemoteAddr, "path", clip(r.URL.Path), "want", strings.Join(h.paths, " "))
		http.Error(w, "404 not found", http.StatusNotFound)
		return
	}
	if !websocket.IsWebSocketUpgrade(r) {
		t.stats.wsBadRequest.Add(1)
		w.Header().Set("Upgrade", "websocket")
		http.Error(w, "426 this is an MQTT over WebSocket endpoint: connect with a WebSocket client", http.StatusUpgradeRequired)
		return
	}
	if !h.originAllowed(r) {
		t.stats.wsOrigin.Add(1)
		t.logWSOrigin.Log(t.cfg.Logger, slog.LevelWarn, "WebSocket upgrade refused: cross-origin request (add the origin to the listener's allowed origins if it is yours)",
			"remote", r.RemoteAddr, "origin", clip(r.Header.Get("Origin")), "host", clip(r.Host))
		http.Error(w, "403 cross-origin WebSocket request refused", http.StatusForbidden)
		return
	}
	if !hasMQTTSubprotocol(r) { // [MQTT-6.0.0-3]
		t.stats.wsBadRequest.Add(1)
		http.Error(w, "400 MQTT over WebSocket needs Sec-WebSocket-Protocol: mqtt", http.StatusBadRequest)
		return
	}
	ws, err := h.up.Upgrade(w, r, nil)
	if err != nil {
		t.stats.wsBadRequest.Add(1) // the upgrader answered the client
		return
	}
	// A message holds at most one packet from a well-behaved client; the
	// slack covers the WebSocket framing of a maximum-size packet.
	ws.SetReadLimit(int64(t.cfg.MaxPacketSize) + 16)
	raw := ws.NetConn()
	if tc, ok := raw.(*tls.Conn); ok {
		raw = tc.NetConn()
	}
	if h.compress && offersDeflate(r) {
		// permessage-deflate negotiated: framed by ws_deflate.go, with
		// klauspost/compress, on the hijacked connection (gorilla has
		// read nothing from it yet).
		s := newDeflateStream(ws.NetConn(), int64(t.cfg.MaxPacketSize)+16)
		t.open(s, raw, s, "", h.writeTimeout)
		return
	}
	s := &wsStream{ws: ws}
	t.open(s, raw, s, "", h.writeTimeout)
}

// originAllowed applies the listener's Origin rule (see AllowedOrigins).
func (h *wsHandler) originAllowed(r *http.Request) bool {
	return WebSocketListener{AllowedOrigins: h.allowed, CheckOrigin: h.check}.OriginAllowed(r)
}

// OriginAllowed applies the listener's Origin rule to an upgrade request
// (see AllowedOrigins and CheckOrigin). Both WebSocket engines use it.
func (l WebSocketListener) OriginAllowed(r *http.Request) bool {
	if l.CheckOrigin != nil {
		return l.CheckOrigin(r)
	}
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true // not a browser: Origin is what browsers add
	}
	u, err := url.Parse(origin)
	if err == nil && u.Host != "" && strings.EqualFold(u.Host, r.Host) {
		return true
	}
	for _, a := range l.AllowedOrigins {
		switch {
		case a == "*", strings.EqualFold(a, origin):
			return true
		case err == nil && !strings.Contains(a, "://") && strings.EqualFold(a, u.Host):
			return true
		}
	}
	return false
}

func hasMQTTSubprotocol(r *http.Request) bool {
	for _, p := range websocket.Subprotocols(r) {
		if p == "mqtt" || p == "mqttv3.1" {
			return true
		}
	}
	return false
}

// wssConnState counts wss:// handshakes that failed: a TLS connection that
// closes before its handshake completed (net/http runs the handshake).
func (t *Transport) wssConnState(c net.Conn, st http.ConnState) {
	if st != http.StateClosed || t.stopped.Load() {
		return
	}
	if tc, ok := c.(*tls.Conn); ok && !tc.ConnectionState().HandshakeComplete && !proxyFailed(tc) {
		t.stats.handshakeFailures.Add(1)
	}
}

// countingListener counts Accept errors; net/http backs off on them.
type countingListener struct {
	net.Listener
	t *Transport
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil && !l.t.stopped.Load() {
		l.t.stats.acceptErrors.Add(1)
	}
	return c, err
}

// httpErrorLog routes net/http's own log lines (TLS handshake errors,
// accept retries) into the transport's logger, rate-limited.
type httpErrorLog struct{ t *Transport }

func (e httpErrorLog) Write(p []byte) (int, error) {
	msg := strings.TrimSpace(string(p))
	rl, level := &e.t.logHTTP, slog.LevelWarn
	if strings.Contains(msg, "TLS handshake error") {
		rl, level = &e.t.logHandshake, slog.LevelInfo
	}
	rl.Log(e.t.cfg.Logger, level, "WebSocket listener: "+msg)
	return len(p), nil
}

// clip bounds a client-chosen string before it goes into a log line.
func clip(s string) string {
	if len(s) > 200 {
		return s[:200] + "…"
	}
	return s
}
