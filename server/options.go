package server

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/ternmq/tern/persist"
	"github.com/ternmq/tern/qos"
	"github.com/ternmq/tern/server/auth"
)

// Options configures a Server. The zero value of every field means "the
// default" written next to it; call EnsureDefaults to fill them in and
// Validate to check them (New does both).
type Options struct {
	// Listeners are the TCP addresses to accept MQTT on, "host:port".
	// Default: ["127.0.0.1:1883"].
	Listeners []string
	// TLSListeners accept MQTT over TLS (standard-library transport: two
	// goroutines per connection). Default: none.
	TLSListeners []TLSListener
	// WebSocketListeners accept MQTT over WebSocket (ws:// or wss://), on
	// the same standard-library transport. Default: none.
	WebSocketListeners []WebSocketListener
	// DataDir is where durable state lives. Default: "./data".
	DataDir string
	// Durability says when acknowledged QoS 1/2 messages are safe:
	// DurabilitySync (default) acknowledges only what is fsynced;
	// DurabilityPeriodic acknowledges once written and fsyncs every
	// SyncInterval (a crash or power loss may lose the last interval of
	// acknowledged messages); DurabilityNone keeps everything in memory (a
	// restart loses sessions, queues and retained messages).
	Durability Durability
	// SyncInterval is the fsync period of DurabilityPeriodic. Default: 100ms.
	SyncInterval time.Duration
	// Store, when set, is used instead of opening one in DataDir (tests,
	// embedders with their own store). The server closes it on Close.
	Store persist.Store
	// AllowAnonymous lets clients without credentials connect on every
	// listener. Default false: anonymous clients are accepted only on
	// loopback listeners (DESIGN §6) and need an Authenticator elsewhere.
	AllowAnonymous bool
	// Authenticator, when set, decides every CONNECT. Default: nil.
	Authenticator Authenticator
	// Authorizer, when set, decides every PUBLISH and SUBSCRIBE. Default: nil (allow).
	Authorizer Authorizer

	// MaxPacketSize bounds an inbound packet, checked from its fixed header
	// before any allocation. Default: 1 MiB.
	MaxPacketSize int
	// ConnectTimeout closes a connection that sends no CONNECT. Default: 10s.
	ConnectTimeout time.Duration
	// MaxKeepAlive caps the keepalive a client may ask for (0 in CONNECT
	// stays 0 unless ForceKeepAlive). Default: 65535s (no cap).
	MaxKeepAlive uint16
	// ReceiveMaximum is the broker's inflight window per session (QoS 1/2
	// messages sent and unacknowledged) and, for 5.0, what it advertises.
	// Default: 64.
	ReceiveMaximum int
	// MaxInboundQoS2 bounds the QoS 2 PUBLISHes a client may leave awaiting
	// PUBREL. Default: ReceiveMaximum.
	MaxInboundQoS2 int
	// MaxQueuedMessages and MaxQueuedBytes bound each session's queue.
	// Defaults: 10,000 and 64 MiB.
	MaxQueuedMessages int
	MaxQueuedBytes    int
	// QueuePolicy says what a full queue gives up (QoS 0 always goes
	// first). Default: qos.DropNewest.
	QueuePolicy qos.Policy
	// MaxOutboundBytes bounds what waits in a connection's socket buffer:
	// past it QoS 0 deliveries to that client are dropped, and past 4× it the
	// slow consumer is disconnected. Default: 4 MiB.
	MaxOutboundBytes int
	// MaxTopicLevels bounds topic and filter depth. Default: 128.
	MaxTopicLevels int
	// MaxSessionExpiry caps how long a persistent session outlives its
	// connection (3.1.1 clean session 0, 5.0 session expiry). Default: 7 days.
	MaxSessionExpiry time.Duration
	// EventLoops is the number of gnet event loops. Default: GOMAXPROCS.
	EventLoops int
	// AdminListen, when set ("host:port"), serves Prometheus metrics on
	// /metrics and a health check on /healthz over HTTP. Default: off.
	AdminListen string
	// SysInterval is how often $SYS/broker/... topics are published.
	// Default: 10s; negative turns them off.
	SysInterval time.Duration
	// Version is reported on $SYS/broker/version. Default: "dev".
	Version string

	// MQTT 5.0 features (v5.go, v5_alias.go, auth.go).

	// TopicAliasMaximum is the number of topic aliases a 5.0 client may
	// define towards the broker (advertised in CONNACK) and the most the
	// broker assigns towards a client that allows them. Default: 10;
	// negative: no topic aliases either way.
	TopicAliasMaximum int
	// ResponseInformation is returned in CONNACK to a 5.0 client that sets
	// Request Response Information; "{clientid}" is replaced by the client
	// identifier (e.g. "reply/{clientid}/"). Default: "" (none returned).
	ResponseInformation string
	// EnhancedAuth lists the 5.0 Authentication Methods the broker
	// implements (AUTH packet exchange, §4.12), e.g. NewSCRAMSHA256.
	// Default: none (a CONNECT naming a method is refused with 0x8C).
	EnhancedAuth []EnhancedAuthenticator

	// Logger receives the broker's logs. Default: slog.Default().
	Logger *slog.Logger
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

// EnsureDefaults fills every zero field with its default.
func (o *Options) EnsureDefaults() {
	if len(o.Listeners) == 0 {
		o.Listeners = []string{"127.0.0.1:1883"}
	}
	if o.DataDir == "" {
		o.DataDir = "./data"
	}
	if o.Durability == "" {
		o.Durability = DurabilitySync
	}
	if o.SyncInterval == 0 {
		o.SyncInterval = 100 * time.Millisecond
	}
	if o.MaxPacketSize == 0 {
		o.MaxPacketSize = 1 << 20
	}
	if o.ConnectTimeout == 0 {
		o.ConnectTimeout = 10 * time.Second
	}
	if o.MaxKeepAlive == 0 {
		o.MaxKeepAlive = 65535
	}
	if o.ReceiveMaximum == 0 {
		o.ReceiveMaximum = 64
	}
	if o.MaxInboundQoS2 == 0 {
		o.MaxInboundQoS2 = o.ReceiveMaximum
	}
	if o.MaxQueuedMessages == 0 {
		o.MaxQueuedMessages = 10000
	}
	if o.MaxQueuedBytes == 0 {
		o.MaxQueuedBytes = 64 << 20
	}
	if o.MaxOutboundBytes == 0 {
		o.MaxOutboundBytes = 4 << 20
	}
	if o.MaxTopicLevels == 0 {
		o.MaxTopicLevels = 128
	}
	if o.MaxSessionExpiry == 0 {
		o.MaxSessionExpiry = 7 * 24 * time.Hour
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.SysInterval == 0 {
		o.SysInterval = 10 * time.Second
	}
	if o.Version == "" {
		o.Version = "dev"
	}
	o.ensureV5Defaults()
}

// Validate reports every problem with o at once.
func (o *Options) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	for _, l := range o.Listeners {
		if _, _, err := net.SplitHostPort(l); err != nil {
			bad("listener %q: want host:port: %v", l, err)
		}
		if strings.Contains(l, "://") {
			bad("listener %q: give host:port without a scheme", l)
		}
	}
	switch o.Durability {
	case DurabilitySync, DurabilityPeriodic, DurabilityNone:
	default:
		bad("durability %q: want sync, periodic or none", o.Durability)
	}
	if o.SyncInterval < 0 {
		bad("sync interval %v is negative", o.SyncInterval)
	}
	if o.MaxPacketSize < 64 || o.MaxPacketSize > 268435460 {
		bad("max packet size %d: want 64 bytes to 256 MiB", o.MaxPacketSize)
	}
	if o.ConnectTimeout < 0 {
		bad("connect timeout %v is negative", o.ConnectTimeout)
	}
	if o.ReceiveMaximum < 1 || o.ReceiveMaximum > 65535 {
		bad("receive maximum %d: want 1 to 65535", o.ReceiveMaximum)
	}
	if o.MaxInboundQoS2 < 1 || o.MaxInboundQoS2 > 65535 {
		bad("max inbound QoS 2 %d: want 1 to 65535", o.MaxInboundQoS2)
	}
	if o.MaxQueuedMessages < 0 || o.MaxQueuedBytes < 0 || o.MaxOutboundBytes < 0 {
		bad("queue and outbound limits must not be negative")
	}
	if o.MaxTopicLevels < 1 {
		bad("max topic levels %d: want ≥ 1", o.MaxTopicLevels)
	}
	if o.MaxSessionExpiry < 0 {
		bad("max session expiry %v is negative", o.MaxSessionExpiry)
	}
	if o.EventLoops < 0 || o.EventLoops > 1024 {
		bad("event loops %d: want 0 (GOMAXPROCS) to 1024", o.EventLoops)
	}
	errs = append(errs, o.validateV5()...)
	return errors.Join(errs...)
}
