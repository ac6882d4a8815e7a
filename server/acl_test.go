package server

import (
	"strings"
	"testing"
	"time"

	"github.com/ternmq/tern/codec"
)

const testACL = `
# anonymous
topic read public/#
user alice
topic readwrite sensors/#
topic write alerts/alice
topic read $SYS/#
pattern readwrite devices/%c/#
pattern read users/%u/inbox
`

func TestACLRules(t *testing.T) {
	a, err := ParseACL(strings.NewReader(testACL))
	if err != nil {
		t.Fatal(err)
	}
	pub := []struct {
		client, user, topic string
		ok                  bool
	}{
		{"c1", "alice", "sensors/a/temp", true},
		{"c1", "alice", "alerts/alice", true},
		{"c1", "alice", "alerts/bob", false},
		{"c1", "bob", "sensors/a", false},
		{"d1", "bob", "devices/d1/state", true},
		{"d1", "bob", "devices/d2/state", false},
		{"d+", "bob", "devices/d+/x", false}, // id with topic syntax gets no pattern
		{"c9", "", "public/x", false},        // anonymous: read only
		{"c1", "alice", "users/alice/inbox", false},
	}
	for _, tc := range pub {
		if got := a.CanPublish(tc.client, tc.user, tc.topic); got != tc.ok {
			t.Errorf("publish %s/%s %s: %v, want %v", tc.client, tc.user, tc.topic, got, tc.ok)
		}
	}
	sub := []struct {
		client, user, filter string
		ok                   bool
	}{
		{"c1", "alice", "sensors/#", true},
		{"c1", "alice", "sensors/+/temp", true},
		{"c1", "alice", "#", false},
		{"c1", "alice", "+/a", false},
		{"c1", "alice", "alerts/alice", false}, // write only
		{"c1", "alice", "$SYS/broker/uptime", true},
		{"c1", "bob", "users/bob/inbox", true},
		{"c1", "bob", "users/+/inbox", false},
		{"d1", "bob", "devices/d1/#", true},
		{"d1", "bob", "$share/g/devices/d1/cmd", true},
		{"c9", "", "public/news", true},
		{"c9", "", "public", true},
	}
	for _, tc := range sub {
		if got := a.CanSubscribe(tc.client, tc.user, tc.filter); got != tc.ok {
			t.Errorf("subscribe %s/%s %s: %v, want %v", tc.client, tc.user, tc.filter, got, tc.ok)
		}
	}
	if _, err := ParseACL(strings.NewReader("topic read a/#/b\nfoo bar\nuser\n")); err == nil ||
		!strings.Contains(err.Error(), "line 1") || !strings.Contains(err.Error(), "line 2") || !strings.Contains(err.Error(), "line 3") {
		t.Errorf("bad lines not all reported: %v", err)
	}
}

// With an ACL, a refused SUBSCRIBE gets 0x80 in SUBACK and a refused
// PUBLISH is acknowledged but not delivered (3.1.1 has no negative PUBACK).
func TestACLEnforced(t *testing.T) {
	a, _ := ParseACL(strings.NewReader("pattern readwrite devices/%c/#\n"))
	_, addr := startBroker(t, func(o *Options) { o.Authorizer = a })
	c := dialRaw(t, addr)
	c.connect(codec.Connect{ClientID: []byte("d1"), CleanStart: true, KeepAlive: 30}, 0)
	if codes := c.subscribe(1, "devices/d2/#", 1); codes[0] != 0x80 {
		t.Fatalf("foreign filter: SUBACK %#x", codes[0])
	}
	if codes := c.subscribe(2, "devices/d1/#", 1); codes[0] != 1 {
		t.Fatalf("own filter: SUBACK %#x", codes[0])
	}
	d2 := dialRaw(t, addr)
	d2.connect(codec.Connect{ClientID: []byte("d2"), CleanStart: true, KeepAlive: 30}, 0)
	d2.publish(codec.Publish{QoS: 1, PacketID: 1, Topic: []byte("devices/d1/cmd"), Payload: []byte("spoof")})
	d2.readAck(5*time.Second, codec.PUBACK)
	c.publish(codec.Publish{QoS: 1, PacketID: 3, Topic: []byte("devices/d1/state"), Payload: []byte("mine")})
	for {
		h, body := c.read(5 * time.Second)
		if h.Type != codec.PUBLISH {
			continue
		}
		var p codec.Publish
		_ = p.Decode(h, body, codec.Version311)
		if string(p.Payload) == "spoof" {
			t.Fatal("a publish the ACL refused was delivered")
		}
		if string(p.Payload) == "mine" {
			break
		}
	}
}
