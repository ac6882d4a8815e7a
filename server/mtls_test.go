package server

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"log/slog"
	"math/big"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ternmq/tern/codec"
	"github.com/ternmq/tern/server/auth"
)

// testCA is a certificate authority made for a test, its certificate in
// a PEM file of its own.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	file string
	dir  string
}

var testSerial atomic.Int64

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// newTestCA makes a CA named name valid until notAfter, written to
// dir/name.crt.
func newTestCA(t testing.TB, dir, name string, notAfter time.Time) *testCA {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(testSerial.Add(1)), Subject: pkix.Name{CommonName: name, Organization: []string{"Tern tests"}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: notAfter,
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	ca := &testCA{cert: cert, key: key, file: filepath.Join(dir, name+".crt"), dir: dir}
	writePEM(t, ca.file, "CERTIFICATE", der)
	return ca
}

func writePEM(t testing.TB, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// issue signs a certificate for tmpl (subject, SANs, usage filled in by
// the caller) and writes dir/name.crt and dir/name.key.
func (ca *testCA) issue(t testing.TB, name string, tmpl *x509.Certificate) (certFile, keyFile string, cert tls.Certificate) {
	t.Helper()
	key := newKey(t)
	tmpl.SerialNumber = big.NewInt(testSerial.Add(1))
	if tmpl.NotBefore.IsZero() {
		tmpl.NotBefore = time.Now().Add(-time.Hour)
	}
	if tmpl.NotAfter.IsZero() {
		tmpl.NotAfter = time.Now().Add(365 * 24 * time.Hour)
	}
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(ca.dir, name+".crt"), filepath.Join(ca.dir, name+".key")
	writePEM(t, certFile, "CERTIFICATE", der)
	writePEM(t, keyFile, "PRIVATE KEY", kder)
	return certFile, keyFile, tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// serverCert issues the broker's certificate for 127.0.0.1.
func (ca *testCA) serverCert(t testing.TB, name string) (certFile, keyFile string) {
	t.Helper()
	certFile, keyFile, _ = ca.issue(t, name, &x509.Certificate{Subject: pkix.Name{CommonName: name},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	return certFile, keyFile
}

// clientCert issues a device certificate with common name cn.
func (ca *testCA) clientCert(t testing.TB, cn string) tls.Certificate {
	t.Helper()
	_, _, c := ca.issue(t, cn, &x509.Certificate{Subject: pkix.Name{CommonName: cn, Organization: []string{"Acme"}},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	return c
}

func (ca *testCA) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// mtlsBroker is a broker with one file-configured TLS listener.
type mtlsBroker struct {
	srv      *Server
	tlsAddr  string
	serverCA *testCA
	clientCA *testCA
	logs     *syncBuffer
}

// startMTLSBroker starts a broker whose TLS listener loads its certificate
// and client CA from files; tweak adjusts the listener and options.
func startMTLSBroker(t *testing.T, engine string, tweak func(*TLSListener, *Options)) *mtlsBroker {
	t.Helper()
	dir := t.TempDir()
	b := &mtlsBroker{
		serverCA: newTestCA(t, dir, "server-ca", time.Now().Add(10*365*24*time.Hour)),
		clientCA: newTestCA(t, dir, "client-ca", time.Now().Add(10*365*24*time.Hour)),
		logs:     &syncBuffer{},
	}
	cert, key := b.serverCA.serverCert(t, "broker")
	srv, _ := startBroker(t, func(o *Options) {
		o.TLSEngine = engine
		l := TLSListener{Addr: "127.0.0.1:0", CertFile: cert, KeyFile: key, ClientCAFile: b.clientCA.file,
			ClientAuth: "require", IdentityFrom: "cn"}
		o.Logger = slog.New(slog.NewTextHandler(b.logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
		if tweak != nil {
			tweak(&l, o)
		}
		o.TLSListeners = []TLSListener{l}
	})
	b.srv, b.tlsAddr = srv, srv.TLSAddrs()[0].String()
	return b
}

// waitLog waits for a log line containing s (handshake failures are
// logged when the broker has dealt with them, after the client saw them).
func (b *mtlsBroker) waitLog(t *testing.T, s string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(b.logs.String(), s) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q in the log:\n%s", s, b.logs)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// dial opens a TLS connection presenting certs (none: no certificate)
// and completes the handshake from the client's side.
func (b *mtlsBroker) dial(t *testing.T, certs ...tls.Certificate) (*tls.Conn, error) {
	t.Helper()
	nc, err := net.DialTimeout("tcp", b.tlsAddr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &tls.Config{RootCAs: b.serverCA.pool(), ServerName: "127.0.0.1"}
	if len(certs) > 0 {
		// Always present it: crypto/tls's client would otherwise hold back
		// a certificate of a CA the broker does not list, and the broker's
		// own verification would go untested.
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &certs[0], nil }
	}
	tc := tls.Client(nc, cfg)
	_ = tc.SetDeadline(time.Now().Add(5 * time.Second))
	if err := tc.Handshake(); err != nil {
		nc.Close()
		return nil, err
	}
	_ = tc.SetDeadline(time.Time{})
	t.Cleanup(func() { tc.Close() })
	return tc, nil
}

// connectAs opens an MQTT session over TLS with cert and returns it.
func (b *mtlsBroker) connectAs(t *testing.T, cert tls.Certificate, p codec.Connect) *rawConn {
	t.Helper()
	tc, err := b.dial(t, cert)
	if err != nil {
		t.Fatalf("handshake with a valid client certificate: %v", err)
	}
	c := rawOver(t, tc)
	c.connect(p, 0)
	return c
}

// refused asserts that a client presenting certs gets no MQTT session:
// the handshake fails, or (TLS 1.3, where the client finishes before the
// broker has checked its certificate) the first read after CONNECT fails
// with the broker's alert, never a CONNACK.
func (b *mtlsBroker) refused(t *testing.T, what string, wantAlert string, certs ...tls.Certificate) {
	t.Helper()
	tc, err := b.dial(t, certs...)
	if err == nil {
		_ = tc.SetDeadline(time.Now().Add(5 * time.Second))
		connect := codec.Connect{ClientID: []byte("intruder"), CleanStart: true, ProtocolVersion: codec.Version311}
		if _, werr := tc.Write(connect.Append(nil)); werr != nil {
			err = werr
		} else {
			var buf [4]byte
			var n int
			n, err = tc.Read(buf[:])
			if err == nil {
				t.Fatalf("%s: the broker answered % x instead of refusing the handshake", what, buf[:n])
			}
		}
	}
	if !strings.Contains(err.Error(), wantAlert) {
		t.Fatalf("%s: got %v, want an error containing %q", what, err, wantAlert)
	}
}

// Mutual TLS with identity_from: cn. A device is its certificate's CN: the
// ACL's %u and user rules apply to it (not to the User Name it claims in
// CONNECT), the password Authenticator is not asked, and its persistent
// session cannot be taken by another certificate. A client without a
// certificate, or with one from another CA, is refused in the handshake.
func TestMTLSIdentityFromCNAppliesACL(t *testing.T) {
	forEachTLSEngine(t, testMTLSIdentityFromCNAppliesACL)
}

func testMTLSIdentityFromCNAppliesACL(t *testing.T, engine string) {
	acl, err := auth.ParseACL(strings.NewReader("pattern readwrite devices/%u/#\nuser ops\ntopic read devices/#\n"))
	if err != nil {
		t.Fatal(err)
	}
	b := startMTLSBroker(t, engine, func(_ *TLSListener, o *Options) {
		o.Authorizer = acl
		o.Authenticator = refuseAll{} // certificates authenticate: passwords are never asked here
	})
	dev1 := b.clientCA.clientCert(t, "dev1")

	// The CONNECT claims to be dev2: the certificate decides.
	c := b.connectAs(t, dev1, codec.Connect{ClientID: []byte("c1"), KeepAlive: 30,
		UsernameFlag: true, Username: []byte("dev2")})
	if codes := c.subscribe(1, "devices/dev2/#", 1); codes[0] != 0x80 {
		t.Fatalf("dev1 subscribed to dev2's topics: SUBACK %#x", codes[0])
	}
	if codes := c.subscribe(2, "devices/dev1/#", 1); codes[0] != 1 {
		t.Fatalf("dev1 refused its own topics: SUBACK %#x", codes[0])
	}
	ops := b.connectAs(t, b.clientCA.clientCert(t, "ops"), codec.Connect{ClientID: []byte("ops"), CleanStart: true, KeepAlive: 30})
	if codes := ops.subscribe(1, "devices/#", 1); codes[0] != 1 {
		t.Fatalf("ops: SUBACK %#x", codes[0])
	}
	c.publish(codec.Publish{QoS: 1, PacketID: 3, Topic: []byte("devices/dev2/cmd"), Payload: []byte("spoof")})
	c.readAck(5*time.Second, codec.PUBACK)
	c.publish(codec.Publish{QoS: 1, PacketID: 4, Topic: []byte("devices/dev1/state"), Payload: []byte("mine")})
	if p := ops.readPublish(5 * time.Second); string(p.Topic) != "devices/dev1/state" {
		t.Fatalf("ops got %s %q first: the refused publish was delivered", p.Topic, p.Payload)
	}

	// Session ownership: c1's persistent session belongs to dev1.
	c.c.Close()
	dev2 := b.clientCA.clientCert(t, "dev2")
	tc, err := b.dial(t, dev2)
	if err != nil {
		t.Fatal(err)
	}
	thief := rawOver(t, tc)
	thief.connect(codec.Connect{ClientID: []byte("c1"), KeepAlive: 30}, codec.ConnackReturnCode311(codec.NotAuthorized))
	tc, err = b.dial(t, dev1)
	if err != nil {
		t.Fatal(err)
	}
	if ack := rawOver(t, tc).connect(codec.Connect{ClientID: []byte("c1"), KeepAlive: 30}, 0); !ack.SessionPresent {
		t.Fatal("dev1 came back to no session: the refused CONNECT touched it")
	}

	b.refused(t, "no client certificate", "certificate required")
	rogue := newTestCA(t, t.TempDir(), "rogue-ca", time.Now().Add(24*time.Hour))
	b.refused(t, "certificate from another CA", "unknown certificate authority", rogue.clientCert(t, "dev1"))
	b.waitLog(t, "TLS handshake failed")
}

// refuseAll refuses every password authentication.
type refuseAll struct{}

func (refuseAll) Authenticate(auth.ConnectInfo) error { return errors.New("no passwords here") }

// client_auth: request. A client with a certificate is its certificate; one
// without goes on to password authentication (here: refused, then
// accepted as the user acceptAll names).
func TestMTLSRequestFallsBackToPassword(t *testing.T) {
	forEachTLSEngine(t, testMTLSRequestFallsBackToPassword)
}

func testMTLSRequestFallsBackToPassword(t *testing.T, engine string) {
	acl, err := auth.ParseACL(strings.NewReader("pattern readwrite users/%u/#\n"))
	if err != nil {
		t.Fatal(err)
	}
	b := startMTLSBroker(t, engine, func(l *TLSListener, o *Options) {
		l.ClientAuth = "request"
		o.Authorizer, o.Authenticator = acl, acceptAll{}
	})
	withCert := b.connectAs(t, b.clientCA.clientCert(t, "alice"), codec.Connect{ClientID: []byte("a"), CleanStart: true, KeepAlive: 30})
	if codes := withCert.subscribe(1, "users/alice/#", 0); codes[0] != 0 {
		t.Fatalf("certificate identity: SUBACK %#x", codes[0])
	}
	tc, err := b.dial(t)
	if err != nil {
		t.Fatalf("request mode refused a client without a certificate: %v", err)
	}
	pw := rawOver(t, tc)
	pw.connect(codec.Connect{ClientID: []byte("b"), CleanStart: true, KeepAlive: 30,
		UsernameFlag: true, Username: []byte("bob"), PasswordFlag: true, Password: []byte("x")}, 0)
	if codes := pw.subscribe(1, "users/bob/#", 0); codes[0] != 0 {
		t.Fatalf("password identity: SUBACK %#x", codes[0])
	}
	if codes := pw.subscribe(2, "users/alice/#", 0); codes[0] != 0x80 {
		t.Fatalf("bob got alice's topics: SUBACK %#x", codes[0])
	}
	// A certificate that does not verify is refused even in request mode.
	rogue := newTestCA(t, t.TempDir(), "rogue-ca", time.Now().Add(24*time.Hour))
	b.refused(t, "request mode, foreign certificate", "unknown certificate authority", rogue.clientCert(t, "alice"))
}

// identity_from: san_uri takes the first URI SAN (a SPIFFE-style id); a
// verified certificate without one fails the handshake rather than
// connecting a client nobody can tell apart.
func TestMTLSIdentityFromSANURI(t *testing.T) { forEachTLSEngine(t, testMTLSIdentityFromSANURI) }

func testMTLSIdentityFromSANURI(t *testing.T, engine string) {
	acl, err := auth.ParseACL(strings.NewReader("user spiffe://acme/sensor/7\ntopic readwrite sensors/7/#\n"))
	if err != nil {
		t.Fatal(err)
	}
	b := startMTLSBroker(t, engine, func(l *TLSListener, o *Options) {
		l.IdentityFrom = "san_uri"
		o.Authorizer = acl
	})
	u, _ := url.Parse("spiffe://acme/sensor/7")
	_, _, withURI := b.clientCA.issue(t, "sensor7", &x509.Certificate{Subject: pkix.Name{CommonName: "sensor7"},
		URIs: []*url.URL{u}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	c := b.connectAs(t, withURI, codec.Connect{ClientID: []byte("s7"), CleanStart: true, KeepAlive: 30})
	if codes := c.subscribe(1, "sensors/7/#", 0); codes[0] != 0 {
		t.Fatalf("SAN URI identity: SUBACK %#x", codes[0])
	}
	b.refused(t, "certificate without a URI SAN", "bad certificate", b.clientCA.clientCert(t, "sensor8"))
	b.waitLog(t, "has no san_uri")
	if strings.Contains(b.logs.String(), "ACL without authentication") {
		t.Fatalf("warned that the ACL has no authentication, although certificates authenticate:\n%s", b.logs)
	}
}

// Reload (its tls_certificates item): new handshakes get the new certificate and client CA, a
// connection made before keeps working, and a bad file is refused with
// the old certificates kept.
func TestMTLSReloadPickedUpByNewConnections(t *testing.T) {
	forEachTLSEngine(t, testMTLSReloadPickedUpByNewConnections)
}

func testMTLSReloadPickedUpByNewConnections(t *testing.T, engine string) {
	b := startMTLSBroker(t, engine, nil)
	l := b.srv.opts.TLSListeners[0]
	old := b.connectAs(t, b.clientCA.clientCert(t, "old"), codec.Connect{ClientID: []byte("old"), CleanStart: true, KeepAlive: 30})
	if codes := old.subscribe(1, "t/#", 0); codes[0] != 0 {
		t.Fatalf("SUBACK %#x", codes[0])
	}

	// Rotate: a new server certificate and a new client CA, in place.
	newCA := newTestCA(t, t.TempDir(), "client-ca-2", time.Now().Add(365*24*time.Hour))
	certFile, keyFile := b.serverCA.serverCert(t, "broker-2")
	mustRename(t, certFile, l.CertFile)
	mustRename(t, keyFile, l.KeyFile)
	mustRename(t, newCA.file, l.ClientCAFile)
	if err := b.srv.Reload(); err != nil { // the path SIGHUP and the admin API take
		t.Fatalf("reload: %v", err)
	}
	b.refused(t, "client certificate of the CA the reload removed", "unknown certificate authority", b.clientCA.clientCert(t, "late"))
	tc, err := b.dial(t, newCA.clientCert(t, "new"))
	if err != nil {
		t.Fatalf("client of the new CA: %v", err)
	}
	if cn := tc.ConnectionState().PeerCertificates[0].Subject.CommonName; cn != "broker-2" {
		t.Fatalf("after the reload the broker presents %q, want broker-2", cn)
	}
	fresh := rawOver(t, tc)
	fresh.connect(codec.Connect{ClientID: []byte("new"), CleanStart: true, KeepAlive: 30}, 0)
	fresh.publish(codec.Publish{Topic: []byte("t/x"), Payload: []byte("after reload")})
	if p := old.readPublish(5 * time.Second); string(p.Payload) != "after reload" {
		t.Fatalf("old connection got %q", p.Payload)
	}
	old.publish(codec.Publish{QoS: 1, PacketID: 9, Topic: []byte("t/y"), Payload: []byte("still here")})
	old.readAck(5*time.Second, codec.PUBACK)

	// A broken key file: refused, nothing changes.
	if err := os.WriteFile(l.KeyFile, []byte("-----BEGIN PRIVATE KEY-----\ngarbage\n-----END PRIVATE KEY-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	err = b.srv.Reload()
	if err == nil || !strings.Contains(err.Error(), l.KeyFile) {
		t.Fatalf("reload of a bad key file: %v, want an error naming %s", err, l.KeyFile)
	}
	tc, err = b.dial(t, newCA.clientCert(t, "newer"))
	if err != nil {
		t.Fatalf("after a refused reload: %v", err)
	}
	if cn := tc.ConnectionState().PeerCertificates[0].Subject.CommonName; cn != "broker-2" {
		t.Fatalf("after a refused reload the broker presents %q, want broker-2", cn)
	}
	b.waitLog(t, "TLS reload refused")
}

func mustRename(t *testing.T, from, to string) {
	t.Helper()
	if err := os.Rename(from, to); err != nil {
		t.Fatal(err)
	}
}

// A client CA close to its expiry is warned about at start, as the
// listener's own certificate is; expiry_warning_days sets how close.
func TestMTLSClientCAExpiryWarning(t *testing.T) { forEachTLSEngine(t, testMTLSClientCAExpiryWarning) }

func testMTLSClientCAExpiryWarning(t *testing.T, engine string) {
	for _, tc := range []struct {
		days int
		warn bool
	}{{30, true}, {5, false}} {
		dir := t.TempDir()
		serverCA := newTestCA(t, dir, "server-ca", time.Now().Add(365*24*time.Hour))
		cert, key := serverCA.serverCert(t, "broker")
		clientCA := newTestCA(t, dir, "client-ca", time.Now().Add(10*24*time.Hour))
		logs := &syncBuffer{}
		startBroker(t, func(o *Options) {
			o.TLSEngine = engine
			o.TLSListeners = []TLSListener{{Addr: "127.0.0.1:0", CertFile: cert, KeyFile: key,
				ClientCAFile: clientCA.file, ClientAuth: "require", ExpiryWarningDays: tc.days}}
			o.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
		})
		got := strings.Contains(logs.String(), "TLS client CA certificate expires soon")
		if got != tc.warn {
			t.Errorf("expiry_warning_days %d, CA expiring in 10 days: warned %v, want %v\n%s", tc.days, got, tc.warn, logs)
		}
		if tc.warn && !strings.Contains(logs.String(), "days_left=9") {
			t.Errorf("warning does not say how many days are left:\n%s", logs)
		}
	}
}

// mosquitto_pub presenting a device certificate (--cert/--key): the
// broker takes its CN as the user, so the ACL lets it publish to its own
// topic only.
func TestMTLSMosquittoPubWithClientCertificate(t *testing.T) {
	forEachTLSEngine(t, testMTLSMosquittoPubWithClientCertificate)
}

func testMTLSMosquittoPubWithClientCertificate(t *testing.T, engine string) {
	if _, err := exec.LookPath("mosquitto_pub"); err != nil {
		t.Skip("mosquitto_pub not installed")
	}
	acl, err := auth.ParseACL(strings.NewReader("pattern write devices/%u/#\nuser ops\ntopic read devices/#\n"))
	if err != nil {
		t.Fatal(err)
	}
	b := startMTLSBroker(t, engine, func(_ *TLSListener, o *Options) { o.Authorizer = acl })
	ops := b.connectAs(t, b.clientCA.clientCert(t, "ops"), codec.Connect{ClientID: []byte("ops"), CleanStart: true, KeepAlive: 30})
	if codes := ops.subscribe(1, "devices/#", 0); codes[0] != 0 {
		t.Fatalf("SUBACK %#x", codes[0])
	}
	certFile, keyFile, _ := b.clientCA.issue(t, "dev9", &x509.Certificate{Subject: pkix.Name{CommonName: "dev9"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	_, port, _ := net.SplitHostPort(b.tlsAddr)
	pub := func(topic, msg string) {
		t.Helper()
		out, err := exec.Command("mosquitto_pub", "-h", "127.0.0.1", "-p", port, "--cafile", b.serverCA.file,
			"--cert", certFile, "--key", keyFile, "-q", "1", "-i", "dev9-pub", "-t", topic, "-m", msg).CombinedOutput()
		if err != nil {
			t.Fatalf("mosquitto_pub %s: %v\n%s", topic, err, out)
		}
	}
	pub("devices/dev8/cmd", "spoof")
	pub("devices/dev9/state", "ok")
	if p := ops.readPublish(5 * time.Second); string(p.Payload) != "ok" {
		t.Fatalf("ops got %s %q: the publish outside dev9's topics went through", p.Topic, p.Payload)
	}
	// Without a certificate mosquitto_pub cannot connect at all.
	out, err := exec.Command("mosquitto_pub", "-h", "127.0.0.1", "-p", port, "--cafile", b.serverCA.file,
		"-t", "devices/dev9/state", "-m", "x").CombinedOutput()
	if err == nil {
		t.Fatalf("mosquitto_pub without a certificate succeeded:\n%s", out)
	}
	deadline := time.Now().Add(5 * time.Second)
	for b.srv.tlsHandshakeFailures() == 0 { // counted once the broker dealt with it
		if time.Now().After(deadline) {
			t.Fatalf("the refused handshake was not counted (output %q)", out)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
