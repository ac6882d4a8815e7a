package server

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// $SYS topics, with mosquitto's names so existing dashboards work. They are
// retained in memory only (never written to the store: they would cost an
// fsync every interval and are stale after a restart anyway) and published
// at QoS 0 every Options.SysInterval. Filters starting with a wildcard do
// not match them [MQTT-4.7.2-1]; subscribe to "$SYS/#".
func (s *Server) publishSys(now time.Time) {
	st := s.Stats()
	up := int64(now.Sub(s.started).Seconds())
	for _, kv := range [...]struct{ topic, value string }{
		{"$SYS/broker/version", "tern " + s.opts.Version},
		{"$SYS/broker/uptime", strconv.FormatInt(up, 10) + " seconds"},
		{"$SYS/broker/clients/connected", strconv.FormatInt(st.Connected, 10)},
		{"$SYS/broker/clients/total", strconv.FormatInt(st.Sessions, 10)},
		{"$SYS/broker/subscriptions/count", strconv.Itoa(st.Subscriptions)},
		{"$SYS/broker/retained messages/count", strconv.Itoa(st.Retained)},
		{"$SYS/broker/messages/received", strconv.FormatUint(st.MessagesIn, 10)},
		{"$SYS/broker/messages/sent", strconv.FormatUint(st.MessagesOut, 10)},
		{"$SYS/broker/messages/dropped", strconv.FormatUint(st.MessagesDropped, 10)},
		{"$SYS/broker/bytes/received", strconv.FormatUint(s.stats.bytesIn.Load(), 10)},
		{"$SYS/broker/store/syncs", strconv.FormatUint(st.Store.Syncs, 10)},
	} {
		m := newMessage([]byte(kv.topic), []byte(kv.value), 0, true, nil, now.UnixNano(), nil)
		s.retained.Set(kv.topic, m)
		var t txn
		s.route(nil, &t, m) // QoS 0: nothing to store
	}
}

// serveAdmin runs the HTTP admin listener: Prometheus metrics on /metrics
// and a health check on /healthz.
func (s *Server) serveAdmin(ln net.Listener) {
	mux := http.NewServeMux()
	mux.HandleFunc("/metrics", s.handleMetrics)
	mux.HandleFunc("/healthz", s.handleHealthz)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-s.done
		_ = srv.Close()
	}()
	if err := srv.Serve(ln); err != nil && err != http.ErrServerClosed {
		s.log.Error("admin listener stopped", "err", err)
	}
}

// handleHealthz answers 200 while the broker accepts connections and its
// store (if any) accepts writes, 503 otherwise.
func (s *Server) handleHealthz(w http.ResponseWriter, _ *http.Request) {
	if s.closing.Load() {
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
		return
	}
	if s.store != nil {
		if err := s.store.Stats().Unavailable; err != nil {
			http.Error(w, "store unavailable: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
	}
	fmt.Fprintln(w, "ok")
}

// handleMetrics writes the Prometheus text exposition format by hand: a
// handful of counters does not justify a client library in the broker.
func (s *Server) handleMetrics(w http.ResponseWriter, _ *http.Request) {
	st := s.Stats()
	var b strings.Builder
	metric := func(name, typ, help string, v float64) {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s %s\n%s %g\n", name, help, name, typ, name, v)
	}
	metric("tern_connections", "gauge", "Connections that completed CONNECT.", float64(st.Connected))
	metric("tern_sessions", "gauge", "Sessions known, online or offline.", float64(st.Sessions))
	metric("tern_subscriptions", "gauge", "Subscriptions in the trie.", float64(st.Subscriptions))
	metric("tern_retained_messages", "gauge", "Retained messages.", float64(st.Retained))
	metric("tern_messages_received_total", "counter", "PUBLISH packets received.", float64(st.MessagesIn))
	metric("tern_messages_sent_total", "counter", "PUBLISH packets sent.", float64(st.MessagesOut))
	metric("tern_messages_dropped_total", "counter", "Deliveries given up to queue or outbound limits.", float64(st.MessagesDropped))
	metric("tern_bytes_received_total", "counter", "Bytes of whole packets received.", float64(s.stats.bytesIn.Load()))
	metric("tern_connects_total", "counter", "CONNECTs accepted.", float64(s.stats.connects.Load()))
	metric("tern_uptime_seconds", "gauge", "Seconds since the broker started.", time.Since(s.started).Seconds())
	if s.store != nil {
		ss := st.Store
		metric("tern_store_batches_total", "counter", "Store batches committed.", float64(ss.Batches))
		metric("tern_store_failed_batches_total", "counter", "Store batches that failed.", float64(ss.FailedBatches))
		metric("tern_store_syncs_total", "counter", "Store fsyncs (group commits).", float64(ss.Syncs))
		metric("tern_store_live_messages", "gauge", "Stored messages with references.", float64(ss.LiveMessages))
		metric("tern_store_available", "gauge", "1 while the store accepts writes.", boolFloat(ss.Unavailable == nil))
	}
	metric("go_goroutines", "gauge", "Goroutines.", float64(runtime.NumGoroutine()))
	if rss := residentBytes(); rss > 0 {
		metric("process_resident_memory_bytes", "gauge", "Resident memory.", float64(rss))
	}
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	_, _ = w.Write([]byte(b.String()))
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// residentBytes reads the process RSS from /proc (0 where unavailable).
func residentBytes() int64 {
	raw, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(raw))
	if len(f) < 2 {
		return 0
	}
	pages, _ := strconv.ParseInt(f[1], 10, 64)
	return pages * int64(os.Getpagesize())
}
