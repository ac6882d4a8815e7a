package server

import (
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/ternmq/tern/codec"
	"github.com/ternmq/tern/server/auth"
)

// /metrics parses as the Prometheus text format (what promtool checks) and
// carries the refusal counters of every limit and the failed-login counters.
func TestMetricsParseAndCountRefusals(t *testing.T) {
	line, err := auth.HashPassword("dev", "pw", 1000)
	if err != nil {
		t.Fatal(err)
	}
	pf, err := auth.ParsePasswordFile(strings.NewReader(line + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	admin := ln.Addr().String()
	_ = ln.Close()
	_, addr := startBroker(t, func(o *Options) {
		o.AdminListen, o.Authenticator = admin, pf
		o.Limits.MaxClientIDLength = 30
	})
	connectAs(t, addr, codec.Connect{ClientID: []byte(strings.Repeat("x", 31)), CleanStart: true})
	connectAs(t, addr, codec.Connect{ClientID: []byte("guess"), CleanStart: true,
		UsernameFlag: true, Username: []byte("dev"), PasswordFlag: true, Password: []byte("nope")})
	var resp *http.Response
	for i := 0; i < 50; i++ {
		if resp, err = http.Get("http://" + admin + "/metrics"); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("/metrics is not valid Prometheus text: %v", err)
	}
	value := func(fam, label, want string) float64 {
		f := fams[fam]
		if f == nil {
			t.Fatalf("no %s", fam)
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == want {
					return m.GetCounter().GetValue()
				}
			}
		}
		t.Fatalf("%s has no %s=%q", fam, label, want)
		return 0
	}
	if v := value("tern_limit_refused_total", "limit", "max_client_id_length"); v != 1 {
		t.Errorf("max_client_id_length refusals: %v", v)
	}
	if v := value("tern_auth_failures_total", "method", "password"); v != 1 {
		t.Errorf("password failures: %v", v)
	}
	for _, name := range []string{"tern_connections", "tern_publishers_paced_total", "tern_store_full", "tern_messages_dropped_total"} {
		if fams[name] == nil {
			t.Errorf("no %s", name)
		}
	}
}
