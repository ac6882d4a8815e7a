package server

import (
	"log/slog"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/ternmq/tern/codec"
	"github.com/ternmq/tern/internal/mqtttest"
	"github.com/ternmq/tern/qos"
)

// offByDefault are the file keys whose default is the zero value: a
// feature that is off (or empty) until configured.
var offByDefault = map[string]bool{
	"tls_listeners":        true,
	"websocket_listeners":  true,
	"allow_anonymous":      true,
	"admin_listen":         true,
	"admin_token":          true,
	"response_information": true,
	"max_store_bytes":      true, // no store cap unless asked; min_free_disk_bytes guards the disk
	"password_file":        true,
	"acl_file":             true,
	"listener_settings":    true, // per-listener extras, none unless configured
	"tls_ticket_key_file":  true, // empty: the key file lives in the data directory
	"admin_users":          true,
}

// fileKeys lists Options' configuration keys with their field index.
func fileKeys(t *testing.T) map[string]int {
	t.Helper()
	keys := map[string]int{}
	typ := reflect.TypeFor[Options]()
	for i := range typ.NumField() {
		tag := typ.Field(i).Tag.Get("yaml")
		name, _, _ := strings.Cut(tag, ",")
		if tag == "" {
			t.Errorf("Options.%s has no yaml tag: give it a file key, or yaml:\"-\" if a file cannot express it", typ.Field(i).Name)
		}
		if name == "-" || name == "" {
			continue
		}
		keys[name] = i
	}
	return keys
}

func TestEnsureDefaultsResolvesEveryDefaultOnce(t *testing.T) {
	var o Options
	o.EnsureDefaults()
	v := reflect.ValueOf(o)
	for key, i := range fileKeys(t) {
		if v.Field(i).IsZero() != offByDefault[key] {
			t.Errorf("%s = %v after EnsureDefaults; zero is %v, want %v", key, v.Field(i), v.Field(i).IsZero(), offByDefault[key])
		}
	}
	want := Options{
		Listeners:              []string{DefaultListener},
		TLSEngine:              DefaultTLSEngine,
		WebSocketEngine:        DefaultWebSocketEngine,
		DataDir:                DefaultDataDir,
		Durability:             DefaultDurability,
		SyncInterval:           DefaultSyncInterval,
		MaxInFlightGroups:      DefaultMaxInFlightGroups,
		MaxPacketSize:          DefaultMaxPacketSize,
		ConnectTimeout:         DefaultConnectTimeout,
		MaxKeepAlive:           DefaultMaxKeepAlive,
		ReceiveMaximum:         DefaultReceiveMaximum,
		MaxInboundQoS2:         DefaultReceiveMaximum,
		MaxQueuedMessages:      DefaultMaxQueuedMessages,
		MaxQueuedBytes:         DefaultMaxQueuedBytes,
		QueuePolicy:            DefaultQueuePolicy,
		MaxOutboundBytes:       DefaultMaxOutboundBytes,
		MaxTopicLevels:         DefaultMaxTopicLevels,
		SlowConsumerTimeout:    DefaultSlowConsumerTimeout,
		MaxSessionBacklogBytes: DefaultMaxSessionBacklogBytes,
		MinFreeDiskBytes:       DefaultMinFreeDiskBytes,
		MaxSessionExpiry:       DefaultMaxSessionExpiry,
		EventLoops:             runtime.GOMAXPROCS(0),
		SysInterval:            DefaultSysInterval,
		MemoryReturnAfter:      DefaultMemoryReturnAfter,
		Version:                DefaultVersion,
		TopicAliasMaximum:      DefaultTopicAliasMaximum,
		Logger:                 slog.Default(),
	}
	want.Limits.EnsureDefaults() // Limits documents and tests its own defaults
	want.HookOptions.ensureDefaults()
	want.Cluster.EnsureDefaults()
	if !reflect.DeepEqual(o, want) {
		t.Errorf("EnsureDefaults on zero Options:\n got %+v\nwant %+v", o, want)
	}
	again := o
	again.EnsureDefaults()
	if !reflect.DeepEqual(again, o) {
		t.Errorf("EnsureDefaults is not idempotent:\n first %+v\nsecond %+v", o, again)
	}
	if err := o.Validate(); err != nil {
		t.Errorf("defaults do not validate: %v", err)
	}

	// The derived default follows the field it derives from, and a value
	// that is set is kept.
	d := Options{ReceiveMaximum: 10, EventLoops: 3, TopicAliasMaximum: -1, SysInterval: -1}
	d.EnsureDefaults()
	if d.MaxInboundQoS2 != 10 || d.EventLoops != 3 || d.TopicAliasMaximum != -1 || d.SysInterval != -1 {
		t.Errorf("got MaxInboundQoS2 %d EventLoops %d TopicAliasMaximum %d SysInterval %v; want 10 3 -1 -1ns",
			d.MaxInboundQoS2, d.EventLoops, d.TopicAliasMaximum, d.SysInterval)
	}

	// A WebSocket listener's path default is filled in a copy: the
	// caller's slice is not written to.
	ws := []WebSocketListener{{Addr: "127.0.0.1:0"}, {Addr: "127.0.0.1:0", Path: "/x"}}
	w := Options{WebSocketListeners: ws}
	w.EnsureDefaults()
	if w.WebSocketListeners[0].Path != DefaultWebSocketPath || w.WebSocketListeners[1].Path != "/x" || ws[0].Path != "" {
		t.Errorf("websocket paths %+v (caller's %+v)", w.WebSocketListeners, ws)
	}
}

func TestValidateReportsEveryProblemNamingKeys(t *testing.T) {
	o := Options{
		Listeners:          []string{"tcp://0.0.0.0:1883", "127.0.0.1:0"},
		TLSListeners:       []TLSListener{{Addr: "0.0.0.0:8883"}},
		WebSocketListeners: []WebSocketListener{{Addr: "nohost", Path: "mqtt", CertFile: "c.pem"}},
		Durability:         "fast",
		SyncInterval:       time.Hour,
		MaxInFlightGroups:  2000,
		MaxPacketSize:      1,
		ConnectTimeout:     -time.Second,
		ReceiveMaximum:     70000,
		MaxInboundQoS2:     -1,
		MaxQueuedMessages:  -1,
		MaxQueuedBytes:     -1,
		QueuePolicy:        "drop_random",
		MaxOutboundBytes:   -1,
		MaxTopicLevels:     -1,
		MaxSessionExpiry:   -time.Hour,
		EventLoops:         5000,
		AdminListen:        "9883",
		TopicAliasMaximum:  1 << 20,
		// [MQTT-1.5.4-1]: an MQTT UTF-8 string must be well-formed UTF-8.
		ResponseInformation: "reply/\xff/",
	}
	o.EnsureDefaults()
	err := o.Validate()
	if err == nil {
		t.Fatal("Validate accepted every bad field")
	}
	msg := err.Error()
	for _, want := range []string{
		"listeners[0]: give host:port without a scheme",
		"tls_listeners[0]: needs cert_file and key_file",
		"websocket_listeners[0].addr: want host:port",
		"websocket_listeners[0].path: must start with /",
		"websocket_listeners[0]: needs both cert_file and key_file",
		`durability: must be sync, periodic or none, got "fast"`,
		"sync_interval: must be between 1ms and 1m0s, got 1h0m0s",
		"max_inflight_groups: must be between 1 and 1024, got 2000",
		"max_packet_size: must be between 64 and 268435460, got 1",
		"connect_timeout: must be a positive duration",
		"receive_maximum: must be between 1 and 65535, got 70000",
		"max_inbound_qos2: must be between 1 and 65535, got -1",
		"max_queued_messages: must be at least 1",
		"max_queued_bytes: must be at least 1",
		`queue_policy: must be drop_newest or drop_oldest, got "drop_random"`,
		"max_outbound_bytes: must be at least 1",
		"max_topic_levels: must be at least 1",
		"max_session_expiry: must be a positive duration",
		"event_loops: must be between 1 and 1024, got 5000",
		"admin_listen: want host:port",
		"topic_alias_maximum: must be at most 65535",
		"response_information: must be valid UTF-8",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("missing %q in:\n%s", want, msg)
		}
	}
	// One problem per line, and only the bad listener reported.
	if n := strings.Count(msg, "\n") + 1; n != 22 {
		t.Errorf("got %d problems, want 22:\n%s", n, msg)
	}
	if strings.Contains(msg, "listeners[1]") {
		t.Errorf("a good listener was reported:\n%s", msg)
	}
	if _, err := New(o); err == nil || !strings.Contains(err.Error(), "max_packet_size") {
		t.Errorf("New: got %v, want the joined validation error", err)
	}
}

func TestValidateEnhancedAuthAndUnsetDefaults(t *testing.T) {
	// Validate without EnsureDefaults: a zero where a default belongs is
	// out of range, and says so under its key.
	var o Options
	err := o.Validate()
	for _, key := range []string{"listeners:", "max_packet_size:", "receive_maximum:", "event_loops:", "sys_interval:", "queue_policy:", "Logger:"} {
		if err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("zero Options: %v does not name %s", err, key)
		}
	}
	o.EnsureDefaults()
	o.EnhancedAuth = []EnhancedAuthenticator{nil}
	if err := o.Validate(); err == nil || !strings.Contains(err.Error(), "EnhancedAuth[0]: is nil") {
		t.Errorf("nil enhanced authenticator: got %v", err)
	}
}

func TestLogValueNamesEveryFileKey(t *testing.T) {
	var o Options
	o.EnsureDefaults()
	got := map[string]bool{}
	for _, a := range o.LogValue().Group() {
		got[a.Key] = true
	}
	for key := range fileKeys(t) {
		if !got[key] {
			t.Errorf("LogValue leaves out %s", key)
		}
	}
}

func TestQueuePolicyMapsToQueue(t *testing.T) {
	if QueueDropNewest.qos() != qos.DropNewest || QueueDropOldest.qos() != qos.DropOldest {
		t.Fatal("QueuePolicy does not map to the qos policy of the same name")
	}
}

// TestQueuePolicyOnBroker fills an offline session's queue past
// MaxQueuedMessages on a real broker and checks which messages the
// reconnecting client gets: the first ones under drop_newest (nothing
// accepted is lost), the last ones under drop_oldest.
func TestQueuePolicyOnBroker(t *testing.T) {
	for _, tc := range []struct {
		policy QueuePolicy
		want   []string
	}{
		{QueueDropNewest, []string{"m1", "m2"}},
		{QueueDropOldest, []string{"m2", "m3"}},
	} {
		t.Run(string(tc.policy), func(t *testing.T) {
			srv, addr := startBroker(t, func(o *Options) {
				o.MaxQueuedMessages = 2
				o.QueuePolicy = tc.policy
				o.Durability = DurabilityNone
			})
			connect := func() *mqtttest.Conn {
				c, err := mqtttest.Dial(addr)
				if err != nil {
					t.Fatal(err)
				}
				if ack, err := c.Connect(codec.Connect{ClientID: []byte("queued"), KeepAlive: 60}); err != nil || ack.ReasonCode != 0 {
					t.Fatalf("connect: %v %+v", err, ack)
				}
				return c
			}
			c := connect()
			if _, err := c.Subscribe(1, nil, codec.Subscription{Filter: []byte("q/t"), QoS: 1}); err != nil {
				t.Fatal(err)
			}
			c.Disconnect()
			waitFor(t, "session offline", func() bool { return srv.Stats().Connected == 0 })
			for _, m := range []string{"m1", "m2", "m3"} {
				if err := srv.Publish("q/t", []byte(m), 1, false); err != nil {
					t.Fatal(err)
				}
			}
			waitFor(t, "one message dropped", func() bool { return srv.Stats().MessagesDropped == 1 })
			c = connect()
			defer c.Close()
			var got []string
			for len(got) < len(tc.want) {
				pkt, err := c.Next(time.Now().Add(5 * time.Second))
				if err != nil {
					t.Fatalf("after %v: %v", got, err)
				}
				p, ok := pkt.(*codec.Publish)
				if !ok {
					continue
				}
				got = append(got, string(p.Payload))
				if err := c.Ack(codec.PUBACK, p.PacketID); err != nil {
					t.Fatal(err)
				}
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

// waitFor polls cond for up to five seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A TLS listener's mutual-TLS settings are checked as a whole: an
// identity needs verified certificates, verification needs a CA, and
// unknown modes, sources and versions are named with their key.
func TestValidateTLSListenerClientCertificates(t *testing.T) {
	o := Options{TLSListeners: []TLSListener{
		{Addr: "127.0.0.1:0", CertFile: "c", KeyFile: "k", ClientAuth: "optional", IdentityFrom: "serial", MinVersion: "1.1"},
		{Addr: "127.0.0.1:0", CertFile: "c", KeyFile: "k", ClientAuth: "require"},
		{Addr: "127.0.0.1:0", CertFile: "c", KeyFile: "k", IdentityFrom: "cn", ExpiryWarningDays: -1},
		{Addr: "127.0.0.1:0", CertFile: "c", KeyFile: "k", ClientCAFile: "ca", ClientAuth: "request", IdentityFrom: "san_email"},
	}}
	o.EnsureDefaults()
	if o.TLSListeners[2].ClientAuth != DefaultTLSClientAuth || o.TLSListeners[0].ExpiryWarningDays != DefaultTLSExpiryWarningDays {
		t.Errorf("defaults not filled: %+v", o.TLSListeners)
	}
	err := o.Validate()
	if err == nil {
		t.Fatal("accepted")
	}
	msg := err.Error()
	for _, want := range []string{
		`tls_listeners[0].min_version: must be "1.2" or "1.3", got "1.1"`,
		`tls_listeners[0].client_auth: must be none, request or require, got "optional"`,
		`tls_listeners[0].identity_from: must be cn, subject, san_dns, san_email or san_uri (or empty), got "serial"`,
		"tls_listeners[1].client_ca_file: client_auth require needs the CA",
		"tls_listeners[2].identity_from: needs client_auth request or require",
		"tls_listeners[2].expiry_warning_days: must not be negative",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("missing %q in:\n%s", want, msg)
		}
	}
	if n := strings.Count(msg, "\n") + 1; n != 6 || strings.Contains(msg, "tls_listeners[3]") {
		t.Errorf("got %d problems, want 6, none for the good listener:\n%s", n, msg)
	}
}
