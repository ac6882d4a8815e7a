package server

// The TLS and WebSocket listeners run on the standard-library transport,
// server/stdnet, which knows nothing of the broker: it adapts its
// connections to gnet.Conn and gnet.EventLoop and drives the same handler
// as the gnet listeners. This file builds its configuration from Options
// and tells it which WebSocket close code a broker-side close deserves.

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/gorilla/websocket"
	"github.com/panjf2000/gnet/v2"

	"github.com/ternmq/tern/codec"
	"github.com/ternmq/tern/server/stdnet"
	"github.com/ternmq/tern/server/tlsloop"
	"github.com/ternmq/tern/server/wsloop"
)

// TLSListener is one MQTT-over-TLS listener; see stdnet.TLSListener.
type TLSListener = stdnet.TLSListener

// WebSocketListener is one MQTT-over-WebSocket listener; see
// stdnet.WebSocketListener.
type WebSocketListener = stdnet.WebSocketListener

// startNetListeners opens the TLS and WebSocket listeners; their bound
// addresses are then in TLSAddrs and WebSocketAddrs. Called once by Serve,
// before the gnet engine starts. The transport gets as many task loops as
// gnet has event loops (Options.EventLoops, resolved by EnsureDefaults).
//
// With websocket_engine loops, ws:// listeners are server/wsloop's and
// wss:// ones server/tlsloop's (TLS) handing their decrypted connections
// to server/wsloop's handler (WebSocket): the handler chain is
// gnet → tlsloop → wsloop → the broker.
func (s *Server) startNetListeners() error {
	tlsListeners, wsListeners := s.proxyListeners()
	keys, err := s.ticketKeys()
	if err != nil {
		return err
	}
	s.wsAddrs = make([]net.Addr, len(wsListeners))
	var wssOnLoops []int // indexes in wsListeners of wss:// listeners on the loops
	if s.opts.WebSocketEngine == WebSocketEngineLoops && len(wsListeners) > 0 {
		var plain []WebSocketListener
		var plainAt []int
		for i, l := range wsListeners {
			if wsloop.IsTLS(l) {
				wssOnLoops = append(wssOnLoops, i)
			} else {
				plain, plainAt = append(plain, l), append(plainAt, i)
			}
		}
		w, err := wsloop.Listen(wsloop.Config{
			Handler:             &handler{s: s},
			Logger:              s.log,
			MaxPacketSize:       s.opts.MaxPacketSize,
			MaxPlaintext:        2*s.opts.MaxPacketSize + 64<<10,
			HeaderTimeout:       s.opts.ConnectTimeout,
			MaxHeaderBytesTotal: s.opts.Limits.MaxPartialBytes,
			CloseStatus:         wsCloseStatus,
			Refused:             s.wsRefused,
			ProxyRefused:        s.proxyRefused,
		}, plain)
		if err != nil {
			return err
		}
		s.wsL = w
		for k, i := range plainAt {
			s.wsAddrs[i] = w.Addrs()[k]
		}
	}
	var onLoops []TLSListener // what server/tlsloop serves: TLS listeners, then wss:// ones
	nTLS := 0
	if s.opts.TLSEngine == TLSEngineLoops {
		onLoops, nTLS, tlsListeners = tlsListeners, len(tlsListeners), nil
	}
	for _, i := range wssOnLoops {
		l := wsListeners[i]
		onLoops = append(onLoops, TLSListener{Addr: l.Addr, CertFile: l.CertFile, KeyFile: l.KeyFile,
			Config: l.Config, MinVersion: l.MinVersion, ProxyProtocol: l.ProxyProtocol})
	}
	if len(onLoops) > 0 {
		var inner gnet.EventHandler = &handler{s: s}
		if s.wsL != nil {
			inner = s.wsL.Wrap()
		}
		l, err := tlsloop.Listen(tlsloop.Config{
			Handler:      inner,
			Logger:       s.log,
			MaxPlaintext: 2*s.opts.MaxPacketSize + 64<<10,
			TicketKeys:   keys,
			ProxyTimeout: s.opts.ConnectTimeout,
			ProxyRefused: s.proxyRefused,
		}, onLoops)
		if err != nil {
			s.wsL.Stop()
			return err
		}
		s.tlsL = l
		addrs := l.Addrs()
		s.tlsAddrs = addrs[:nTLS]
		for k, i := range wssOnLoops {
			s.wsAddrs[i] = addrs[nTLS+k]
			s.wsL.AddTLSListener(wsListeners[i], addrs[nTLS+k])
		}
	}
	var stdWS []WebSocketListener
	if s.wsL == nil {
		stdWS = wsListeners
	}
	t, err := stdnet.Start(stdnet.Config{
		Handler:          &handler{s: s},
		Loops:            s.opts.EventLoops,
		MaxPacketSize:    s.opts.MaxPacketSize,
		HandshakeTimeout: s.opts.ConnectTimeout,
		Logger:           s.log,
		CloseStatus:      wsCloseStatus,
		TicketKeys:       keys,
		ProxyRefused:     s.proxyRefused,
	}, tlsListeners, stdWS)
	if err != nil {
		s.tlsL.Stop()
		s.wsL.Stop()
		return err
	}
	s.tlsT = t
	if s.opts.TLSEngine != TLSEngineLoops {
		s.tlsAddrs = t.TLSAddrs()
	}
	if s.wsL == nil {
		s.wsAddrs = t.WebSocketAddrs()
	}
	for i, a := range s.tlsAddrs { // ratelimit.go: per-listener settings, by bound address
		s.bindListenerSettings(s.opts.TLSListeners[i].Addr, a, false)
	}
	for i, a := range s.wsAddrs {
		s.bindListenerSettings(s.opts.WebSocketListeners[i].Addr, a, false)
	}
	return nil
}

// stopNetListeners stops accepting TLS and WebSocket connections and
// closes those of server/stdnet (the event loops' TLS and WebSocket
// connections close with the loops).
func (s *Server) stopNetListeners() {
	s.wsL.Stop()
	s.tlsL.Stop()
	if s.tlsT != nil {
		s.tlsT.Stop()
	}
}

// wsRefused counts and logs (rate-limited) a WebSocket connection that
// server/wsloop refused by one of its limits. Runs on the connection's loop.
func (s *Server) wsRefused(limit string, remote net.Addr, detail string) {
	id := limitWSMessage
	switch limit {
	case wsloop.LimitHeader:
		id = limitWSHeader
	case wsloop.LimitHeaderTimeout:
		id = limitWSHeaderTimeout
	}
	r := ""
	if remote != nil {
		r = remote.String()
	}
	s.refuse(id, "", "", r, detail)
}

// ticketKeyFile is where the TLS session ticket key lives in the data
// directory (see ticketKeys).
const ticketKeyFile = "tls-ticket-keys"

// ticketKeys loads the session ticket keys every TLS listener uses, from
// Options.TLSTicketKeyFile or the data directory's tls-ticket-keys,
// creating the file with one random key (mode 0600) if it does not
// exist. Persisted keys let clients resume their sessions after a restart
// (a reconnect storm then costs abbreviated handshakes, not full ones);
// brokers given the same file resume each other's tickets. The file holds
// 32-byte keys back to back: the first encrypts, all decrypt, so a new key
// can be prepended while the old one still accepts tickets. Without TLS
// listeners nothing is read or created.
func (s *Server) ticketKeys() ([][32]byte, error) {
	if len(s.opts.TLSListeners) == 0 && !s.wssConfigured() {
		return nil, nil
	}
	path := s.opts.TLSTicketKeyFile
	if path == "" {
		if s.opts.DataDir == "" {
			return nil, nil
		}
		if err := os.MkdirAll(s.opts.DataDir, 0o700); err != nil {
			return nil, fmt.Errorf("TLS ticket keys: %w", err)
		}
		path = filepath.Join(s.opts.DataDir, ticketKeyFile)
	}
	raw, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		var k [32]byte
		if _, err := rand.Read(k[:]); err != nil {
			return nil, fmt.Errorf("TLS ticket keys: %w", err)
		}
		if err := os.WriteFile(path, k[:], 0o600); err != nil {
			return nil, fmt.Errorf("TLS ticket keys: %w", err)
		}
		s.log.Info("TLS session ticket key created", "file", path)
		return [][32]byte{k}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("TLS ticket keys: %w", err)
	}
	if len(raw) == 0 || len(raw)%32 != 0 {
		return nil, fmt.Errorf("TLS ticket keys %s: %d bytes, want a non-zero multiple of 32", path, len(raw))
	}
	keys := make([][32]byte, len(raw)/32)
	for i := range keys {
		copy(keys[i][:], raw[32*i:])
	}
	return keys, nil
}

// wssConfigured reports whether a WebSocket listener serves wss://.
func (s *Server) wssConfigured() bool {
	for _, l := range s.opts.WebSocketListeners {
		if l.CertFile != "" || l.Config != nil {
			return true
		}
	}
	return false
}

// reloadTLS re-reads the certificate, key and client CA files of every TLS
// and wss:// listener, for the handshakes that follow; established
// connections keep theirs. If any file is missing or bad, nothing changes
// and the error names the listener and the file. Safe from any goroutine;
// a no-op without TLS listeners or before Serve is ready (a SIGHUP during
// start-up: the listeners read the files as they start).
func (s *Server) reloadTLS() error {
	select {
	case <-s.ready: // Serve set tlsT and tlsL before the engine booted
	default:
		return nil // not serving yet: the listeners read the files when they start
	}
	return errors.Join(s.tlsT.ReloadTLS(), s.tlsL.ReloadTLS())
}

// wsCloseStatus is the WebSocket close frame for a connection the broker
// closed (stdnet.Config.CloseStatus); it runs on the connection's loop
// before OnClose, so the client still says why.
func wsCloseStatus(c gnet.Conn) (int, string) {
	cl, _ := c.Context().(*client)
	if cl == nil {
		return websocket.CloseNormalClosure, ""
	}
	rc := closeReasonCode(cl)
	return wsCode(rc), wsReason(rc)
}

// closeReasonCode recovers the MQTT reason code of a broker-side close
// from the client's state and close reason. The reason is text: codec
// errors end with "(reason 0xNN)"; the other closes are recognised by
// their fixed wording. Anything else counts as a normal closure.
func closeReasonCode(cl *client) codec.ReasonCode {
	if cl.takenOver.Load() {
		return codec.SessionTakenOver
	}
	why := cl.closeReason()
	if i := strings.LastIndex(why, "(reason 0x"); i >= 0 && len(why) >= i+13 {
		if v, err := strconv.ParseUint(why[i+10:i+12], 16, 8); err == nil {
			return codec.ReasonCode(v)
		}
	}
	for _, p := range [...]struct {
		prefix string
		code   codec.ReasonCode
	}{
		{"slow consumer", codec.QuotaExceeded},
		{"first packet too large", codec.PacketTooLarge},
		{"authentication failed", codec.NotAuthorized},
		{"anonymous clients", codec.NotAuthorized},
		{"client identifier too long", codec.ClientIDNotValid},
		{"empty client id", codec.ClientIDNotValid},
		{"store unavailable", codec.UnspecifiedError},
		{"keepalive expired", codec.KeepAliveTimeout},
		{"no CONNECT within", codec.MaximumConnectTime},
	} {
		if strings.HasPrefix(why, p.prefix) {
			return p.code
		}
	}
	return codec.Success
}

// wsCode maps an MQTT reason code to the closest RFC 6455 status code.
func wsCode(rc codec.ReasonCode) int {
	switch rc {
	case codec.MalformedPacket, codec.ProtocolError, codec.UnsupportedProtocolVersion,
		codec.TopicFilterInvalid, codec.TopicNameInvalid, codec.PacketIDInUse,
		codec.ReceiveMaximumExceeded, codec.TopicAliasInvalid, codec.PayloadFormatInvalid:
		return websocket.CloseProtocolError // 1002
	case codec.PacketTooLarge:
		return websocket.CloseMessageTooBig // 1009
	case codec.ClientIDNotValid, codec.BadUsernameOrPassword, codec.NotAuthorized, codec.Banned,
		codec.BadAuthenticationMethod, codec.QuotaExceeded, codec.MessageRateTooHigh,
		codec.ConnectionRateExceeded, codec.AdministrativeAction:
		return websocket.ClosePolicyViolation // 1008
	case codec.ServerBusy, codec.ServerUnavailable:
		return websocket.CloseTryAgainLater // 1013
	case codec.ServerShuttingDown:
		return websocket.CloseGoingAway // 1001
	case codec.UnspecifiedError, codec.ImplementationSpecificError:
		return websocket.CloseInternalServerErr // 1011
	}
	return websocket.CloseNormalClosure // 1000: DISCONNECT, takeover, keepalive, connect timeout
}

// wsReason is the close frame's short reason: the MQTT reason's name,
// never the internal detail (that is in the broker's log).
func wsReason(rc codec.ReasonCode) string {
	switch rc {
	case codec.Success:
		return ""
	case codec.SessionTakenOver:
		return "session taken over"
	case codec.QuotaExceeded:
		return "quota exceeded (slow consumer?)"
	case codec.PacketTooLarge:
		return "packet too large"
	case codec.NotAuthorized, codec.BadUsernameOrPassword, codec.BadAuthenticationMethod:
		return "not authorized"
	case codec.KeepAliveTimeout:
		return "keepalive timeout"
	case codec.MaximumConnectTime:
		return "no CONNECT in time"
	}
	if wsCode(rc) == websocket.CloseProtocolError {
		return "MQTT protocol error"
	}
	return "MQTT reason 0x" + strconv.FormatUint(uint64(rc), 16)
}

// tlsOpen is how many TLS connections (and, on server/stdnet, WebSocket
// ones) are open past their handshake, on either engine.
func (s *Server) tlsOpen() int64 { return s.tlsT.Stats().Open + s.tlsL.Stats().Open }

// wsOpen is how many WebSocket connections server/wsloop has upgraded and
// not closed.
func (s *Server) wsOpen() int64 { return s.wsL.Stats().Open }

// tlsHandshakeFailures counts failed TLS handshakes on either engine.
func (s *Server) tlsHandshakeFailures() uint64 {
	return s.tlsT.Stats().TLSHandshakeFailures + s.tlsL.Stats().TLSHandshakeFailures
}

// proxyListeners returns copies of the TLS and WebSocket listeners with
// ProxyProtocol set from listener_settings: their transports read the
// PROXY header before the TLS handshake or HTTP request.
func (s *Server) proxyListeners() ([]TLSListener, []WebSocketListener) {
	tl := slices.Clone(s.opts.TLSListeners)
	for i := range tl {
		tl[i].ProxyProtocol = s.opts.ListenerSettings[tl[i].Addr].ProxyProtocol
	}
	wl := slices.Clone(s.opts.WebSocketListeners)
	for i := range wl {
		wl[i].ProxyProtocol = s.opts.ListenerSettings[wl[i].Addr].ProxyProtocol
	}
	return tl, wl
}

// proxyRefused counts and logs (rate-limited) a TLS or WebSocket
// connection closed for a missing or invalid PROXY protocol header, as
// readProxyHeader does on the gnet path. Any goroutine.
func (s *Server) proxyRefused(remote net.Addr, err error) {
	r := ""
	if remote != nil {
		r = remote.String()
	}
	s.refuse(limitProxyHeader, "", "", r, "closed: invalid PROXY protocol header: "+err.Error())
}
