package main

import (
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ternmq/tern/server"
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
