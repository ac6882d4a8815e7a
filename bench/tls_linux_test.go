//go:build linux

package bench

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ternmq/tern/server"
	"github.com/ternmq/tern/server/auth"
	"github.com/ternmq/tern/server/stdnet"
)

// testPKI is a CA, a server certificate for 127.0.0.1 and a client
// certificate, as PEM files in a temporary directory.
type testPKI struct {
	dir                       string
	ca, serverCert, serverKey string
	clientCert, clientKey     string
	otherCA                   string // a CA that signed nothing here
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	// Readable by all: mosquitto started as root reads them after
	// switching to its own user.
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} { // t.TempDir makes both 0700
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	p := &testPKI{dir: dir}
	write := func(name, typ string, der []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	keyDER := func(k *ecdsa.PrivateKey) []byte {
		b, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	now := time.Now()
	mkCA := func(cn string) (*x509.Certificate, *ecdsa.PrivateKey, []byte) {
		k := newKey()
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(now.UnixNano()), Subject: pkix.Name{CommonName: cn},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(365 * 24 * time.Hour), IsCA: true,
			BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
		if err != nil {
			t.Fatal(err)
		}
		c, _ := x509.ParseCertificate(der)
		return c, k, der
	}
	ca, caKey, caDER := mkCA("bench test CA")
	p.ca = write("ca.pem", "CERTIFICATE", caDER)
	_, _, otherDER := mkCA("unrelated CA")
	p.otherCA = write("other-ca.pem", "CERTIFICATE", otherDER)
	leaf := func(cn string, serial int64, usage x509.ExtKeyUsage, ips []net.IP) ([]byte, *ecdsa.PrivateKey) {
		k := newKey()
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(365 * 24 * time.Hour), IPAddresses: ips,
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		return der, k
	}
	sDER, sKey := leaf("127.0.0.1", 2, x509.ExtKeyUsageServerAuth, []net.IP{net.IPv4(127, 0, 0, 1)})
	p.serverCert = write("server.pem", "CERTIFICATE", sDER)
	p.serverKey = write("server.key", "PRIVATE KEY", keyDER(sKey))
	cDER, cKey := leaf("bench-client", 3, x509.ExtKeyUsageClientAuth, nil)
	p.clientCert = write("client.pem", "CERTIFICATE", cDER)
	p.clientKey = write("client.key", "PRIVATE KEY", keyDER(cKey))
	return p
}

// startTernTLS runs Tern in this process with a TLS listener that requires
// a client certificate from the test CA, and returns its TLS address.
func startTernTLS(t *testing.T, p *testPKI) string {
	t.Helper()
	srv, err := server.New(server.Options{Listeners: []string{"127.0.0.1:0"}, DataDir: t.TempDir(),
		Durability: server.DurabilityNone, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		TLSListeners: []server.TLSListener{{Addr: "127.0.0.1:0", CertFile: p.serverCert, KeyFile: p.serverKey,
			ClientCAFile: p.ca, ClientAuth: stdnet.ClientAuthRequire}}})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve()
	t.Cleanup(func() { srv.Close() })
	<-srv.Ready()
	return srv.TLSAddrs()[0].String()
}

// startMosquittoTLS runs mosquitto with one TLS listener (no client
// certificates asked) and returns its address and pid.
func startMosquittoTLS(t *testing.T, p *testPKI) (string, int) {
	t.Helper()
	return startMosquittoWith(t, p.dir, fmt.Sprintf("cafile %s\ncertfile %s\nkeyfile %s\n", p.ca, p.serverCert, p.serverKey))
}

// checkTLSDelivery runs p2p QoS 1 over TLS and checks every message
// arrived, once, in order, with every handshake a full one.
func checkTLSDelivery(t *testing.T, addr string, opts TLSOptions, pid int) {
	t.Helper()
	rep, err := Run(context.Background(), Config{Scenario: ScenarioP2P, Brokers: []string{addr}, Pubs: 3, Subs: 3,
		QoS: 1, Rate: 300, Size: 3000, Duration: 600 * time.Millisecond, Drain: 10 * time.Second, BrokerPID: pid,
		TLS: true, TLSOptions: opts})
	if err != nil {
		t.Fatal(err)
	}
	if testing.Verbose() {
		rep.WriteText(os.Stderr)
	}
	if rep.Connect.Connected != 6 || rep.Connect.Failed != 0 {
		t.Fatalf("connections %+v", rep.Connect)
	}
	if rep.Sent < 100 || rep.Lost != 0 || rep.Received != rep.Sent || rep.Delivery.Duplicated != 0 || rep.Delivery.OutOfOrder != 0 {
		t.Fatalf("sent %d received %d delivery %+v", rep.Sent, rep.Received, rep.Delivery)
	}
	if tr := rep.Connect.TLS; tr == nil || tr.Full != 6 || tr.Resumed != 0 || tr.Latency.Count != 6 {
		t.Fatalf("TLS report %+v: want 6 full handshakes", rep.Connect.TLS)
	}
}

// checkTLSResume opens 40 idle clients with session resumption, 8 in
// their connect phase at most: after the priming handshake every client
// resumes.
func checkTLSResume(t *testing.T, addr string, opts TLSOptions) {
	t.Helper()
	opts.Resume = true
	rep, err := Run(context.Background(), Config{Scenario: ScenarioConn, Brokers: []string{addr}, Conns: 40,
		ConnectRate: -1, Parallel: 8, Duration: 100 * time.Millisecond, BrokerPID: -1, TLS: true, TLSOptions: opts})
	if err != nil {
		t.Fatal(err)
	}
	c := rep.Connect
	if c.Connected != 40 || c.TLS == nil || c.TLS.Resumed != 40 || c.TLS.Full != 0 {
		t.Fatalf("connect %+v tls %+v: want 40 resumed handshakes", c, c.TLS)
	}
	if c.MaxInFlight < 1 || c.MaxInFlight > 8 || c.Parallel != 8 {
		t.Fatalf("max in flight %d with --parallel 8", c.MaxInFlight)
	}
}

// Tern's TLS listener requiring client certificates: delivery over mutual
// TLS, resumption, and the refusals a wrong configuration meets.
func TestTLSAgainstTern(t *testing.T) {
	p := newTestPKI(t)
	addr := startTernTLS(t, p)
	mtls := TLSOptions{CAFile: p.ca, CertFile: p.clientCert, KeyFile: p.clientKey}
	t.Run("mtls-delivery", func(t *testing.T) { checkTLSDelivery(t, addr, mtls, -1) })
	t.Run("resume", func(t *testing.T) { checkTLSResume(t, addr, mtls) })
	t.Run("insecure", func(t *testing.T) {
		checkTLSDelivery(t, addr, TLSOptions{Insecure: true, CertFile: p.clientCert, KeyFile: p.clientKey}, -1)
	})
	t.Run("no-client-cert", func(t *testing.T) {
		rep, err := Run(context.Background(), Config{Scenario: ScenarioConn, Brokers: []string{addr}, Conns: 3,
			Duration: 50 * time.Millisecond, ConnectTimeout: 5 * time.Second, BrokerPID: -1, TLS: true, TLSOptions: TLSOptions{CAFile: p.ca}})
		if err != nil {
			t.Fatal(err)
		}
		if rep.Connect.Connected != 0 || rep.Connect.Failed != 3 {
			t.Fatalf("a broker requiring client certificates accepted clients without: %+v", rep.Connect)
		}
	})
	t.Run("wrong-ca", func(t *testing.T) {
		_, err := Run(context.Background(), Config{Scenario: ScenarioConn, Brokers: []string{addr}, Conns: 1,
			Duration: 50 * time.Millisecond, BrokerPID: -1, TLS: true,
			TLSOptions: TLSOptions{CAFile: p.otherCA, CertFile: p.clientCert, KeyFile: p.clientKey, Resume: true}})
		if err == nil || !strings.Contains(err.Error(), "certificate signed by unknown authority") {
			t.Fatalf("priming against an unverifiable certificate: %v", err)
		}
	})
}

// mosquitto's TLS listener (cafile/certfile/keyfile): the same harness
// measures it.
func TestTLSAgainstMosquitto(t *testing.T) {
	p := newTestPKI(t)
	addr, pid := startMosquittoTLS(t, p)
	opts := TLSOptions{CAFile: p.ca}
	t.Run("delivery", func(t *testing.T) { checkTLSDelivery(t, addr, opts, pid) })
	t.Run("resume", func(t *testing.T) { checkTLSResume(t, addr, opts) })
	t.Run("full-handshakes-without-resume", func(t *testing.T) {
		rep, err := Run(context.Background(), Config{Scenario: ScenarioConn, Brokers: []string{addr}, Conns: 20,
			ConnectRate: -1, Parallel: 4, Duration: 50 * time.Millisecond, BrokerPID: -1, TLS: true, TLSOptions: opts})
		if err != nil {
			t.Fatal(err)
		}
		if c := rep.Connect; c.Connected != 20 || c.TLS.Full != 20 || c.TLS.Resumed != 0 || c.MaxInFlight > 4 {
			t.Fatalf("connect %+v tls %+v", c, c.TLS)
		}
	})
}

// TLS options without --tls are a configuration error, not silently plain.
func TestTLSOptionsNeedTLS(t *testing.T) {
	c := Config{TLSOptions: TLSOptions{CAFile: "x"}}
	c.EnsureDefaults()
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "need --tls") {
		t.Fatalf("validate: %v", err)
	}
}

// A small connect storm against Tern requiring a password from a password
// file (tern passwd's format), with persistent sessions: every client
// authenticates, P at a time; a second storm resumes the sessions; a wrong
// password is refused by CONNACK (3.1.1 §3.2.2.3 codes 0x04/0x05, then
// the connection closes [MQTT-3.2.2-5]) and is reported per code.
func TestConnStormPasswordPersistent(t *testing.T) {
	line, err := auth.HashPassword("storm", "s3cret", 1000)
	if err != nil {
		t.Fatal(err)
	}
	pw := filepath.Join(t.TempDir(), "passwords")
	if err := os.WriteFile(pw, []byte(line+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(server.Options{Listeners: []string{"127.0.0.1:0"}, DataDir: t.TempDir(), PasswordFile: pw,
		Durability: server.DurabilityNone, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve()
	t.Cleanup(func() { srv.Close() })
	<-srv.Ready()
	addr := srv.Addrs()[0].String()
	storm := func(password string) *Report {
		t.Helper()
		rep, err := Run(context.Background(), Config{Scenario: ScenarioConn, Brokers: []string{addr}, Conns: 200,
			ConnectRate: -1, Parallel: 16, Duration: 50 * time.Millisecond, BrokerPID: -1, Username: "storm",
			Password: password, Persistent: true, ClientIDPrefix: "storm-test-"})
		if err != nil {
			t.Fatal(err)
		}
		return rep
	}
	for round := 1; round <= 2; round++ { // the second resumes the 200 sessions
		c := storm("s3cret").Connect
		if c.Connected != 200 || c.Failed != 0 || c.MaxInFlight > 16 || c.Latency.Count != 200 || c.RatePerS <= 0 {
			t.Fatalf("round %d: %+v", round, c)
		}
	}
	// 0x04 bad user name or password, or 0x05 not authorized once the
	// broker's failed-login limiter steps in.
	c := storm("wrong").Connect
	if c.Connected != 0 || c.Failures["CONNACK refused: 0x04"]+c.Failures["CONNACK refused: 0x05"] != 200 {
		t.Fatalf("wrong password: %+v", c)
	}
}
