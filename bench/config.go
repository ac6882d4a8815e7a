package bench

import (
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/ternmq/tern/codec"
)

// Scenario names accepted by Config.Scenario.
const (
	ScenarioConn    = "conn"    // open Conns connections and hold them
	ScenarioPub     = "pub"     // publishers only (subscribers run elsewhere)
	ScenarioSub     = "sub"     // subscribers only; loss counted from gaps
	ScenarioP2P     = "p2p"     // publisher i → subscriber i
	ScenarioFanIn   = "fan-in"  // every publisher → every subscriber (many → few)
	ScenarioFanOut  = "fan-out" // every publisher → every subscriber (few → many)
	ScenarioShared  = "shared"  // every publisher → one $share group of Subs members
	defaultGroup    = "bench"
	maxClientsTotal = 10_000_000
)

// Config describes one benchmark run. The zero value of every field means
// "the default" written next to it; call EnsureDefaults then Validate (Run
// does both).
type Config struct {
	// Scenario is one of the Scenario* names. Default p2p.
	Scenario string
	// Brokers are host:port addresses; clients are spread over them
	// round-robin. Default 127.0.0.1:1883.
	Brokers []string
	// PubBrokers, when set, are where the publishers connect instead
	// (round-robin), the subscribers staying on Brokers: e.g. publishers
	// on one node of a cluster and subscribers on another. Default: Brokers.
	PubBrokers []string
	// Protocol is codec.Version311 (default) or codec.Version5.
	Protocol byte
	// Pubs and Subs are the publisher and subscriber counts. Defaults per
	// scenario: p2p 1/1, fan-in 100/1, fan-out 1/100, shared 100/10, pub 1/0,
	// sub 0/1.
	Pubs, Subs int
	// Conns is the number of connections of the conn scenario. Default 1000.
	Conns int
	// Subscribe makes every conn-scenario client subscribe to its own topic.
	Subscribe bool
	// ConnectRate is new connections per second, over all clients. Default
	// 2000; negative means as fast as possible.
	ConnectRate float64
	// Parallel, when > 0, bounds the clients in their connect phase (TCP
	// connect, TLS handshake, CONNACK, SUBACK) at once: a client is dialled
	// when another finished. With ConnectRate −1 this is a connect storm of
	// all clients, P at a time. Default 0: no bound but the rate.
	Parallel int
	// TLS makes every client connect over TLS, configured by TLSOptions.
	TLS bool
	// TLSOptions configure TLS (CA, client certificate, verification,
	// session resumption).
	TLSOptions TLSOptions
	// Rate is messages per second per publisher (open loop). Default 10.
	Rate float64
	// QoS of publications and subscriptions: 0 (default), 1 or 2.
	QoS byte
	// Size is the payload size in bytes. Default 64; raised to HeaderSize.
	Size int
	// Topic is the publish topic pattern; "%i" is replaced by the publisher
	// index. Default bench/<scenario>/%i.
	Topic string
	// Filter is the subscription pattern; "%i" is replaced by the subscriber
	// index. Default derived from Topic: the same topic for p2p, "%i" → "+"
	// otherwise, prefixed with $share/<Group>/ for shared.
	Filter string
	// Group is the shared-subscription group name. Default "bench".
	Group string
	// Persistent asks for persistent sessions (clean session 0 in 3.1.1,
	// Clean Start 0 and SessionExpiry in 5.0) under stable client ids.
	Persistent bool
	// SessionExpiry in seconds for 5.0 persistent sessions. Default 300.
	SessionExpiry uint32
	// KeepAlive sent in CONNECT; PINGREQs keep idle clients alive. Default 60 s.
	KeepAlive time.Duration
	// Duration of the publishing phase (or hold time for conn). Default 10 s.
	Duration time.Duration
	// Warmup at the start of the publishing phase whose messages are
	// delivered and accounted but left out of rates and latencies. Default 0.
	Warmup time.Duration
	// Drain is how long to wait after the last publication for in-flight
	// deliveries before counting losses. Default 5 s.
	Drain time.Duration
	// ConnectTimeout bounds TCP connect + CONNACK (+ SUBACK). Default 10 s.
	ConnectTimeout time.Duration
	// Username and Password, sent when non-empty.
	Username, Password string
	// ClientIDPrefix prefixes every client id. Default "tb-<pid>-".
	ClientIDPrefix string
	// Sources are local IPv4/IPv6 addresses to bind before connecting,
	// used round-robin, to exceed ~28k connections per source address
	// (loopback: 127.0.0.2, 127.0.0.3, …). Default: let the kernel choose.
	Sources []string
	// Loops is the number of event loops (goroutines doing all client I/O).
	// Default GOMAXPROCS.
	Loops int
	// Inflight bounds unacknowledged QoS 1/2 publications per publisher (also
	// capped by a 5.0 broker's Receive Maximum). Default 64. When the window
	// is full the schedule falls behind and the delay shows as latency.
	Inflight int
	// MaxOutbound bounds the bytes buffered per connection when the socket
	// does not accept them; past it the publisher waits (and the wait shows
	// as latency). Default 1 MiB.
	MaxOutbound int
	// BrokerPID is the broker process to sample CPU and RSS from. 0 finds
	// it by the port of the first broker address; negative disables.
	BrokerPID int
	// Progress receives a live status line every second (nil: quiet).
	Progress io.Writer
	// ClosedLoop makes publishers send whenever they may (QoS 1/2: fewer
	// than Inflight publications unacknowledged; any QoS: the socket took
	// everything written so far) instead of on a schedule; Rate is ignored.
	// Each message is stamped with the time it was handed to the socket, so
	// its latency is the broker's round trip and never includes a backlog of
	// messages the harness had not sent yet. This measures "as fast as the
	// window allows"; an open-loop Rate far above capacity instead shows the
	// harness's growing backlog as latency (see SendLag).
	ClosedLoop bool
	// SubRate, when > 0, limits every subscriber to processing that many
	// PUBLISH packets per second (token bucket, 10 ms burst). Out of budget
	// it stops reading its socket, so the kernel buffers fill and the broker
	// sees a slow consumer; acknowledgements go out as packets are
	// processed. Default 0: as fast as they arrive.
	SubRate float64
	// SubStopAfter, when > 0, makes every subscriber stop reading its socket
	// for good that long after publishing starts: a consumer that hangs but
	// whose connection stays up (keepalive pings still go out). A broker
	// closing the connection is still noticed. Default 0: never.
	SubStopAfter time.Duration
	// DropEvery, when > 0, makes every publisher skip the write of each
	// message whose sequence number is ≡ DropEvery−1 (mod DropEvery) while
	// counting it as sent: fault injection that proves losses are reported.
	DropEvery int
}

// EnsureDefaults fills every zero field with its default.
func (c *Config) EnsureDefaults() {
	if c.Scenario == "" {
		c.Scenario = ScenarioP2P
	}
	if len(c.Brokers) == 0 {
		c.Brokers = []string{"127.0.0.1:1883"}
	}
	if c.Protocol == 0 {
		c.Protocol = codec.Version311
	}
	// Each count defaults on its own, so "--subs 1000" alone keeps the
	// scenario's publisher count.
	defPubs, defSubs := 0, 0
	switch c.Scenario {
	case ScenarioP2P:
		defPubs, defSubs = max(c.Pubs, c.Subs, 1), max(c.Pubs, c.Subs, 1)
	case ScenarioFanIn:
		defPubs, defSubs = 100, 1
	case ScenarioFanOut:
		defPubs, defSubs = 1, 100
	case ScenarioShared:
		defPubs, defSubs = 100, 10
	case ScenarioPub:
		defPubs = 1
	case ScenarioSub:
		defSubs = 1
	}
	if c.Pubs == 0 {
		c.Pubs = defPubs
	}
	if c.Subs == 0 {
		c.Subs = defSubs
	}
	if c.Conns == 0 {
		c.Conns = 1000
	}
	if c.ConnectRate == 0 {
		c.ConnectRate = 2000
	}
	if c.Rate == 0 {
		c.Rate = 10
	}
	if c.Size == 0 {
		c.Size = 64
	}
	if c.Size < HeaderSize {
		c.Size = HeaderSize
	}
	if c.Group == "" {
		c.Group = defaultGroup
	}
	if c.Topic == "" {
		name := strings.ReplaceAll(c.Scenario, "-", "")
		if c.Scenario == ScenarioPub || c.Scenario == ScenarioSub {
			name = "ps"
		}
		c.Topic = "bench/" + name + "/%i"
	}
	if c.SessionExpiry == 0 {
		c.SessionExpiry = 300
	}
	if c.KeepAlive == 0 {
		c.KeepAlive = 60 * time.Second
	}
	if c.Duration == 0 {
		c.Duration = 10 * time.Second
	}
	if c.Drain == 0 {
		c.Drain = 5 * time.Second
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = 10 * time.Second
	}
	if c.Inflight == 0 {
		c.Inflight = 64
	}
	if c.MaxOutbound == 0 {
		c.MaxOutbound = 1 << 20
	}
}

// Validate reports every problem of c at once.
func (c *Config) Validate() error {
	var errs []error
	bad := func(f string, a ...any) { errs = append(errs, fmt.Errorf(f, a...)) }
	switch c.Scenario {
	case ScenarioConn, ScenarioPub, ScenarioSub, ScenarioP2P, ScenarioFanIn, ScenarioFanOut, ScenarioShared:
	default:
		bad("unknown scenario %q (want conn, pub, sub, p2p, fan-in, fan-out or shared)", c.Scenario)
	}
	for _, b := range append(append([]string(nil), c.Brokers...), c.PubBrokers...) {
		if _, _, err := net.SplitHostPort(b); err != nil {
			bad("broker %q: want HOST:PORT", b)
		}
	}
	if c.Protocol != codec.Version311 && c.Protocol != codec.Version5 {
		bad("protocol level %d: want 4 (3.1.1) or 5 (5.0)", c.Protocol)
	}
	if c.QoS > 2 {
		bad("qos %d: want 0, 1 or 2", c.QoS)
	}
	if c.Pubs < 0 || c.Subs < 0 || c.Conns < 0 || c.Pubs+c.Subs > maxClientsTotal || c.Conns > maxClientsTotal {
		bad("client counts must be between 0 and %d", maxClientsTotal)
	}
	if c.Scenario == ScenarioP2P && c.Pubs != c.Subs {
		bad("p2p pairs publisher i with subscriber i: --pubs (%d) must equal --subs (%d)", c.Pubs, c.Subs)
	}
	if (c.Scenario != ScenarioConn && c.Scenario != ScenarioSub) && c.Pubs == 0 {
		bad("scenario %s needs at least one publisher", c.Scenario)
	}
	if (c.Scenario != ScenarioConn && c.Scenario != ScenarioPub) && c.Subs == 0 {
		bad("scenario %s needs at least one subscriber", c.Scenario)
	}
	if c.Size > 256<<20 {
		bad("size %d: above the MQTT maximum packet size", c.Size)
	}
	if c.Rate < 0 || c.Rate > 1e7 {
		bad("rate %g: want 0 < rate ≤ 1e7 per publisher", c.Rate)
	}
	if c.Duration < 0 || c.Warmup < 0 || c.Drain < 0 || c.ConnectTimeout < 0 || c.KeepAlive < 0 {
		bad("durations must not be negative")
	}
	if c.KeepAlive > 65535*time.Second {
		bad("keepalive %v: at most 65535 s", c.KeepAlive)
	}
	if c.Warmup >= c.Duration && c.Scenario != ScenarioConn {
		bad("warm-up %v must be shorter than duration %v", c.Warmup, c.Duration)
	}
	if c.SubRate < 0 || c.SubRate > 1e7 || c.SubStopAfter < 0 {
		bad("sub-rate %g / sub-stop-after %v: want 0 ≤ sub-rate ≤ 1e7 and a non-negative duration", c.SubRate, c.SubStopAfter)
	}
	if c.Inflight < 1 || c.Inflight > 65535 {
		bad("inflight %d: want 1..65535", c.Inflight)
	}
	if c.Parallel < 0 {
		bad("parallel %d: want ≥ 0", c.Parallel)
	}
	if o := c.TLSOptions; !c.TLS && (o.CAFile != "" || o.CertFile != "" || o.KeyFile != "" || o.Insecure ||
		o.ServerName != "" || o.Resume || len(o.Curves) > 0) {
		bad("TLS options (--cafile, --cert, --key, --insecure, --server-name, --tls-curves, --tls-resume) need --tls")
	}
	if c.Loops < 0 || c.Loops > 1024 {
		bad("loops %d: want 0..1024", c.Loops)
	}
	for _, s := range c.Sources {
		if net.ParseIP(s) == nil {
			bad("source %q is not an IP address", s)
		}
	}
	if strings.Contains(c.Topic, "+") || strings.Contains(c.Topic, "#") {
		bad("topic %q: a publish topic cannot contain wildcards", c.Topic)
	}
	return errors.Join(errs...)
}

// filterFor returns the subscription filter of subscriber i.
func (c *Config) filterFor(i int) string {
	if c.Filter != "" {
		return expand(c.Filter, i)
	}
	switch c.Scenario {
	case ScenarioP2P, ScenarioConn:
		return expand(c.Topic, i)
	case ScenarioShared:
		return "$share/" + c.Group + "/" + strings.ReplaceAll(c.Topic, "%i", "+")
	default:
		return strings.ReplaceAll(c.Topic, "%i", "+")
	}
}

// expand substitutes the client index for %i.
func expand(pattern string, i int) string {
	if !strings.Contains(pattern, "%i") {
		return pattern
	}
	return strings.ReplaceAll(pattern, "%i", fmt.Sprint(i))
}

// ParseSources expands a comma-separated list of addresses and IPv4 ranges
// ("127.0.0.2-127.0.0.9") into addresses.
func ParseSources(s string) ([]string, error) {
	var out []string
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		lo, hi, isRange := strings.Cut(part, "-")
		if !isRange {
			out = append(out, part)
			continue
		}
		a, b := net.ParseIP(lo).To4(), net.ParseIP(hi).To4()
		if a == nil || b == nil {
			return nil, fmt.Errorf("source range %q: want IPv4-IPv4", part)
		}
		from := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
		to := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
		if to < from || to-from > 65535 {
			return nil, fmt.Errorf("source range %q: empty or wider than 65536 addresses", part)
		}
		for v := from; ; v++ {
			out = append(out, net.IPv4(byte(v>>24), byte(v>>16), byte(v>>8), byte(v)).String())
			if v == to {
				break
			}
		}
	}
	return out, nil
}
