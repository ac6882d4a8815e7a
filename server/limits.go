package server

import (
	"errors"
	"fmt"
	"sync/atomic"
	"time"
)

// Limits bound what one client, or many unauthenticated sockets together,
// can make the broker hold. Every limit that refuses something counts the
// refusal (Prometheus tern_limit_refused_total{limit="…"}, Stats.Refused)
// and logs it, rate-limited to one line per limit per second naming the
// client, user and address of the latest refusal and how many were
// suppressed since the last line. The zero value of every field means its
// default; a negative value turns a limit off where the field says so.
//
// What an attacker costs the broker with the defaults: an unauthenticated
// socket holds at most MaxFirstPacketSize bytes of a partial CONNECT, and all
// of them together at most MaxPartialBytes; a connected client holds at most
// MaxSubscriptionsPerClient subscriptions of at most Options.MaxTopicLevels
// levels; retained messages and sessions are capped broker-wide.
type Limits struct {
	// MaxConnections caps open network connections (MQTT, TLS, WebSocket
	// together). Default 0: the process's file-descriptor limit
	// (RLIMIT_NOFILE) minus FDReserve, so accept never fails with EMFILE
	// because of clients. Connections over it are closed at once.
	MaxConnections int `yaml:"max_connections"`
	// FDReserve is what MaxConnections leaves of the descriptor limit for
	// the store, listeners and the admin port. Default: 256.
	FDReserve int `yaml:"fd_reserve"`
	// MaxFirstPacketSize bounds the first packet (CONNECT) a connection may
	// announce, checked from its fixed header: an unauthenticated peer
	// cannot make the broker buffer MaxPacketSize. Default: 64 KiB.
	MaxFirstPacketSize int `yaml:"max_first_packet_size"`
	// MaxPartialBytes caps the bytes all connections together hold in
	// packets that have not fully arrived yet. A connection whose partial
	// packet would take the total over it is closed. Default: 256 MiB.
	MaxPartialBytes int64 `yaml:"max_partial_bytes"`
	// MaxSubscriptionsPerClient caps one session's subscriptions; a
	// SUBSCRIBE past it gets 0x97 Quota exceeded (5.0) / 0x80 (3.1.1) for
	// the filters over the limit. Default: 1,000.
	MaxSubscriptionsPerClient int `yaml:"max_subscriptions_per_client"`
	// MaxClientIDLength bounds a client identifier in bytes (the spec asks
	// brokers to allow at least 23). Default: 256.
	MaxClientIDLength int `yaml:"max_client_id_length"`
	// MaxRetainedMessages and MaxRetainedBytes cap the retained index;
	// a new retained topic over them is not retained (the message is still
	// delivered; replacing or clearing an existing topic is always
	// allowed). Defaults: 1,000,000 and 1 GiB.
	MaxRetainedMessages int   `yaml:"max_retained_messages"`
	MaxRetainedBytes    int64 `yaml:"max_retained_bytes"`
	// MaxSessions caps the sessions the broker holds, online and offline;
	// a CONNECT that would create one more is refused with 0x97 Quota
	// exceeded (5.0) / 3 Server unavailable (3.1.1). Default: 1,000,000.
	MaxSessions int `yaml:"max_sessions"`
	// MaxPublishRate and MaxPublishBytesRate cap what one connection may
	// publish per second (messages, bytes of PUBLISH packets), each with
	// one second's worth of burst. A client over them is paced, not
	// disconnected: its input is not read until the rate allows the next
	// PUBLISH (ratelimit.go). Default 0: no cap.
	MaxPublishRate      float64 `yaml:"max_publish_rate"`
	MaxPublishBytesRate int64   `yaml:"max_publish_bytes_rate"`
}

// Limit defaults.
const (
	DefaultFDReserve                 = 256
	DefaultMaxFirstPacketSize        = 64 << 10
	DefaultMaxPartialBytes           = 256 << 20
	DefaultMaxSubscriptionsPerClient = 1000
	DefaultMaxClientIDLength         = 256
	DefaultMaxRetainedMessages       = 1_000_000
	DefaultMaxRetainedBytes          = 1 << 30
	DefaultMaxSessions               = 1_000_000
)

// EnsureDefaults fills every zero field with its default. MaxConnections is
// resolved against the descriptor limit when the server starts.
func (l *Limits) EnsureDefaults() {
	setDefault(&l.FDReserve, DefaultFDReserve)
	setDefault(&l.MaxFirstPacketSize, DefaultMaxFirstPacketSize)
	setDefault(&l.MaxPartialBytes, DefaultMaxPartialBytes)
	setDefault(&l.MaxSubscriptionsPerClient, DefaultMaxSubscriptionsPerClient)
	setDefault(&l.MaxClientIDLength, DefaultMaxClientIDLength)
	setDefault(&l.MaxRetainedMessages, DefaultMaxRetainedMessages)
	setDefault(&l.MaxRetainedBytes, DefaultMaxRetainedBytes)
	setDefault(&l.MaxSessions, DefaultMaxSessions)
}

func setDefault[T int | int64](p *T, def T) {
	if *p == 0 {
		*p = def
	}
}

// Validate reports every problem at once, naming the YAML keys.
func (l *Limits) Validate() error {
	var errs []error
	positive := func(key string, v int64) {
		if v < 0 {
			errs = append(errs, fmt.Errorf("limits.%s: must not be negative, got %d", key, v))
		}
	}
	positive("max_connections", int64(l.MaxConnections))
	positive("fd_reserve", int64(l.FDReserve))
	positive("max_partial_bytes", l.MaxPartialBytes)
	positive("max_subscriptions_per_client", int64(l.MaxSubscriptionsPerClient))
	positive("max_retained_messages", int64(l.MaxRetainedMessages))
	positive("max_retained_bytes", l.MaxRetainedBytes)
	positive("max_sessions", int64(l.MaxSessions))
	positive("max_publish_bytes_rate", l.MaxPublishBytesRate)
	if l.MaxPublishRate < 0 || l.MaxPublishRate != l.MaxPublishRate || l.MaxPublishRate > 1e9 {
		errs = append(errs, fmt.Errorf("limits.max_publish_rate: must be between 0 and 1e9 messages per second, got %v", l.MaxPublishRate))
	}
	if l.MaxFirstPacketSize < 0 || l.MaxFirstPacketSize > 268435455 {
		errs = append(errs, fmt.Errorf("limits.max_first_packet_size: must be between 2 and 268435455, got %d", l.MaxFirstPacketSize))
	}
	if l.MaxClientIDLength < 0 || l.MaxClientIDLength > 65535 {
		errs = append(errs, fmt.Errorf("limits.max_client_id_length: must be between 23 and 65535, got %d", l.MaxClientIDLength))
	} else if l.MaxClientIDLength > 0 && l.MaxClientIDLength < 23 {
		errs = append(errs, fmt.Errorf("limits.max_client_id_length: must be at least 23 [MQTT-3.1.3-5], got %d", l.MaxClientIDLength))
	}
	return errors.Join(errs...)
}

// limitID names one limit in counters and logs.
type limitID uint8

// The limits that refuse something. Keep limitNames in step.
const (
	limitConnections limitID = iota
	limitFirstPacket
	limitPartialBytes
	limitSubscriptions
	limitClientID
	limitRetained
	limitSessions
	limitACLWill
	limitSessionOwner
	limitSysPublish
	limitEMFILE
	limitDescriptors
	limitStoreFull
	limitSessionBacklog
	limitSlowConsumer
	limitPacedInput
	limitAuthQueue
	limitACLPublish
	limitACLSubscribe
	limitConnectRefused
	limitConnRate
	limitListenerConns
	limitProxyHeader
	limitPublishRate
	limitAdminAuth
	limitAdminBusy
	limitHookTimeout
	limitHookPanic
	limitWSHeader
	limitWSHeaderTimeout
	limitWSMessage
	limitRemoteQuota
	limitConnectTimeout
	limitSlowConsumerAbandoned
	numLimits
)

var limitNames = [numLimits]string{
	limitConnections:    "max_connections",
	limitFirstPacket:    "max_first_packet_size",
	limitPartialBytes:   "max_partial_bytes",
	limitSubscriptions:  "max_subscriptions_per_client",
	limitClientID:       "max_client_id_length",
	limitRetained:       "max_retained",
	limitSessions:       "max_sessions",
	limitACLWill:        "acl_will",
	limitSessionOwner:   "session_owner",
	limitSysPublish:     "sys_publish",
	limitEMFILE:         "accept_emfile",
	limitDescriptors:    "fd_reserve",
	limitStoreFull:      "store_full",
	limitSessionBacklog: "max_session_backlog_bytes",
	limitSlowConsumer:   "slow_consumer_timeout",
	limitPacedInput:     "paced_input",
	limitAuthQueue:      "auth_queue",
	limitACLPublish:     "acl_publish",
	limitACLSubscribe:   "acl_subscribe",
	limitConnectRefused: "connect_refused",
	limitConnRate:       "max_connection_rate",
	limitListenerConns:  "listener_max_connections",
	limitProxyHeader:    "proxy_protocol",
	limitPublishRate:    "max_publish_rate",
	limitAdminAuth:      "admin_auth",
	limitAdminBusy:      "admin_busy",
	limitHookTimeout:    "hook_timeout",
	limitHookPanic:      "hook_panic",
	// server/wsloop's (the names are its Limit constants).
	limitWSHeader:        "websocket_header",
	limitWSHeaderTimeout: "websocket_header_timeout",
	limitWSMessage:       "websocket_message_size",
	limitRemoteQuota:     "cluster_remote_quota",
	limitConnectTimeout:  "connect_timeout",
	// A clean subscriber left holding the messages of more paced
	// publishers that gave up than its queue limit (pace.go).
	limitSlowConsumerAbandoned: "slow_consumer_abandoned",
}

// refusals counts what limits refused and rate-limits their log lines.
// Safe for concurrent use from every loop.
type refusals struct {
	count      [numLimits]atomic.Uint64
	lastLog    [numLimits]atomic.Int64 // unix nanoseconds of the last line
	suppressed [numLimits]atomic.Uint64
}

// refuse counts a refusal by limit id and logs it unless a line for the
// same limit was written less than a second ago. detail says what was
// refused; who names the client (any of the strings may be empty).
func (s *Server) refuse(id limitID, clientID, user, remote, detail string) {
	r := &s.refused
	r.count[id].Add(1)
	now := time.Now().UnixNano()
	last := r.lastLog[id].Load()
	if now-last < int64(time.Second) || !r.lastLog[id].CompareAndSwap(last, now) {
		r.suppressed[id].Add(1)
		return
	}
	s.log.Warn("limit refused", "limit", limitNames[id], "client_id", clientID, "user", user,
		"remote", remote, "detail", detail, "suppressed_since_last", r.suppressed[id].Swap(0))
}

// Refused returns, per limit name, how many times that limit refused
// something since the broker started.
func (s *Server) Refused() map[string]uint64 {
	out := make(map[string]uint64, numLimits)
	for i := range numLimits {
		out[limitNames[i]] = s.refused.count[i].Load()
	}
	return out
}
