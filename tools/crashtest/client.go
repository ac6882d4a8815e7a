package main

import (
	"crypto/tls"
	"fmt"
	"net"
	"time"

	"github.com/ternmq/tern/codec"
	"github.com/ternmq/tern/internal/mqtttest"
)

// ioTimeout bounds every single write and every handshake read, so a wedged
// broker turns into an error instead of a hung harness.
const ioTimeout = mqtttest.DefaultTimeout

// The harness talks to the broker through mqtttest.Conn, a raw MQTT client
// on the codec package, so it chooses packet identifiers and decides when
// (and whether) PUBREL is sent — things a full client library hides. Its
// concurrency contract is the one the publisher relies on: one goroutine
// reads (Next) while another writes (Send, Ack), and Close from anywhere
// unblocks the reader.

// dial connects to addr and performs the 3.1.1 CONNECT/CONNACK handshake
// with the given client id and clean-session flag. It reports the CONNACK's
// session present flag [MQTT-3.2.2-2]; a refused CONNECT is an error.
func dial(ep endpoint, clientID string, clean bool) (*mqtttest.Conn, bool, error) {
	nc, err := ep.dial()
	if err != nil {
		return nil, false, err
	}
	c := mqtttest.New(nc)
	ack, err := c.Connect(codec.Connect{
		ProtocolVersion: codec.Version311,
		CleanStart:      clean,
		KeepAlive:       60, // longer than any phase of a cycle: no PINGREQ needed
		ClientID:        []byte(clientID),
	})
	if err != nil {
		_ = c.Close()
		return nil, false, err
	}
	if ack.ReasonCode != codec.ConnAccepted311 {
		_ = c.Close()
		return nil, false, fmt.Errorf("CONNACK refused with return code %d", ack.ReasonCode)
	}
	return c, ack.SessionPresent, nil
}

// subscribe sends one SUBSCRIBE with a single filter and waits for its
// SUBACK. A broker may grant less than asked, but the harness needs exactly
// the requested QoS to test it, so anything else is an error. Other packets
// arriving first are passed to other (nil: dropped — a persistent session
// may hold deliveries from an earlier cycle).
func subscribe(c *mqtttest.Conn, filter string, qos byte, other func(any)) error {
	if other == nil {
		other = func(any) {}
	}
	sa, err := c.Subscribe(1, other, codec.Subscription{Filter: []byte(filter), QoS: qos})
	if err != nil {
		return fmt.Errorf("subscribe %q: %w", filter, err)
	}
	if len(sa.ReasonCodes) != 1 {
		return fmt.Errorf("SUBACK for %q: %d codes", filter, len(sa.ReasonCodes))
	}
	if sa.ReasonCodes[0] != codec.ReasonCode(qos) {
		return fmt.Errorf("SUBACK for %q granted 0x%02x, want QoS %d", filter, sa.ReasonCodes[0], qos)
	}
	return nil
}

// endpoint is where the harness's clients connect: the broker's plain-TCP
// listener, or (with -tls) its TLS listener, verified against the
// harness's own CA.
type endpoint struct {
	addr string
	tls  *tls.Config // nil: plain TCP
}

// dial opens a connection to e, the TLS handshake done within ioTimeout.
func (e endpoint) dial() (net.Conn, error) {
	d := &net.Dialer{Timeout: ioTimeout}
	if e.tls == nil {
		return d.Dial("tcp", e.addr)
	}
	return tls.DialWithDialer(d, "tcp", e.addr, e.tls)
}

// noDeadline makes Next wait until the connection fails.
var noDeadline time.Time
