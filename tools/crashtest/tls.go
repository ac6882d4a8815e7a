package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// tlsSetup is what -tls needs: the broker's certificate and key files, the
// engine serving them, and the client configuration trusting the
// certificate.
type tlsSetup struct {
	engine    string // --tls-engine: loops or stdnet
	cert, key string // PEM files in the work directory
	client    *tls.Config
}

// newTLSSetup writes a self-signed ECDSA P-256 certificate for 127.0.0.1
// into dir, for the broker's --tls-listen, and returns a client
// configuration that verifies it.
func newTLSSetup(dir, engine string) (*tlsSetup, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(now.UnixNano()), Subject: pkix.Name{CommonName: "crashtest"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(30 * 24 * time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	s := &tlsSetup{engine: engine, cert: filepath.Join(dir, "crashtest.crt"), key: filepath.Join(dir, "crashtest.key")}
	if err := os.WriteFile(s.cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(s.key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse own certificate: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	s.client = &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}
	return s, nil
}

// serveArgs are the `tern serve` flags of a TLS listener on addr.
func (s *tlsSetup) serveArgs(addr string) []string {
	return []string{"--tls-listen", addr, "--tls-cert", s.cert, "--tls-key", s.key, "--tls-engine", s.engine}
}
