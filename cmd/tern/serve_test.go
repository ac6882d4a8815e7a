package main

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/ternmq/tern/codec"
	"github.com/ternmq/tern/internal/mqtttest"
	"github.com/ternmq/tern/server"
	"github.com/ternmq/tern/server/auth"
)

const exampleConfig = "../../tern.example.yaml"

// writeConfig writes a configuration file for one test.
func writeConfig(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "tern.yaml")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// parse runs the flag and file parsing of tern serve.
func parse(t *testing.T, args ...string) *fileConfig {
	t.Helper()
	c, _, help, err := parseServeArgs(args, io.Discard)
	if err != nil || help {
		t.Fatalf("tern serve %v: %v (help %v)", args, err, help)
	}
	return c
}

// marshal is c with defaults filled, as YAML.
func marshal(t *testing.T, c *fileConfig) string {
	t.Helper()
	var b bytes.Buffer
	if err := printConfig(&b, c); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// configKey is one key of the file schema: its path ("limits.max_sessions",
// "tls_listeners[].addr") and whether it lives in a list entry, which the
// example shows commented out.
type configKey struct {
	path   string
	inList bool
}

// schemaKeys walks the yaml tags of t (inline structs flattened).
func schemaKeys(t reflect.Type, prefix string, inList bool) []configKey {
	var keys []configKey
	for i := range t.NumField() {
		f := t.Field(i)
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" {
			continue
		}
		if opts == "inline" {
			keys = append(keys, schemaKeys(f.Type, prefix, inList)...)
			continue
		}
		path := prefix + name
		keys = append(keys, configKey{path, inList})
		switch {
		case f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeFor[time.Duration]():
			keys = append(keys, schemaKeys(f.Type, path+".", inList)...)
		case f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.Struct:
			keys = append(keys, schemaKeys(f.Type.Elem(), path+"[].", true)...)
		}
	}
	return keys
}

// TestExampleConfigDocumentsEveryKeyWithItsDefault keeps tern.example.yaml
// from drifting: it must load, set every key a file can set (list entries
// may stay commented out), and change nothing.
func TestExampleConfigDocumentsEveryKeyWithItsDefault(t *testing.T) {
	example := parse(t, "--config", exampleConfig)
	got, want := strings.Split(marshal(t, example), "\n"), strings.Split(marshal(t, &fileConfig{}), "\n")
	if len(got) != len(want) {
		t.Errorf("tern.example.yaml is not the defaults:\n--- example\n%s\n--- defaults\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	} else {
		for i := range got {
			if got[i] != want[i] {
				t.Errorf("tern.example.yaml sets %q, the default is %q", strings.TrimSpace(got[i]), strings.TrimSpace(want[i]))
			}
		}
	}
	raw, err := os.ReadFile(exampleConfig)
	if err != nil {
		t.Fatal(err)
	}
	var tree map[string]any
	if err := yaml.Unmarshal(raw, &tree); err != nil {
		t.Fatal(err)
	}
	for _, k := range schemaKeys(reflect.TypeFor[fileConfig](), "", false) {
		if k.inList {
			leaf := k.path[strings.LastIndex(k.path, ".")+1:]
			if !regexp.MustCompile(`(?m)^#\s+(- )?` + leaf + `:`).Match(raw) {
				t.Errorf("tern.example.yaml does not show %s in a commented-out entry", k.path)
			}
			continue
		}
		var node any = tree
		for _, part := range strings.Split(k.path, ".") {
			m, _ := node.(map[string]any)
			var ok bool
			if node, ok = m[part]; !ok {
				t.Errorf("tern.example.yaml does not set %s", k.path)
				break
			}
		}
	}
}

func TestConfigUnknownKeyRejected(t *testing.T) {
	for _, text := range []string{
		"max_packet_sise: 2048\n",
		"limits:\n  max_sesions: 5\n",
		"websocket_listeners:\n  - adr: 127.0.0.1:0\n",
		"logger: x\n", // a Go-only field has no key
	} {
		_, _, _, err := parseServeArgs([]string{"--config", writeConfig(t, text)}, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "not found") {
			t.Errorf("%q: got %v, want an unknown-field error", text, err)
		}
	}
	// An empty file is the defaults.
	if got := marshal(t, parse(t, "--config", writeConfig(t, ""))); got != marshal(t, &fileConfig{}) {
		t.Errorf("empty file: %s", got)
	}
}

func TestConfigFlagOverridesFile(t *testing.T) {
	path := writeConfig(t, `
listeners: ["127.0.0.1:1"]
websocket_listeners:
  - addr: 127.0.0.1:2
    path: /ws
data_dir: /from/file
durability: periodic
sync_interval: 5ms
max_inflight_groups: 8
max_packet_size: 2048
allow_anonymous: true
event_loops: 3
queue_policy: drop_oldest
topic_alias_maximum: -1
response_information: reply/{clientid}/
max_inbound_qos2: 7
log_level: debug
limits:
  max_sessions: 9
`)
	// Flags before and after --config: the file is still overridden.
	c := parse(t, "--listen", "127.0.0.1:3", "--config", path, "--listen", "127.0.0.1:4",
		"--max-packet-size", "4096", "--allow-anonymous=false", "--log-level", "warn", "--max-inflight-groups", "2")
	c.ensureDefaults()
	o := c.Options
	if !reflect.DeepEqual(o.Listeners, []string{"127.0.0.1:3", "127.0.0.1:4"}) || o.MaxPacketSize != 4096 ||
		o.AllowAnonymous || c.LogLevel != "warn" || o.MaxInFlightGroups != 2 {
		t.Errorf("flags did not override the file: %+v log %s", o, c.LogLevel)
	}
	// What the flags left alone comes from the file: the options the old
	// hand-written copy could not reach included.
	if o.DataDir != "/from/file" || o.Durability != server.DurabilityPeriodic || o.SyncInterval != 5*time.Millisecond ||
		o.EventLoops != 3 || o.QueuePolicy != server.QueueDropOldest || o.TopicAliasMaximum != -1 ||
		o.ResponseInformation != "reply/{clientid}/" || o.MaxInboundQoS2 != 7 || o.Limits.MaxSessions != 9 ||
		len(o.WebSocketListeners) != 1 || o.WebSocketListeners[0].Path != "/ws" {
		t.Errorf("file values lost: %+v", o)
	}
	// Listener flags replace the file's listeners of their kind.
	c = parse(t, "--config", path, "--ws-listen", "127.0.0.1:5", "--ws-listen", "127.0.0.1:6",
		"--tls-listen", "127.0.0.1:7", "--tls-cert", "c.pem", "--tls-key", "k.pem",
		"--tls-client-ca", "ca.pem", "--tls-client-auth", "require", "--tls-identity-from", "cn", "--tls-min-version", "1.3")
	c.ensureDefaults()
	if ws := c.WebSocketListeners; len(ws) != 2 || ws[0].Addr != "127.0.0.1:5" || ws[1].Path != server.DefaultWebSocketPath {
		t.Errorf("--ws-listen: %+v", ws)
	}
	if tl := c.TLSListeners; len(tl) != 1 || tl[0].Addr != "127.0.0.1:7" || tl[0].CertFile != "c.pem" || tl[0].KeyFile != "k.pem" ||
		tl[0].ClientCAFile != "ca.pem" || tl[0].ClientAuth != "require" || tl[0].IdentityFrom != "cn" || tl[0].MinVersion != "1.3" {
		t.Errorf("--tls-listen: %+v", tl)
	}
	for _, f := range []string{"--tls-cert", "--tls-client-ca", "--tls-client-auth", "--tls-identity-from"} {
		if _, _, _, err := parseServeArgs([]string{f, "x"}, io.Discard); err == nil {
			t.Errorf("%s without --tls-listen accepted", f)
		}
	}
	if _, _, _, err := parseServeArgs([]string{"--max-packet-size", "big"}, io.Discard); err == nil {
		t.Error("a malformed flag value accepted")
	}
}

// TestConfigReportsEveryProblem: one run names every bad key, the
// broker's and tern serve's own, so an operator fixes the file in one pass.
func TestConfigReportsEveryProblem(t *testing.T) {
	path := writeConfig(t, `
listeners: ["localhost"]
durability: eventually
max_packet_size: 1
receive_maximum: 70000
queue_policy: lifo
log_level: loud
password_file: /does/not/exist
limits:
  max_sessions: -1
`)
	c := parse(t, "--config", path)
	_, err := c.build()
	if err == nil {
		t.Fatal("build accepted a bad configuration")
	}
	for _, key := range []string{"listeners[0]:", "durability:", "max_packet_size: must be between 64 and 268435460, got 1",
		"receive_maximum:", "queue_policy:", "log_level:", "password_file /does/not/exist:", "limits.max_sessions:"} {
		if !strings.Contains(err.Error(), key) {
			t.Errorf("missing %q in:\n%v", key, err)
		}
	}
	if code := serveCmd([]string{"--config", path}); code != 1 {
		t.Errorf("tern serve with a bad configuration exited %d, want 1", code)
	}
}

// TestPrintConfigRoundTrips: what --print-config prints is a configuration
// file that loads back to the same configuration.
func TestPrintConfigRoundTrips(t *testing.T) {
	c := parse(t, "--listen", "127.0.0.1:9", "--ws-listen", "127.0.0.1:8", "--durability", "none", "--sync-interval", "250ms")
	printed := marshal(t, c)
	back := parse(t, "--config", writeConfig(t, printed))
	if again := marshal(t, back); again != printed {
		t.Errorf("printed:\n%s\nloaded back:\n%s", printed, again)
	}
	for _, want := range []string{"- 127.0.0.1:9", "durability: none", "sync_interval: 250ms", "path: /mqtt", "max_sessions: 1000000"} {
		if !strings.Contains(printed, want) {
			t.Errorf("--print-config lacks %q:\n%s", want, printed)
		}
	}
}

// TestServeFromConfigFile runs tern serve from a file on a real loopback
// port, connects an MQTT client, and stops it with SIGTERM.
func TestServeFromConfigFile(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	path := writeConfig(t, "listeners: ["+addr+"]\ndurability: none\nevent_loops: 1\nlog_level: warn\nsys_interval: -1s\n")
	done := make(chan int, 1)
	go func() { done <- serveCmd([]string{"--config", path}) }()
	var c *mqtttest.Conn
	for deadline := time.Now().Add(10 * time.Second); ; {
		if c, err = mqtttest.Dial(addr); err == nil {
			break
		}
		select {
		case code := <-done:
			t.Fatalf("tern serve exited %d", code)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("broker not listening on %s: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	ack, err := c.Connect(codec.Connect{ClientID: []byte("cfg"), KeepAlive: 30})
	if err != nil || ack.ReasonCode != 0 {
		t.Fatalf("CONNECT: %v %+v", err, ack)
	}
	c.Disconnect()
	// The broker answering means serveCmd has registered for the signals.
	self, _ := os.FindProcess(os.Getpid())
	// SIGHUP (systemctl reload) must not stop it.
	if err := self.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-done:
		t.Fatalf("tern serve exited %d on SIGHUP", code)
	case <-time.After(300 * time.Millisecond):
	}
	if c, err = mqtttest.Dial(addr); err != nil {
		t.Fatalf("not listening after SIGHUP: %v", err)
	}
	if ack, err := c.Connect(codec.Connect{ClientID: []byte("cfg2"), CleanStart: true}); err != nil || ack.ReasonCode != 0 {
		t.Fatalf("CONNECT after SIGHUP: %v %+v", err, ack)
	}
	c.Disconnect()
	if err := self.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("tern serve exited %d after SIGTERM", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("tern serve did not stop on SIGTERM")
	}
}

// TestServeSIGHUPReloads: SIGHUP makes tern serve read the password file
// and the log level again, without stopping; a broken password file is
// rejected and the one in force stays.
func TestServeSIGHUPReloads(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	dir := t.TempDir()
	pw := filepath.Join(dir, "passwords")
	setPassword := func(p string) {
		line, err := auth.HashPassword("dev", p, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(pw, []byte(line+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	setPassword("one")
	cfg := func(level string) string {
		return "listeners: [" + addr + "]\ndurability: none\nevent_loops: 1\nsys_interval: -1s\npassword_file: " + pw + "\nlog_level: " + level + "\n"
	}
	path := writeConfig(t, cfg("warn"))
	done := make(chan int, 1)
	go func() { done <- serveCmd([]string{"--config", path}) }()
	login := func(pass string) (byte, error) {
		c, err := mqtttest.Dial(addr)
		if err != nil {
			return 0, err
		}
		defer c.Close()
		ack, err := c.Connect(codec.Connect{ClientID: []byte("hup"), CleanStart: true, KeepAlive: 30,
			UsernameFlag: true, Username: []byte("dev"), PasswordFlag: true, Password: []byte(pass)})
		return byte(ack.ReasonCode), err
	}
	for deadline := time.Now().Add(10 * time.Second); ; {
		if code, err := login("one"); err == nil && code == 0 {
			break
		}
		select {
		case code := <-done:
			t.Fatalf("tern serve exited %d", code)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("broker not accepting dev/one")
		}
		time.Sleep(20 * time.Millisecond)
	}
	self, _ := os.FindProcess(os.Getpid())
	hup := func() {
		if err := self.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
	}
	// A broken file: refused, dev/one still works.
	if err := os.WriteFile(pw, []byte("dev:garbage\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	hup()
	time.Sleep(300 * time.Millisecond)
	if code, err := login("one"); err != nil || code != 0 {
		t.Fatalf("after a bad password file, the old one should stay: CONNACK %d, %v", code, err)
	}
	// A good file and a new log level: both take effect.
	setPassword("two")
	if err := os.WriteFile(path, []byte(cfg("debug")), 0o600); err != nil {
		t.Fatal(err)
	}
	hup()
	for deadline := time.Now().Add(5 * time.Second); ; {
		if code, err := login("two"); err == nil && code == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the new password was not loaded on SIGHUP")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code, err := login("one"); err == nil && code == 0 {
		t.Error("the old password still works after the reload")
	}
	if lv := logLevel.Level(); lv != slog.LevelDebug {
		t.Errorf("log level %v after SIGHUP, want debug", lv)
	}
	select {
	case code := <-done:
		t.Fatalf("tern serve exited %d on SIGHUP", code)
	default:
	}
	if err := self.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("exit %d after SIGTERM", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("tern serve did not stop on SIGTERM")
	}
}
