package main

import (
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ternmq/tern/codec"
	"github.com/ternmq/tern/internal/mqtttest"
	"github.com/ternmq/tern/server"
)

// captureMu serialises tests that swap os.Stdout and os.Stderr.
var captureMu sync.Mutex

// capture runs fn with os.Stdout and os.Stderr redirected and returns its
// exit code and what it wrote to each.
func capture(t *testing.T, fn func() int) (code int, stdout, stderr string) {
	t.Helper()
	captureMu.Lock()
	defer captureMu.Unlock()
	or, ow, _ := os.Pipe()
	er, ew, _ := os.Pipe()
	oldOut, oldErr := os.Stdout, os.Stderr
	os.Stdout, os.Stderr = ow, ew
	var wg sync.WaitGroup
	var ob, eb []byte
	wg.Add(2)
	go func() { defer wg.Done(); ob, _ = io.ReadAll(or) }()
	go func() { defer wg.Done(); eb, _ = io.ReadAll(er) }()
	func() {
		defer func() { os.Stdout, os.Stderr = oldOut, oldErr }()
		code = fn()
	}()
	ow.Close()
	ew.Close()
	wg.Wait()
	return code, string(ob), string(eb)
}

// startCLIBroker runs a broker for the client commands; dir "" is memory
// only. opt, if given, adjusts the options.
func startCLIBroker(t *testing.T, dir string, opt ...func(*server.Options)) (srv *server.Server, port string) {
	t.Helper()
	o := server.Options{Listeners: []string{"127.0.0.1:0"}, Durability: server.DurabilityNone,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	for _, f := range opt {
		f(&o)
	}
	if dir != "" {
		o.Durability, o.DataDir = server.DurabilitySync, dir
	}
	srv, err := server.New(o)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve()
	t.Cleanup(func() { srv.Close() })
	<-srv.Ready()
	_, port, _ = strings.Cut(srv.Addrs()[0].String(), ":")
	return srv, port
}

// A topic name with a wildcard is refused before connecting [MQTT-3.3.2-2]:
// at QoS 0 the broker's disconnect would go unnoticed and tern pub would
// report success.
func TestPubWildcardTopicFails_MQTT_3_3_2_2(t *testing.T) {
	_, port := startCLIBroker(t, "")
	for _, topic := range []string{"a/+/b", "a/#", "#"} {
		code, _, stderr := capture(t, func() int { return pubCmd([]string{"-p", port, "-t", topic, "-m", "x"}) })
		if code != 2 || !strings.Contains(stderr, "not a topic name") {
			t.Errorf("tern pub -t %s: exit %d, stderr %q", topic, code, stderr)
		}
	}
	code, _, stderr := capture(t, func() int { return subCmd([]string{"-p", port, "-t", "a/#/b", "-W", "1"}) })
	if code != 2 || !strings.Contains(stderr, "not a topic filter") {
		t.Errorf("tern sub -t a/#/b: exit %d, stderr %q", code, stderr)
	}
}

// tern pub and tern sub fail with status 1 when the broker is not there,
// and with 2 on 5.0 properties without -V 5.
func TestPubSubFailureExitCodes(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, closed, _ := strings.Cut(ln.Addr().String(), ":")
	ln.Close()
	for _, v := range []string{"3.1.1", "5"} {
		if code, _, stderr := capture(t, func() int { return pubCmd([]string{"-p", closed, "-V", v, "-t", "a", "-m", "x"}) }); code != 1 || !strings.Contains(stderr, "connect to") {
			t.Errorf("tern pub -V %s to a closed port: exit %d, stderr %q", v, code, stderr)
		}
		if code, _, _ := capture(t, func() int { return subCmd([]string{"-p", closed, "-V", v, "-t", "a"}) }); code != 1 {
			t.Errorf("tern sub -V %s to a closed port: exit %d", v, code)
		}
	}
	if code, _, stderr := capture(t, func() int {
		return pubCmd([]string{"-p", closed, "-t", "a", "-m", "x", "--content-type", "text/plain"})
	}); code != 2 || !strings.Contains(stderr, "-V 5") {
		t.Errorf("5.0 property without -V 5: exit %d, stderr %q", code, stderr)
	}
	if code, _, _ := capture(t, func() int { return pubCmd([]string{"-p", closed, "-t", "a", "-m", "x", "extra"}) }); code != 2 {
		t.Errorf("stray argument: exit %d", code)
	}
}

// tern sub exits 1 when the broker drops its connection, instead of
// waiting for messages that can no longer come.
func TestSubConnectionLostFails(t *testing.T) {
	for _, v := range []string{"3.1.1", "5"} {
		srv, port := startCLIBroker(t, "")
		done := make(chan int, 1)
		var stderr string
		go func() {
			code, _, e := capture(t, func() int { return subCmd([]string{"-p", port, "-V", v, "-t", "x", "-W", "20"}) })
			stderr = e
			done <- code
		}()
		waitSubscriptions(t, srv, 1)
		// The SUBACK is on its way; give the client time to read it so the
		// close below meets tern sub waiting for messages (a close before
		// the SUBACK is a failed subscribe: exit 1 as well, other words).
		time.Sleep(300 * time.Millisecond)
		srv.Close()
		if code := <-done; code != 1 || !strings.Contains(stderr, "connection lost") {
			t.Errorf("-V %s: tern sub exited %d after the broker closed, stderr %q", v, code, stderr)
		}
	}
}

// waitClients waits until srv has n connected clients.
func waitClients(t *testing.T, srv *server.Server, n int64) {
	t.Helper()
	for i := 0; i < 500; i++ {
		if srv.Stats().Connected >= n {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%d clients never connected", n)
}

// waitSubscriptions waits until srv holds n subscriptions (their SUBACK is
// on its way).
func waitSubscriptions(t *testing.T, srv *server.Server, n int) {
	t.Helper()
	for i := 0; i < 500; i++ {
		if srv.Stats().Subscriptions >= n {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%d subscriptions never appeared", n)
}

// tern bench fails when not one connection succeeded: a report of zeros
// must not pass for a measurement.
func TestBenchAllConnectionsFailedExits1(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	var out, errOut strings.Builder
	code := benchRun(t.Context(), "conn", []string{"--broker", addr, "--conns", "3", "--duration", "200ms",
		"--connect-timeout", "1s", "--broker-pid", "-1", "--quiet"}, &out, &errOut)
	if code != 1 || !strings.Contains(errOut.String(), "all 3 connections failed") {
		t.Fatalf("exit %d, stderr %q", code, errOut.String())
	}
}

// tern store inspect: an unknown client, a directory without a store and a
// store a broker holds are failures; a known client is not.
func TestStoreInspectExitCodes(t *testing.T) {
	dir := t.TempDir()
	srv, port := startCLIBroker(t, dir)
	c, err := mqtttest.Dial("127.0.0.1:" + port)
	if err != nil {
		t.Fatal(err)
	}
	if ack, err := c.Connect(codec.Connect{ClientID: []byte("known"), KeepAlive: 60}); err != nil || ack.ReasonCode != 0 {
		t.Fatalf("CONNECT: %v %+v", err, ack)
	}
	if _, err := c.Subscribe(1, nil, codec.Subscription{Filter: []byte("k/#"), QoS: 1}); err != nil {
		t.Fatal(err)
	}
	c.Disconnect()

	// While the broker runs, the data directory is locked.
	code, _, stderr := capture(t, func() int { return storeCmd([]string{"inspect", "--data", dir}) })
	if want := "in use by PID " + strconv.Itoa(os.Getpid()); code != 1 || !strings.Contains(stderr, want) {
		t.Fatalf("inspect while the broker runs: exit %d, stderr %q, want %q", code, stderr, want)
	}
	waitClients(t, srv, 0)
	srv.Close()

	if code, out, stderr := capture(t, func() int { return storeCmd([]string{"inspect", "--data", dir, "--client", "known", "--json"}) }); code != 0 || !strings.Contains(out, `"ClientID": "known"`) {
		t.Errorf("known client: exit %d, stdout %q, stderr %q", code, out, stderr)
	}
	if code, _, stderr := capture(t, func() int { return storeCmd([]string{"inspect", "--data", dir, "--client", "nobody"}) }); code != 1 || !strings.Contains(stderr, `no session or stored state for client "nobody"`) {
		t.Errorf("unknown client: exit %d, stderr %q", code, stderr)
	}
	empty := t.TempDir()
	if code, _, stderr := capture(t, func() int { return storeCmd([]string{"inspect", "--data", empty}) }); code != 1 || !strings.Contains(stderr, "holds no Tern store") {
		t.Errorf("empty directory: exit %d, stderr %q", code, stderr)
	}
	if entries, _ := os.ReadDir(empty); len(entries) != 0 {
		t.Errorf("inspecting an empty directory created %d files in it", len(entries))
	}
}
