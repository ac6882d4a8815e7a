package mqtttest

import (
	"io"
	"testing"
	"time"

	"github.com/ternmq/tern/codec"
)

// After Connect returns, a caller that reads and writes NetConn itself (a
// benchmark's raw subscriber or pipelined publisher) is not cut off by the
// deadlines the helper set: here a read and a write on NetConn well after
// Timeout succeed. With the deadlines left behind, BenchmarkFanOut100's
// readers failed 5 s after their SUBACK and the benchmark hung.
func TestNoDeadlineLeftBehind(t *testing.T) {
	ping := codec.AppendPingresp(nil)
	got := make(chan []byte, 1)
	addr := fakeBroker(t, func(b *Conn) {
		if _, err := b.ReadPacket(time.Now().Add(5 * time.Second)); err != nil { // CONNECT
			return
		}
		_ = b.Send(&codec.Connack{})
		time.Sleep(300 * time.Millisecond)
		_ = b.Write(ping)
		buf := make([]byte, len(ping))
		_ = b.NetConn().SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(b.NetConn(), buf); err == nil {
			got <- buf
		}
		close(got)
	})
	c, err := Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Timeout = 50 * time.Millisecond
	if _, err := c.Connect(codec.Connect{ClientID: []byte("dl")}); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(ping))
	if _, err := io.ReadFull(c.NetConn(), buf); err != nil {
		t.Fatalf("read on NetConn after Connect: %v (a deadline left behind)", err)
	}
	if _, err := c.NetConn().Write(ping); err != nil {
		t.Fatalf("write on NetConn after Connect: %v (a deadline left behind)", err)
	}
	if b, ok := <-got; !ok || string(b) != string(ping) {
		t.Fatalf("broker side got %x", b)
	}
}
