package stdnet

// Certificates: building a listener's tls.Config from its files, client
// certificates (mutual TLS) and the identity they carry, expiry warnings,
// and reloading the files while the listener runs.
//
// A TLS or wss:// listener hands crypto/tls a fixed "front" config whose
// only job is GetConfigForClient: it returns the current generation, an
// atomic pointer that a reload swaps. A handshake reads the pointer once
// when the ClientHello arrives, so a reload takes effect for the next
// handshake while established connections keep the keys they negotiated.
// The front config also owns the session ticket keys (crypto/tls uses the
// original config's keys unless the per-client one sets its own), so
// tickets issued before a reload still resume after it; crypto/tls
// re-verifies a resumed session's client chain against the current
// generation's ClientCAs, so a CA removed by a reload stops resumptions too.

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Client certificate modes (TLSListener.ClientAuth).
const (
	ClientAuthNone    = "none"    // no certificate asked for (default)
	ClientAuthRequest = "request" // asked for; verified when given
	ClientAuthRequire = "require" // required and verified
)

// Identity sources (TLSListener.IdentityFrom): which field of a verified
// client certificate names the client.
const (
	IdentityCN       = "cn"        // Subject Common Name (mosquitto use_identity_as_username)
	IdentitySubject  = "subject"   // whole subject, RFC 2253 (mosquitto use_subject_as_username)
	IdentitySANDNS   = "san_dns"   // first DNS Subject Alternative Name
	IdentitySANEmail = "san_email" // first e-mail Subject Alternative Name
	IdentitySANURI   = "san_uri"   // first URI Subject Alternative Name (e.g. SPIFFE IDs)
)

// DefaultExpiryWarningDays is how close to its expiry a certificate gets a
// warning: enough for a renewal to be noticed before clients fail.
const DefaultExpiryWarningDays = 30

// ClientAuthModes and IdentitySources list the accepted values, for
// configuration validation.
var (
	ClientAuthModes = []string{"", ClientAuthNone, ClientAuthRequest, ClientAuthRequire}
	IdentitySources = []string{"", IdentityCN, IdentitySubject, IdentitySANDNS, IdentitySANEmail, IdentitySANURI}
)

// expiryCheckEvery is how often a running transport re-checks its
// certificates' expiry: a broker running for months must warn before a
// certificate it loaded long ago runs out.
const expiryCheckEvery = 24 * time.Hour

// CertSource is one listener's certificates: how to build its tls.Config
// and the current generation. Safe from any goroutine; reload is
// serialised by the Transport.
type CertSource struct {
	addr string // the bound address, for logs
	spec TLSListener
	log  *slog.Logger

	front *tls.Config                // handed to crypto/tls; GetConfigForClient → cur
	cur   atomic.Pointer[tls.Config] // the current generation
	// caCerts are the client CA file's certificates of the current
	// generation, for the expiry check; guarded by mu.
	mu      sync.Mutex
	caCerts []*x509.Certificate
}

// NewCertSource loads spec's files and returns the source; addr names the
// listener in logs. The files are read now, so a bad one fails Start.
func NewCertSource(addr string, spec TLSListener, log *slog.Logger) (*CertSource, error) {
	s := &CertSource{addr: addr, spec: spec, log: log}
	cfg, ca, err := s.build()
	if err != nil {
		return nil, err
	}
	s.cur.Store(cfg)
	s.caCerts = ca
	s.front = &tls.Config{
		MinVersion:       cfg.MinVersion, // what a ClientHello is parsed under before the switch
		CurvePreferences: cfg.CurvePreferences,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return s.cur.Load(), nil
		},
	}
	return s, nil
}

// build makes a new generation from the spec: a copy of its Config or the
// certificate loaded from the files, the client CA pool, client
// certificate mode, minimum version, the AEAD suites unless the Config
// chose its own, and the identity check. It also returns the CA file's
// certificates.
func (s *CertSource) build() (*tls.Config, []*x509.Certificate, error) {
	l := &s.spec
	var c *tls.Config
	if l.Config != nil {
		c = l.Config.Clone()
	} else {
		if l.CertFile == "" || l.KeyFile == "" {
			return nil, nil, errors.New("needs CertFile and KeyFile (or Config)")
		}
		cert, err := tls.LoadX509KeyPair(l.CertFile, l.KeyFile)
		if err != nil {
			return nil, nil, fmt.Errorf("certificate %s / key %s: %w", l.CertFile, l.KeyFile, err)
		}
		c = &tls.Config{Certificates: []tls.Certificate{cert}}
	}
	switch l.MinVersion {
	case "":
		if c.MinVersion == 0 {
			c.MinVersion = tls.VersionTLS12
		}
	case "1.2":
		c.MinVersion = tls.VersionTLS12
	case "1.3":
		c.MinVersion = tls.VersionTLS13
	default:
		return nil, nil, fmt.Errorf("min TLS version %q: want 1.2 or 1.3", l.MinVersion)
	}
	if c.CipherSuites == nil {
		c.CipherSuites = aeadSuites
	}
	if len(l.Curves) > 0 {
		ids, err := ParseCurves(l.Curves)
		if err != nil {
			return nil, nil, err
		}
		c.CurvePreferences = ids
	}
	var ca []*x509.Certificate
	if l.ClientCAFile != "" {
		pool, certs, err := loadCAFile(l.ClientCAFile)
		if err != nil {
			return nil, nil, err
		}
		c.ClientCAs, ca = pool, certs
	}
	switch l.ClientAuth {
	case "", ClientAuthNone:
		// Config.ClientAuth, if an embedder set one, stays.
	case ClientAuthRequest:
		c.ClientAuth = tls.VerifyClientCertIfGiven
	case ClientAuthRequire:
		c.ClientAuth = tls.RequireAndVerifyClientCert
	default:
		return nil, nil, fmt.Errorf("client_auth %q: want none, request or require", l.ClientAuth)
	}
	if c.ClientAuth >= tls.VerifyClientCertIfGiven && c.ClientCAs == nil {
		// crypto/tls would verify against the system roots: any public
		// CA's customer could then log in.
		return nil, nil, errors.New("client certificates are verified but no client CA is configured (client_ca_file)")
	}
	if l.IdentityFrom != "" {
		if c.ClientAuth < tls.VerifyClientCertIfGiven {
			return nil, nil, fmt.Errorf("identity_from %q needs client_auth request or require", l.IdentityFrom)
		}
		if _, err := certIdentity(&x509.Certificate{}, l.IdentityFrom); errors.Is(err, errUnknownSource) {
			return nil, nil, err
		}
		prev, from := c.VerifyConnection, l.IdentityFrom
		// A verified certificate without the field that names the client
		// fails the handshake, with a reason the log shows, rather than
		// connecting a client nobody can tell apart.
		c.VerifyConnection = func(cs tls.ConnectionState) error {
			if prev != nil {
				if err := prev(cs); err != nil {
					return err
				}
			}
			if len(cs.PeerCertificates) == 0 {
				return nil // allowed by ClientAuth (request): password authentication follows
			}
			_, err := certIdentity(cs.PeerCertificates[0], from)
			return err
		}
	}
	return c, ca, nil
}

// loadCAFile reads a PEM file of CA certificates.
func loadCAFile(path string) (*x509.CertPool, []*x509.Certificate, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("client CA file: %w", err)
	}
	pool := x509.NewCertPool()
	var certs []*x509.Certificate
	for rest := raw; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, nil, fmt.Errorf("client CA file %s: %w", path, err)
		}
		pool.AddCert(cert)
		certs = append(certs, cert)
	}
	if len(certs) == 0 {
		return nil, nil, fmt.Errorf("client CA file %s: no PEM certificate in it", path)
	}
	return pool, certs, nil
}

var errUnknownSource = errors.New("unknown identity source")

// certIdentity is the identity cert carries in the field from names.
func certIdentity(cert *x509.Certificate, from string) (string, error) {
	var id string
	switch from {
	case IdentityCN:
		id = cert.Subject.CommonName
	case IdentitySubject:
		if len(cert.Subject.Names) > 0 || cert.Subject.CommonName != "" {
			id = cert.Subject.String()
		}
	case IdentitySANDNS:
		if len(cert.DNSNames) > 0 {
			id = cert.DNSNames[0]
		}
	case IdentitySANEmail:
		if len(cert.EmailAddresses) > 0 {
			id = cert.EmailAddresses[0]
		}
	case IdentitySANURI:
		if len(cert.URIs) > 0 {
			id = cert.URIs[0].String()
		}
	default:
		return "", fmt.Errorf("identity_from %q: %w (want cn, subject, san_dns, san_email or san_uri)", from, errUnknownSource)
	}
	if id == "" {
		return "", fmt.Errorf("client certificate %q has no %s to use as the identity", cert.Subject.String(), from)
	}
	return id, nil
}

// identity is the client identity of an established connection: the
// configured field of its verified certificate, or "" when the listener
// takes no identity from certificates or the client gave none.
func (s *CertSource) Identity(cs *tls.ConnectionState) string {
	if s.spec.IdentityFrom == "" || len(cs.VerifiedChains) == 0 || len(cs.PeerCertificates) == 0 {
		return ""
	}
	id, err := certIdentity(cs.PeerCertificates[0], s.spec.IdentityFrom)
	if err != nil {
		return "" // VerifyConnection refused such a handshake already
	}
	return id
}

// prepare builds a new generation without installing it, so that a
// reload of several listeners is all or nothing.
func (s *CertSource) prepare() (func(), error) {
	cfg, ca, err := s.build()
	if err != nil {
		return nil, fmt.Errorf("TLS listener %s: %w", s.addr, err)
	}
	return func() {
		s.mu.Lock()
		s.caCerts = ca
		s.mu.Unlock()
		s.cur.Store(cfg)
	}, nil
}

// checkExpiry warns about the listener's certificates and client CAs that
// are expired, about to expire or not valid yet: the broker still runs (a
// renewal may be on its way), but an operator reading the log learns why
// clients will fail.
func (s *CertSource) CheckExpiry(now time.Time) {
	days := s.spec.ExpiryWarningDays
	if days <= 0 {
		days = DefaultExpiryWarningDays
	}
	within := time.Duration(days) * 24 * time.Hour
	for _, cert := range s.cur.Load().Certificates {
		leaf := cert.Leaf
		if leaf == nil && len(cert.Certificate) > 0 {
			var err error
			if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
				s.log.Warn("TLS certificate unreadable", "addr", s.addr, "err", err)
				continue
			}
		}
		if leaf != nil {
			warnExpiry(s.log, "TLS certificate", "clients that verify it will refuse to connect", s.addr, leaf, now, within)
		}
	}
	s.mu.Lock()
	ca := s.caCerts
	s.mu.Unlock()
	for _, c := range ca {
		warnExpiry(s.log, "TLS client CA certificate", "client certificates it issued will be refused", s.addr, c, now, within)
	}
}

// warnExpiry logs one certificate's expiry problem, if it has one.
func warnExpiry(log *slog.Logger, what, consequence, addr string, c *x509.Certificate, now time.Time, within time.Duration) {
	subject := c.Subject.String()
	switch {
	case now.After(c.NotAfter):
		log.Warn(what+" expired: "+consequence, "addr", addr, "subject", subject, "not_after", c.NotAfter)
	case c.NotAfter.Sub(now) < within:
		log.Warn(what+" expires soon", "addr", addr, "subject", subject,
			"not_after", c.NotAfter, "days_left", int(c.NotAfter.Sub(now).Hours()/24))
	case now.Before(c.NotBefore):
		log.Warn(what+" not valid yet", "addr", addr, "subject", subject, "not_before", c.NotBefore)
	}
}

// ReloadTLS re-reads the certificate, key and client CA files of every
// TLS and wss:// listener. All or nothing: if any file is missing or bad,
// the error says which and every listener keeps its current certificates.
// New handshakes use the new files; established connections are not
// touched. Listeners configured with a Go tls.Config and no files keep
// that Config. Safe from any goroutine; reloads are serialised.
func (t *Transport) ReloadTLS() error {
	if t == nil {
		return nil
	}
	t.reloadMu.Lock()
	defer t.reloadMu.Unlock()
	return ReloadCertSources(t.cfg.Logger, t.tlsSources)
}

// ReloadCertSources rebuilds every source from its files, all or nothing
// (see Transport.ReloadTLS), and checks the new certificates' expiry. The
// caller serialises calls for the same sources.
func ReloadCertSources(log *slog.Logger, srcs []*CertSource) error {
	installs := make([]func(), 0, len(srcs))
	var errs []error
	for _, s := range srcs {
		install, err := s.prepare()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		installs = append(installs, install)
	}
	if len(errs) > 0 {
		log.Error("TLS reload refused: keeping the current certificates", "err", errors.Join(errs...))
		return errors.Join(errs...)
	}
	now := time.Now()
	for i, install := range installs {
		install()
		srcs[i].CheckExpiry(now)
	}
	log.Info("TLS certificates reloaded", "listeners", len(installs))
	return nil
}

// ServerConfig is the tls.Config to hand crypto/tls (tls.Server,
// tls.NewListener) for this listener: it selects the current generation
// per handshake. Do not modify it.
func (s *CertSource) ServerConfig() *tls.Config { return s.front }

// SetSessionTicketKeys makes the listener's session tickets use keys
// (the first encrypts, all decrypt), so that tickets survive a restart and
// any node holding the same keys resumes them. Call before serving.
func (s *CertSource) SetSessionTicketKeys(keys [][32]byte) {
	if len(keys) > 0 {
		s.front.SetSessionTicketKeys(keys)
	}
}

// watchExpiry re-checks every certificate's expiry once a day until Stop.
func (t *Transport) watchExpiry() {
	defer t.wg.Done()
	tick := time.NewTicker(expiryCheckEvery)
	defer tick.Stop()
	for {
		select {
		case <-t.done:
			return
		case now := <-tick.C:
			t.reloadMu.Lock()
			for _, s := range t.tlsSources {
				s.CheckExpiry(now)
			}
			t.reloadMu.Unlock()
		}
	}
}
