package server

import (
	"fmt"
	"io"
	"net"
	"sync/atomic"
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

// BenchmarkFanOut100 is the latency of one fan-out through the real broker
// over loopback TCP: each op publishes one 64-byte message to 100 raw
// subscribers (spread over both event loops) and waits until the last of
// them has read it, so ns/op is the time from the publisher's write to the
// 100th delivery read, one message at a time. allocs/op is the whole process's per
// message, the readers' included (they allocate nothing): the message copy
// and the cross-loop hand-off (gnet's Execute) — not one per subscriber.
// qos1: the subscribers acknowledge each delivery from their reader
// goroutines (the broker's window and PUBACK handling in the loop).
func BenchmarkFanOut100(b *testing.B) {
	b.Run("qos0", func(b *testing.B) { benchFanOut(b, 100, 0) })
	b.Run("qos1", func(b *testing.B) { benchFanOut(b, 100, 1) })
}

func benchFanOut(b *testing.B, nsubs int, q byte) {
	_, addr := startBroker(b, func(o *Options) {
		o.EventLoops = 2
		o.SysInterval = -1
	})
	const topic = "fan/bench"
	in := (&codec.Publish{Topic: []byte(topic), QoS: q, PacketID: 1, Payload: make([]byte, 64)}).Append(nil, codec.Version311)
	idAt := 2 + 2 + len(topic) // fixed header, topic length, topic
	// left counts the deliveries of the current message still unread; the
	// reader that reads the last one signals done. A reader that fails
	// reports on errs, so the benchmark fails instead of waiting forever.
	var left atomic.Int64
	done := make(chan struct{}, 1)
	errs := make(chan error, nsubs)
	stop := make(chan struct{})
	defer close(stop)
	for i := 0; i < nsubs; i++ {
		s := dialRaw(b, addr)
		s.connect(codec.Connect{ClientID: []byte(fmt.Sprintf("fanb-%d", i)), CleanStart: true}, 0)
		if got := s.subscribe(1, topic, q); len(got) != 1 || got[0] != codec.ReasonCode(q) {
			b.Fatalf("SUBACK %v", got)
		}
		// The helper's reads and writes left deadlines on the socket (5 s
		// after the SUBACK): a run longer than that, on a loaded machine
		// or at QoS 1, would have every reader time out and the benchmark
		// wait for them forever.
		_ = s.c.SetDeadline(time.Time{})
		go func(c net.Conn) {
			out := make([]byte, len(in)) // same topic, QoS and payload: same size
			ack := (&codec.Ack{Type: codec.PUBACK}).Append(nil, codec.Version311)
			for {
				if _, err := io.ReadFull(c, out); err != nil {
					select {
					case <-stop:
					default:
						errs <- fmt.Errorf("subscriber: %w", err)
					}
					return
				}
				if q > 0 {
					ack[2], ack[3] = out[idAt], out[idAt+1]
					if _, err := c.Write(ack); err != nil {
						select {
						case <-stop:
						default:
							errs <- fmt.Errorf("subscriber PUBACK: %w", err)
						}
						return
					}
				}
				if left.Add(-1) == 0 {
					done <- struct{}{}
				}
			}
		}(s.c)
	}
	pub := dialRaw(b, addr)
	pub.connect(codec.Connect{ClientID: []byte("fanb-pub"), CleanStart: true}, 0)
	_ = pub.c.SetDeadline(time.Time{})
	go func() { _, _ = io.Copy(io.Discard, pub.c) }() // PUBACKs
	stall := time.NewTimer(time.Hour)
	one := func(i int) {
		left.Store(int64(nsubs))
		if q > 0 { // a packet id per message in flight: 1..65535
			id := uint16(i%65535) + 1
			in[idAt], in[idAt+1] = byte(id>>8), byte(id)
		}
		if _, err := pub.c.Write(in); err != nil {
			b.Fatal(err)
		}
		stall.Reset(30 * time.Second)
		select {
		case <-done:
		case err := <-errs:
			b.Fatal(err)
		case <-stall.C:
			b.Fatalf("message %d: %d of %d deliveries still unread after 30 s", i, left.Load(), nsubs)
		}
	}
	for i := 0; i < 200; i++ { // warm: queues, buffers, hand-off slices at size
		one(i)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		one(200 + i)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*nsubs), "ns/delivery")
}
