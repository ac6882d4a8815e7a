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
			_, addr := startBroker(b, nil)
			sub := dialRaw(b, addr)
			sub.connect(codec.Connect{ClientID: []byte("bsub"), CleanStart: true}, 0)
			sub.subscribe(1, "bench/t", q)
			pub := dialRaw(b, addr)
			pub.connect(codec.Connect{ClientID: []byte("bpub"), CleanStart: true}, 0)

			payload := make([]byte, 64)
			done := make(chan error, 1)
			go func() { done <- drainSubscriber(sub.c, sub.buf, b.N, q) }()
			go func() { // the publisher's acks must be read or the socket fills
				_, _ = io.Copy(io.Discard, pub.c)
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
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
		})
	}
}

// drainSubscriber reads n PUBLISHes, acknowledging QoS 1.
func drainSubscriber(c net.Conn, pending []byte, n int, q byte) error {
	buf := append(make([]byte, 0, 256<<10), pending...)
	chunk := make([]byte, 128<<10)
	var acks []byte
	got := 0
	_ = c.SetReadDeadline(time.Now().Add(60 * time.Second))
	for got < n {
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
					id := uint16(body[2+int(body[0])<<8|int(body[1])])<<8 | uint16(body[3+int(body[0])<<8|int(body[1])])
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
		if got >= n {
			break
		}
		k, err := c.Read(chunk)
		if err != nil {
			return fmt.Errorf("after %d messages: %w", got, err)
		}
		buf = append(buf, chunk[:k]...)
	}
	return nil
}
