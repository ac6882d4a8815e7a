package server

// Shutdown while QoS 1 deliveries are in flight: Server.Close must return
// (and Serve with it) however busy the broker is — deliveries to 100
// subscribers in flight, publishers paced by full queues (pace.go),
// connections closing at the same moment. These tests repeat the shutdown
// and, should one hang, fail with every goroutine's stack.
//
// Origin: a QoS 1 variant of BenchmarkFanOut100 was seen to hang now and
// then "during shutdown". Its goroutine dump (SIGQUIT after 90 s without
// progress, benchtime 3000x) showed the broker idle in epoll_wait, the
// benchmark in wg.Wait for a delivery, and none of the 100 subscriber
// readers alive: they had read NetConn directly after mqtttest's SUBACK,
// with the 5 s read deadline of that SUBACK still set, so every run longer
// than 5 s (QoS 1 at ~4-6 ms/op on a loaded machine: any b.N over ~1,000)
// lost its readers and waited forever. Not a broker bug: mqtttest now
// clears its deadlines (TestNoDeadlineLeftBehind), and 3000x runs finish.

import (
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ternmq/tern/codec"
)

// closeWithin closes srv and waits for Serve's result on errc; after d it
// fails the test with the stacks of every goroutine.
func closeWithin(t *testing.T, srv *Server, errc <-chan error, d time.Duration) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- srv.Close() }()
	timeout := time.After(d)
	for _, what := range []string{"Close", "Serve"} {
		var err error
		select {
		case err = <-done:
			done = nil
		case err = <-errc:
			errc = nil
		case <-timeout:
			buf := make([]byte, 8<<20)
			buf = buf[:runtime.Stack(buf, true)]
			_ = os.WriteFile(fmt.Sprintf("%s/shutdown-hang-%d.txt", os.TempDir(), os.Getpid()), buf, 0o644)
			t.Fatalf("shutdown hung for %v (%s not returned); goroutines:\n%s", d, what, buf)
		}
		if err != nil {
			t.Errorf("%s: %v", what, err)
		}
	}
}

// fanOutQoS1 connects nsubs raw QoS 1 subscribers to topic (persistent
// ones when !clean) and a raw publisher that writes QoS 1 PUBLISHes as
// fast as its socket takes them. Subscribers with index below slow read
// nothing (their queues fill and pace the publisher); the others read and
// acknowledge everything. It returns the connections, to close or not.
func fanOutQoS1(t *testing.T, addr, topic string, nsubs, slow int, clean bool, stop <-chan struct{}) []net.Conn {
	t.Helper()
	var conns []net.Conn
	for i := 0; i < nsubs; i++ {
		s := dialRaw(t, addr)
		s.connect(codec.Connect{ClientID: []byte(fmt.Sprintf("sd-sub-%d", i)), CleanStart: clean, KeepAlive: 60}, 0)
		if got := s.subscribe(1, topic, 1); len(got) != 1 || got[0] != 1 {
			t.Fatalf("SUBACK %v", got)
		}
		conns = append(conns, s.c)
		if i < slow {
			continue
		}
		go func(c net.Conn) { // acknowledge every PUBLISH
			var buf []byte
			rd := make([]byte, 32<<10)
			for {
				n, err := c.Read(rd)
				if err != nil {
					return
				}
				buf = append(buf, rd[:n]...)
				var out []byte
				for {
					h, body, k, err := codec.ReadPacket(buf, 1<<20)
					if err != nil {
						break
					}
					if h.Type == codec.PUBLISH {
						var p codec.Publish
						if p.Decode(h, body, codec.Version311) == nil && p.QoS == 1 {
							out = (&codec.Ack{Type: codec.PUBACK, PacketID: p.PacketID}).Append(out, codec.Version311)
						}
					}
					buf = buf[k:]
				}
				if len(out) > 0 {
					if _, err := c.Write(out); err != nil {
						return
					}
				}
			}
		}(s.c)
	}
	pub := dialRaw(t, addr)
	pub.connect(codec.Connect{ClientID: []byte("sd-pub"), CleanStart: true, KeepAlive: 60}, 0)
	conns = append(conns, pub.c)
	go func() { _, _ = io.Copy(io.Discard, pub.c) }() // PUBACKs
	go func() {
		var out []byte
		for id := 1; ; id = id%65535 + 1 {
			select {
			case <-stop:
				return
			default:
			}
			out = (&codec.Publish{Topic: []byte(topic), QoS: 1, PacketID: uint16(id), Payload: make([]byte, 64)}).Append(out[:0], codec.Version311)
			_ = pub.c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
			if _, err := pub.c.Write(out); err != nil && !isTimeout(err) {
				return
			}
		}
	}()
	return conns
}

// Close returns while QoS 1 deliveries to 100 subscribers are in flight
// and, with slow subscribers, the publisher is paced; repeated, with the
// connections left open, closing at the same moment as Close (as at the
// end of BenchmarkFanOut100, whose cleanups close the clients first), and
// with persistent subscribers (their deliveries go through the store while
// it closes).
func TestShutdownDuringQoS1FanOut(t *testing.T) {
	rounds := 4 // TERN_SHUTDOWN_ROUNDS=50 to look harder
	if n, err := strconv.Atoi(os.Getenv("TERN_SHUTDOWN_ROUNDS")); err == nil && n > 0 {
		rounds = n
	} else if testing.Short() || raceEnabled {
		rounds = 1
	}
	for _, tc := range []struct {
		name       string
		slow       int
		clean      bool
		closeFirst bool
		queueLimit int
	}{
		{name: "reading", slow: 0, clean: true},
		{name: "paced", slow: 10, clean: true, queueLimit: 20},
		{name: "paced_closing", slow: 10, clean: true, queueLimit: 20, closeFirst: true},
		{name: "persistent", slow: 10, clean: false},
		{name: "persistent_closing", slow: 10, clean: false, closeFirst: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for r := 0; r < rounds; r++ {
				b := newQBroker(t, func(o *Options) {
					o.SysInterval = -1
					if tc.queueLimit > 0 {
						o.MaxQueuedMessages = tc.queueLimit
					}
				})
				srv, addr, errc := b.srv, b.addr, b.errc
				b.srv = nil // closed here, with a timeout, not by its cleanup
				stop := make(chan struct{})
				conns := fanOutQoS1(t, addr, "sd/t", 100, tc.slow, tc.clean, stop)
				time.Sleep(time.Duration(50+r*17%150) * time.Millisecond) // deliveries in flight
				if tc.slow > 0 && tc.clean && srv.stats.paced.Load() == 0 {
					t.Logf("round %d: the publisher was not paced yet", r)
				}
				var wg sync.WaitGroup
				if tc.closeFirst {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for _, c := range conns {
							_ = c.Close()
						}
					}()
				}
				closeWithin(t, srv, errc, 20*time.Second)
				close(stop)
				wg.Wait()
				for _, c := range conns {
					_ = c.Close()
				}
			}
		})
	}
}
