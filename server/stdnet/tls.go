package stdnet

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"
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
	// WriteTimeout closes a connection whose peer accepts less than 64 KiB
	// in this long. Default: 30 s.
	WriteTimeout time.Duration `yaml:"write_timeout"`
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

// certWarnWithin is how close to its expiry a certificate gets a warning
// at start: enough for a renewal to be noticed before clients fail.
const certWarnWithin = 30 * 24 * time.Hour

// serverTLSConfig builds a listener's tls.Config: a copy of cfg or the
// certificate loaded from the files, with MinVersion and the AEAD suites
// filled in unless cfg chose its own.
func serverTLSConfig(cfg *tls.Config, certFile, keyFile, minVersion string) (*tls.Config, error) {
	var c *tls.Config
	if cfg != nil {
		c = cfg.Clone()
	} else {
		if certFile == "" || keyFile == "" {
			return nil, errors.New("needs CertFile and KeyFile (or Config)")
		}
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, err
		}
		c = &tls.Config{Certificates: []tls.Certificate{cert}}
	}
	switch minVersion {
	case "":
		if c.MinVersion == 0 {
			c.MinVersion = tls.VersionTLS12
		}
	case "1.2":
		c.MinVersion = tls.VersionTLS12
	case "1.3":
		c.MinVersion = tls.VersionTLS13
	default:
		return nil, fmt.Errorf("min TLS version %q: want 1.2 or 1.3", minVersion)
	}
	if c.CipherSuites == nil {
		c.CipherSuites = aeadSuites
	}
	return c, nil
}

// checkCertificates warns about a certificate that is expired, about to
// expire or not valid yet: the broker still starts (a renewal may be on
// its way), but an operator reading the log learns why clients will fail.
func checkCertificates(log *slog.Logger, addr string, c *tls.Config, now time.Time) {
	for _, cert := range c.Certificates {
		leaf := cert.Leaf
		if leaf == nil && len(cert.Certificate) > 0 {
			var err error
			if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
				log.Warn("TLS certificate unreadable", "addr", addr, "err", err)
				continue
			}
		}
		if leaf == nil {
			continue
		}
		subject := leaf.Subject.String()
		switch {
		case now.After(leaf.NotAfter):
			log.Warn("TLS certificate expired: clients that verify it will refuse to connect",
				"addr", addr, "subject", subject, "not_after", leaf.NotAfter)
		case leaf.NotAfter.Sub(now) < certWarnWithin:
			log.Warn("TLS certificate expires soon", "addr", addr, "subject", subject,
				"not_after", leaf.NotAfter, "days_left", int(leaf.NotAfter.Sub(now).Hours()/24))
		case now.Before(leaf.NotBefore):
			log.Warn("TLS certificate not valid yet", "addr", addr, "subject", subject, "not_before", leaf.NotBefore)
		}
	}
}

// listenTLS opens one TLS listener. The handshake runs on its own
// goroutine per connection, not in the accept loop, so that a slow or
// silent peer delays nobody else.
func (t *Transport) listenTLS(l TLSListener) error {
	cfg, err := serverTLSConfig(l.Config, l.CertFile, l.KeyFile, l.MinVersion)
	if err != nil {
		return fmt.Errorf("TLS listener %s: %w", l.Addr, err)
	}
	ln, err := net.Listen("tcp", l.Addr)
	if err != nil {
		return fmt.Errorf("TLS listener: %w", err)
	}
	checkCertificates(t.cfg.Logger, ln.Addr().String(), cfg, time.Now())
	wt := l.WriteTimeout
	if wt <= 0 {
		wt = DefaultWriteTimeout
	}
	t.lns = append(t.lns, ln)
	t.tlsAddrs = append(t.tlsAddrs, ln.Addr())
	t.wg.Add(1)
	go t.acceptTLS(ln, cfg, wt)
	t.cfg.Logger.Info("tern listening (TLS)", "addr", ln.Addr().String())
	return nil
}

// acceptTLS accepts until Stop, backing off on errors such as EMFILE.
func (t *Transport) acceptTLS(ln net.Listener, cfg *tls.Config, writeTimeout time.Duration) {
	defer t.wg.Done()
	var pause time.Duration
	for {
		raw, err := ln.Accept()
		if err != nil {
			if t.stopped.Load() {
				return
			}
			t.stats.acceptErrors.Add(1)
			pause = backoff(pause)
			t.logAccept.log(t.cfg.Logger, slog.LevelError, "TLS accept failed; backing off",
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
		go t.handshake(raw, cfg, writeTimeout)
	}
}

// handshake runs the TLS handshake of raw within HandshakeTimeout (the
// whole cost of a peer that connects and sends nothing is this goroutine
// and its socket until then) and opens the connection.
func (t *Transport) handshake(raw net.Conn, cfg *tls.Config, writeTimeout time.Duration) {
	defer t.hsWG.Done()
	tc := tls.Server(raw, cfg)
	_ = raw.SetDeadline(time.Now().Add(t.cfg.HandshakeTimeout))
	err := tc.Handshake()
	t.mu.Lock()
	delete(t.handshaking, raw)
	t.mu.Unlock()
	if err != nil {
		_ = raw.Close()
		if !t.stopped.Load() {
			t.handshakeFailed(raw.RemoteAddr(), err)
		}
		return
	}
	_ = raw.SetDeadline(time.Time{})
	t.open(tc, raw, nil, writeTimeout)
}

// handshakeFailed counts and logs (rate-limited) a failed TLS handshake.
func (t *Transport) handshakeFailed(remote net.Addr, err error) {
	t.stats.handshakeFailures.Add(1)
	t.logHandshake.log(t.cfg.Logger, slog.LevelInfo, "TLS handshake failed",
		"remote", addrString(remote), "err", err)
}
