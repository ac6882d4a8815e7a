package server

import (
	"fmt"
	"maps"
	"math"
	"net"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/ternmq/tern/codec"
)

// Protection knobs: per-listener connection rate and connection cap, and a
// per-client publish rate.
//
// A listener's settings (Options.ListenerSettings, keyed by the address the
// listener is configured with) are checked in OnOpen, before the
// connection holds anything: over max_connection_rate (a token bucket of
// connection_burst tokens refilled at the rate) or over max_connections
// (open connections of that listener), the connection is closed at once,
// before any CONNECT, and counted (max_connection_rate,
// listener_max_connections).
//
// The publish rate (Limits.MaxPublishRate messages/s, MaxPublishBytesRate
// bytes/s, per connection, each with one second of burst) paces a client
// instead of disconnecting it: the PUBLISH that finds the bucket empty is
// left unread, the connection's input is not read until the bucket has
// refilled for it, and then reading resumes where it stopped. A QoS 1/2
// publisher, waiting for its acknowledgements, therefore slows down to
// the rate; one that keeps sending regardless buffers at most what a paced
// publisher may (pace.go) and is then disconnected (5.0: DISCONNECT 0x96
// Message rate too high). Each pause is counted (max_publish_rate) and
// logged, rate-limited.
//
// Buckets are GCRA: one "theoretical arrival time" per bucket, so a check
// is a few integer operations and allocates nothing.

// ListenerSettings are per-listener options; see Options.ListenerSettings.
type ListenerSettings struct {
	// ProxyProtocol expects a PROXY protocol header (v1 or v2, from a load
	// balancer such as HAProxy, AWS NLB, nginx) before MQTT on every
	// connection; the address it carries is the client's in logs, limits
	// and the failed-login limiter. On TLS and WebSocket listeners the
	// header comes before the TLS handshake or HTTP request. Default false.
	ProxyProtocol bool `yaml:"proxy_protocol"`
	// MaxConnections caps the listener's open connections. Default 0: only
	// the broker-wide limits.max_connections applies.
	MaxConnections int `yaml:"max_connections"`
	// MaxConnectionRate caps new connections per second on the listener.
	// Default 0: no cap.
	MaxConnectionRate float64 `yaml:"max_connection_rate"`
	// ConnectionBurst is how many connections may arrive at once above the
	// rate. Default: the rate rounded up (one second's worth), at least 1.
	ConnectionBurst int `yaml:"connection_burst"`
}

// validateListenerSettings checks Options.ListenerSettings: every key
// names a configured listener.
func (o *Options) validateListenerSettings(bad func(key, format string, args ...any)) {
	kind := map[string]string{}
	for _, l := range o.Listeners {
		kind[l] = "tcp"
	}
	for _, l := range o.TLSListeners {
		kind[l.Addr] = "tls"
	}
	for _, l := range o.WebSocketListeners {
		kind[l.Addr] = "websocket"
	}
	for addr, ls := range o.ListenerSettings {
		key := "listener_settings[" + strconv.Quote(addr) + "]"
		_, ok := kind[addr]
		if !ok {
			bad(key, "names no configured listener (give the address exactly as listeners, tls_listeners or websocket_listeners do)")
			continue
		}
		if ls.MaxConnections < 0 {
			bad(key+".max_connections", "must not be negative, got %d", ls.MaxConnections)
		}
		if ls.MaxConnectionRate < 0 || math.IsNaN(ls.MaxConnectionRate) || math.IsInf(ls.MaxConnectionRate, 0) {
			bad(key+".max_connection_rate", "must be a non-negative number of connections per second, got %v", ls.MaxConnectionRate)
		}
		if ls.ConnectionBurst < 0 {
			bad(key+".connection_burst", "must not be negative, got %d", ls.ConnectionBurst)
		}
	}
}

// gate is a GCRA token bucket: cost nanoseconds per unit, tolerance the
// burst in nanoseconds. The zero gate is off.
type gate struct {
	cost      float64 // ns per unit
	tolerance int64   // ns of burst beyond one unit
}

// newGate returns a gate admitting rate units per second with burst units
// at once; rate ≤ 0 is off.
func newGate(rate float64, burst float64) gate {
	if rate <= 0 {
		return gate{}
	}
	burst = max(burst, 1)
	cost := float64(time.Second) / rate
	return gate{cost: cost, tolerance: int64(cost * (burst - 1))}
}

func (g gate) on() bool { return g.cost > 0 }

// take charges units against the bucket whose state is *tat (the
// theoretical arrival time, unix ns) at now: it returns 0 and advances
// *tat when the bucket allows them, else how long to wait (nothing is
// charged). A full bucket (tat ≤ now) admits any one request, so a
// message larger than the burst is slowed, not refused forever. Not safe
// for concurrent use of tat.
func (g gate) take(tat *int64, now int64, units int) time.Duration {
	next := max(*tat, now) + int64(g.cost*float64(units))
	if allowAt := next - int64(g.cost) - g.tolerance; allowAt > now && *tat > now {
		// Over: wait until the bucket has room (at least a millisecond,
		// so a paused client is not woken in a tight loop).
		return max(time.Duration(allowAt-now), time.Millisecond)
	}
	*tat = next
	return 0
}

// takeShared is take on an atomic state, for buckets every loop charges.
func (g gate) takeShared(tat *atomic.Int64, now int64) bool {
	for {
		old := tat.Load()
		v := old
		if g.take(&v, now, 1) > 0 {
			return false
		}
		if tat.CompareAndSwap(old, v) {
			return true
		}
	}
}

// listenerState is one configured listener's settings and counters,
// shared by the loops. Built at start (bindListenerSettings), read-only
// after except for the atomics.
type listenerState struct {
	addr     string // as configured
	settings ListenerSettings
	// proxyOnGnet: the broker reads the PROXY header (a plain TCP
	// listener); a TLS or WebSocket listener's transport read it already.
	proxyOnGnet bool
	connGate    gate
	tat         atomic.Int64 // connection-rate bucket
	conns       atomic.Int64 // open connections admitted on it
}

// listenerTable finds a connection's listener by its local address: the
// exact address for a listener bound to one, the port for a listener on
// every interface.
type listenerTable struct {
	exact map[string]*listenerState
	port  map[int]*listenerState
}

// bindListenerSettings records the settings of the listener configured as
// cfg, now bound at a. Runs once per listener at start, before its first
// accept (OnBoot for gnet listeners), serialised by Serve. onGnet: a plain
// TCP listener, whose PROXY header the broker reads itself.
func (s *Server) bindListenerSettings(cfg string, a net.Addr, onGnet bool) {
	ls, ok := s.opts.ListenerSettings[cfg]
	t, isTCP := a.(*net.TCPAddr)
	if !ok || !isTCP {
		return
	}
	burst := float64(ls.ConnectionBurst)
	if burst == 0 {
		burst = math.Ceil(ls.MaxConnectionRate)
	}
	st := &listenerState{addr: cfg, settings: ls, connGate: newGate(ls.MaxConnectionRate, burst),
		proxyOnGnet: ls.ProxyProtocol && onGnet}
	// A gnet connection's LocalAddr is its listener's configured address
	// (port 0 included), a standard-library one's the bound address: the
	// table knows both.
	var cfgKey string
	if ca, err := net.ResolveTCPAddr("tcp", cfg); err == nil {
		cfgKey = ca.String()
	}
	// Copy on write: the TLS and WebSocket listeners already accept (on
	// other goroutines) when OnBoot records the gnet ones.
	next := &listenerTable{exact: map[string]*listenerState{}, port: map[int]*listenerState{}}
	if old := s.listeners.Load(); old != nil {
		maps.Copy(next.exact, old.exact)
		maps.Copy(next.port, old.port)
	}
	if t.IP.IsUnspecified() {
		next.port[t.Port] = st
	} else {
		next.exact[t.String()] = st
	}
	if cfgKey != "" {
		next.exact[cfgKey] = st
	}
	s.listeners.Store(next)
}

// listenerOf returns the state of the listener a connection with local
// address a came in on, or nil when that listener has no settings.
func (s *Server) listenerOf(a net.Addr) *listenerState {
	tab := s.listeners.Load()
	if tab == nil {
		return nil
	}
	t, ok := a.(*net.TCPAddr)
	if !ok {
		return nil
	}
	if st := tab.exact[t.String()]; st != nil {
		return st
	}
	return tab.port[t.Port]
}

// admitListener applies the listener's connection rate and cap to a new
// connection; false means close it now. A true return counted the
// connection in ls.conns (OnClose releases it).
func (s *Server) admitListener(ls *listenerState, c gnet.Conn, now int64) bool {
	if ls.connGate.on() && !ls.connGate.takeShared(&ls.tat, now) {
		s.refuse(limitConnRate, "", "", remoteString(c),
			fmt.Sprintf("closed at once: listener %s over max_connection_rate %v/s", ls.addr, ls.settings.MaxConnectionRate))
		return false
	}
	n := ls.conns.Add(1)
	if max := ls.settings.MaxConnections; max > 0 && n > int64(max) {
		ls.conns.Add(-1)
		s.refuse(limitListenerConns, "", "", remoteString(c),
			fmt.Sprintf("closed at once: listener %s has %d connections, its max_connections", ls.addr, max))
		return false
	}
	return true
}

// publishGates are the per-client publish rate buckets of Limits.
type publishGates struct{ msgs, bytes gate }

func (l *Limits) publishGates() publishGates {
	return publishGates{
		msgs:  newGate(l.MaxPublishRate, math.Ceil(l.MaxPublishRate)),
		bytes: newGate(float64(l.MaxPublishBytesRate), float64(l.MaxPublishBytesRate)),
	}
}

// rateState is a publisher's buckets and the timer that ends its pause.
type rateState struct {
	msgTAT, byteTAT int64
	timer           *time.Timer
}

// throttlePublish charges a PUBLISH of size bytes to c's buckets; when one
// is empty it pauses c's input (nothing charged) and returns true: the
// caller leaves the packet unread. Runs on c's loop.
func (c *client) throttlePublish(size int) bool {
	srv := c.loop.srv
	g := &srv.pubGates
	if !g.msgs.on() && !g.bytes.on() {
		return false
	}
	cs := c.coldState()
	if cs.rate == nil {
		cs.rate = &rateState{}
	}
	r, now := cs.rate, c.loop.now
	var wait time.Duration
	// Both buckets must allow it; charge neither unless both do.
	msgTAT, byteTAT := r.msgTAT, r.byteTAT
	if g.msgs.on() {
		wait = g.msgs.take(&msgTAT, now, 1)
	}
	if wait == 0 && g.bytes.on() {
		wait = g.bytes.take(&byteTAT, now, size)
	}
	if wait == 0 {
		r.msgTAT, r.byteTAT = msgTAT, byteTAT
		return false
	}
	c.flags.set(flagThrottled)
	srv.refuse(limitPublishRate, c.id, c.username(), c.remote(),
		"publisher paced for "+wait.Round(time.Millisecond).String()+": over max_publish_rate / max_publish_bytes_rate")
	if r.timer == nil {
		r.timer = time.AfterFunc(wait, func() { c.loop.post(c.unthrottle) })
	} else {
		r.timer.Reset(wait)
	}
	return true
}

// unthrottle resumes a paced publisher's input. Runs on c's loop.
func (c *client) unthrottle() {
	if !c.flags.has(flagThrottled) || c.state != stateConnected {
		return
	}
	c.flags.clear(flagThrottled)
	c.loop.now = nanotime()
	if c.conn.InboundBuffered() > 0 {
		if c.onTraffic() == gnet.Close {
			_ = c.loop.el.Close(c.conn)
		}
	}
}

// stopRateTimer stops a pending unthrottle when c closes. Runs on c's loop.
func (c *client) stopRateTimer() {
	if c.cold != nil && c.cold.rate != nil && c.cold.rate.timer != nil {
		c.cold.rate.timer.Stop()
	}
}

// pacedCode is the reason a paced client that kept sending is
// disconnected with: 0x96 when the publish rate paced it.
func (c *client) pacedCode() codec.ReasonCode {
	if c.flags.has(flagThrottled) {
		return codec.MessageRateTooHigh
	}
	return codec.QuotaExceeded
}
