package server

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"log/slog"
	"math/big"
	"net"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/ternmq/tern/codec"
	"github.com/ternmq/tern/internal/mqtttest"
)

// forEachTLSEngine runs test on both TLS engines (Options.TLSEngine).
func forEachTLSEngine(t *testing.T, test func(t *testing.T, engine string)) {
	for _, engine := range []string{TLSEngineStdnet, TLSEngineLoops} {
		t.Run(engine, func(t *testing.T) { test(t, engine) })
	}
}

// selfSigned returns a server config for 127.0.0.1 and a pool trusting it.
func selfSigned(t testing.TB) (*tls.Config, *x509.CertPool) {
	t.Helper()
	return selfSignedUntil(t, time.Now().Add(365*24*time.Hour))
}

// selfSignedUntil is selfSigned with a certificate valid until notAfter.
func selfSignedUntil(t testing.TB, notAfter time.Time) (*tls.Config, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "tern test"},
		NotBefore: notAfter.Add(-400 * 24 * time.Hour), NotAfter: notAfter,
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}, pool
}

// MQTT over TLS shares topics, sessions and wills with plain TCP clients;
// a client that fails the handshake does not disturb anyone.
func TestTLSListener(t *testing.T) { forEachTLSEngine(t, testTLSListener) }

func testTLSListener(t *testing.T, engine string) {
	cfg, pool := selfSigned(t)
	srv, addr := startBroker(t, func(o *Options) {
		o.TLSEngine = engine
		o.TLSListeners = []TLSListener{{Addr: "127.0.0.1:0", Config: cfg}}
	})
	tlsAddr := srv.TLSAddrs()[0].String()
	overTLS := func(o *mqtt.ClientOptions) {
		o.Servers = nil
		o.AddBroker("ssl://" + tlsAddr)
		o.SetTLSConfig(&tls.Config{RootCAs: pool})
	}
	r := newReceived()
	sub := pahoClient(t, addr, "tls-sub", overTLS)
	subscribe(t, sub, "tls/#", 1, r)
	tcpR := newReceived()
	tcpSub := pahoClient(t, addr, "tcp-sub")
	subscribe(t, tcpSub, "tls/#", 1, tcpR)

	pub := pahoClient(t, addr, "tls-pub", overTLS)
	for i := 0; i < 50; i++ {
		wait(t, pub.Publish("tls/x", 1, false, "m"), "publish over TLS")
	}
	r.waitN(t, 50, 5*time.Second)
	tcpR.waitN(t, 50, 5*time.Second)

	// A bad handshake is refused without affecting the others.
	raw, err := net.Dial("tcp", tlsAddr)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = raw.Write([]byte("not a TLS client hello"))
	raw.Close()

	// Will of a TLS client whose connection drops without DISCONNECT.
	tc, err := tls.Dial("tcp", tlsAddr, &tls.Config{RootCAs: pool})
	if err != nil {
		t.Fatal(err)
	}
	wr := &rawConn{t: t, c: tc, r: bufio.NewReader(tc), vers: codec.Version311}
	wr.connect(codec.Connect{ClientID: []byte("tls-will"), CleanStart: true, KeepAlive: 30,
		WillFlag: true, WillQoS: 1, WillTopic: []byte("tls/will"), WillPayload: []byte("gone")}, 0)
	tc.Close()
	got := r.waitN(t, 51, 5*time.Second)
	if m := got[50]; m.Topic() != "tls/will" || string(m.Payload()) != "gone" {
		t.Fatalf("will over TLS: %s %q", m.Topic(), m.Payload())
	}
}

// dialTLSRaw opens an MQTT connection over TLS whose client socket has a
// small receive buffer, so that a client that stops reading soon makes the
// broker's writes block (loopback buffers otherwise absorb megabytes).
func dialTLSRaw(t testing.TB, addr string, pool *x509.CertPool) (*mqtttest.Conn, *tls.Conn) {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	_ = nc.(*net.TCPConn).SetReadBuffer(4 << 10)
	tc := tls.Client(nc, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tc.Close() })
	return mqtttest.New(tc), tc
}

// openFDs counts the process's open file descriptors.
func openFDs(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd")
	}
	return len(ents)
}

// settledGoroutines waits for the goroutine count to stop changing.
func settledGoroutines() int {
	n := runtime.NumGoroutine()
	for i := 0; i < 50; i++ {
		time.Sleep(20 * time.Millisecond)
		m := runtime.NumGoroutine()
		if m == n {
			return n
		}
		n = m
	}
	return n
}

// Subscribers over TLS that stop reading are disconnected as slow
// consumers, and then cost nothing: the writer goroutine blocked on the
// full socket is released by closing the socket within the 2 s linger, so
// goroutines and descriptors return to the baseline (before the fix, 20
// such connections kept 20 descriptors and 40 goroutines for good).
func TestTLSStalledSubscribersReleased(t *testing.T) {
	forEachTLSEngine(t, testTLSStalledSubscribersReleased)
}

func testTLSStalledSubscribersReleased(t *testing.T, engine string) {
	cfg, pool := selfSigned(t)
	srv, addr := startBroker(t, func(o *Options) {
		o.TLSEngine = engine
		o.TLSListeners = []TLSListener{{Addr: "127.0.0.1:0", Config: cfg}}
		o.Durability = DurabilityNone
		o.MaxOutboundBytes = 64 << 10
		o.ReceiveMaximum = 65535
	})
	tlsAddr := srv.TLSAddrs()[0].String()
	pub := pahoClient(t, addr, "stall-pub")
	baseG, baseFD := settledGoroutines(), openFDs(t)

	const n = 20
	for i := 0; i < n; i++ {
		mc, _ := dialTLSRaw(t, tlsAddr, pool)
		if _, err := mc.Connect(codec.Connect{ClientID: []byte(topicN("stalled", i)), CleanStart: true}); err != nil {
			t.Fatal(err)
		}
		if _, err := mc.Subscribe(1, nil, codec.Subscription{Filter: []byte("flood/#"), QoS: 1}); err != nil {
			t.Fatal(err)
		}
		// and never read again
	}
	payload := strings.Repeat("x", 32<<10)
	deadline := time.Now().Add(30 * time.Second)
	for srv.tlsOpen() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d stalled subscribers still connected", srv.tlsOpen())
		}
		wait(t, pub.Publish("flood/x", 1, false, payload), "publish")
	}
	start := time.Now()
	// The test still holds the client ends: n descriptors over the baseline.
	deadline = time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > baseG || openFDs(t) > baseFD+n {
		if time.Now().After(deadline) {
			t.Fatalf("5 s after the disconnects: %d goroutines (baseline %d), %d descriptors (baseline %d + %d client ends)",
				runtime.NumGoroutine(), baseG, openFDs(t), baseFD, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("released %v after the last disconnect", time.Since(start).Round(time.Millisecond))
}

// TLS hygiene: an expired certificate is logged at start (the broker still
// starts); a TLS 1.2 client offering only CBC-SHA1 suites is refused; a
// failed handshake is counted and shows on /metrics.
func TestTLSExpiredCertificateSuitesAndHandshakeMetrics(t *testing.T) {
	forEachTLSEngine(t, testTLSExpiredCertificateSuitesAndHandshakeMetrics)
}

func testTLSExpiredCertificateSuitesAndHandshakeMetrics(t *testing.T, engine string) {
	cfg, pool := selfSignedUntil(t, time.Now().Add(-time.Hour))
	logs := &syncBuffer{}
	admin := freeAddr(t)
	srv, _ := startBroker(t, func(o *Options) {
		o.TLSEngine = engine
		o.TLSListeners = []TLSListener{{Addr: "127.0.0.1:0", Config: cfg}}
		o.AdminListen = admin
		o.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	})
	tlsAddr := srv.TLSAddrs()[0].String()
	if !strings.Contains(logs.String(), "TLS certificate expired") {
		t.Fatalf("no expiry warning in:\n%s", logs)
	}
	cbc := &tls.Config{RootCAs: pool, MaxVersion: tls.VersionTLS12, InsecureSkipVerify: true, CipherSuites: []uint16{
		tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA}}
	if c, err := tls.Dial("tcp", tlsAddr, cbc); err == nil {
		c.Close()
		t.Fatal("a CBC-SHA1-only TLS 1.2 client was accepted")
	}
	gcm := &tls.Config{MaxVersion: tls.VersionTLS12, InsecureSkipVerify: true} // the certificate is expired
	c, err := tls.Dial("tcp", tlsAddr, gcm)
	if err != nil {
		t.Fatalf("an AEAD TLS 1.2 client was refused: %v", err)
	}
	c.Close()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(httpGet(t, "http://"+admin+"/metrics"), "tern_tls_handshake_failures_total 1\n") {
		if time.Now().After(deadline) {
			t.Fatalf("handshake failure not on /metrics:\n%s", httpGet(t, "http://"+admin+"/metrics"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(logs.String(), "TLS handshake failed") {
		t.Fatalf("handshake failure not logged:\n%s", logs)
	}
}

// TLS connections are spread over as many task loops as the broker has
// event loops (before: one task loop for every TLS and WebSocket client).
func TestTLSTaskLoopsFollowEventLoops(t *testing.T) {
	forEachTLSEngine(t, testTLSTaskLoopsFollowEventLoops)
}

func testTLSTaskLoopsFollowEventLoops(t *testing.T, engine string) {
	cfg, pool := selfSigned(t)
	srv, _ := startBroker(t, func(o *Options) {
		o.TLSEngine = engine
		o.TLSListeners = []TLSListener{{Addr: "127.0.0.1:0", Config: cfg}}
		o.EventLoops = 3
	})
	for i := 0; i < 6; i++ {
		mc, _ := dialTLSRaw(t, srv.TLSAddrs()[0].String(), pool)
		if _, err := mc.Connect(codec.Connect{ClientID: []byte(topicN("spread", i)), CleanStart: true}); err != nil {
			t.Fatal(err)
		}
	}
	srv.loopsMu.Lock()
	n := len(srv.loops) // only TLS connections opened: every loop here is a task loop
	srv.loopsMu.Unlock()
	if n != 3 {
		t.Fatalf("6 TLS clients ran on %d loops, want 3", n)
	}
}
