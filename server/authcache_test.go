package server

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/ternmq/tern/codec"
	"github.com/ternmq/tern/server/auth"
)

// A fleet reconnecting with the same credentials derives each password
// hash once: the second storm is answered from the remembered (keyed-hash)
// verdicts, on the event loop, and /metrics counts the hits and misses. A
// reload of the password file forgets them all: a changed password is
// refused at once, and an unchanged one is derived again.
func TestPasswordCacheReconnectStorm(t *testing.T) {
	const users = 20
	dir := t.TempDir()
	path := filepath.Join(dir, "passwd")
	writeUsers := func(pass0 string) {
		var lines []string
		for i := range users {
			pass := "pw-" + fmt.Sprint(i)
			if i == 0 {
				pass = pass0
			}
			l, err := auth.HashPassword(fmt.Sprintf("dev%d", i), pass, 1000)
			if err != nil {
				t.Fatal(err)
			}
			lines = append(lines, l)
		}
		if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeUsers("pw-0")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	admin := ln.Addr().String()
	_ = ln.Close()
	srv, addr := startBroker(t, func(o *Options) { o.PasswordFile, o.AdminListen = path, admin })

	login := func(i int, pass string, want codec.ReasonCode) {
		t.Helper()
		c := dialRaw(t, addr)
		c.connect(codec.Connect{ClientID: []byte(fmt.Sprintf("dev%d", i)), CleanStart: true, KeepAlive: 30,
			UsernameFlag: true, Username: []byte(fmt.Sprintf("dev%d", i)), PasswordFlag: true, Password: []byte(pass)}, want)
		_ = c.c.Close()
	}
	storm := func() {
		for i := range users {
			login(i, fmt.Sprintf("pw-%d", i), 0)
		}
	}
	storm()
	if h, m := authCacheCounts(t, admin); h != 0 || m != users {
		t.Fatalf("first storm: %v hits, %v misses; want 0 and %d", h, m, users)
	}
	storm()
	if h, m := authCacheCounts(t, admin); h != users || m != users {
		t.Fatalf("reconnect storm: %v hits, %v misses; want %d and %d", h, m, users, users)
	}

	writeUsers("changed")
	if err := srv.Reload(); err != nil {
		t.Fatal(err)
	}
	login(0, "pw-0", codec.ConnRefusedBadUserPass311) // the old password, remembered before the reload
	login(0, "changed", 0)
	login(1, "pw-1", 0) // unchanged, but derived again after the reload
	if h, m := authCacheCounts(t, admin); h != users || m != users+3 {
		t.Fatalf("after reload: %v hits, %v misses; want %d and %d", h, m, users, users+3)
	}
	login(1, "pw-1", 0)
	if h, _ := authCacheCounts(t, admin); h != users+1 {
		t.Fatalf("remembered again after the reload: %v hits, want %d", h, users+1)
	}
}

// authCacheCounts scrapes tern_auth_cache_hits_total and _misses_total.
func authCacheCounts(t *testing.T, admin string) (hits, misses float64) {
	t.Helper()
	var resp *http.Response
	var err error
	for range 50 {
		if resp, err = http.Get("http://" + admin + "/metrics"); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	get := func(name string) float64 {
		f := fams[name]
		if f == nil || len(f.Metric) != 1 {
			t.Fatalf("no %s in /metrics", name)
		}
		return f.Metric[0].GetCounter().GetValue()
	}
	return get("tern_auth_cache_hits_total"), get("tern_auth_cache_misses_total")
}
