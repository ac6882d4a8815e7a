package server

import (
	"fmt"
	"testing"
	"time"

	"github.com/ternmq/tern/codec"
	"github.com/ternmq/tern/internal/mqtttest"
)

// collectShared reads PUBLISHes on c until n arrived or d passed, acking
// them when ack is set; it returns the payloads.
func collectShared(t *testing.T, c *mqtttest.Conn, n int, d time.Duration, ack bool) []string {
	t.Helper()
	var got []string
	deadline := time.Now().Add(d)
	for len(got) < n {
		pkt, err := c.Next(deadline)
		if err != nil {
			break
		}
		if p, ok := pkt.(*codec.Publish); ok {
			got = append(got, string(p.Payload))
			if ack && p.QoS == 1 {
				_ = c.Ack(codec.PUBACK, p.PacketID)
			}
		}
	}
	return got
}

// A member of a $share group that leaves with messages it had not
// acknowledged (queued or in flight) does not take them along: another
// member gets them [MQTT-4.8.2-4 note]. Nothing sent to the group is lost
// while a member is connected.
func TestSharedRedispatchOnMemberExit_MQTT_4_8_2(t *testing.T) {
	srv, addr := startBroker(t, nil)
	join := func(id string) *mqtttest.Conn {
		c, ack := connectAs(t, addr, codec.Connect{ProtocolVersion: codec.Version5, ClientID: []byte(id), CleanStart: true, KeepAlive: 60})
		if ack.ReasonCode != 0 {
			t.Fatal(ack.ReasonCode)
		}
		if _, err := c.Subscribe(1, nil, codec.Subscription{Filter: []byte("$share/g/jobs/#"), QoS: 1}); err != nil {
			t.Fatal(err)
		}
		return c
	}
	a, b := join("worker-a"), join("worker-b")
	const n = 40
	for i := 0; i < n; i++ {
		if err := srv.Publish(fmt.Sprintf("jobs/%d", i), []byte(fmt.Sprint(i)), 1, false); err != nil {
			t.Fatal(err)
		}
	}
	// a reads its share but acknowledges nothing, then dies.
	gotA := collectShared(t, a, n, 500*time.Millisecond, false)
	if len(gotA) == 0 {
		t.Fatal("round-robin gave worker-a nothing")
	}
	_ = a.Close()
	gotB := collectShared(t, b, n, 5*time.Second, true)
	seen := map[string]bool{}
	for _, p := range gotB {
		seen[p] = true
	}
	for i := 0; i < n; i++ {
		if !seen[fmt.Sprint(i)] {
			t.Errorf("job %d lost with worker-a (b got %d of %d; a had %d)", i, len(gotB), n, len(gotA))
			break
		}
	}
	if srv.stats.redispatched.Load() == 0 {
		t.Error("no redispatch counted")
	}
}

// A congested member (its queue over the limit) is passed over while
// another member can take messages.
func TestSharedSkipsCongestedMember(t *testing.T) {
	srv, addr := startBroker(t, func(o *Options) { o.MaxQueuedMessages = 20 })
	join := func(id string) *mqtttest.Conn {
		c, _ := connectAs(t, addr, codec.Connect{ClientID: []byte(id), CleanStart: true, KeepAlive: 60})
		if _, err := c.Subscribe(1, nil, codec.Subscription{Filter: []byte("$share/g/work"), QoS: 1}); err != nil {
			t.Fatal(err)
		}
		return c
	}
	_, live := join("stuck"), join("live") // stuck never reads nor acks: its window (64), then its queue fill up
	const n = 300
	res := make(chan []string, 1)
	go func() { res <- collectShared(t, live, n, 10*time.Second, true) }() // live keeps up
	for i := 0; i < n; i++ {
		if err := srv.Publish("work", []byte(fmt.Sprint(i)), 1, false); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond) // a steady stream live can keep up with
	}
	time.Sleep(time.Second)
	_ = live.Close() // ends the collector
	got := <-res
	// stuck takes at most its window plus the queue limit (and a little
	// slack for the round-robin race); live gets the rest.
	if len(got) < n-64-2*20-5 {
		t.Errorf("live got %d of %d: the congested member kept taking work", len(got), n)
	}
}
