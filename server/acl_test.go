package server

import (
	"strings"
	"testing"
	"time"

	"github.com/ternmq/tern/codec"
	"github.com/ternmq/tern/server/auth"
)

// With an ACL, a refused SUBSCRIBE gets 0x80 in SUBACK and a refused
// PUBLISH is acknowledged but not delivered (3.1.1 has no negative PUBACK).
func TestACLEnforced(t *testing.T) {
	a, _ := auth.ParseACL(strings.NewReader("pattern readwrite devices/%c/#\n"))
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

// acceptAll authenticates every client as the user it names, so that a
// test can act as several users without a password file.
type acceptAll struct{}

func (acceptAll) Authenticate(auth.ConnectInfo) error { return nil }

func connectUser(t *testing.T, addr, id, user string) *rawConn {
	t.Helper()
	c := dialRaw(t, addr)
	c.connect(codec.Connect{ClientID: []byte(id), CleanStart: true, KeepAlive: 30,
		UsernameFlag: true, Username: []byte(user)}, 0)
	return c
}

// Finding: "topic deny" lines were ignored, so "readwrite #" with
// "deny secret/#" still read and wrote secret/#. Through the broker: every
// filter that overlaps the denied subtree is refused in SUBACK (0x80), and
// a PUBLISH into it is acknowledged (3.1.1 has no negative PUBACK) but not
// delivered.
func TestACLDenyWinsOverGrantThroughBroker(t *testing.T) {
	a, err := auth.ParseACL(strings.NewReader("user admin\ntopic read #\nuser mallory\ntopic readwrite #\ntopic deny secret/#\n"))
	if err != nil {
		t.Fatal(err)
	}
	_, addr := startBroker(t, func(o *Options) { o.Authenticator, o.Authorizer = acceptAll{}, a })
	admin := connectUser(t, addr, "admin-1", "admin")
	if codes := admin.subscribe(1, "#", 1); codes[0] != 1 {
		t.Fatalf("admin #: SUBACK %#x", codes[0])
	}
	m := connectUser(t, addr, "mallory-1", "mallory")
	for i, f := range []string{"secret/#", "#", "secret/+", "+/x", "$share/g/secret/#"} {
		if codes := m.subscribe(uint16(i+1), f, 1); codes[0] != 0x80 {
			t.Errorf("mallory %s: SUBACK %#x, want 0x80", f, codes[0])
		}
	}
	if codes := m.subscribe(10, "public/#", 1); codes[0] != 1 {
		t.Fatalf("mallory public/#: SUBACK %#x", codes[0])
	}
	m.publish(codec.Publish{QoS: 1, PacketID: 11, Topic: []byte("secret/x"), Payload: []byte("leak")})
	m.readAck(5*time.Second, codec.PUBACK)
	m.publish(codec.Publish{QoS: 1, PacketID: 12, Topic: []byte("public/x"), Payload: []byte("fine")})
	for {
		p := admin.readPublish(5 * time.Second)
		if string(p.Payload) == "leak" {
			t.Fatal("a publish into a denied subtree was delivered")
		}
		if string(p.Payload) == "fine" {
			break
		}
	}
}

// Finding: a '#' grant covered $SYS/#. Through the broker: "readwrite #"
// does not let a client subscribe to $SYS topics [MQTT-4.7.2-1]; an
// explicit "topic read $SYS/#" does.
func TestACLDollarSysNotGrantedByWildcardThroughBroker_MQTT_4_7_2_1(t *testing.T) {
	a, err := auth.ParseACL(strings.NewReader("user mallory\ntopic readwrite #\nuser ops\ntopic read $SYS/#\n"))
	if err != nil {
		t.Fatal(err)
	}
	_, addr := startBroker(t, func(o *Options) { o.Authenticator, o.Authorizer = acceptAll{}, a })
	m := connectUser(t, addr, "mallory-1", "mallory")
	for i, f := range []string{"$SYS/#", "$SYS/broker/uptime", "$share/g/$SYS/#"} {
		if codes := m.subscribe(uint16(i+1), f, 0); codes[0] != 0x80 {
			t.Errorf("mallory %s: SUBACK %#x, want 0x80", f, codes[0])
		}
	}
	ops := connectUser(t, addr, "ops-1", "ops")
	if codes := ops.subscribe(1, "$SYS/broker/#", 0); codes[0] != 0 {
		t.Errorf("ops $SYS/broker/#: SUBACK %#x, want 0", codes[0])
	}
}
