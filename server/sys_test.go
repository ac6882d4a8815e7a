package server

import (
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// The admin listener serves Prometheus metrics and a health check, and the
// broker publishes mosquitto-compatible $SYS topics that "#" does not match
// [MQTT-4.7.2-1].
func TestAdminAndSys(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	admin := ln.Addr().String()
	ln.Close()
	_, addr := startBroker(t, func(o *Options) {
		o.AdminListen = admin
		o.SysInterval = time.Second
		o.Version = "test"
	})
	r := newReceived()
	c := pahoClient(t, addr, "sys-watch")
	subscribe(t, c, "$SYS/broker/version", 0, r)
	if m := r.waitN(t, 1, 5*time.Second)[0]; string(m.Payload()) != "tern test" {
		t.Fatalf("$SYS/broker/version = %q", m.Payload())
	}
	all := newReceived() // a separate client: paho routes client-side without the $ rule
	c2 := pahoClient(t, addr, "sys-hash")
	subscribe(t, c2, "#", 0, all)
	all.quiet(t, 0, 1500*time.Millisecond)

	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + admin + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/healthz"); code != 200 || strings.TrimSpace(body) != "ok" {
		t.Fatalf("/healthz: %d %q", code, body)
	}
	code, body := get("/metrics")
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	for _, want := range []string{"tern_connections 2", "# TYPE tern_messages_received_total counter", "tern_store_available 1", "tern_subscriptions 2"} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q:\n%s", want, body)
		}
	}
}
