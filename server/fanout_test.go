package server

import (
	"fmt"
	"testing"
	"time"

	"github.com/ternmq/tern/codec"
)

// TestFanOutCrossLoopOneWakePerMessage fans messages out from one
// publisher to subscribers on both event loops, one message at a time, and
// checks that every subscriber gets every message in order [MQTT-4.6.0-6]
// and that the loop without the publisher was woken once per message, not
// once per subscriber of it: route gathers the cross-loop wake-ups of a
// message and hands each target loop its list in one go (loop.go).
func TestFanOutCrossLoopOneWakePerMessage(t *testing.T) {
	srv, addr := startBroker(t, func(o *Options) {
		o.EventLoops = 2
		o.SysInterval = -1 // no $SYS deliveries inside the window
	})
	const nsubs, nmsgs = 20, 100
	subs := make([]*rawConn, nsubs)
	for i := range subs {
		subs[i] = dialRaw(t, addr)
		subs[i].connect(codec.Connect{ClientID: []byte(fmt.Sprintf("fan-sub-%d", i)), CleanStart: true}, 0)
		if got := subs[i].subscribe(1, "fan/t", 0); len(got) != 1 || got[0] != 0 {
			t.Fatalf("SUBACK %v", got)
		}
	}
	pub := dialRaw(t, addr)
	pub.connect(codec.Connect{ClientID: []byte("fan-pub"), CleanStart: true}, 0)

	pubLoop := ownerLoop(t, srv, "fan-pub")
	var remote *loop
	perLoop := map[*loop]int{}
	for i := range subs {
		l := ownerLoop(t, srv, fmt.Sprintf("fan-sub-%d", i))
		perLoop[l]++
		if l != pubLoop {
			remote = l
		}
	}
	if remote == nil || perLoop[pubLoop] == 0 {
		t.Fatalf("subscribers per loop %v: want some on each loop", perLoop)
	}
	before := remote.wakeups.Load()
	for n := 0; n < nmsgs; n++ {
		pub.publish(codec.Publish{Topic: []byte("fan/t"), Payload: []byte(fmt.Sprint(n))})
		for i, s := range subs {
			p := s.readPublish(5 * time.Second)
			if string(p.Payload) != fmt.Sprint(n) {
				t.Fatalf("subscriber %d: message %q, want %d", i, p.Payload, n)
			}
		}
	}
	wakes := remote.wakeups.Load() - before
	t.Logf("%d subscribers on the publisher's loop, %d on the other; %d wake-ups of the other loop for %d messages",
		perLoop[pubLoop], perLoop[remote], wakes, nmsgs)
	if wakes > nmsgs {
		t.Fatalf("%d wake-ups of the other loop for %d messages: want at most one per message", wakes, nmsgs)
	}
}

// ownerLoop returns the loop of the connection that owns client id's session.
func ownerLoop(t *testing.T, srv *Server, id string) *loop {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if s := srv.sessions.get(id); s != nil {
			s.mu.Lock()
			o := s.owner
			s.mu.Unlock()
			if o != nil {
				return o.loop
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no connected session %q", id)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
