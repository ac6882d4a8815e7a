package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/ternmq/tern/server"
	"github.com/ternmq/tern/server/auth"
)

// ctlBroker runs a broker with a store and the admin listener (token
// "t0k"), and returns it, its MQTT address and the admin URL.
func ctlBroker(t *testing.T) (*server.Server, string, string) {
	t.Helper()
	srv, err := server.New(server.Options{Listeners: []string{"127.0.0.1:0"}, DataDir: t.TempDir(), EventLoops: 2,
		AdminListen: "127.0.0.1:0", AdminToken: "t0k", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve() }()
	t.Cleanup(func() {
		_ = srv.Close()
		<-errc
	})
	<-srv.Ready()
	return srv, srv.Addrs()[0].String(), "http://" + srv.AdminAddr().String()
}

func ctlPaho(t *testing.T, addr, id string, clean bool) mqtt.Client {
	t.Helper()
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).
		SetCleanSession(clean).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second))
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("connect %s: %v", id, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(10) })
	return c
}

// ctl runs tern ctl with args and returns its exit code, stdout and stderr.
func ctl(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := ctlMain(args, &out, &errb)
	return code, out.String(), errb.String()
}

// Every ctl command against a real broker with paho clients: tables, JSON,
// the changes they make, and the exit status of failures.
func TestCtlCommands(t *testing.T) {
	srv, addr, admin := ctlBroker(t)
	t.Setenv("TERN_ADMIN", admin)
	t.Setenv("TERN_ADMIN_TOKEN", "t0k")
	for i := range 5 {
		c := ctlPaho(t, addr, fmt.Sprintf("dev-%d", i), true)
		if tok := c.Subscribe("fleet/cmd", 1, nil); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatal(tok.Error())
		}
	}
	pub := ctlPaho(t, addr, "pub", true)
	if tok := pub.Publish("fleet/state", 1, true, "on"); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}

	code, out, errs := ctl("clients", "list", "--limit", "2")
	if code != 0 || !strings.Contains(out, "dev-0") || !strings.Contains(out, "dev-1") || strings.Contains(out, "dev-2") ||
		!strings.Contains(out, "(2 of 6;") {
		t.Fatalf("clients list --limit 2: %d\n%s%s", code, out, errs)
	}
	code, out, _ = ctl("clients", "list", "--limit", "2", "--all", "--json")
	var list server.ClientList
	if code != 0 || json.Unmarshal([]byte(out), &list) != nil || len(list.Clients) != 6 || list.Total != 6 {
		t.Fatalf("clients list --all --json: %d %s", code, out)
	}
	code, out, _ = ctl("--json", "clients", "show", "dev-3")
	var ci server.ClientInfo
	if code != 0 || json.Unmarshal([]byte(out), &ci) != nil || ci.ID != "dev-3" || !ci.Connected || ci.Subscriptions != 1 {
		t.Fatalf("clients show --json: %d %s", code, out)
	}
	if code, out, _ = ctl("clients", "show", "dev-3"); code != 0 || !strings.Contains(out, "remote address") || !strings.Contains(out, "3.1.1") {
		t.Fatalf("clients show: %d %s", code, out)
	}
	if code, out, _ = ctl("subs", "--filter", "fleet/cmd"); code != 0 || strings.Count(out, "fleet/cmd") != 5 {
		t.Fatalf("subs: %d %s", code, out)
	}
	if code, out, _ = ctl("retained", "list"); code != 0 || !strings.Contains(out, "fleet/state") || !strings.Contains(out, `"on"`) {
		t.Fatalf("retained list: %d %s", code, out)
	}
	if code, out, _ = ctl("info"); code != 0 || !strings.Contains(out, "tcp://"+addr) || !strings.Contains(out, "connected") {
		t.Fatalf("info: %d %s", code, out)
	}

	// Changes.
	if code, out, errs = ctl("clients", "kick", "dev-4", "--reason", "test"); code != 0 || !strings.Contains(out, "kicked dev-4") {
		t.Fatalf("kick: %d %s %s", code, out, errs)
	}
	if _, ok := srv.ClientInfo("dev-4"); ok {
		t.Fatal("dev-4 (clean session) still known after the kick")
	}
	persistent := ctlPaho(t, addr, "keeper", false)
	if tok := persistent.Subscribe("keep/#", 1, nil); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	if code, out, _ = ctl("sessions", "show", "keeper"); code != 0 || !strings.Contains(out, "keep/#") {
		t.Fatalf("sessions show: %d %s", code, out)
	}
	if code, _, errs = ctl("sessions", "delete", "keeper"); code != 0 {
		t.Fatalf("sessions delete: %d %s", code, errs)
	}
	if _, ok := srv.Session("keeper"); ok {
		t.Fatal("session still there after sessions delete")
	}
	if code, _, errs = ctl("retained", "delete", "fleet/state"); code != 0 {
		t.Fatalf("retained delete: %d %s", code, errs)
	}
	if n := srv.Info().Retained; n != 0 {
		t.Fatalf("%d retained after delete", n)
	}

	// Failures exit non-zero with the API's message.
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"clients", "show", "nobody"}, 1, "not found"},
		{[]string{"clients", "kick", "nobody"}, 1, "not connected"},
		{[]string{"sessions", "delete", "keeper"}, 1, "not found"},
		{[]string{"retained", "delete", "fleet/state"}, 1, "no retained message"},
		{[]string{"retained", "list", "--filter", "a/#/b"}, 1, "invalid filter"},
		{[]string{"--token", "wrong", "info"}, 1, "unauthorized"},
		{[]string{"--admin", "http://127.0.0.1:1", "info"}, 1, "refused"},
		{[]string{"clients"}, 2, "needs a subcommand"},
		{[]string{"clients", "show"}, 2, "takes 1 argument"},
		{[]string{"frobnicate"}, 2, "unknown command"},
		{[]string{"clients", "list", "--bogus"}, 2, "bogus"},
	} {
		code, out, errs := ctl(tc.args...)
		if code != tc.code || !strings.Contains(errs, tc.msg) {
			t.Errorf("ctl %v: exit %d, stderr %q (stdout %q); want exit %d mentioning %q", tc.args, code, errs, out, tc.code, tc.msg)
		}
	}
	if code, out, errs := ctl("reload"); code != 0 || !strings.Contains(out, "reloaded") {
		t.Errorf("reload: exit %d %q %q", code, out, errs)
	}
}

// admin_users comes from the file or --admin-user, needs password_file,
// and lets tern ctl in with --user and $TERN_ADMIN_PASSWORD.
func TestConfigAdminUsers(t *testing.T) {
	line, err := auth.HashPassword("ops", "ops-pw", 1000)
	if err != nil {
		t.Fatal(err)
	}
	pw := filepath.Join(t.TempDir(), "passwd")
	if err := os.WriteFile(pw, []byte(line+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	path := writeConfig(t, "listeners: [\"127.0.0.1:0\"]\ndurability: none\nadmin_listen: 127.0.0.1:0\nadmin_users: [ops]\npassword_file: "+pw+"\nlog_level: error\n")
	o, err := parse(t, "--config", path).build()
	if err != nil || len(o.AdminUsers) != 1 || o.AdminUsers[0] != "ops" {
		t.Fatalf("admin_users with a password file: %v %v", err, o.AdminUsers)
	}
	if c := parse(t, "--config", path, "--admin-user", "root"); len(c.AdminUsers) != 1 || c.AdminUsers[0] != "root" {
		t.Errorf("--admin-user did not replace the file's list: %v", c.AdminUsers)
	}
	noPW := writeConfig(t, "admin_users: [ops]\n")
	if _, err := parse(t, "--config", noPW).build(); err == nil || !strings.Contains(err.Error(), "admin_users") {
		t.Errorf("admin_users without password_file: %v, want an error naming admin_users", err)
	}

	srv, err := server.New(o)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve() }()
	defer func() { _ = srv.Close(); <-errc }()
	<-srv.Ready()
	admin := "http://" + srv.AdminAddr().String()
	t.Setenv("TERN_ADMIN_TOKEN", "")
	t.Setenv("TERN_ADMIN_PASSWORD", "ops-pw")
	if code, out, errs := ctl("--admin", admin, "--user", "ops", "info"); code != 0 || !strings.Contains(out, "version") {
		t.Errorf("ctl as admin user: %d %s %s", code, out, errs)
	}
	t.Setenv("TERN_ADMIN_PASSWORD", "wrong")
	if code, _, errs := ctl("--admin", admin, "--user", "ops", "info"); code != 1 || !strings.Contains(errs, "401") {
		t.Errorf("ctl with a wrong password: %d %s", code, errs)
	}
}
