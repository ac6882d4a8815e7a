package mqtttest

import (
	"bytes"
	"errors"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/ternmq/tern/codec"
)

// fakeBroker accepts one loopback connection and runs script on it: the
// package must not import the broker, so its own tests play the broker's
// side with the codec directly.
func fakeBroker(t *testing.T, script func(b *Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		nc, err := ln.Accept()
		ln.Close()
		if err != nil {
			return
		}
		defer nc.Close()
		script(New(nc))
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return ln.Addr().String()
}

// readOne reads one packet on the broker side, decoded for version.
func readOne(t *testing.T, b *Conn, version byte) any {
	b.Version = version
	pkt, err := b.Next(time.Now().Add(5 * time.Second))
	if err != nil {
		t.Error(err)
	}
	return pkt
}

func TestConnectSubscribeAndFraming(t *testing.T) {
	addr := fakeBroker(t, func(b *Conn) {
		cp, ok := readOne(t, b, 0).(*codec.Connect)
		if !ok || cp.ProtocolVersion != codec.Version5 || string(cp.ProtocolName) != "MQTT" {
			t.Errorf("CONNECT: %+v", cp)
			return
		}
		out := (&codec.Connack{SessionPresent: true}).Append(nil, codec.Version5)
		// A retained PUBLISH before the SUBACK, then the SUBACK split
		// across two writes, to exercise reassembly.
		sub, _ := readOne(t, b, codec.Version5).(*codec.Subscribe)
		out = (&codec.Publish{Topic: []byte("a/b"), Retain: true, Payload: []byte("r")}).Append(out, codec.Version5)
		sa := (&codec.Suback{PacketID: sub.PacketID, ReasonCodes: []codec.ReasonCode{1}}).Append(nil, codec.Version5)
		out = append(out, sa[:2]...)
		_ = b.Write(out)
		time.Sleep(20 * time.Millisecond)
		_ = b.Write(sa[2:])
		if a, ok := readOne(t, b, codec.Version5).(*codec.Ack); !ok || a.Type != codec.PUBACK || a.PacketID != 9 {
			t.Errorf("want PUBACK 9, got %+v", a)
		}
	})
	c, err := Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// The broker answers CONNACK only after reading SUBSCRIBE too, so send
	// the CONNECT by hand and read the CONNACK after the SUBSCRIBE is out.
	c.Version = codec.Version5
	if err := c.Send(&codec.Connect{ProtocolVersion: codec.Version5, ClientID: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	if err := c.Send(&codec.Subscribe{PacketID: 3, Subscriptions: []codec.Subscription{{Filter: []byte("a/#"), QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	pkt, err := c.Next(time.Now().Add(5 * time.Second))
	if ca, ok := pkt.(*codec.Connack); err != nil || !ok || !ca.SessionPresent {
		t.Fatalf("CONNACK: %v %+v", err, pkt)
	}
	pkt, _ = c.Next(time.Now().Add(5 * time.Second))
	if p, ok := pkt.(*codec.Publish); !ok || !p.Retain || !bytes.Equal(p.Payload, []byte("r")) {
		t.Fatalf("want retained PUBLISH, got %+v", pkt)
	}
	pkt, _ = c.Next(time.Now().Add(5 * time.Second))
	if sa, ok := pkt.(*codec.Suback); !ok || sa.PacketID != 3 || !slices.Equal(sa.ReasonCodes, []codec.ReasonCode{1}) {
		t.Fatalf("want SUBACK 3 [1], got %+v", pkt)
	}
	if err := c.Ack(codec.PUBACK, 9); err != nil {
		t.Fatal(err)
	}
	// The fake broker closes after the PUBACK.
	if got, err := c.UntilClosed(5 * time.Second); err != nil || len(got) != 0 {
		t.Fatalf("UntilClosed: %v, %d packets", err, len(got))
	}
}

// Subscribe hands packets that precede the SUBACK to other, and with a nil
// other reports them as an error.
func TestSubscribeOther(t *testing.T) {
	for _, withOther := range []bool{true, false} {
		addr := fakeBroker(t, func(b *Conn) {
			readOne(t, b, 0)
			out := (&codec.Connack{}).Append(nil, codec.Version311)
			_ = b.Write(out)
			readOne(t, b, codec.Version311)
			out = (&codec.Publish{Topic: []byte("t"), Payload: []byte("p")}).Append(nil, codec.Version311)
			out = (&codec.Suback{PacketID: 1, ReasonCodes: []codec.ReasonCode{0}}).Append(out, codec.Version311)
			_ = b.Write(out)
			time.Sleep(50 * time.Millisecond)
		})
		c, err := Dial(addr)
		if err != nil {
			t.Fatal(err)
		}
		ack, err := c.Connect(codec.Connect{ClientID: []byte("s")})
		if err != nil || ack.ReasonCode != 0 || c.Version != codec.Version311 {
			t.Fatalf("connect: %v %+v version %d", err, ack, c.Version)
		}
		var others []any
		var other func(any)
		if withOther {
			other = func(p any) { others = append(others, p) }
		}
		sa, err := c.Subscribe(1, other, codec.Subscription{Filter: []byte("t")})
		if withOther && (err != nil || sa.PacketID != 1 || len(others) != 1) {
			t.Fatalf("with other: %v %+v, %d others", err, sa, len(others))
		}
		if !withOther && err == nil {
			t.Fatal("nil other: a PUBLISH before the SUBACK must be an error")
		}
		c.Close()
	}
}

// A read past its deadline is ErrTimeout and leaves the Conn usable.
func TestTimeoutThenRead(t *testing.T) {
	addr := fakeBroker(t, func(b *Conn) {
		time.Sleep(150 * time.Millisecond)
		_ = b.Write(codec.AppendPingresp(nil))
	})
	c, err := Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.ReadPacket(time.Now().Add(20 * time.Millisecond)); !errors.Is(err, ErrTimeout) || IsClosed(err) {
		t.Fatalf("want ErrTimeout, got %v", err)
	}
	p, err := c.ReadPacket(time.Now().Add(5 * time.Second))
	if err != nil || p.Header.Type != codec.PINGRESP {
		t.Fatalf("after timeout: %v %+v", err, p)
	}
	if _, err := c.ReadPacket(time.Now().Add(5 * time.Second)); !IsClosed(err) {
		t.Fatalf("want closed, got %v", err)
	}
}

// A malformed packet is reported as the codec's error, not as a close.
func TestMalformed(t *testing.T) {
	addr := fakeBroker(t, func(b *Conn) {
		_ = b.Write([]byte{0x00, 0x00}) // packet type 0 is reserved
		time.Sleep(50 * time.Millisecond)
	})
	c, err := Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.ReadPacket(time.Now().Add(5 * time.Second))
	var ce *codec.Error
	if !errors.As(err, &ce) || IsClosed(err) {
		t.Fatalf("want *codec.Error, got %v", err)
	}
}

func TestTypeName(t *testing.T) {
	if TypeName(codec.PUBREL) != "PUBREL" || TypeName(0) != "type 0" {
		t.Fatal(TypeName(codec.PUBREL), TypeName(0))
	}
}
