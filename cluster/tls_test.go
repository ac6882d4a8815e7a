package cluster_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// testCA is a throw-away certificate authority.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue writes a node certificate for 127.0.0.1 (server and client use)
// and a YAML configuration naming it, and returns the configuration's path.
func (ca *testCA) issue(t *testing.T, dir, name string) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	write := func(f string, b []byte) string {
		p := filepath.Join(dir, f)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cert := write(name+".crt", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	keyf := write(name+".key", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}))
	caf := write(name+"-ca.crt", ca.pem)
	return write(name+".yaml", []byte("cluster:\n  tls:\n    cert: "+cert+"\n    key: "+keyf+"\n    ca: "+caf+"\n"))
}

// TestClusterRouteTLS: with cluster.tls the nodes join over TLS verified
// both ways and route messages; a node whose certificate another CA signed
// cannot join.
func TestClusterRouteTLS(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, "tern-test-ca")
	cfg := ca.issue(t, dir, "node")
	nodes := startCluster(t, 3, "--config", cfg) // waits until each hears the other two
	var in inbox
	s := connect(t, nodes[2].mqtt, "tls-sub")
	wait(t, s.Subscribe("tls/#", 1, in.handler), "subscribe")
	waitInterest(t, nodes[:1], 1)
	p := connect(t, nodes[0].mqtt, "tls-pub")
	wait(t, p.Publish("tls/x", 1, false, "over TLS"), "publish")
	if got := in.waitN(t, 1, 5*time.Second); got[0].payload != "over TLS" {
		t.Fatalf("got %v", got)
	}

	other := newTestCA(t, "another-ca")
	intruder := &node{name: "n4", mqtt: freeAddr(t), cluster: freeAddr(t), admin: freeAddr(t),
		dir: filepath.Join(t.TempDir(), "data"), peers: []string{nodes[0].cluster},
		extra: []string{"--config", other.issue(t, dir, "intruder")}}
	intruder.start(t)
	t.Cleanup(func() { intruder.stop(syscall.SIGKILL) })
	time.Sleep(3 * time.Second)
	if v, err := intruder.metric("tern_cluster_peers"); err != nil || v != 0 {
		t.Fatalf("a node with a certificate of another CA hears %v nodes (err %v)", v, err)
	}
	if v, _ := nodes[0].metric("tern_cluster_peers"); v != 2 {
		t.Fatalf("n1 hears %v nodes, want 2", v)
	}
}
