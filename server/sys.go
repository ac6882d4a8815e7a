package server

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ternmq/tern/server/auth"
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

// adminHTTPLimits bounds the admin listener's HTTP connections. A scraper
// sends its request at once and gets a small answer, so tight limits cost
// nothing, and without them a client that connects and sends nothing, or
// keeps an idle keep-alive connection, holds a descriptor and a goroutine
// for ever.
type adminHTTPLimits struct {
	header, read, write, idle time.Duration
	maxHeaderBytes            int
}

var defaultAdminHTTP = adminHTTPLimits{header: 10 * time.Second, read: 10 * time.Second,
	write: 30 * time.Second, idle: 60 * time.Second, maxHeaderBytes: 16 << 10}

// adminHTTP, when set, replaces defaultAdminHTTP (tests shorten the
// timeouts); atomic because a test restores it while an earlier broker's
// admin goroutine may still be starting.
var adminHTTP atomic.Pointer[adminHTTPLimits]

// serveAdmin runs the HTTP admin listener: Prometheus metrics on /metrics,
// a health check on /healthz and the admin API on /api/v1/ (adminapi.go).
func (s *Server) serveAdmin(ln net.Listener) {
	lim := defaultAdminHTTP
	if p := adminHTTP.Load(); p != nil {
		lim = *p
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/metrics", s.handleMetrics)
	mux.HandleFunc("/healthz", s.handleHealthz)
	mux.Handle("/api/", s.adminAPI()) // adminapi.go
	h := s.adminAuth(mux)             // adminapi.go: token, admin users, loopback-only API
	srv := &http.Server{Handler: h, ReadHeaderTimeout: lim.header, ReadTimeout: lim.read,
		WriteTimeout: lim.write, IdleTimeout: lim.idle, MaxHeaderBytes: lim.maxHeaderBytes}
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
		metric("tern_store_corrupt_total", "counter", "Stored records that do not decode or whose message is missing: skipped at recovery, deleted when a backlog reaches them.", float64(s.stats.corrupt.Load()))
	}
	if s.tlsT != nil { // TLS and WebSocket listeners (server/stdnet)
		ns := s.tlsT.Stats()
		metric("tern_stdnet_connections", "gauge", "TLS and WebSocket connections open (handshake or upgrade done).", float64(ns.Open))
		metric("tern_stdnet_accepted_total", "counter", "TLS and WebSocket connections handed to the broker.", float64(ns.Accepted))
		metric("tern_stdnet_accept_errors_total", "counter", "Failed accepts on TLS and WebSocket listeners (each backs off).", float64(ns.AcceptErrors))
		metric("tern_stdnet_write_timeouts_total", "counter", "TLS and WebSocket connections closed because the peer stopped reading.", float64(ns.WriteTimeouts))
		metric("tern_websocket_origin_refused_total", "counter", "WebSocket upgrades refused as cross-origin (403).", float64(ns.WebSocketOriginRefused))
		metric("tern_websocket_not_found_total", "counter", "Requests for another path than the WebSocket listener's (404).", float64(ns.WebSocketNotFound))
		metric("tern_websocket_bad_requests_total", "counter", "Requests that were not a valid MQTT WebSocket upgrade (400/426).", float64(ns.WebSocketBadRequest))
	}
	if s.tlsT != nil || s.tlsL != nil {
		fails := s.tlsHandshakeFailures()
		metric("tern_tls_handshake_failures_total", "counter", "TLS handshakes that failed or timed out (TLS and wss listeners).", float64(fails))
	}
	if s.tlsL != nil { // TLS listeners on the event loops (server/tlsloop)
		ls := s.tlsL.Stats()
		metric("tern_tls_connections", "gauge", "TLS connections on the event loops (handshake done).", float64(ls.Open))
		metric("tern_tls_handshaking", "gauge", "TLS handshakes in progress on the event-loop listeners.", float64(ls.Handshaking))
		metric("tern_tls_handshakes_total", "counter", "Completed TLS handshakes on the event-loop listeners.", float64(ls.Handshakes))
		metric("tern_tls_resumed_total", "counter", "Of those, handshakes that resumed a session (ticket).", float64(ls.Resumed))
		metric("tern_tls_accept_errors_total", "counter", "Failed accepts on the event-loop TLS listeners (each backs off).", float64(ls.AcceptErrors))
	}
	metric("tern_publishers_paced_total", "counter", "Times a publisher was held back by a full subscriber queue (flow control).", float64(s.stats.paced.Load()))
	metric("tern_shared_redispatched_total", "counter", "$share deliveries handed to another member when theirs left.", float64(s.stats.redispatched.Load()))
	metric("tern_reloads_total", "counter", "Reloads (SIGHUP, Server.Reload).", float64(s.reloads.Load()))
	metric("tern_reload_failures_total", "counter", "Reloads in which some item was rejected (its previous configuration kept).", float64(s.reloadFailures.Load()))
	metric("tern_store_full", "gauge", "1 while max_store_bytes or min_free_disk_bytes refuses messages for persistent sessions.", boolFloat(s.storeFull.Load()))
	const refusedName = "tern_limit_refused_total"
	fmt.Fprintf(&b, "# HELP %s Things a limit refused, by limit (see README, Limits and security).\n# TYPE %s counter\n", refusedName, refusedName)
	for i := range numLimits {
		fmt.Fprintf(&b, "%s{limit=%q} %d\n", refusedName, limitNames[i], s.refused.count[i].Load())
	}
	if lims := s.authLimiters(); len(lims) > 0 {
		for _, fam := range []struct {
			name, help string
			val        func(auth.LimiterStats) uint64
		}{
			{"tern_auth_failures_total", "Failed authentications.", func(l auth.LimiterStats) uint64 { return l.Failures }},
			{"tern_auth_refused_locked_total", "Authentications refused while the user or address was locked out.", func(l auth.LimiterStats) uint64 { return l.Refused }},
			{"tern_auth_lockouts_total", "Times a user name or address was locked out.", func(l auth.LimiterStats) uint64 { return l.Lockouts }},
		} {
			fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s counter\n", fam.name, fam.help, fam.name)
			for _, a := range lims {
				fmt.Fprintf(&b, "%s{method=%q} %d\n", fam.name, a.method, fam.val(a.lim.Stats()))
			}
		}
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

// authLimiter is one authenticator's failed-login limiter.
type authLimiter struct {
	method string
	lim    *auth.Limiter
}

// authLimiters lists the failed-login limiters of the configured
// authenticators (password file, SCRAM), for /metrics.
func (s *Server) authLimiters() []authLimiter {
	type limited interface{ Limiter() *auth.Limiter }
	var out []authLimiter
	if l, ok := s.opts.Authenticator.(limited); ok {
		out = append(out, authLimiter{"password", l.Limiter()})
	}
	for _, e := range s.opts.EnhancedAuth {
		if l, ok := e.(limited); ok {
			out = append(out, authLimiter{e.Method(), l.Limiter()})
		}
	}
	return out
}
