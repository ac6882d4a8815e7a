package server

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/ternmq/tern/persist"
	"github.com/ternmq/tern/qos"
	"github.com/ternmq/tern/server/auth"
	"github.com/ternmq/tern/server/stdnet"
)

// Defaults that EnsureDefaults fills in. The two derived defaults are
// rules, not constants: EventLoops = GOMAXPROCS and MaxInboundQoS2 =
// ReceiveMaximum.
const (
	DefaultListener          = "127.0.0.1:1883"
	DefaultWebSocketPath     = "/mqtt" // of each WebSocketListener
	DefaultDataDir           = "./data"
	DefaultDurability        = DurabilitySync
	DefaultSyncInterval      = persist.DefaultSyncInterval // 100ms
	DefaultMaxPacketSize     = 1 << 20
	DefaultConnectTimeout    = 10 * time.Second
	DefaultMaxKeepAlive      = 65535
	DefaultReceiveMaximum    = 64
	DefaultMaxQueuedMessages = 10000
	DefaultMaxQueuedBytes    = 64 << 20
	DefaultQueuePolicy       = QueueDropNewest
	DefaultMaxOutboundBytes  = 4 << 20
	DefaultMaxTopicLevels    = 32
	// DefaultSlowConsumerTimeout is how long a subscriber holding
	// publishers back may make no progress.
	DefaultSlowConsumerTimeout = 30 * time.Second
	// DefaultMaxSessionBacklogBytes caps one persistent session's stored backlog.
	DefaultMaxSessionBacklogBytes = 1 << 30
	// DefaultMinFreeDiskBytes is the free-disk watermark of the store.
	DefaultMinFreeDiskBytes = 256 << 20
	DefaultMaxSessionExpiry = 7 * 24 * time.Hour
	DefaultSysInterval      = 10 * time.Second
	// DefaultMemoryReturnAfter is Options.MemoryReturnAfter's default.
	DefaultMemoryReturnAfter = 5 * time.Second
	DefaultVersion           = "dev"
	DefaultTopicAliasMaximum = 10
	// DefaultTLSEngine serves TLS listeners on the gnet event loops
	// (server/tlsloop): no goroutine per connection, ~1.6 KB per idle
	// connection against stdnet's ~24 KB and two goroutines.
	DefaultTLSEngine = TLSEngineLoops
	// DefaultWebSocketEngine serves WebSocket listeners on the event loops
	// (server/wsloop).
	DefaultWebSocketEngine = WebSocketEngineLoops
	// DefaultTLSClientAuth is a TLS listener's client certificate mode:
	// none asked for.
	DefaultTLSClientAuth = stdnet.ClientAuthNone
	// DefaultTLSExpiryWarningDays is how close to expiry a TLS listener's
	// certificate or client CA gets a warning in the log.
	DefaultTLSExpiryWarningDays = stdnet.DefaultExpiryWarningDays
)

// DefaultMaxInFlightGroups is Options.MaxInFlightGroups' default: each
// group commit waits for the previous fsync, the widest window for write
// avoidance.
const DefaultMaxInFlightGroups = 1

// TLS engines (Options.TLSEngine).
const (
	TLSEngineStdnet = "stdnet" // goroutines per connection (server/stdnet)
	TLSEngineLoops  = "loops"  // the gnet event loops (server/tlsloop)
)

// WebSocket engines (Options.WebSocketEngine).
const (
	WebSocketEngineStdnet = "stdnet" // net/http and gorilla/websocket, goroutines per connection (server/stdnet)
	WebSocketEngineLoops  = "loops"  // the gnet event loops (server/wsloop; wss:// over server/tlsloop)
)

// Limits Validate enforces. The packet size bounds come from the protocol:
// a Remaining Length is at most 268,435,455 and the fixed header adds up to
// five bytes; below 64 bytes not even a CONNECT with a short client id and
// credentials fits. The sync interval bounds are the store's.
const (
	minPacketSize   = 64
	maxPacketSize   = 268435455 + 5
	maxEventLoops   = 1024
	maxUint16       = 65535
	minSyncInterval = time.Millisecond
	maxSyncInterval = time.Minute
)

// Options configures a Server; it is also the broker's configuration file
// schema. The model, as in Pebble's Options:
//
//   - The zero value of every field means "the default" written next to it.
//     Each default is a named Default… constant (or, for the two derived
//     ones, a rule: EventLoops = GOMAXPROCS, MaxInboundQoS2 =
//     ReceiveMaximum) and EnsureDefaults is the one place that fills them.
//     It is idempotent; New calls it on its own copy.
//   - Validate checks every field and reports all problems at once, each
//     prefixed with the field's configuration key, so an operator fixes a
//     file in one pass. New calls it after EnsureDefaults.
//   - The yaml tags are the configuration file's keys (tern serve decodes
//     the file straight into this struct; durations are Go duration
//     strings such as "10s"). Fields tagged yaml:"-" hold Go values a file
//     cannot express (interfaces, a logger, a store); embedders set them,
//     and tern serve fills the logger from its own file keys (log_level,
//     log_format). PasswordFile and ACLFile are the file-backed
//     Authenticator and Authorizer, which Reload re-reads.
//
// A negative value means "off" where a field says so (SysInterval,
// TopicAliasMaximum); zero never does, because zero is "default".
type Options struct {
	// Listeners are the TCP addresses to accept MQTT on, "host:port".
	// Default: [DefaultListener].
	Listeners []string `yaml:"listeners"`
	// TLSListeners accept MQTT over TLS, served by TLSEngine. Default: none.
	TLSListeners []TLSListener `yaml:"tls_listeners"`
	// TLSEngine says what serves TLSListeners: TLSEngineLoops (default:
	// server/tlsloop, the gnet event loops, no goroutine per connection
	// once the handshake is done) or TLSEngineStdnet (server/stdnet, two
	// goroutines and a 16 KiB read buffer per connection).
	TLSEngine string `yaml:"tls_engine"`
	// TLSTicketKeyFile holds the TLS session ticket keys (32-byte keys back
	// to back, the first encrypts). Default: tls-ticket-keys in DataDir,
	// created with one random key. Give brokers behind one address the
	// same file so that each resumes the others' sessions.
	TLSTicketKeyFile string `yaml:"tls_ticket_key_file"`
	// WebSocketListeners accept MQTT over WebSocket (ws:// or wss://),
	// served by WebSocketEngine. Default: none.
	WebSocketListeners []WebSocketListener `yaml:"websocket_listeners"`
	// WebSocketEngine says what serves WebSocketListeners:
	// WebSocketEngineLoops (default: server/wsloop on the gnet event
	// loops, no goroutine per connection; wss:// does its TLS on
	// server/tlsloop whatever TLSEngine says) or WebSocketEngineStdnet
	// (server/stdnet: net/http, gorilla/websocket, two goroutines and a
	// read buffer per connection).
	WebSocketEngine string `yaml:"websocket_engine"`
	// ListenerSettings are per-listener options, keyed by the listener's
	// address exactly as Listeners, TLSListeners or WebSocketListeners give
	// it: PROXY protocol (plain TCP listeners), a connection cap and a
	// connection rate (ratelimit.go, proxyproto.go). Default: none.
	ListenerSettings map[string]ListenerSettings `yaml:"listener_settings"`
	// DataDir is where durable state lives. Default: DefaultDataDir.
	DataDir string `yaml:"data_dir"`
	// Durability says when acknowledged QoS 1/2 messages are safe:
	// DurabilitySync (default) acknowledges only what is fsynced;
	// DurabilityPeriodic acknowledges once written and fsyncs every
	// SyncInterval (a crash or power loss may lose the last interval of
	// acknowledged messages); DurabilityNone keeps everything in memory (a
	// restart loses sessions, queues and retained messages).
	Durability Durability `yaml:"durability"`
	// SyncInterval is the fsync period of DurabilityPeriodic, 1ms to 1m.
	// Default: DefaultSyncInterval (100ms).
	SyncInterval time.Duration `yaml:"sync_interval"`
	// MaxInFlightGroups bounds the group commits applied and awaiting
	// their fsync at once with DurabilitySync (persist's pipeline), 1 to
	// 1024. 1 holds each new group until the previous fsync returned: a
	// longer window for deliveries to be acknowledged within one group and
	// never written (write avoidance), at the cost of the overlap.
	// Default: DefaultMaxInFlightGroups (1; measured in BENCHMARKS.md,
	// "Durable QoS 1 write avoidance": 6.6 against 9.1 µs of broker CPU
	// per message with 64, on 16 -> 16 persistent sessions, and a lower
	// p99).
	MaxInFlightGroups int `yaml:"max_inflight_groups"`
	// Store, when set, is used instead of opening one in DataDir (tests,
	// embedders with their own store). The server closes it on Close.
	Store persist.Store `yaml:"-"`
	// AllowAnonymous lets clients without credentials connect on every
	// listener. Default false: anonymous clients are accepted only on
	// loopback listeners (whoever can reach those is already on the
	// machine, so a fresh install works locally without exposing an open
	// broker to the network) and need an Authenticator elsewhere.
	AllowAnonymous bool `yaml:"allow_anonymous"`
	// Authenticator, when set, decides every CONNECT. Default: nil.
	Authenticator Authenticator `yaml:"-"`
	// Authorizer, when set, decides every PUBLISH and SUBSCRIBE. Default: nil (allow).
	Authorizer Authorizer `yaml:"-"`
	// PasswordFile names a file of users and password hashes (tern passwd,
	// or mosquitto_passwd's $7$/$6$ lines): New loads it as the
	// Authenticator, and Reload reads it again. Default: "" (none).
	PasswordFile string `yaml:"password_file"`
	// ACLFile names a mosquitto-format acl_file: New loads it as the
	// Authorizer, and Reload reads it again. Default: "" (none).
	ACLFile string `yaml:"acl_file"`

	// MaxPacketSize bounds an inbound packet, checked from its fixed header
	// before any allocation. Default: DefaultMaxPacketSize (1 MiB).
	MaxPacketSize int `yaml:"max_packet_size"`
	// ConnectTimeout closes a connection that sends no CONNECT.
	// Default: DefaultConnectTimeout (10s).
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
	// MaxKeepAlive caps the keepalive, in seconds, a client may ask for (0
	// in CONNECT stays 0). Default: DefaultMaxKeepAlive (65535: no cap).
	MaxKeepAlive uint16 `yaml:"max_keepalive"`
	// ReceiveMaximum is the broker's inflight window per session (QoS 1/2
	// messages sent and unacknowledged) and, for 5.0, what it advertises.
	// Default: DefaultReceiveMaximum (64).
	ReceiveMaximum int `yaml:"receive_maximum"`
	// MaxInboundQoS2 bounds the QoS 2 PUBLISHes a client may leave awaiting
	// PUBREL. Default: ReceiveMaximum.
	MaxInboundQoS2 int `yaml:"max_inbound_qos2"`
	// MaxQueuedMessages and MaxQueuedBytes are the soft limit of a clean
	// session's in-memory queue: past it, the publishers feeding it are
	// paced (their acknowledgements held, their input not read) until it
	// drains to half; the hard bound, where deliveries that cannot be
	// paced (Server.Publish, wills, cluster) are dropped, is twice the
	// limit; a client's PUBLISH is never dropped there, its publisher is
	// paced (at most one message each past the limit). Persistent sessions keep their backlog in the store
	// instead (see MaxSessionBacklogBytes). Defaults:
	// DefaultMaxQueuedMessages (10,000) and DefaultMaxQueuedBytes (64 MiB).
	MaxQueuedMessages int `yaml:"max_queued_messages"`
	MaxQueuedBytes    int `yaml:"max_queued_bytes"`
	// SlowConsumerTimeout disconnects a subscriber that holds publishers
	// back and makes no progress (sends nothing, gets nothing
	// acknowledged) for this long; its clean session ends and the
	// publishers resume. Default: DefaultSlowConsumerTimeout (30s);
	// negative: never.
	SlowConsumerTimeout time.Duration `yaml:"slow_consumer_timeout"`
	// MaxSessionBacklogBytes caps what one persistent session may hold in
	// the store (queued and unacknowledged deliveries, counted since the
	// broker started). A message that would go over it is refused before
	// any delivery: 5.0 publishers get 0x97 Quota exceeded, 3.1.1
	// publishers no acknowledgement and a disconnect (they resend later).
	// Default: DefaultMaxSessionBacklogBytes (1 GiB); negative: no cap.
	MaxSessionBacklogBytes int64 `yaml:"max_session_backlog_bytes"`
	// MaxStoreBytes and MinFreeDiskBytes stop the store from filling the
	// disk: once the store is larger than MaxStoreBytes, or the data
	// directory's file system has less than MinFreeDiskBytes free (checked
	// once a second), messages for persistent sessions are refused as
	// above. Defaults: 0 (no store cap) and DefaultMinFreeDiskBytes
	// (256 MiB); negative MinFreeDiskBytes: no check.
	MaxStoreBytes    int64 `yaml:"max_store_bytes"`
	MinFreeDiskBytes int64 `yaml:"min_free_disk_bytes"`
	// QueuePolicy says what a full queue gives up (QoS 0 always goes
	// first). Default: DefaultQueuePolicy (QueueDropNewest).
	QueuePolicy QueuePolicy `yaml:"queue_policy"`
	// MaxOutboundBytes bounds what waits in a connection's socket buffer:
	// past it QoS 0 deliveries to that client are dropped, and past 4× it the
	// slow consumer is disconnected. Default: DefaultMaxOutboundBytes (4 MiB).
	MaxOutboundBytes int `yaml:"max_outbound_bytes"`
	// MaxTopicLevels bounds topic and filter depth.
	// Default: DefaultMaxTopicLevels (32): matching cost grows with depth,
	// and real fleets rarely use more than 10 levels.
	MaxTopicLevels int `yaml:"max_topic_levels"`
	// MaxSessionExpiry caps how long a persistent session outlives its
	// connection (3.1.1 clean session 0, 5.0 session expiry).
	// Default: DefaultMaxSessionExpiry (7 days).
	MaxSessionExpiry time.Duration `yaml:"max_session_expiry"`
	// EventLoops is the number of gnet event loops (also the number of
	// task loops serving TLS and WebSocket connections), 1 to 1024.
	// Default: GOMAXPROCS. The loops block in system calls (epoll_wait,
	// write); with GOMAXPROCS equal to the loops, no P is ever idle and
	// Go's sysmon polls every 20 µs to take Ps back. tern serve therefore
	// sets GOMAXPROCS to EventLoops+1 (cmd/tern/procs.go); an embedding
	// program may do the same.
	EventLoops int `yaml:"event_loops"`
	// AdminListen, when set ("host:port"), serves Prometheus metrics on
	// /metrics and a health check on /healthz over HTTP. Default: off.
	// On a non-loopback address it requires AdminToken: the broker refuses
	// to start rather than expose its metrics to the network unguarded.
	AdminListen string `yaml:"admin_listen"`
	// AdminToken, when set, is required as "Authorization: Bearer <token>"
	// on every admin request except /healthz (probes stay simple).
	// Default: "" (no token; only allowed on loopback).
	AdminToken string `yaml:"admin_token"`
	// AdminUsers may call the admin API (/api/v1/…) and read /metrics
	// with HTTP basic auth, checked against the Authenticator (tern
	// serve: the password file) like an MQTT CONNECT, lockouts included.
	// Only these users: an MQTT account is not an admin account unless
	// listed. Needs PasswordFile (or an Authenticator). Default: none
	// (basic auth off).
	// With neither AdminToken nor AdminUsers, the API answers loopback
	// peers only (see README, Admin API).
	AdminUsers []string `yaml:"admin_users"`
	// SysInterval is how often $SYS/broker/... topics are published.
	// Default: DefaultSysInterval (10s); negative turns them off.
	SysInterval time.Duration `yaml:"sys_interval"`
	// MemoryReturnAfter: once the number of connections has stayed within
	// 1 % for this long after it moved, the broker runs one full
	// collection and returns the free heap to the OS (memreturn.go), so
	// the RSS left after a connect storm is close to the live heap.
	// Default: DefaultMemoryReturnAfter (5s); negative turns it off.
	MemoryReturnAfter time.Duration `yaml:"memory_return_after"`
	// Version is reported on $SYS/broker/version. It describes the binary,
	// not a deployment, so a file cannot set it. Default: DefaultVersion.
	Version string `yaml:"-"`

	// MQTT 5.0 features (v5.go, v5_alias.go, auth.go).

	// TopicAliasMaximum is the number of topic aliases a 5.0 client may
	// define towards the broker (advertised in CONNACK) and the most the
	// broker assigns towards a client that allows them, at most 65535.
	// Default: DefaultTopicAliasMaximum (10); negative: no topic aliases
	// either way.
	TopicAliasMaximum int `yaml:"topic_alias_maximum"`
	// ResponseInformation is returned in CONNACK to a 5.0 client that sets
	// Request Response Information; "{clientid}" is replaced by the client
	// identifier (e.g. "reply/{clientid}/"). Default: "" (none returned).
	ResponseInformation string `yaml:"response_information"`
	// EnhancedAuth lists the 5.0 Authentication Methods the broker
	// implements (AUTH packet exchange, §4.12), e.g. SCRAM-SHA-256.
	// Default: none (a CONNECT naming a method is refused with 0x8C).
	EnhancedAuth []EnhancedAuthenticator `yaml:"-"`

	// Limits bound what clients can make the broker hold; see Limits.
	Limits Limits `yaml:"limits"`

	// Hooks are functions the broker calls as clients come and go and
	// messages pass (see Hooks); several sets compose in order. Go only.
	// Default: none.
	Hooks []Hooks `yaml:"-"`
	// HookOptions bounds the pool, timeout and cache of the Authenticate
	// and Authorize hooks. Go only; defaults in HookOptions.
	HookOptions HookOptions `yaml:"-"`
	// Cluster joins this broker to other nodes (cluster.go, package
	// cluster). Default: no cluster.
	Cluster ClusterOptions `yaml:"cluster"`

	// Logger receives the broker's logs. Default: slog.Default().
	Logger *slog.Logger `yaml:"-"`
}

// Durability is the store's durability mode; see Options.Durability.
type Durability string

// Durability modes.
const (
	DurabilitySync     Durability = "sync"
	DurabilityPeriodic Durability = "periodic"
	DurabilityNone     Durability = "none"
)

// Authenticator decides whether a client may connect; see auth.Authenticator.
type Authenticator = auth.Authenticator

// Authorizer decides what a connected client may do; see auth.Authorizer.
type Authorizer = auth.Authorizer

// ConnectInfo is what an Authenticator sees of a CONNECT; see auth.ConnectInfo.
type ConnectInfo = auth.ConnectInfo

// QueuePolicy says what a session's full queue gives up; see
// Options.QueuePolicy. It is a name, like Durability, so a configuration
// file can spell it.
type QueuePolicy string

// Queue policies. Whatever the policy, QoS 0 messages are dropped before
// any QoS 1/2 message.
const (
	// QueueDropNewest refuses the incoming message: nothing already
	// accepted is lost.
	QueueDropNewest QueuePolicy = "drop_newest"
	// QueueDropOldest drops the oldest queued message to make room.
	QueueDropOldest QueuePolicy = "drop_oldest"
)

// qos is the queue's own policy value; Validate has rejected any name but
// the two above.
func (p QueuePolicy) qos() qos.Policy {
	if p == QueueDropOldest {
		return qos.DropOldest
	}
	return qos.DropNewest
}

// EnsureDefaults fills every zero field with its default. It is the only
// place defaults are resolved, and it is idempotent.
func (o *Options) EnsureDefaults() {
	if len(o.Listeners) == 0 {
		o.Listeners = []string{DefaultListener}
	}
	cloned := false
	for i := range o.WebSocketListeners {
		if o.WebSocketListeners[i].Path == "" && len(o.WebSocketListeners[i].Paths) == 0 {
			if !cloned { // the slice is the caller's: fill the default in a copy
				o.WebSocketListeners, cloned = slices.Clone(o.WebSocketListeners), true
			}
			o.WebSocketListeners[i].Path = DefaultWebSocketPath
		}
	}
	cloned = false
	for i := range o.TLSListeners {
		l := &o.TLSListeners[i]
		if l.ClientAuth == "" || l.ExpiryWarningDays == 0 {
			if !cloned {
				o.TLSListeners, cloned = slices.Clone(o.TLSListeners), true
				l = &o.TLSListeners[i]
			}
			if l.ClientAuth == "" {
				l.ClientAuth = DefaultTLSClientAuth
			}
			if l.ExpiryWarningDays == 0 {
				l.ExpiryWarningDays = DefaultTLSExpiryWarningDays
			}
		}
	}
	if o.DataDir == "" {
		o.DataDir = DefaultDataDir
	}
	if o.TLSEngine == "" {
		o.TLSEngine = DefaultTLSEngine
	}
	if o.WebSocketEngine == "" {
		o.WebSocketEngine = DefaultWebSocketEngine
	}
	if o.Durability == "" {
		o.Durability = DefaultDurability
	}
	if o.MaxInFlightGroups == 0 {
		o.MaxInFlightGroups = DefaultMaxInFlightGroups
	}
	if o.SyncInterval == 0 {
		o.SyncInterval = DefaultSyncInterval
	}
	if o.MaxPacketSize == 0 {
		o.MaxPacketSize = DefaultMaxPacketSize
	}
	if o.ConnectTimeout == 0 {
		o.ConnectTimeout = DefaultConnectTimeout
	}
	if o.MaxKeepAlive == 0 {
		o.MaxKeepAlive = DefaultMaxKeepAlive
	}
	if o.ReceiveMaximum == 0 {
		o.ReceiveMaximum = DefaultReceiveMaximum
	}
	if o.MaxInboundQoS2 == 0 {
		o.MaxInboundQoS2 = o.ReceiveMaximum
	}
	if o.MaxQueuedMessages == 0 {
		o.MaxQueuedMessages = DefaultMaxQueuedMessages
	}
	if o.MaxQueuedBytes == 0 {
		o.MaxQueuedBytes = DefaultMaxQueuedBytes
	}
	if o.QueuePolicy == "" {
		o.QueuePolicy = DefaultQueuePolicy
	}
	if o.MaxOutboundBytes == 0 {
		o.MaxOutboundBytes = DefaultMaxOutboundBytes
	}
	if o.SlowConsumerTimeout == 0 {
		o.SlowConsumerTimeout = DefaultSlowConsumerTimeout
	}
	if o.MaxSessionBacklogBytes == 0 {
		o.MaxSessionBacklogBytes = DefaultMaxSessionBacklogBytes
	}
	if o.MinFreeDiskBytes == 0 {
		o.MinFreeDiskBytes = DefaultMinFreeDiskBytes
	}
	if o.MaxTopicLevels == 0 {
		o.MaxTopicLevels = DefaultMaxTopicLevels
	}
	if o.MaxSessionExpiry == 0 {
		o.MaxSessionExpiry = DefaultMaxSessionExpiry
	}
	if o.EventLoops == 0 {
		o.EventLoops = min(runtime.GOMAXPROCS(0), maxEventLoops)
	}
	if o.MemoryReturnAfter == 0 {
		o.MemoryReturnAfter = DefaultMemoryReturnAfter
	}
	if o.SysInterval == 0 {
		o.SysInterval = DefaultSysInterval
	}
	if o.Version == "" {
		o.Version = DefaultVersion
	}
	if o.TopicAliasMaximum == 0 {
		o.TopicAliasMaximum = DefaultTopicAliasMaximum
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	o.Limits.EnsureDefaults()
	o.HookOptions.ensureDefaults() // hooks.go
	o.Cluster.EnsureDefaults()
}

// Validate reports every problem with o at once (joined), each message
// starting with the field's configuration key, e.g.
//
//	max_packet_size: must be between 64 and 268435460, got 1
//
// It expects EnsureDefaults to have run: a zero left where a default
// belongs is reported as out of range.
func (o *Options) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf(key+": "+format, args...))
	}
	between := func(key string, v, lo, hi int) {
		if v < lo || v > hi {
			bad(key, "must be between %d and %d, got %d", lo, hi, v)
		}
	}
	positive := func(key string, v int) {
		if v < 1 {
			bad(key, "must be at least 1, got %d", v)
		}
	}
	positiveDuration := func(key string, d time.Duration) {
		if d <= 0 {
			bad(key, "must be a positive duration, got %v", d)
		}
	}

	if len(o.Listeners) == 0 {
		bad("listeners", "must name at least one host:port")
	}
	for i, l := range o.Listeners {
		checkAddr(bad, fmt.Sprintf("listeners[%d]", i), l)
	}
	for i, l := range o.TLSListeners {
		key := fmt.Sprintf("tls_listeners[%d]", i)
		checkAddr(bad, key+".addr", l.Addr)
		if l.Config == nil && (l.CertFile == "" || l.KeyFile == "") {
			bad(key, "needs cert_file and key_file")
		}
		checkTLSListener(bad, key, &l)
	}
	switch o.TLSEngine {
	case TLSEngineStdnet, TLSEngineLoops:
	default:
		bad("tls_engine", "must be stdnet or loops, got %q", o.TLSEngine)
	}
	switch o.WebSocketEngine {
	case WebSocketEngineStdnet, WebSocketEngineLoops:
	default:
		bad("websocket_engine", "must be stdnet or loops, got %q", o.WebSocketEngine)
	}
	o.validateListenerSettings(bad) // ratelimit.go
	for i, l := range o.WebSocketListeners {
		key := fmt.Sprintf("websocket_listeners[%d]", i)
		checkAddr(bad, key+".addr", l.Addr)
		if l.Path != "" && !strings.HasPrefix(l.Path, "/") {
			bad(key+".path", "must start with /, got %q", l.Path)
		}
		for j, p := range l.Paths {
			if !strings.HasPrefix(p, "/") {
				bad(fmt.Sprintf("%s.paths[%d]", key, j), "must start with /, got %q", p)
			}
		}
		if (l.CertFile == "") != (l.KeyFile == "") {
			bad(key, "needs both cert_file and key_file (wss://) or neither (ws://)")
		}
	}
	if o.DataDir == "" && o.Durability != DurabilityNone && o.Store == nil {
		bad("data_dir", "must be set unless durability is none")
	}
	switch o.Durability {
	case DurabilitySync, DurabilityPeriodic, DurabilityNone:
	default:
		bad("durability", "must be sync, periodic or none, got %q", o.Durability)
	}
	if o.SyncInterval < minSyncInterval || o.SyncInterval > maxSyncInterval {
		bad("sync_interval", "must be between %v and %v, got %v", minSyncInterval, maxSyncInterval, o.SyncInterval)
	}
	between("max_inflight_groups", o.MaxInFlightGroups, 1, 1024)
	between("max_packet_size", o.MaxPacketSize, minPacketSize, maxPacketSize)
	positiveDuration("connect_timeout", o.ConnectTimeout)
	if o.MaxKeepAlive == 0 {
		bad("max_keepalive", "must be between 1 and %d seconds, got 0", maxUint16)
	}
	between("receive_maximum", o.ReceiveMaximum, 1, maxUint16)
	between("max_inbound_qos2", o.MaxInboundQoS2, 1, maxUint16)
	positive("max_queued_messages", o.MaxQueuedMessages)
	positive("max_queued_bytes", o.MaxQueuedBytes)
	switch o.QueuePolicy {
	case QueueDropNewest, QueueDropOldest:
	default:
		bad("queue_policy", "must be drop_newest or drop_oldest, got %q", o.QueuePolicy)
	}
	positive("max_outbound_bytes", o.MaxOutboundBytes)
	positive("max_topic_levels", o.MaxTopicLevels)
	positiveDuration("max_session_expiry", o.MaxSessionExpiry)
	between("event_loops", o.EventLoops, 1, maxEventLoops)
	if o.AdminListen != "" {
		checkAddr(bad, "admin_listen", o.AdminListen)
		if host, _, err := net.SplitHostPort(o.AdminListen); err == nil && o.AdminToken == "" && len(o.AdminUsers) == 0 && !loopbackHost(host) {
			bad("admin_listen", "%q is not a loopback address: set admin_token (or admin_users), or listen on 127.0.0.1", o.AdminListen)
		}
	}
	if len(o.AdminUsers) > 0 && o.Authenticator == nil && o.PasswordFile == "" {
		bad("admin_users", "needs a password file (password_file) or an Authenticator to check the admin users' passwords against")
	}
	for _, u := range o.AdminUsers {
		if u == "" || strings.ContainsAny(u, ":\n") {
			bad("admin_users", "%q is not a user name (empty, or contains ':' or a newline)", u)
		}
	}
	if o.SysInterval == 0 {
		bad("sys_interval", "must be positive (or negative: off), got 0")
	}
	if o.TopicAliasMaximum > maxUint16 {
		bad("topic_alias_maximum", "must be at most %d (negative: none), got %d", maxUint16, o.TopicAliasMaximum)
	}
	// Response Information travels as an MQTT UTF-8 string [MQTT-1.5.4-1]
	// [MQTT-1.5.4-2]: valid UTF-8, no U+0000, at most 65,535 bytes; the
	// client id substituted into it is checked on CONNECT.
	if ri := o.ResponseInformation; !utf8.ValidString(ri) || strings.ContainsRune(ri, 0) || len(ri) > maxUint16 {
		bad("response_information", "must be valid UTF-8 without U+0000, at most %d bytes", maxUint16)
	}
	seen := map[string]bool{}
	for i, a := range o.EnhancedAuth {
		key := fmt.Sprintf("EnhancedAuth[%d]", i) // set from Go only: no file key
		switch {
		case a == nil:
			bad(key, "is nil")
		case a.Method() == "":
			bad(key, "has an empty method name")
		case seen[a.Method()]:
			bad(key, "method %q listed twice", a.Method())
		default:
			seen[a.Method()] = true
		}
	}
	if o.Logger == nil {
		bad("Logger", "is nil") // set from Go only: no file key
	}
	if o.PasswordFile != "" && o.Authenticator != nil {
		bad("password_file", "set together with an Authenticator: give one or the other")
	}
	if o.ACLFile != "" && o.Authorizer != nil {
		bad("acl_file", "set together with an Authorizer: give one or the other")
	}
	if o.MaxStoreBytes < 0 {
		bad("max_store_bytes", "must not be negative, got %d", o.MaxStoreBytes)
	}
	if err := o.Limits.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := o.HookOptions.validate(); err != nil {
		errs = append(errs, err)
	}
	o.Cluster.validate(bad)
	return errors.Join(errs...)
}

// certIdentities reports whether a TLS listener takes client identities
// from certificates (mTLS authenticates those clients).
func (o *Options) certIdentities() bool {
	for _, l := range o.TLSListeners {
		if l.IdentityFrom != "" {
			return true
		}
	}
	return false
}

// checkTLSListener reports a TLS listener's bad TLS settings under key.
func checkTLSListener(bad func(key, format string, args ...any), key string, l *TLSListener) {
	switch l.MinVersion {
	case "", "1.2", "1.3":
	default:
		bad(key+".min_version", "must be \"1.2\" or \"1.3\", got %q", l.MinVersion)
	}
	if !slices.Contains(stdnet.ClientAuthModes, l.ClientAuth) {
		bad(key+".client_auth", "must be none, request or require, got %q", l.ClientAuth)
	}
	verifies := l.ClientAuth == stdnet.ClientAuthRequest || l.ClientAuth == stdnet.ClientAuthRequire
	if verifies && l.ClientCAFile == "" && (l.Config == nil || l.Config.ClientCAs == nil) {
		bad(key+".client_ca_file", "client_auth %s needs the CA client certificates are verified against", l.ClientAuth)
	}
	if !slices.Contains(stdnet.IdentitySources, l.IdentityFrom) {
		bad(key+".identity_from", "must be cn, subject, san_dns, san_email or san_uri (or empty), got %q", l.IdentityFrom)
	} else if l.IdentityFrom != "" && !verifies {
		bad(key+".identity_from", "needs client_auth request or require (a certificate nobody verified is no identity)")
	}
	if _, err := stdnet.ParseCurves(l.Curves); err != nil {
		bad(key+".curves", "%v", err)
	}
	if l.ExpiryWarningDays < 0 {
		bad(key+".expiry_warning_days", "must not be negative, got %d", l.ExpiryWarningDays)
	}
}

// checkAddr reports, under key, an address that is not host:port.
func checkAddr(bad func(key, format string, args ...any), key, addr string) {
	if strings.HasPrefix(addr, "unix:") || strings.HasPrefix(addr, "/") || strings.HasPrefix(addr, "@") {
		// Unix sockets would need their own rules for loopback, per-address
		// limits and client addresses; a local client gets the same from a
		// loopback TCP listener.
		bad(key, "Unix-socket listeners are not supported, got %q: listen on a loopback address such as 127.0.0.1:1883 instead", addr)
		return
	}
	if strings.Contains(addr, "://") {
		bad(key, "give host:port without a scheme, got %q", addr)
		return
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		bad(key, "want host:port, got %q", addr)
	}
}

// topicAliasMax is the Topic Alias Maximum the broker advertises and uses.
func (o *Options) topicAliasMax() uint16 {
	if o.TopicAliasMaximum <= 0 {
		return 0
	}
	return uint16(o.TopicAliasMaximum)
}

// LogValue implements slog.LogValuer: every option a configuration file
// can set, under its file key (read from the yaml tags, so a new option is
// logged without touching this), plus which Go-only hooks are set, by type
// and never by content. tern serve logs it once at start.
func (o Options) LogValue() slog.Value {
	attrs := fileAttrs(reflect.ValueOf(o))
	methods := make([]string, 0, len(o.EnhancedAuth))
	for _, a := range o.EnhancedAuth {
		if a != nil {
			methods = append(methods, a.Method())
		}
	}
	attrs = append(attrs, slog.Any("enhanced_auth", methods))
	for key, hook := range map[string]any{"store": o.Store, "authenticator": o.Authenticator, "authorizer": o.Authorizer} {
		if hook != nil {
			attrs = append(attrs, slog.String(key, fmt.Sprintf("%T", hook)))
		}
	}
	return slog.GroupValue(attrs...)
}

// fileAttrs renders the yaml-tagged fields of the struct v as attributes
// named by their keys: nested structs as groups, lists of structs (the
// TLS and WebSocket listeners) as "key=value …" strings of their set
// fields.
func fileAttrs(v reflect.Value) []slog.Attr {
	t := v.Type()
	attrs := make([]slog.Attr, 0, t.NumField())
	for i := range t.NumField() {
		key, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		if key == "" || key == "-" {
			continue
		}
		f := v.Field(i)
		switch {
		case f.Type() == reflect.TypeFor[time.Duration]():
			attrs = append(attrs, slog.Duration(key, time.Duration(f.Int())))
		case f.Kind() == reflect.Struct:
			attrs = append(attrs, slog.Attr{Key: key, Value: slog.GroupValue(fileAttrs(f)...)})
		case f.Kind() == reflect.Slice && f.Type().Elem().Kind() == reflect.Struct:
			items := make([]string, f.Len())
			for j := range items {
				var b strings.Builder
				for _, a := range fileAttrs(f.Index(j)) {
					if !a.Value.Equal(slog.StringValue("")) {
						fmt.Fprintf(&b, " %s=%s", a.Key, a.Value)
					}
				}
				items[j] = strings.TrimPrefix(b.String(), " ")
			}
			attrs = append(attrs, slog.Any(key, items))
		default:
			attrs = append(attrs, slog.Any(key, f.Interface()))
		}
	}
	return attrs
}

// loopbackHost reports whether host (from "host:port") names only loopback
// addresses: "localhost" or a loopback IP. An empty host or 0.0.0.0 listens
// on every interface and is not loopback.
func loopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
