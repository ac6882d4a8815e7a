package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ternmq/tern/server"
	"github.com/ternmq/tern/server/auth"
)

// tern pub sets a retained message that tern sub then prints.
func TestPubSubCommands(t *testing.T) {
	srv, err := server.New(server.Options{Listeners: []string{"127.0.0.1:0"}, Durability: server.DurabilityNone,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve()
	defer srv.Close()
	<-srv.Ready()
	_, port, _ := strings.Cut(srv.Addrs()[0].String(), ":")

	if code := pubCmd([]string{"-p", port, "-t", "cli/r", "-m", "hello", "-q", "1", "-r"}); code != 0 {
		t.Fatalf("tern pub exited %d", code)
	}
	r, w, _ := os.Pipe()
	stdout := os.Stdout
	os.Stdout = w
	done := make(chan int, 1)
	go func() { done <- subCmd([]string{"-p", port, "-t", "cli/#", "-v", "-C", "1", "-W", "5"}) }()
	var code int
	select {
	case code = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("tern sub did not exit")
	}
	w.Close()
	os.Stdout = stdout
	out, _ := io.ReadAll(r)
	if code != 0 || string(out) != "cli/r hello\n" {
		t.Fatalf("tern sub exited %d printing %q", code, out)
	}
	if code := pubCmd([]string{"-p", port, "-q", "3", "-t", "x", "-m", "y"}); code == 0 {
		t.Fatal("tern pub accepted -q 3")
	}
}

// tern pub -V 5 carries the 5.0 properties [MQTT-3.3.2-3.3.2.3] to a tern
// sub -V 5, which prints them with --props: message expiry (decremented
// by the broker's time in hand, so at most what was sent), content type,
// response topic, correlation data, payload format and user properties in
// order [MQTT-3.3.2-18].
func TestPubSubV5Properties(t *testing.T) {
	srv, port := startCLIBroker(t, "")
	done := make(chan struct{})
	var code int
	var out, errOut string
	go func() {
		defer close(done)
		code, out, errOut = capture(t, func() int {
			return subCmd([]string{"-p", port, "--protocol", "5", "-t", "v5/#", "-q", "1", "-v", "--props", "-C", "1", "-W", "10"})
		})
	}()
	waitSubscriptions(t, srv, 1) // the publication will match
	pub := []string{"-p", port, "-V", "mqttv5", "-t", "v5/req", "-q", "1", "-m", "hello",
		"--expiry", "60", "--content-type", "text/plain", "--response-topic", "v5/reply",
		"--correlation-data", "c-1", "--utf8", "--user-property", "k=v1", "--user-property", "k=v2"}
	// Not captured: the subscriber's capture holds os.Stdout and
	// os.Stderr (a failure message of tern pub lands in its stderr).
	if c := pubCmd(pub); c != 0 {
		<-done
		t.Fatalf("tern pub -V 5 exited %d: %s", c, errOut)
	}
	<-done
	want := regexp.MustCompile(`^v5/req \[payload-format=1 expiry=(60|59) content-type=text/plain response-topic=v5/reply correlation-data=c-1 user:k=v1 user:k=v2\] hello\n$`)
	if code != 0 || !want.MatchString(out) {
		t.Fatalf("tern sub -V 5 exited %d printing %q (stderr %q)", code, out, errOut)
	}
}

// A 5.0 QoS 1 publication the broker refuses (here: the ACL denies it, so
// PUBACK carries 0x87 Not authorized [MQTT-3.4.2-1]) makes tern pub fail;
// at QoS 0 nothing comes back, as with 3.1.1. A refused 5.0 subscription
// fails tern sub.
func TestPubSubV5RefusalsExit1(t *testing.T) {
	acl, err := auth.ParseACL(strings.NewReader("topic readwrite open/#\n"))
	if err != nil {
		t.Fatal(err)
	}
	_, port := startCLIBroker(t, "", func(o *server.Options) { o.Authorizer = acl })
	if c, _, e := capture(t, func() int { return pubCmd([]string{"-p", port, "-V", "5", "-t", "open/a", "-q", "1", "-m", "x"}) }); c != 0 {
		t.Fatalf("allowed publish: exit %d: %s", c, e)
	}
	c, _, e := capture(t, func() int { return pubCmd([]string{"-p", port, "-V", "5", "-t", "closed/a", "-q", "1", "-m", "x"}) })
	if c != 1 || !strings.Contains(e, "0x87") && !strings.Contains(strings.ToLower(e), "not authorized") {
		t.Fatalf("denied QoS 1 publish: exit %d, stderr %q", c, e)
	}
	c, _, e = capture(t, func() int { return subCmd([]string{"-p", port, "-V", "5", "-t", "closed/#", "-W", "2"}) })
	if c != 1 || !strings.Contains(e, "refused") {
		t.Fatalf("denied 5.0 subscription: exit %d, stderr %q", c, e)
	}
	c, _, e = capture(t, func() int { return subCmd([]string{"-p", port, "-t", "closed/#", "-W", "2"}) })
	if c != 1 || !strings.Contains(e, "refused") {
		t.Fatalf("denied 3.1.1 subscription: exit %d, stderr %q", c, e)
	}
}

// tern pub and tern sub over TLS, both versions: --tls with --cafile
// trusting the broker's self-signed certificate; without --cafile the
// handshake fails (exit 1).
func TestPubSubTLS(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "tern cli test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
	srv, _ := startCLIBroker(t, "", func(o *server.Options) {
		o.TLSListeners = []server.TLSListener{{Addr: "127.0.0.1:0", Config: cfg}}
	})
	_, port, _ := strings.Cut(srv.TLSAddrs()[0].String(), ":")
	for _, v := range []string{"3.1.1", "5"} {
		topic := "tls/v" + v
		if c, _, e := capture(t, func() int {
			return pubCmd([]string{"-p", port, "--tls", "--cafile", ca, "-V", v, "-t", topic, "-m", "secure", "-q", "1", "-r"})
		}); c != 0 {
			t.Fatalf("-V %s: tern pub --tls exited %d: %s", v, c, e)
		}
		c, out, e := capture(t, func() int {
			return subCmd([]string{"-p", port, "--tls", "--cafile", ca, "-V", v, "-t", topic, "-C", "1", "-W", "5"})
		})
		if c != 0 || out != "secure\n" {
			t.Fatalf("-V %s: tern sub --tls exited %d printing %q: %s", v, c, out, e)
		}
		if c, _, e := capture(t, func() int { return pubCmd([]string{"-p", port, "--tls", "-V", v, "-t", topic, "-m", "x"}) }); c != 1 || !strings.Contains(e, "certificate") {
			t.Errorf("-V %s: untrusted certificate: exit %d, stderr %q", v, c, e)
		}
	}
}
