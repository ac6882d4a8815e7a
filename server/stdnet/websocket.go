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
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// WebSocketListener is one MQTT-over-WebSocket listener.
type WebSocketListener struct {
	Addr string `yaml:"addr"` // host:port
	Path string `yaml:"path"` // default "/mqtt"
	// CertFile and KeyFile (or Config) make it wss://.
	CertFile string      `yaml:"cert_file"`
	KeyFile  string      `yaml:"key_file"`
	Config   *tls.Config `yaml:"-"`
	// CheckOrigin, when set, decides browser Origin headers. Default: allow all.
	CheckOrigin func(*http.Request) bool `yaml:"-"`
}

// wsStream reads a WebSocket connection's binary messages as one stream.
type wsStream struct {
	ws *websocket.Conn
	r  io.Reader
	wm sync.Mutex
}

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
					websocket.FormatCloseMessage(websocket.CloseUnsupportedData, "MQTT needs binary frames"), time.Now().Add(time.Second))
				return 0, errors.New("websocket: non-binary frame")
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

func (w *wsStream) Write(p []byte) (int, error) {
	w.wm.Lock()
	defer w.wm.Unlock()
	if err := w.ws.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (w *wsStream) Close() error                       { return w.ws.Close() }
func (w *wsStream) LocalAddr() net.Addr                { return w.ws.LocalAddr() }
func (w *wsStream) RemoteAddr() net.Addr               { return w.ws.RemoteAddr() }
func (w *wsStream) SetDeadline(t time.Time) error      { return w.ws.NetConn().SetDeadline(t) }
func (w *wsStream) SetReadDeadline(t time.Time) error  { return w.ws.SetReadDeadline(t) }
func (w *wsStream) SetWriteDeadline(t time.Time) error { return w.ws.SetWriteDeadline(t) }

// startWebSocket opens the WebSocket listeners.
func (t *Transport) startWebSocket(listeners []WebSocketListener) error {
	for _, l := range listeners {
		path := l.Path
		if path == "" {
			path = "/mqtt"
		}
		check := l.CheckOrigin
		if check == nil {
			check = func(*http.Request) bool { return true }
		}
		up := websocket.Upgrader{Subprotocols: []string{"mqtt", "mqttv3.1"}, CheckOrigin: check,
			ReadBufferSize: 4096, WriteBufferSize: 4096, HandshakeTimeout: t.cfg.HandshakeTimeout}
		mux := http.NewServeMux()
		mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			if !hasMQTTSubprotocol(r) { // [MQTT-6.0.0-3]
				http.Error(w, `MQTT over WebSocket needs Sec-WebSocket-Protocol: mqtt`, http.StatusBadRequest)
				return
			}
			ws, err := up.Upgrade(w, r, nil)
			if err != nil {
				return // the upgrader answered the client
			}
			ws.SetReadLimit(int64(t.cfg.MaxPacketSize) + 16)
			t.open(&wsStream{ws: ws})
		})
		ln, err := net.Listen("tcp", l.Addr)
		if err != nil {
			return err
		}
		cfg := l.Config
		if cfg == nil && l.CertFile != "" {
			cert, err := tls.LoadX509KeyPair(l.CertFile, l.KeyFile)
			if err != nil {
				ln.Close()
				return err
			}
			cfg = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		}
		if cfg != nil {
			ln = tls.NewListener(ln, cfg)
		}
		hs := &http.Server{Handler: mux, ReadHeaderTimeout: t.cfg.HandshakeTimeout}
		t.lns = append(t.lns, ln)
		t.wsAddrs = append(t.wsAddrs, ln.Addr())
		t.wg.Add(1)
		go func() {
			defer t.wg.Done()
			if err := hs.Serve(ln); err != nil && !t.closed.Load() {
				t.cfg.Logger.Error("websocket listener stopped", "err", err)
			}
		}()
		t.cfg.Logger.Info("tern listening (WebSocket)", "addr", ln.Addr().String(), "path", path, "tls", cfg != nil)
	}
	return nil
}

func hasMQTTSubprotocol(r *http.Request) bool {
	for _, p := range websocket.Subprotocols(r) {
		if p == "mqtt" || p == "mqttv3.1" {
			return true
		}
	}
	return false
}
