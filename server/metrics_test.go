package server

import (
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
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

// /metrics keeps every tern_* family name and type it had before
// client_golang, and gains the Go runtime and process collectors
// (goroutines, GC, open and maximum file descriptors, resident memory).
func TestMetricsFamiliesAndRuntimeCollectors(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	admin := ln.Addr().String()
	_ = ln.Close()
	dir := t.TempDir()
	startBroker(t, func(o *Options) {
		o.AdminListen, o.DataDir, o.Durability = admin, dir, DurabilitySync
		o.WebSocketListeners = []WebSocketListener{{Addr: "127.0.0.1:0"}}
	})
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
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("/metrics is not valid Prometheus text: %v", err)
	}
	want := map[string]string{
		"tern_connections": "GAUGE", "tern_sessions": "GAUGE", "tern_subscriptions": "GAUGE", "tern_retained_messages": "GAUGE",
		"tern_messages_received_total": "COUNTER", "tern_messages_sent_total": "COUNTER", "tern_messages_dropped_total": "COUNTER",
		"tern_bytes_received_total": "COUNTER", "tern_connects_total": "COUNTER", "tern_uptime_seconds": "GAUGE",
		"tern_store_batches_total": "COUNTER", "tern_store_failed_batches_total": "COUNTER", "tern_store_syncs_total": "COUNTER",
		"tern_store_live_messages": "GAUGE", "tern_store_available": "GAUGE",
		"tern_store_sync_seconds_total": "COUNTER", "tern_store_groups_total": "COUNTER", "tern_store_groups_in_flight_max": "GAUGE",
		"tern_store_pipeline_waits_total": "COUNTER", "tern_store_commit_waits_total": "COUNTER",
		"tern_stdnet_connections": "GAUGE", "tern_stdnet_accepted_total": "COUNTER", "tern_stdnet_accept_errors_total": "COUNTER",
		"tern_stdnet_write_timeouts_total": "COUNTER", "tern_tls_handshake_failures_total": "COUNTER",
		"tern_websocket_origin_refused_total": "COUNTER", "tern_websocket_not_found_total": "COUNTER", "tern_websocket_bad_requests_total": "COUNTER",
		"tern_publishers_paced_total": "COUNTER", "tern_shared_redispatched_total": "COUNTER", "tern_store_full": "GAUGE",
		"tern_limit_refused_total": "COUNTER", "tern_reloads_total": "COUNTER", "tern_reload_failures_total": "COUNTER",
		"tern_store_corrupt_total": "COUNTER", "tern_store_ops_total": "COUNTER",
		"tern_store_writes_avoided_total": "COUNTER", "tern_store_messages_avoided_total": "COUNTER",
		"go_goroutines": "GAUGE", "go_memstats_heap_alloc_bytes": "GAUGE", "go_gc_duration_seconds": "SUMMARY",
		"process_resident_memory_bytes": "GAUGE", "process_open_fds": "GAUGE", "process_max_fds": "GAUGE", "process_cpu_seconds_total": "COUNTER",
	}
	for name, typ := range want {
		f := fams[name]
		if f == nil {
			t.Errorf("no %s", name)
			continue
		}
		if got := f.GetType().String(); got != typ {
			t.Errorf("%s is a %s, want %s", name, got, typ)
		}
	}
	if v := fams["tern_store_available"].GetMetric()[0].GetGauge().GetValue(); v != 1 {
		t.Errorf("tern_store_available = %v", v)
	}
	if v := fams["process_open_fds"].GetMetric()[0].GetGauge().GetValue(); v < 3 {
		t.Errorf("process_open_fds = %v", v)
	}
	if n := len(fams["tern_limit_refused_total"].GetMetric()); n != int(numLimits) {
		t.Errorf("tern_limit_refused_total has %d series, want one per limit (%d)", n, numLimits)
	}
}

// BenchmarkMetricsCollect is the broker collector's share of a scrape;
// BenchmarkMetricsScrape a whole /metrics answer, runtime and process
// collectors and text encoding included.
func BenchmarkMetricsCollect(b *testing.B) {
	s := benchMetricsServer(b)
	c := brokerCollector{s}
	ch := make(chan prometheus.Metric, 256)
	b.ReportAllocs()
	for b.Loop() {
		c.Collect(ch)
		for len(ch) > 0 {
			<-ch
		}
	}
}

func BenchmarkMetricsScrape(b *testing.B) {
	s := benchMetricsServer(b)
	req := httptest.NewRequest("GET", "/metrics", nil)
	b.ReportAllocs()
	for b.Loop() {
		w := httptest.NewRecorder()
		s.handleMetrics(w, req)
		if w.Code != 200 {
			b.Fatal(w.Code, w.Body.String())
		}
	}
}

func benchMetricsServer(b *testing.B) *Server {
	s, err := New(Options{Durability: DurabilityNone, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	s.started = time.Now()
	return s
}
