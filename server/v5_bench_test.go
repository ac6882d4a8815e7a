package server

import (
	"bufio"
	"fmt"
	"io"
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
}

// run sends n messages through the broker at addr and returns how long it
// took until the subscriber had them all.
func (sc loopbackScenario) run(b *testing.B, srv *Server, addr string, n int, tag string) time.Duration {
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

	payload := make([]byte, 64)
	done := make(chan error, 1)
	base := int(srv.Stats().MessagesDropped)
	dropped := func() int { return int(srv.Stats().MessagesDropped) - base }
	go func() { done <- drainSubscriber(sub.c, sub.buf, n, sc.qos, dropped) }()
	window := make(chan struct{}, 64)
	go func() {
		if sc.qos == 0 {
			_, _ = io.Copy(io.Discard, pub.c)
			return
		}
		countAcks(pub.c, pub.buf, window)
	}()
	w := bufio.NewWriterSize(pub.c, 64<<10)
	p := codec.Publish{Topic: []byte("bench/" + tag), Payload: payload, QoS: sc.qos}
	var buf []byte
	start := time.Now()
	for i := 0; i < n; i++ {
		if sc.qos > 0 {
			p.PacketID = uint16(i%65535) + 1
			select {
			case window <- struct{}{}:
			default:
				_ = w.Flush()
				window <- struct{}{}
			}
		}
		if sc.alias {
			p.Props.TopicAlias = 1
			p.Props.Set(codec.PropTopicAlias)
			if i == 1 {
				p.Topic = nil
			}
		}
		buf = p.Append(buf[:0], sc.version)
		if _, err := w.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		b.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			b.Fatal(err)
		}
	case <-time.After(60 * time.Second):
		b.Fatal("subscriber did not receive every message")
	}
	return time.Since(start)
}

// BenchmarkLoopbackPubSubV5 is BenchmarkLoopbackPubSub for 3.1.1 and 5.0
// clients side by side (and 5.0 with topic aliases both ways).
func BenchmarkLoopbackPubSubV5(b *testing.B) {
	for _, q := range []byte{0, 1} {
		for _, sc := range []loopbackScenario{{version: codec.Version311}, {version: codec.Version5}, {version: codec.Version5, alias: true}} {
			sc.qos = q
			name := fmt.Sprintf("qos%d/%s", q, versionName(sc.version))
			if sc.alias {
				name += "+alias"
			}
			b.Run(name, func(b *testing.B) {
				srv, addr := startBroker(b, nil)
				b.ReportAllocs()
				b.SetBytes(64)
				b.ResetTimer()
				el := sc.run(b, srv, addr, b.N, "t")
				b.ReportMetric(float64(b.N)/el.Seconds(), "delivered/s")
			})
		}
	}
}

// BenchmarkV5VersusV311 runs the same scenario with 3.1.1 and then 5.0
// clients on one broker and reports the 5.0/3.1.1 time ratio (1.00 = as
// fast; above 1 = 5.0 slower).
func BenchmarkV5VersusV311(b *testing.B) {
	for _, q := range []byte{0, 1} {
		b.Run(fmt.Sprintf("qos%d", q), func(b *testing.B) {
			srv, addr := startBroker(b, nil)
			b.ReportAllocs()
			b.ResetTimer()
			t311 := loopbackScenario{version: codec.Version311, qos: q}.run(b, srv, addr, b.N, "v311")
			t5 := loopbackScenario{version: codec.Version5, qos: q}.run(b, srv, addr, b.N, "v5")
			b.ReportMetric(float64(t311.Nanoseconds())/float64(b.N), "ns/msg-3.1.1")
			b.ReportMetric(float64(t5.Nanoseconds())/float64(b.N), "ns/msg-5.0")
			b.ReportMetric(t5.Seconds()/t311.Seconds(), "v5/v311")
		})
	}
}
