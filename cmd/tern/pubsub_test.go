package main

import (
	"io"
	"log/slog"
	"os"
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
	for i := 0; srv.Stats().Subscriptions < 1; i++ { // SUBACK sent: the publication will match
		if i == 500 {
			t.Fatal("tern sub never subscribed")
		}
		time.Sleep(10 * time.Millisecond)
	}
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
