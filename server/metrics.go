package server

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/ternmq/tern/server/auth"
	"github.com/ternmq/tern/server/stdnet"
	"github.com/ternmq/tern/server/tlsloop"
	"github.com/ternmq/tern/server/wsloop"
)

// /metrics is served by prometheus/client_golang from a registry of the
// broker's own collector plus the library's Go runtime and process
// collectors (goroutines, GC, heap, CPU, resident memory, open and maximum
// file descriptors). The broker's collector reads the counters the hot
// paths already keep (atomics, Stats) at scrape time: no client_golang
// metric is updated per packet, so a scrape costs a few loads per family
// and the message path nothing.

// brokerMetric is one unlabelled family of the broker's collector.
type brokerMetric struct {
	desc *prometheus.Desc
	typ  prometheus.ValueType
}

func newBrokerMetric(name, help string, typ prometheus.ValueType, labels ...string) brokerMetric {
	return brokerMetric{prometheus.NewDesc(name, help, labels, nil), typ}
}

// scrape is what one Collect reads once and every family derives from.
type scrape struct {
	s  *Server
	st Stats
	ns stdnet.Stats
	ls tlsloop.Stats
	ws wsloop.Stats
}

// brokerFamily is a family and how to read its value.
type brokerFamily struct {
	m   brokerMetric
	val func(*scrape) float64
}

var (
	// Always present.
	coreFamilies = []brokerFamily{
		{newBrokerMetric("tern_connections", "Connections that completed CONNECT.", prometheus.GaugeValue), func(c *scrape) float64 { return float64(c.st.Connected) }},
		{newBrokerMetric("tern_sessions", "Sessions known, online or offline.", prometheus.GaugeValue), func(c *scrape) float64 { return float64(c.st.Sessions) }},
		{newBrokerMetric("tern_subscriptions", "Subscriptions in the trie.", prometheus.GaugeValue), func(c *scrape) float64 { return float64(c.st.Subscriptions) }},
		{newBrokerMetric("tern_retained_messages", "Retained messages.", prometheus.GaugeValue), func(c *scrape) float64 { return float64(c.st.Retained) }},
		{newBrokerMetric("tern_messages_received_total", "PUBLISH packets received.", prometheus.CounterValue), func(c *scrape) float64 { return float64(c.st.MessagesIn) }},
		{newBrokerMetric("tern_messages_sent_total", "PUBLISH packets sent.", prometheus.CounterValue), func(c *scrape) float64 { return float64(c.st.MessagesOut) }},
		{newBrokerMetric("tern_messages_dropped_total", "Deliveries given up to queue or outbound limits.", prometheus.CounterValue), func(c *scrape) float64 { return float64(c.st.MessagesDropped) }},
		{newBrokerMetric("tern_bytes_received_total", "Bytes of whole packets received.", prometheus.CounterValue), func(c *scrape) float64 { return float64(c.s.stats.bytesIn.Load()) }},
		{newBrokerMetric("tern_connects_total", "CONNECTs accepted.", prometheus.CounterValue), func(c *scrape) float64 { return float64(c.s.stats.connects.Load()) }},
		{newBrokerMetric("tern_uptime_seconds", "Seconds since the broker started.", prometheus.GaugeValue), func(c *scrape) float64 { return time.Since(c.s.started).Seconds() }},
		{newBrokerMetric("tern_publishers_paced_total", "Times a publisher was held back by a full subscriber queue (flow control).", prometheus.CounterValue), func(c *scrape) float64 { return float64(c.s.stats.paced.Load()) }},
		{newBrokerMetric("tern_shared_redispatched_total", "$share deliveries handed to another member when theirs left.", prometheus.CounterValue), func(c *scrape) float64 { return float64(c.s.stats.redispatched.Load()) }},
		{newBrokerMetric("tern_reloads_total", "Reloads (SIGHUP, Server.Reload).", prometheus.CounterValue), func(c *scrape) float64 { return float64(c.s.reloads.Load()) }},
		{newBrokerMetric("tern_reload_failures_total", "Reloads in which some item was rejected (its previous configuration kept).", prometheus.CounterValue), func(c *scrape) float64 { return float64(c.s.reloadFailures.Load()) }},
		{newBrokerMetric("tern_store_full", "1 while max_store_bytes or min_free_disk_bytes refuses messages for persistent sessions.", prometheus.GaugeValue), func(c *scrape) float64 { return boolFloat(c.s.storeFull.Load()) }},
	}
	// With a store (durability sync or periodic).
	storeFamilies = []brokerFamily{
		{newBrokerMetric("tern_store_batches_total", "Store batches committed.", prometheus.CounterValue), func(c *scrape) float64 { return float64(c.st.Store.Batches) }},
		{newBrokerMetric("tern_store_failed_batches_total", "Store batches that failed.", prometheus.CounterValue), func(c *scrape) float64 { return float64(c.st.Store.FailedBatches) }},
		{newBrokerMetric("tern_store_syncs_total", "WAL fsyncs (one covers every group applied while the previous one ran).", prometheus.CounterValue), func(c *scrape) float64 { return float64(c.st.Store.Syncs) }},
		{newBrokerMetric("tern_store_sync_seconds_total", "Time spent in WAL fsyncs.", prometheus.CounterValue), func(c *scrape) float64 { return c.st.Store.SyncTime.Seconds() }},
		{newBrokerMetric("tern_store_groups_total", "Group commits: merged batches applied as one engine write.", prometheus.CounterValue), func(c *scrape) float64 { return float64(c.st.Store.Groups) }},
		{newBrokerMetric("tern_store_groups_in_flight_max", "Most groups applied and awaiting their fsync at once (durability sync).", prometheus.GaugeValue), func(c *scrape) float64 { return float64(c.st.Store.MaxInFlight) }},
		{newBrokerMetric("tern_store_pipeline_waits_total", "Times the committer waited because the most groups allowed were awaiting their fsync.", prometheus.CounterValue), func(c *scrape) float64 { return float64(c.st.Store.PipelineWaits) }},
		{newBrokerMetric("tern_store_commit_waits_total", "Times an event loop waited to commit because the store's pending bytes were at their bound (back-pressure).", prometheus.CounterValue), func(c *scrape) float64 { return float64(c.st.Store.CommitWaits) }},
		{newBrokerMetric("tern_store_ops_total", "Store operations committed (puts and deletions as batched, before write avoidance).", prometheus.CounterValue), func(c *scrape) float64 { return float64(c.st.Store.Ops) }},
		{newBrokerMetric("tern_store_writes_avoided_total", "Store operations not written because a later one in the same group commit made them moot (a delivery acknowledged before its group was written).", prometheus.CounterValue), func(c *scrape) float64 { return float64(c.st.Store.WritesAvoided) }},
		{newBrokerMetric("tern_store_messages_avoided_total", "Messages put and released within one group commit: never written to the store.", prometheus.CounterValue), func(c *scrape) float64 { return float64(c.st.Store.MessagesAvoided) }},
		{newBrokerMetric("tern_store_live_messages", "Stored messages with references.", prometheus.GaugeValue), func(c *scrape) float64 { return float64(c.st.Store.LiveMessages) }},
		{newBrokerMetric("tern_store_available", "1 while the store accepts writes.", prometheus.GaugeValue), func(c *scrape) float64 { return boolFloat(c.st.Store.Unavailable == nil) }},
		{newBrokerMetric("tern_store_corrupt_total", "Stored records that do not decode or whose message is missing: skipped at recovery, deleted when a backlog reaches them.", prometheus.CounterValue), func(c *scrape) float64 { return float64(c.s.stats.corrupt.Load()) }},
	}
	// With TLS or WebSocket listeners (server/stdnet).
	stdnetFamilies = []brokerFamily{
		{newBrokerMetric("tern_stdnet_connections", "TLS and WebSocket connections open (handshake or upgrade done).", prometheus.GaugeValue), func(c *scrape) float64 { return float64(c.ns.Open) }},
		{newBrokerMetric("tern_stdnet_accepted_total", "TLS and WebSocket connections handed to the broker.", prometheus.CounterValue), func(c *scrape) float64 { return float64(c.ns.Accepted) }},
		{newBrokerMetric("tern_stdnet_accept_errors_total", "Failed accepts on TLS and WebSocket listeners (each backs off).", prometheus.CounterValue), func(c *scrape) float64 { return float64(c.ns.AcceptErrors) }},
		{newBrokerMetric("tern_stdnet_write_timeouts_total", "TLS and WebSocket connections closed because the peer stopped reading.", prometheus.CounterValue), func(c *scrape) float64 { return float64(c.ns.WriteTimeouts) }},
		{newBrokerMetric("tern_websocket_origin_refused_total", "WebSocket upgrades refused as cross-origin (403).", prometheus.CounterValue), func(c *scrape) float64 { return float64(c.ns.WebSocketOriginRefused) }},
		{newBrokerMetric("tern_websocket_not_found_total", "Requests for another path than the WebSocket listener's (404).", prometheus.CounterValue), func(c *scrape) float64 { return float64(c.ns.WebSocketNotFound) }},
		{newBrokerMetric("tern_websocket_bad_requests_total", "Requests that were not a valid MQTT WebSocket upgrade (400/426).", prometheus.CounterValue), func(c *scrape) float64 { return float64(c.ns.WebSocketBadRequest) }},
	}
	// With TLS listeners on either engine.
	tlsFamilies = []brokerFamily{
		{newBrokerMetric("tern_tls_handshake_failures_total", "TLS handshakes that failed or timed out (TLS and wss listeners).", prometheus.CounterValue), func(c *scrape) float64 { return float64(c.s.tlsHandshakeFailures()) }},
	}
	// With TLS listeners on the event loops (server/tlsloop).
	tlsLoopFamilies = []brokerFamily{
		{newBrokerMetric("tern_tls_connections", "TLS connections on the event loops (handshake done).", prometheus.GaugeValue), func(c *scrape) float64 { return float64(c.ls.Open) }},
		{newBrokerMetric("tern_tls_handshaking", "TLS handshakes in progress on the event-loop listeners.", prometheus.GaugeValue), func(c *scrape) float64 { return float64(c.ls.Handshaking) }},
		{newBrokerMetric("tern_tls_handshakes_total", "Completed TLS handshakes on the event-loop listeners.", prometheus.CounterValue), func(c *scrape) float64 { return float64(c.ls.Handshakes) }},
		{newBrokerMetric("tern_tls_resumed_total", "Of those, handshakes that resumed a session (ticket).", prometheus.CounterValue), func(c *scrape) float64 { return float64(c.ls.Resumed) }},
		{newBrokerMetric("tern_tls_record_layer_total", "Of those, TLS 1.3 connections handed from crypto/tls to tlsloop's own record layer (the rest stay on crypto/tls's).", prometheus.CounterValue), func(c *scrape) float64 { return float64(c.ls.RecordLayer) }},
		{newBrokerMetric("tern_tls_accept_errors_total", "Failed accepts on the event-loop TLS listeners (each backs off).", prometheus.CounterValue), func(c *scrape) float64 { return float64(c.ls.AcceptErrors) }},
	}
	// With WebSocket listeners on the event loops (server/wsloop). Origin,
	// path and bad-request refusals add to the tern_websocket_* families above.
	wsLoopFamilies = []brokerFamily{
		{newBrokerMetric("tern_websocket_connections", "WebSocket connections on the event loops (upgrade done).", prometheus.GaugeValue), func(c *scrape) float64 { return float64(c.ws.Open) }},
		{newBrokerMetric("tern_websocket_upgrades_total", "Completed WebSocket upgrades on the event-loop listeners.", prometheus.CounterValue), func(c *scrape) float64 { return float64(c.ws.Upgrades) }},
		{newBrokerMetric("tern_websocket_header_timeouts_total", "WebSocket connections closed for not completing an upgrade request in time (or idle keep-alive).", prometheus.CounterValue), func(c *scrape) float64 { return float64(c.ws.HeaderTimeouts) }},
		{newBrokerMetric("tern_websocket_too_big_total", "WebSocket connections closed (1009) for a frame or message, inflated or not, over max_packet_size.", prometheus.CounterValue), func(c *scrape) float64 { return float64(c.ws.TooBig) }},
		{newBrokerMetric("tern_websocket_protocol_errors_total", "WebSocket connections closed for a framing error (1002, 1003, 1007).", prometheus.CounterValue), func(c *scrape) float64 { return float64(c.ws.ProtocolErrors) }},
		{newBrokerMetric("tern_websocket_accept_errors_total", "Failed accepts on the event-loop WebSocket listeners (each backs off).", prometheus.CounterValue), func(c *scrape) float64 { return float64(c.ws.AcceptErrors) }},
	}
	// Labelled families.
	authCacheHits   = newBrokerMetric("tern_auth_cache_hits_total", "Password checks answered from the remembered verified credentials (no hash derived).", prometheus.CounterValue)
	authCacheMisses = newBrokerMetric("tern_auth_cache_misses_total", "Password checks that derived the hash (new or changed credentials, failures).", prometheus.CounterValue)
	limitRefused    = newBrokerMetric("tern_limit_refused_total", "Things a limit refused, by limit (see README, Limits and security).", prometheus.CounterValue, "limit")
	authFamilies    = []struct {
		m   brokerMetric
		val func(auth.LimiterStats) uint64
	}{
		{newBrokerMetric("tern_auth_failures_total", "Failed authentications.", prometheus.CounterValue, "method"), func(l auth.LimiterStats) uint64 { return l.Failures }},
		{newBrokerMetric("tern_auth_refused_locked_total", "Authentications refused while the user or address was locked out.", prometheus.CounterValue, "method"), func(l auth.LimiterStats) uint64 { return l.Refused }},
		{newBrokerMetric("tern_auth_lockouts_total", "Times a user name or address was locked out.", prometheus.CounterValue, "method"), func(l auth.LimiterStats) uint64 { return l.Lockouts }},
	}
)

// brokerCollector is the broker's prometheus.Collector.
//
// Concurrency: Collect runs on the HTTP server's goroutines, possibly
// several at once; it only loads atomics and calls the Stats methods,
// which are safe for concurrent use.
type brokerCollector struct{ s *Server }

// Describe sends every family the broker may expose; Collect leaves out
// those of features not configured (a registry allows that).
func (c brokerCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, fams := range [][]brokerFamily{coreFamilies, storeFamilies, stdnetFamilies, tlsFamilies, tlsLoopFamilies, wsLoopFamilies} {
		for _, f := range fams {
			ch <- f.m.desc
		}
	}
	ch <- limitRefused.desc
	ch <- authCacheHits.desc
	ch <- authCacheMisses.desc
	for _, f := range authFamilies {
		ch <- f.m.desc
	}
}

// Collect reads the broker's counters once and sends every family.
func (c brokerCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.s
	sc := &scrape{s: s, st: s.Stats()}
	emit := func(fams []brokerFamily) {
		for _, f := range fams {
			ch <- prometheus.MustNewConstMetric(f.m.desc, f.m.typ, f.val(sc))
		}
	}
	emit(coreFamilies)
	if s.store != nil {
		emit(storeFamilies)
	}
	if s.wsL != nil {
		sc.ws = s.wsL.Stats()
		emit(wsLoopFamilies)
	}
	if s.tlsT != nil || s.wsL != nil {
		sc.ns = s.tlsT.Stats() // nil-safe
		sc.ns.WebSocketOriginRefused += sc.ws.OriginRefused
		sc.ns.WebSocketNotFound += sc.ws.NotFound
		sc.ns.WebSocketBadRequest += sc.ws.BadRequest
		emit(stdnetFamilies)
	}
	if s.tlsT != nil || s.tlsL != nil || s.wsL != nil {
		emit(tlsFamilies)
	}
	if s.tlsL != nil {
		sc.ls = s.tlsL.Stats()
		emit(tlsLoopFamilies)
	}
	for i := range numLimits {
		ch <- prometheus.MustNewConstMetric(limitRefused.desc, limitRefused.typ, float64(s.refused.count[i].Load()), limitNames[i])
	}
	if cs, ok := s.opts.Authenticator.(authCacheStats); ok { // authpool.go
		hits, misses := cs.CacheStats()
		ch <- prometheus.MustNewConstMetric(authCacheHits.desc, authCacheHits.typ, float64(hits))
		ch <- prometheus.MustNewConstMetric(authCacheMisses.desc, authCacheMisses.typ, float64(misses))
	}
	for _, a := range s.authLimiters() {
		st := a.lim.Stats()
		for _, f := range authFamilies {
			ch <- prometheus.MustNewConstMetric(f.m.desc, f.m.typ, float64(f.val(st)), a.method)
		}
	}
}

// metricsRegistry builds the registry /metrics serves: the broker's
// collector, the Go runtime collector and the process collector.
func (s *Server) metricsRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(brokerCollector{s},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if s.cluster != nil {
		reg.MustRegister(newClusterCollector(s)) // cluster.go
	}
	return reg
}

// handleMetrics serves the Prometheus exposition (text, or OpenMetrics or
// protobuf when the scraper asks for them). The handler is built on first
// use and shared by every later scrape.
func (s *Server) handleMetrics(w http.ResponseWriter, r *http.Request) {
	s.metricsOnce.Do(func() {
		s.metricsHandler = promhttp.HandlerFor(s.metricsRegistry(), promhttp.HandlerOpts{
			ErrorLog:      promLogger{s},
			ErrorHandling: promhttp.ContinueOnError, // a failed collector must not hide the others
			// Bounds concurrent scrapes: each walks every family.
			MaxRequestsInFlight: 4,
		})
	})
	s.metricsHandler.ServeHTTP(w, r)
}

// promLogger routes promhttp's errors into the broker's log.
type promLogger struct{ s *Server }

func (l promLogger) Println(v ...any) { l.s.log.Warn("metrics", "err", v) }

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
