package stdnet

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/ternmq/tern/internal/listenutil"
)

// TLSListener is one MQTT-over-TLS listener.
type TLSListener struct {
	Addr     string `yaml:"addr"`      // host:port
	CertFile string `yaml:"cert_file"` // PEM certificate chain
	KeyFile  string `yaml:"key_file"`  // PEM private key
	// Config, when set, is used instead of loading CertFile/KeyFile (a
	// copy: the fields below fill what it leaves zero).
	Config *tls.Config `yaml:"-"`
	// MinVersion is the oldest TLS version accepted: "1.2" (default) or
	// "1.3". It overrides Config.MinVersion when set.
	MinVersion string `yaml:"min_version"`
	// ClientCAFile is a PEM file of the certificate authorities client
	// certificates must chain to (mutual TLS). Needed by ClientAuth
	// "request" and "require" unless Config.ClientCAs is set.
	ClientCAFile string `yaml:"client_ca_file"`
	// ClientAuth asks clients for a certificate: ClientAuthNone (default:
	// none asked), ClientAuthRequest (asked; one given must verify against
	// ClientCAFile, a client without one goes on to password
	// authentication) or ClientAuthRequire (a verified certificate is
	// required: a client without one is refused during the handshake).
	ClientAuth string `yaml:"client_auth"`
	// IdentityFrom makes the verified client certificate the client's
	// identity: its user name for the Authorizer (ACL rules, %u) and for
	// session ownership, in place of the CONNECT User Name, and its
	// authentication (the password Authenticator is not asked). One of
	// IdentityCN, IdentitySubject (the RFC 2253 subject, e.g.
	// "CN=dev1,O=Acme"), IdentitySANDNS, IdentitySANEmail, IdentitySANURI
	// (the first such Subject Alternative Name); "" (default): the
	// certificate only admits the client. A certificate without the chosen
	// field fails the handshake.
	IdentityFrom string `yaml:"identity_from"`
	// ExpiryWarningDays: a certificate (the listener's own or a client
	// CA's) that expires within this many days is warned about at start,
	// on every reload and once a day. Default: DefaultExpiryWarningDays.
	ExpiryWarningDays int `yaml:"expiry_warning_days"`
	// Curves are the key exchanges offered, most preferred first: any of
	// X25519MLKEM768 (post-quantum hybrid, TLS 1.3 only: about +45 % CPU
	// per full handshake and a 1.2 KB larger ClientHello/ServerHello),
	// X25519, P-256, P-384, P-521. Default (empty): Go's list, which puts
	// X25519MLKEM768 first for clients that offer it.
	Curves []string `yaml:"curves"`
	// WriteTimeout closes a connection whose peer accepts less than 64 KiB
	// in this long. Default: 30 s. tls_engine: stdnet only; on the event
	// loops a peer that stops reading meets the broker's outbound limits
	// (max_outbound_bytes), as on plain TCP.
	WriteTimeout time.Duration `yaml:"write_timeout"`
	// ProxyProtocol: every connection starts with a PROXY protocol header
	// (v1 or v2), read before the TLS handshake within HandshakeTimeout;
	// the address it names is the connection's RemoteAddr. The broker
	// sets it from listener_settings.
	ProxyProtocol bool `yaml:"-"`
}

// curveIDs are the names Curves accepts.
var curveIDs = map[string]tls.CurveID{
	"X25519MLKEM768": tls.X25519MLKEM768, "X25519": tls.X25519,
	"P-256": tls.CurveP256, "P-384": tls.CurveP384, "P-521": tls.CurveP521,
}

// ParseCurves turns Curves into crypto/tls's IDs; an unknown name is an
// error naming it.
func ParseCurves(names []string) ([]tls.CurveID, error) {
	var ids []tls.CurveID
	for _, n := range names {
		id, ok := curveIDs[n]
		if !ok {
			return nil, fmt.Errorf("curve %q: want X25519MLKEM768, X25519, P-256, P-384 or P-521", n)
		}
		ids = append(ids, id)
	}
	return ids, nil
}

// aeadSuites are the TLS 1.2 cipher suites offered: ECDHE (forward
// secrecy) with an AEAD only. Go's defaults still include the CBC-SHA1
// suites, which have a history of padding-oracle and timing attacks
// (Lucky13) and no reason to exist for MQTT clients, all of which speak
// AES-GCM or ChaCha20. TLS 1.3 suites are not configurable and all AEAD.
var aeadSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// listenTLS opens one TLS listener. The handshake runs on its own
// goroutine per connection, not in the accept loop, so that a slow or
// silent peer delays nobody else.
func (t *Transport) listenTLS(l TLSListener) error {
	src, err := NewCertSource(l.Addr, l, t.cfg.Logger)
	if err != nil {
		return fmt.Errorf("TLS listener %s: %w", l.Addr, err)
	}
	ln, err := net.Listen("tcp", l.Addr)
	if err != nil {
		return fmt.Errorf("TLS listener: %w", err)
	}
	src.addr = ln.Addr().String()
	src.SetSessionTicketKeys(t.cfg.TicketKeys)
	src.CheckExpiry(time.Now())
	t.tlsSources = append(t.tlsSources, src)
	wt := l.WriteTimeout
	if wt <= 0 {
		wt = DefaultWriteTimeout
	}
	t.lns = append(t.lns, ln)
	t.tlsAddrs = append(t.tlsAddrs, ln.Addr())
	t.wg.Add(1)
	go t.acceptTLS(ln, src, wt, l.ProxyProtocol)
	t.cfg.Logger.Info("tern listening (TLS)", "addr", ln.Addr().String())
	return nil
}

// acceptTLS accepts until Stop, backing off on errors such as EMFILE.
func (t *Transport) acceptTLS(ln net.Listener, src *CertSource, writeTimeout time.Duration, proxy bool) {
	defer t.wg.Done()
	var pause time.Duration
	for {
		raw, err := ln.Accept()
		if err != nil {
			if t.stopped.Load() {
				return
			}
			t.stats.acceptErrors.Add(1)
			pause = listenutil.Backoff(pause)
			t.logAccept.Log(t.cfg.Logger, slog.LevelError, "TLS accept failed; backing off",
				"addr", ln.Addr().String(), "err", err, "backoff", pause)
			if !t.sleep(pause) {
				return
			}
			continue
		}
		pause = 0
		t.mu.Lock()
		if t.stopping {
			t.mu.Unlock()
			_ = raw.Close()
			return
		}
		t.handshaking[raw] = struct{}{}
		t.hsWG.Add(1)
		t.mu.Unlock()
		go t.handshake(raw, src, writeTimeout, proxy)
	}
}

// handshake runs the TLS handshake of raw within HandshakeTimeout (the
// whole cost of a peer that connects and sends nothing is this goroutine
// and its socket until then) and opens the connection, with the identity
// its client certificate carries if the listener takes one. With proxy,
// the PROXY protocol header is read first (within HandshakeTimeout too).
func (t *Transport) handshake(raw net.Conn, src *CertSource, writeTimeout time.Duration, proxy bool) {
	defer t.hsWG.Done()
	sock := raw // the key in t.handshaking
	if proxy {
		var ok bool
		if raw, ok = t.readProxy(raw); !ok {
			t.mu.Lock()
			delete(t.handshaking, sock)
			t.mu.Unlock()
			return
		}
	}
	tc := tls.Server(raw, src.front)
	_ = raw.SetDeadline(time.Now().Add(t.cfg.HandshakeTimeout))
	err := tc.Handshake()
	t.mu.Lock()
	delete(t.handshaking, sock)
	t.mu.Unlock()
	if err != nil {
		_ = raw.Close()
		if !t.stopped.Load() {
			t.handshakeFailed(raw.RemoteAddr(), err)
		}
		return
	}
	_ = raw.SetDeadline(time.Time{})
	cs := tc.ConnectionState()
	t.open(tc, raw, nil, src.Identity(&cs), writeTimeout)
}

// handshakeFailed counts and logs (rate-limited) a failed TLS handshake.
func (t *Transport) handshakeFailed(remote net.Addr, err error) {
	t.stats.handshakeFailures.Add(1)
	t.logHandshake.Log(t.cfg.Logger, slog.LevelInfo, "TLS handshake failed",
		"remote", addrString(remote), "err", err)
}
