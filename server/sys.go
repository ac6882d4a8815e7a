package server

import (
	"fmt"
	"net"
	"net/http"
	"strconv"
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
		s.publishSysValue(kv.topic, kv.value, now)
		if s.cluster != nil {
			// The same under this node's name, for the whole cluster
			// (cluster.go, nodeSysPrefix).
			s.publishSysValue(nodeSysPrefix+s.opts.Cluster.Node+kv.topic[len("$SYS"):], kv.value, now)
		}
	}
}

// publishSysValue retains (in memory) and routes one $SYS value.
func (s *Server) publishSysValue(topic, value string, now time.Time) {
	m := newMessage([]byte(topic), []byte(value), 0, true, nil, now.UnixNano(), nil)
	s.retained.Set(topic, m)
	var t txn
	s.route(nil, &t, m) // QoS 0: nothing to store
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
