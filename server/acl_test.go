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
