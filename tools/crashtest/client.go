package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/ternmq/tern/codec"
)

// maxPacket bounds what the raw client will buffer for one inbound packet.
// Our payloads are a few bytes; anything near this is a broker bug.
const maxPacket = 1 << 20

// ioTimeout bounds every single write and every handshake read, so a wedged
// broker turns into an error instead of a hung harness.
const ioTimeout = 5 * time.Second

// client is a minimal MQTT 3.1.1 client on a raw TCP connection, built on
// the codec package so the harness chooses packet identifiers and decides
// when (and whether) PUBREL is sent — things a full client library hides.
//
// Concurrency: next may be called by one goroutine while send is called by
// another (they touch disjoint state), but neither may be called by two
// goroutines at once. close may be called from any goroutine, any number of
// times; it unblocks a pending next.
type client struct {
	nc  net.Conn
	buf []byte // received bytes not yet framed into a packet
	rd  []byte // read scratch
	out []byte // encode scratch, reused by send
}

// dial connects to addr and performs the CONNECT/CONNACK handshake with the
// given client id and clean-session flag. It reports the CONNACK's session
// present flag [MQTT-3.2.2-2].
func dial(addr, clientID string, clean bool) (*client, bool, error) {
	nc, err := net.DialTimeout("tcp", addr, ioTimeout)
	if err != nil {
		return nil, false, err
	}
	c := &client{nc: nc, rd: make([]byte, 16<<10)}
	err = c.send(&codec.Connect{
		ProtocolName:    []byte("MQTT"),
		ProtocolVersion: codec.Version311,
		CleanStart:      clean,
		KeepAlive:       60, // longer than any phase of a cycle: no PINGREQ needed
		ClientID:        []byte(clientID),
	})
	if err != nil {
		c.close()
		return nil, false, err
	}
	pkt, err := c.next(time.Now().Add(ioTimeout))
	if err != nil {
		c.close()
		return nil, false, fmt.Errorf("waiting for CONNACK: %w", err)
	}
	ack, ok := pkt.(*codec.Connack)
	if !ok {
		c.close()
		return nil, false, fmt.Errorf("expected CONNACK, got %T", pkt)
	}
	if ack.ReasonCode != codec.ConnAccepted311 {
		c.close()
		return nil, false, fmt.Errorf("CONNACK refused with return code %d", ack.ReasonCode)
	}
	return c, ack.SessionPresent, nil
}

// send encodes pkt for 3.1.1 and writes it, bounded by ioTimeout.
func (c *client) send(pkt any) error {
	c.out = codec.AppendPacket(c.out[:0], pkt, codec.Version311)
	if len(c.out) == 0 {
		return fmt.Errorf("cannot encode %T", pkt)
	}
	if err := c.nc.SetWriteDeadline(time.Now().Add(ioTimeout)); err != nil {
		return err
	}
	_, err := c.nc.Write(c.out)
	return err
}

// next returns the next packet from the broker, decoded into a fresh struct
// whose fields own their bytes (they do not alias the read buffer). A zero
// deadline waits until the connection fails; otherwise a timeout is reported
// as errTimeout and the client stays usable.
func (c *client) next(deadline time.Time) (any, error) {
	for {
		h, body, total, err := codec.ReadPacket(c.buf, maxPacket)
		if err == nil {
			// Decoding is zero-copy: copy the body first so the packet can
			// outlive the next read into c.buf.
			own := append([]byte(nil), body...)
			c.buf = c.buf[total:]
			if len(c.buf) == 0 {
				c.buf = c.buf[:0:0] // drop the consumed backing array
			}
			return codec.DecodePacket(h, own, codec.Version311)
		}
		if !errors.Is(err, codec.ErrIncomplete) {
			return nil, err
		}
		if err := c.nc.SetReadDeadline(deadline); err != nil {
			return nil, err
		}
		n, err := c.nc.Read(c.rd)
		c.buf = append(c.buf, c.rd[:n]...)
		if err != nil {
			if n > 0 {
				continue // frame what arrived before the error first
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return nil, errTimeout
			}
			return nil, err
		}
	}
}

// errTimeout is returned by next when its deadline passes.
var errTimeout = errors.New("timeout")

// disconnect sends DISCONNECT (the will, if any, is discarded
// [MQTT-3.14.4-3]; a clean-session-0 session is kept [MQTT-3.1.2-4]), then
// closes the socket.
func (c *client) disconnect() {
	_ = c.send(&codec.Disconnect{})
	c.close()
}

// close closes the socket; safe to call more than once.
func (c *client) close() { _ = c.nc.Close() }

// subscribe sends one SUBSCRIBE with a single filter and waits for its
// SUBACK. A broker may grant less than asked, but the harness needs exactly
// the requested QoS to test it, so anything else is an error.
// Other packets arriving first are passed to other (may be nil: dropped).
func (c *client) subscribe(filter string, qos byte, other func(any)) error {
	err := c.send(&codec.Subscribe{
		PacketID:      1,
		Subscriptions: []codec.Subscription{{Filter: []byte(filter), QoS: qos}},
	})
	if err != nil {
		return err
	}
	deadline := time.Now().Add(ioTimeout)
	for {
		pkt, err := c.next(deadline)
		if err != nil {
			return fmt.Errorf("waiting for SUBACK of %q: %w", filter, err)
		}
		sa, ok := pkt.(*codec.Suback)
		if !ok {
			if other != nil {
				other(pkt)
			}
			continue
		}
		if sa.PacketID != 1 || len(sa.ReasonCodes) != 1 {
			return fmt.Errorf("SUBACK for %q: packet id %d with %d codes", filter, sa.PacketID, len(sa.ReasonCodes))
		}
		if sa.ReasonCodes[0] != qos {
			return fmt.Errorf("SUBACK for %q granted 0x%02x, want QoS %d", filter, sa.ReasonCodes[0], qos)
		}
		return nil
	}
}

// ack builds a PUBACK, PUBREC, PUBREL or PUBCOMP for id.
func ack(t codec.PacketType, id uint16) *codec.Ack { return &codec.Ack{Type: t, PacketID: id} }
