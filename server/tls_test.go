package server

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/ternmq/tern/codec"
)

// selfSigned returns a server config for 127.0.0.1 and a pool trusting it.
func selfSigned(t *testing.T) (*tls.Config, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "tern test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
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
func TestTLSListener(t *testing.T) {
	cfg, pool := selfSigned(t)
	srv, addr := startBroker(t, func(o *Options) {
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
