package server

import (
	"testing"
	"time"

	"github.com/ternmq/tern/codec"
)

// A 5.0 will with Will Delay d is published no earlier than d after the
// connection drops [MQTT-3.1.3-9]: a one-second ticker must round up, not
// down (a 3 s delay used to fire after 2.9 s).
func TestWillDelayNeverEarly_MQTT_3_1_3_9(t *testing.T) {
	_, addr := startBroker(t, nil)
	sub, _ := connectAs(t, addr, codec.Connect{ProtocolVersion: codec.Version5, ClientID: []byte("watch"), CleanStart: true, KeepAlive: 30})
	if _, err := sub.Subscribe(1, nil, codec.Subscription{Filter: []byte("wills/#")}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		p := codec.Connect{ProtocolVersion: codec.Version5, ClientID: []byte("dev"), CleanStart: true, KeepAlive: 30,
			WillFlag: true, WillTopic: []byte("wills/dev"), WillPayload: []byte("gone")}
		p.Props.SessionExpiry = 60
		p.Props.Set(codec.PropSessionExpiry)
		p.WillProps.WillDelay = 1
		p.WillProps.Set(codec.PropWillDelay)
		dev, ack := connectAs(t, addr, p)
		if ack.ReasonCode != 0 {
			t.Fatal(ack.ReasonCode)
		}
		// Land the drop at a different phase of the broker's one-second tick each time.
		time.Sleep(time.Duration(i) * 330 * time.Millisecond)
		_ = dev.Close()
		dropped := time.Now()
		m, ok := nextPublish(t, sub, 5*time.Second)
		if !ok {
			t.Fatal("will not published")
		}
		if got := time.Since(dropped); got < time.Second {
			t.Errorf("will %s published %v after the drop, before its 1 s delay", m.Topic, got)
		}
	}
}
