package server

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/ternmq/tern/codec"
)

// recv5 collects the PUBLISHes delivered to a paho.golang (5.0) client.
type recv5 struct {
	mu   sync.Mutex
	msgs []*paho.Publish
	ch   chan struct{}
}

func newRecv5() *recv5 { return &recv5{ch: make(chan struct{}, 1<<16)} }

func (r *recv5) handler(p paho.PublishReceived) (bool, error) {
	r.mu.Lock()
	r.msgs = append(r.msgs, p.Packet)
	r.mu.Unlock()
	select {
	case r.ch <- struct{}{}:
	default:
	}
	return true, nil
}

func (r *recv5) snapshot() []*paho.Publish {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*paho.Publish(nil), r.msgs...)
}

func (r *recv5) waitN(t testing.TB, n int, d time.Duration) []*paho.Publish {
	t.Helper()
	deadline := time.After(d)
	for {
		if got := r.snapshot(); len(got) >= n {
			return got
		}
		select {
		case <-r.ch:
		case <-deadline:
			t.Fatalf("got %d messages, want %d", len(r.snapshot()), n)
		}
	}
}

func (r *recv5) quiet(t testing.TB, n int, d time.Duration) {
	t.Helper()
	time.Sleep(d)
	if got := r.snapshot(); len(got) != n {
		t.Fatalf("got %d messages, want exactly %d", len(got), n)
	}
}

// dial5 connects a paho.golang client; cfg may adjust the client config
// (AuthHandler, Router…). It returns the CONNACK and the error of Connect.
func dial5(t testing.TB, addr string, cp *paho.Connect, cfg func(*paho.ClientConfig)) (*paho.Client, *paho.Connack, *recv5, error) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	r := newRecv5()
	cc := paho.ClientConfig{ClientID: cp.ClientID, Conn: conn,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){r.handler}}
	if cfg != nil {
		cfg(&cc)
	}
	c := paho.NewClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if cp.KeepAlive == 0 {
		cp.KeepAlive = 30
	}
	ca, err := c.Connect(ctx, cp)
	if err != nil {
		conn.Close()
		return nil, ca, r, err
	}
	t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
	return c, ca, r, nil
}

// paho5 connects a paho.golang client with clean start and the given id,
// failing the test if the broker refuses.
func paho5(t testing.TB, addr, id string, props *paho.ConnectProperties) (*paho.Client, *paho.Connack, *recv5) {
	t.Helper()
	c, ca, r, err := dial5(t, addr, &paho.Connect{ClientID: id, CleanStart: true, Properties: props}, nil)
	if err != nil {
		t.Fatalf("connect %s: %v (connack %+v)", id, err, ca)
	}
	return c, ca, r
}

func sub5(t testing.TB, c *paho.Client, s *paho.Subscribe) *paho.Suback {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	sa, err := c.Subscribe(ctx, s)
	if err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	return sa
}

func pub5(t testing.TB, c *paho.Client, p *paho.Publish) *paho.PublishResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	pr, err := c.Publish(ctx, p)
	if err != nil {
		t.Fatalf("publish %s: %v", p.Topic, err)
	}
	return pr
}

func u16(v uint16) *uint16 { return &v }
func u32(v uint32) *uint32 { return &v }
func b8(v byte) *byte      { return &v }

// dialRaw5 opens a raw connection and completes a 5.0 CONNECT.
func dialRaw5(t testing.TB, addr string, p codec.Connect) (*rawConn, codec.Connack) {
	t.Helper()
	r := dialRaw(t, addr)
	p.ProtocolVersion = codec.Version5
	if p.KeepAlive == 0 {
		p.KeepAlive = 30
	}
	ack := r.connect(p, 0)
	return r, ack
}

// packet is a packet read by a raw client.
type packet struct {
	h    codec.FixedHeader
	body []byte
}

// untilClosed reads packets until the broker closes the connection, for
// at most d in all.
func (r *rawConn) untilClosed(d time.Duration) []packet {
	r.t.Helper()
	got, err := r.conn().UntilClosed(d)
	out := make([]packet, len(got))
	for i, p := range got {
		out[i] = packet{p.Header, p.Body}
	}
	if err != nil {
		r.t.Fatal(err)
	}
	return out
}

// expectDisconnect asserts the broker sends DISCONNECT with code and closes.
func (r *rawConn) expectDisconnect(code codec.ReasonCode) codec.Disconnect {
	r.t.Helper()
	got := r.untilClosed(5 * time.Second)
	for _, p := range got {
		if p.h.Type != codec.DISCONNECT {
			continue
		}
		var d codec.Disconnect
		if err := d.Decode(p.h, p.body, codec.Version5); err != nil {
			r.t.Fatal(err)
		}
		if d.ReasonCode != code {
			r.t.Fatalf("DISCONNECT reason 0x%02X (%s), want 0x%02X", d.ReasonCode, d.Props.ReasonString, byte(code))
		}
		return d
	}
	r.t.Fatalf("no DISCONNECT before close (packets: %d)", len(got))
	return codec.Disconnect{}
}
