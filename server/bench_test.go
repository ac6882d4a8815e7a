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

// BenchmarkLoopbackPubSub measures publish→deliver through the real broker
// over loopback TCP: one raw publisher pipelines PUBLISHes, one raw
// subscriber reads them. allocs/op includes the broker's per-message
// allocations (one message copy) plus the benchmark's own.
func BenchmarkLoopbackPubSub(b *testing.B) {
	for _, q := range []byte{0, 1} {
		b.Run(fmt.Sprintf("qos%d", q), func(b *testing.B) {
			srv, addr := startBroker(b, nil)
			sub := dialRaw(b, addr)
			sub.connect(codec.Connect{ClientID: []byte("bsub"), CleanStart: true}, 0)
			sub.subscribe(1, "bench/t", q)
			pub := dialRaw(b, addr)
			pub.connect(codec.Connect{ClientID: []byte("bpub"), CleanStart: true}, 0)

			payload := make([]byte, 64)
			done := make(chan error, 1)
			dropped := func() int { return int(srv.Stats().MessagesDropped) }
			go func() { done <- drainSubscriber(sub.c, sub.buf, b.N, q, dropped) }()
			// A QoS 1 publisher keeps at most 256 PUBLISHes unacknowledged, as
			// real clients do; QoS 0 is unthrottled.
			window := make(chan struct{}, 256)
			go func() {
				if q == 0 {
					_, _ = io.Copy(io.Discard, pub.c)
					return
				}
				countAcks(pub.c, pub.buf, window)
			}()
			w := bufio.NewWriterSize(pub.c, 64<<10)
			p := codec.Publish{Topic: []byte("bench/t"), Payload: payload, QoS: q}
			var buf []byte
			b.ReportAllocs()
			b.SetBytes(int64(len(payload)))
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; i++ {
				if q > 0 {
					p.PacketID = uint16(i%65535) + 1
					select {
					case window <- struct{}{}:
					default:
						_ = w.Flush()
						window <- struct{}{}
					}
				}
				buf = p.Append(buf[:0], codec.Version311)
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
			el := time.Since(start).Seconds()
			d := dropped()
			b.ReportMetric(float64(b.N-d)/el, "delivered/s")
			b.ReportMetric(float64(d)/float64(b.N)*100, "%dropped")
		})
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
