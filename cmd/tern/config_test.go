package main

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"

	"github.com/ternmq/tern/codec"
	"github.com/ternmq/tern/server"
	"github.com/ternmq/tern/server/auth"
	"github.com/ternmq/tern/server/auth/authtest"
)

// Every duration of the file accepts days as well as Go durations, at the
// top level, in limits and in list entries; a value that is no duration is
// reported with its key and line.
func TestConfigDurationsAcceptDays(t *testing.T) {
	c := parse(t, "--config", writeConfig(t, `
max_session_expiry: 7d
connect_timeout: "1d12h"
sync_interval: 250ms
slow_consumer_timeout: -1d
sys_interval: 5m
websocket_listeners:
  - addr: 127.0.0.1:0
    idle_timeout: 0.5d
`))
	for name, got := range map[string]time.Duration{
		"max_session_expiry": c.MaxSessionExpiry, "connect_timeout": c.ConnectTimeout, "sync_interval": c.SyncInterval,
		"slow_consumer_timeout": c.SlowConsumerTimeout, "sys_interval": c.SysInterval,
		"idle_timeout": c.WebSocketListeners[0].IdleTimeout,
	} {
		want := map[string]time.Duration{"max_session_expiry": 7 * 24 * time.Hour, "connect_timeout": 36 * time.Hour,
			"sync_interval": 250 * time.Millisecond, "slow_consumer_timeout": -24 * time.Hour, "sys_interval": 5 * time.Minute,
			"idle_timeout": 12 * time.Hour}[name]
		if got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	_, _, _, err := parseServeArgs([]string{"--config", writeConfig(t, "data_dir: ./x\n\nconnect_timeout: 7x\n")}, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "line 3: connect_timeout") || !strings.Contains(err.Error(), "7d") {
		t.Fatalf("bad duration: %v", err)
	}
	// A string key that is not a duration keeps its "d": only durations are rewritten.
	c = parse(t, "--config", writeConfig(t, "data_dir: ./7d\nmax_session_expiry: 2d\n"))
	if c.DataDir != "./7d" || c.MaxSessionExpiry != 48*time.Hour {
		t.Fatalf("data_dir %q, max_session_expiry %v", c.DataDir, c.MaxSessionExpiry)
	}
	// Line numbers of other errors are the file's own.
	_, _, _, err = parseServeArgs([]string{"--config", writeConfig(t, "max_session_expiry: 7d\nnot_a_key: 1\n")}, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("unknown key after a rewritten duration: %v", err)
	}
}

// Combinations that cannot do what they say are configuration errors that
// say what to do.
func TestConfigErrorsSayWhatToDo(t *testing.T) {
	pw := filepath.Join(t.TempDir(), "passwd")
	line, err := auth.HashPassword("alice", "wonderland", 1000)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pw, []byte(line+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"tls cert without listener", []string{"--tls-cert", "c.pem", "--tls-key", "k.pem"}, "goes with --tls-listen"},
		{"unix listener", []string{"--listen", "unix:/run/tern.sock"}, "Unix-socket listeners are not supported"},
		{"unix path", []string{"--listen", "/run/tern.sock"}, "Unix-socket listeners are not supported"},
		{"anonymous with password file", []string{"--allow-anonymous", "--password-file", pw}, "allow_anonymous: cannot be combined with password_file"},
		{"scram without password file", []string{"--config", writeConfig(t, "enhanced_auth: [SCRAM-SHA-256]\n")}, "needs password_file"},
		{"unknown method", []string{"--password-file", pw, "--config", writeConfig(t, "enhanced_auth: [KERBEROS]\n")}, `unknown method "KERBEROS"`},
	} {
		c, _, _, err := parseServeArgs(tc.args, io.Discard)
		if err == nil {
			_, err = c.build()
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
}

// enhanced_auth: [SCRAM-SHA-256] in the file offers SCRAM to the password
// file's users with their file passwords (§4.12): a right proof connects,
// a wrong one gets CONNACK 0x87 Not authorized [MQTT-4.12.0-1]; plain
// password authentication keeps working.
func TestConfigEnhancedAuthSCRAMFromPasswordFile_MQTT_4_12_0_1(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "passwd")
	line, err := auth.HashPassword("alice", "wonderland", 4096)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pw, []byte(line+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := parse(t, "--config", writeConfig(t, "enhanced_auth: [SCRAM-SHA-256]\nlisteners: [127.0.0.1:0]\ndurability: none\n"), "--password-file", pw)
	opts, err := c.build()
	if err != nil {
		t.Fatal(err)
	}
	opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	srv, err := server.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	reloadSCRAMWithPasswords(srv, opts)
	go srv.Serve()
	defer srv.Close()
	<-srv.Ready()
	addr := srv.Addrs()[0].String()

	// The password changes and the broker reloads: SCRAM follows the file.
	rotate := func() {
		line, err := auth.HashPassword("alice", "looking-glass", 4096)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(pw, []byte(line+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := srv.Reload(); err != nil {
			t.Fatalf("reload: %v", err)
		}
	}
	for _, tc := range []struct {
		password string
		want     byte
		before   func()
	}{{"wonderland", 0, nil}, {"guess", byte(codec.NotAuthorized), nil},
		{"wonderland", byte(codec.NotAuthorized), rotate}, {"looking-glass", 0, nil}} {
		if tc.before != nil {
			tc.before()
		}
		sc := &scramAuther{authtest.SCRAMClient{User: "alice", Password: tc.password}}
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		cl := paho.NewClient(paho.ClientConfig{Conn: packets.NewThreadSafeConn(conn), AuthHandler: sc})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		ca, err := cl.Connect(ctx, &paho.Connect{ClientID: "scram-" + tc.password, CleanStart: true,
			Properties: &paho.ConnectProperties{AuthMethod: auth.SCRAMSHA256Method, AuthData: sc.First()}})
		cancel()
		if ca == nil || ca.ReasonCode != tc.want {
			t.Errorf("SCRAM with password %q: CONNACK %+v, err %v; want reason 0x%02X", tc.password, ca, err, tc.want)
		}
		if err == nil {
			if ca.Properties == nil || !sc.Verify(ca.Properties.AuthData) {
				t.Errorf("server signature did not verify")
			}
			_ = cl.Disconnect(&paho.Disconnect{})
		}
		conn.Close()
	}
	if code, _, e := capture(t, func() int {
		_, port, _ := strings.Cut(addr, ":")
		return pubCmd([]string{"-p", port, "-u", "alice", "-P", "looking-glass", "-t", "x", "-m", "y", "-q", "1"})
	}); code != 0 {
		t.Errorf("password authentication next to SCRAM: exit %d: %s", code, e)
	}
}

// scramAuther is authtest.SCRAMClient as a paho.Auther.
type scramAuther struct{ authtest.SCRAMClient }

func (s *scramAuther) Authenticate(a *paho.Auth) *paho.Auth {
	out, _ := s.Final(string(a.Properties.AuthData))
	return &paho.Auth{ReasonCode: byte(codec.ContinueAuthentication),
		Properties: &paho.AuthProperties{AuthMethod: auth.SCRAMSHA256Method, AuthData: out}}
}

func (s *scramAuther) Authenticated() {}
