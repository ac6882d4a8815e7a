package server

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/ternmq/tern/codec"
)

// loopbackScenario is BenchmarkLoopbackPubSub's scenario with the protocol
// version as a parameter: one raw publisher pipelines n PUBLISHes of 64
// bytes on one topic, one raw subscriber reads them. QoS 1 publishers keep
// at most 64 unacknowledged (the broker's default Receive Maximum, which a
// 5.0 client must respect). alias makes the 5.0 publisher send the topic
// once and then only a topic alias, and the subscriber accept aliases.
type loopbackScenario struct {
	version byte
	qos     byte
	alias   bool
	window  int // QoS 1 publisher's unacknowledged PUBLISHes; 0 = 64
}

// run sends n messages through the broker at addr and returns how long it
// took until the subscriber had them all (but those the broker dropped by
// policy, also returned). srv may be nil for a broker in another process.
func (sc loopbackScenario) run(b *testing.B, srv *Server, addr string, n int, tag string) (time.Duration, int) {
	subConnect := codec.Connect{ProtocolVersion: sc.version, ClientID: []byte("bsub-" + tag), CleanStart: true}
	if sc.alias {
		subConnect.Props.TopicAliasMaximum = 10
		subConnect.Props.Set(codec.PropTopicAliasMaximum)
	}
	sub := dialRaw(b, addr)
	sub.connect(subConnect, 0)
	sub.subscribe(1, "bench/"+tag, sc.qos)
	pub := dialRaw(b, addr)
	pub.connect(codec.Connect{ProtocolVersion: sc.version, ClientID: []byte("bpub-" + tag), CleanStart: true}, 0)
	defer sub.c.Close()
	defer pub.c.Close()

	done := make(chan error, 1)
	dropped := func() int { return 0 } // srv nil: a broker in another process, measured at QoS 1 (nothing dropped)
	if srv != nil {
		base := int(srv.Stats().MessagesDropped)
		dropped = func() int { return int(srv.Stats().MessagesDropped) - base }
	}
	go func() { done <- drainSubscriber(sub.c, sub.mc.Buffered(), n, sc.qos, dropped) }()
	start := time.Now()
	pipelinePublish(b, pub, "bench/"+tag, sc.version, sc.qos, n, sc.window, sc.alias, done)
	select {
	case err := <-done:
		if err != nil {
			b.Fatal(err)
		}
	case <-time.After(60 * time.Second):
		b.Fatal("subscriber did not receive every message")
	}
	return time.Since(start), dropped()
}

// BenchmarkLoopbackPubSub measures publish→deliver through the real broker
// over loopback TCP: one raw 3.1.1 publisher pipelines PUBLISHes (at QoS 1
// keeping at most 256 unacknowledged, as real clients bound their inflight),
// one raw subscriber reads them. allocs/op includes the broker's
// per-message allocations (one message copy) plus the benchmark's own.
func BenchmarkLoopbackPubSub(b *testing.B) {
	for _, q := range []byte{0, 1} {
		b.Run(fmt.Sprintf("qos%d", q), func(b *testing.B) {
			srv, addr := startBroker(b, nil)
			b.ReportAllocs()
			b.SetBytes(64)
			b.ResetTimer()
			el, d := loopbackScenario{version: codec.Version311, qos: q, window: 256}.run(b, srv, addr, b.N, "t")
			b.ReportMetric(float64(b.N-d)/el.Seconds(), "delivered/s")
			b.ReportMetric(float64(d)/float64(b.N)*100, "%dropped")
		})
	}
}

// pipelinePublish sends n PUBLISHes of 64 bytes on topic from pub, QoS
// 1/2 keeping at most window (0: 64) unacknowledged; alias makes a 5.0
// publisher send the topic once and then only a topic alias.
// A receive from subscriberDone (nil: none) while waiting for a window
// slot fails the benchmark: the subscriber gave up, so no PUBACK may come
// any more (the broker paces the publisher).
func pipelinePublish(b *testing.B, pub *rawConn, topic string, version, qos byte, n, window int, alias bool, subscriberDone <-chan error) {
	if window == 0 {
		window = 64
	}
	slots := make(chan struct{}, window)
	go func() {
		if qos == 0 {
			_, _ = io.Copy(io.Discard, pub.c)
			return
		}
		countAcks(pub.c, pub.mc.Buffered(), slots)
	}()
	w := bufio.NewWriterSize(pub.c, 64<<10)
	p := codec.Publish{Topic: []byte(topic), Payload: make([]byte, 64), QoS: qos}
	var buf []byte
	for i := 0; i < n; i++ {
		if qos > 0 {
			p.PacketID = uint16(i%65535) + 1
			select {
			case slots <- struct{}{}:
			default:
				_ = w.Flush()
				select {
				case slots <- struct{}{}:
				case err := <-subscriberDone:
					b.Fatalf("subscriber stopped after %d published: %v", i, err)
				}
			}
		}
		if alias {
			p.Props.TopicAlias = 1
			p.Props.Set(codec.PropTopicAlias)
			if i == 1 {
				p.Topic = nil
			}
		}
		buf = p.Append(buf[:0], version)
		if _, err := w.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		b.Fatal(err)
	}
}

// drainSubscriber reads PUBLISHes until n minus those the broker dropped
// (QoS 0 slow-consumer policy) arrived, acknowledging QoS 1.
func drainSubscriber(c net.Conn, pending []byte, n int, q byte, dropped func() int) error {
	buf := append(make([]byte, 0, 256<<10), pending...)
	chunk := make([]byte, 128<<10)
	var acks []byte
	got := 0
	_ = c.SetReadDeadline(time.Now().Add(60 * time.Second))
	for got < n-dropped() {
		for {
			h, body, size, err := codec.ReadPacket(buf, 0)
			if err == codec.ErrIncomplete {
				break
			}
			if err != nil {
				return err
			}
			if h.Type == codec.PUBLISH {
				got++
				if q > 0 {
					at := 2 + (int(body[0])<<8 | int(body[1]))
					id := uint16(body[at])<<8 | uint16(body[at+1])
					acks = append(acks, 0x40, 0x02, byte(id>>8), byte(id))
				}
			}
			buf = buf[size:]
		}
		if len(acks) > 0 {
			if _, err := c.Write(acks); err != nil {
				return err
			}
			acks = acks[:0]
		}
		if got >= n-dropped() {
			break
		}
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		k, err := c.Read(chunk)
		if ne, ok := err.(net.Error); ok && ne.Timeout() && got >= n-dropped() {
			break
		}
		if err != nil {
			return fmt.Errorf("after %d messages: %w", got, err)
		}
		buf = append(buf, chunk[:k]...)
	}
	return nil
}

// countAcks frees one window slot per PUBACK read from c.
func countAcks(c net.Conn, pending []byte, window chan struct{}) {
	buf := append([]byte(nil), pending...)
	chunk := make([]byte, 64<<10)
	for {
		for {
			h, _, n, err := codec.ReadPacket(buf, 0)
			if err != nil {
				break
			}
			if h.Type == codec.PUBACK {
				<-window
			}
			buf = buf[n:]
		}
		k, err := c.Read(chunk)
		if err != nil {
			return
		}
		buf = append(buf, chunk[:k]...)
	}
}
