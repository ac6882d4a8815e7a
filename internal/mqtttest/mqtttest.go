// Package mqtttest is a raw-socket MQTT client for tests and test tools.
//
// A full client library (paho) hides exactly what protocol tests need to
// control: which packet identifier is used, whether and when an
// acknowledgement is sent, what DUP says on a resend, what happens when a
// connection is dropped in the middle of a flow. A Conn hides nothing: the
// caller sends any packet struct of the codec package (or raw bytes, for
// malformed input) and reads back whatever the broker sent, one whole packet
// at a time, with a deadline. A few helpers (Connect, Subscribe, Ack,
// Disconnect, UntilClosed) cover the steps every test repeats, and return
// errors rather than failing a test, so the package serves both `go test`
// code (which turns errors into t.Fatal) and long-running harnesses such as
// tools/crashtest (which count them).
//
// The model: a Conn owns one net.Conn. Bytes read from it accumulate in a
// buffer; ReadPacket frames the first whole packet with codec.ReadPacket and
// hands back a copy of its body, so packets stay valid after later reads.
// Next additionally decodes it with codec.DecodePacket for the protocol
// level in Conn.Version, which Connect sets from the CONNECT it sends.
//
// Concurrency: one goroutine may read (ReadPacket, Next, UntilClosed) while
// another writes (Write, Send, Ack) — they touch disjoint state — but no two
// goroutines may read at once, nor write at once. The helpers that do both
// (Connect, Subscribe) need the connection to themselves. Close may be
// called from any goroutine, any number of times, and unblocks a pending
// read. Version is read by both sides: set it before sharing the Conn.
//
// This package imports only codec; it never imports the broker, so tools
// can use it against a broker running as a separate process.
package mqtttest

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/ternmq/tern/codec"
)

// DefaultTimeout bounds every write, every dial and the reads done by the
// helpers unless Conn.Timeout says otherwise: long enough for a loaded CI
// machine, short enough that a wedged broker fails a test instead of
// hanging it.
const DefaultTimeout = 5 * time.Second

// MaxPacket bounds what a Conn buffers for one inbound packet. Test payloads
// are small; a packet near this size is a broker bug, reported as an error
// instead of exhausting memory.
const MaxPacket = 1 << 20

// ErrTimeout is returned by reads whose deadline passed. The Conn stays
// usable: a later read continues with whatever arrives.
var ErrTimeout = errors.New("mqtttest: timeout")

// Packet is one whole packet as read from the wire.
type Packet struct {
	Header codec.FixedHeader
	Body   []byte // variable header + payload; owned, not a view of the read buffer
}

// Decode decodes p for the given protocol level (ignored for CONNECT) into
// a new struct of the codec package (*codec.Publish, *codec.Ack, …).
func (p Packet) Decode(version byte) (any, error) {
	return codec.DecodePacket(p.Header, p.Body, version)
}

// Conn is a raw MQTT client connection. See the package documentation for
// its model and concurrency contract.
type Conn struct {
	// Version is the protocol level packets are encoded and decoded for
	// (codec.Version31, Version311 or Version5). New sets Version311;
	// Connect sets it from the CONNECT it sends.
	Version byte
	// Timeout bounds each write and the reads done by Connect and
	// Subscribe. Zero means DefaultTimeout.
	Timeout time.Duration

	nc  net.Conn
	buf []byte // received bytes not yet framed into a packet (reader side)
	rd  []byte // read scratch (reader side)
	out []byte // encode scratch (writer side)
}

// Dial opens a TCP connection to addr within DefaultTimeout. It sends
// nothing: call Connect (or Send a CONNECT of your own) next.
func Dial(addr string) (*Conn, error) {
	nc, err := net.DialTimeout("tcp", addr, DefaultTimeout)
	if err != nil {
		return nil, err
	}
	return New(nc), nil
}

// New wraps an established connection (TCP, TLS, a WebSocket adapter…).
func New(nc net.Conn) *Conn {
	return &Conn{Version: codec.Version311, nc: nc}
}

// NetConn returns the underlying connection, e.g. to close it abruptly or
// to hand it to a specialised reader.
func (c *Conn) NetConn() net.Conn { return c.nc }

// Buffered returns the bytes received but not yet returned as packets. A
// caller that takes over reading from NetConn must consume these first.
// Reader side.
func (c *Conn) Buffered() []byte { return c.buf }

func (c *Conn) timeout() time.Duration {
	if c.Timeout > 0 {
		return c.Timeout
	}
	return DefaultTimeout
}

// Write writes b as is (one packet, several, or deliberately malformed
// bytes), bounded by Timeout. The deadline is cleared afterwards: a caller
// that goes on writing to NetConn itself (a benchmark's pipelined
// publisher) must not find its writes timing out Timeout after the last
// helper call. Writer side.
func (c *Conn) Write(b []byte) error {
	if err := c.nc.SetWriteDeadline(time.Now().Add(c.timeout())); err != nil {
		return err
	}
	_, err := c.nc.Write(b)
	_ = c.nc.SetWriteDeadline(time.Time{})
	return err
}

// Send encodes pkt (any packet struct codec.AppendPacket accepts, pointer
// or value) for Version and writes it. Writer side.
func (c *Conn) Send(pkt any) error {
	c.out = codec.AppendPacket(c.out[:0], pkt, c.Version)
	if len(c.out) == 0 {
		return fmt.Errorf("mqtttest: cannot encode %T", pkt)
	}
	return c.Write(c.out)
}

// Ack sends a PUBACK, PUBREC, PUBREL or PUBCOMP for packet identifier id
// (the short form: reason code Success, no properties). Writer side.
func (c *Conn) Ack(t codec.PacketType, id uint16) error {
	return c.Send(&codec.Ack{Type: t, PacketID: id})
}

// ReadPacket returns the next whole packet from the broker. A zero deadline
// waits until the connection fails; a passed deadline is ErrTimeout. When
// the broker closed the connection the error satisfies IsClosed. The read
// deadline is cleared before it returns, so a caller that takes over
// reading from NetConn (after Buffered) is not cut off by the deadline of
// the last Connect or Subscribe: that left-over deadline made
// BenchmarkFanOut100's raw readers fail 5 s after their SUBACK, and the
// benchmark wait forever for their deliveries. Reader side.
func (c *Conn) ReadPacket(deadline time.Time) (Packet, error) {
	p, err := c.readPacket(deadline)
	if !deadline.IsZero() {
		_ = c.nc.SetReadDeadline(time.Time{})
	}
	return p, err
}

func (c *Conn) readPacket(deadline time.Time) (Packet, error) {
	for {
		h, body, total, err := codec.ReadPacket(c.buf, MaxPacket)
		if err == nil {
			// Framing is zero-copy: copy the body so the packet outlives
			// the next read into c.buf.
			p := Packet{Header: h, Body: append([]byte(nil), body...)}
			c.buf = c.buf[total:]
			if len(c.buf) == 0 {
				c.buf = c.buf[:0:0] // let the consumed backing array go
			}
			return p, nil
		}
		if !errors.Is(err, codec.ErrIncomplete) {
			return Packet{Header: h}, err
		}
		if err := c.nc.SetReadDeadline(deadline); err != nil {
			return Packet{}, err
		}
		if c.rd == nil {
			c.rd = make([]byte, 16<<10)
		}
		n, err := c.nc.Read(c.rd)
		c.buf = append(c.buf, c.rd[:n]...)
		if err != nil {
			if n > 0 {
				continue // frame what arrived before the error first
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return Packet{}, ErrTimeout
			}
			return Packet{}, err
		}
	}
}

// Next returns the next packet decoded for Version into a new codec struct
// (*codec.Connack, *codec.Publish, *codec.Ack, *codec.Suback, …) whose
// fields own their bytes. Deadline and errors as ReadPacket. Reader side.
func (c *Conn) Next(deadline time.Time) (any, error) {
	p, err := c.ReadPacket(deadline)
	if err != nil {
		return nil, err
	}
	return p.Decode(c.Version)
}

// Connect sends p and returns the broker's CONNACK, whatever its reason
// code (judging it is the caller's business). A zero ProtocolVersion means
// 3.1.1; the protocol name defaults to the one of the version (codec does
// that). Version is set from p before anything is sent. Any other packet
// first — an AUTH of a 5.0 enhanced authentication, say — is an error:
// tests of such exchanges drive them with Send and Next.
func (c *Conn) Connect(p codec.Connect) (*codec.Connack, error) {
	if p.ProtocolVersion == 0 {
		p.ProtocolVersion = codec.Version311
	}
	c.Version = p.ProtocolVersion
	if err := c.Send(&p); err != nil {
		return nil, err
	}
	pkt, err := c.Next(time.Now().Add(c.timeout()))
	if err != nil {
		return nil, fmt.Errorf("waiting for CONNACK: %w", err)
	}
	ack, ok := pkt.(*codec.Connack)
	if !ok {
		return nil, fmt.Errorf("want CONNACK, got %s", typeName(pkt))
	}
	return ack, nil
}

// Subscribe sends one SUBSCRIBE with packet identifier id and subs and
// waits for the SUBACK carrying that identifier [MQTT-3.8.4-2], which it
// returns whatever it grants. Packets arriving before it (retained messages
// may legitimately come first [MQTT-3.8.4-4]) are passed to other; with a
// nil other, any packet but the SUBACK is an error, which is what a test of
// a quiet session wants.
func (c *Conn) Subscribe(id uint16, other func(any), subs ...codec.Subscription) (*codec.Suback, error) {
	if err := c.Send(&codec.Subscribe{PacketID: id, Subscriptions: subs}); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(c.timeout())
	for {
		pkt, err := c.Next(deadline)
		if err != nil {
			return nil, fmt.Errorf("waiting for SUBACK %d: %w", id, err)
		}
		if sa, ok := pkt.(*codec.Suback); ok && sa.PacketID == id {
			return sa, nil
		}
		if other == nil {
			return nil, fmt.Errorf("want SUBACK %d, got %s", id, typeName(pkt))
		}
		other(pkt)
	}
}

// Disconnect sends DISCONNECT (normal disconnection: the will is discarded
// [MQTT-3.14.4-3]) and closes the connection. Errors are ignored: the
// broker may have closed first.
func (c *Conn) Disconnect() {
	_ = c.Send(&codec.Disconnect{})
	_ = c.Close()
}

// Close closes the connection without DISCONNECT (the broker sees a network
// failure and publishes the will, if any [MQTT-3.1.2-8]). Safe to call more
// than once, from any goroutine.
func (c *Conn) Close() error { return c.nc.Close() }

// UntilClosed reads packets until the broker closes the connection and
// returns them. It fails if the connection is still open after d (measured
// from the call, not per packet) or ends with an error other than a close.
// Reader side.
func (c *Conn) UntilClosed(d time.Duration) ([]Packet, error) {
	deadline := time.Now().Add(d)
	var got []Packet
	for {
		p, err := c.ReadPacket(deadline)
		switch {
		case err == nil:
			got = append(got, p)
		case IsClosed(err):
			return got, nil
		default:
			return got, fmt.Errorf("connection not closed: %w (%d packets seen)", err, len(got))
		}
	}
}

// IsClosed reports whether err from a read means the peer closed the
// connection (EOF, or a reset because it closed with unread data) rather
// than a timeout or a malformed packet.
func IsClosed(err error) bool {
	if errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, net.ErrClosed) {
		return true
	}
	var ne *net.OpError
	return errors.As(err, &ne) && !ne.Timeout()
}

// TypeName names a packet type as the specification does ("PUBLISH").
func TypeName(t codec.PacketType) string {
	if int(t) < len(typeNames) && typeNames[t] != "" {
		return typeNames[t]
	}
	return fmt.Sprintf("type %d", t)
}

var typeNames = [...]string{
	codec.CONNECT: "CONNECT", codec.CONNACK: "CONNACK", codec.PUBLISH: "PUBLISH",
	codec.PUBACK: "PUBACK", codec.PUBREC: "PUBREC", codec.PUBREL: "PUBREL",
	codec.PUBCOMP: "PUBCOMP", codec.SUBSCRIBE: "SUBSCRIBE", codec.SUBACK: "SUBACK",
	codec.UNSUBSCRIBE: "UNSUBSCRIBE", codec.UNSUBACK: "UNSUBACK", codec.PINGREQ: "PINGREQ",
	codec.PINGRESP: "PINGRESP", codec.DISCONNECT: "DISCONNECT", codec.AUTH: "AUTH",
}

// typeName names a decoded packet struct.
func typeName(pkt any) string {
	switch p := pkt.(type) {
	case *codec.Connect:
		return "CONNECT"
	case *codec.Connack:
		return "CONNACK"
	case *codec.Publish:
		return "PUBLISH"
	case *codec.Ack:
		return TypeName(p.Type)
	case *codec.Subscribe:
		return "SUBSCRIBE"
	case *codec.Suback:
		return fmt.Sprintf("SUBACK %d", p.PacketID)
	case *codec.Unsubscribe:
		return "UNSUBSCRIBE"
	case *codec.Unsuback:
		return "UNSUBACK"
	case *codec.Pingreq:
		return "PINGREQ"
	case *codec.Pingresp:
		return "PINGRESP"
	case *codec.Disconnect:
		return "DISCONNECT"
	case *codec.Auth:
		return "AUTH"
	}
	return fmt.Sprintf("%T", pkt)
}
