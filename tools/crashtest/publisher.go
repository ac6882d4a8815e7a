package main

import (
	"fmt"
	"strconv"
	"time"

	"github.com/ternmq/tern/codec"
	"github.com/ternmq/tern/internal/mqtttest"
)

// Per-message state of a publisher, indexed by sequence number. The packet
// identifier of message seq is seq itself (seq ≤ 65535 is enforced), so the
// state needs no id map and a reconnecting publisher can name every
// interrupted flow by its original identifier, as [MQTT-4.4.0-1] requires.
const (
	msgUnsent    uint8 = iota
	msgSent            // PUBLISH written (or attempted): the broker may or may not have it
	msgAcked           // PUBACK (QoS 1) or PUBREC (QoS 2) received: the broker promised it
	msgCompleted       // QoS 2 only: PUBCOMP received, the flow is over
)

// publisher sends "<name>:<seq>" to its own topic, seq = 1, 2, …, max, with
// at most window messages in flight, and records exactly what the broker
// acknowledged. Its fields are written only by the goroutine running
// traffic or recover and read by the cycle after that goroutine has ended.
type publisher struct {
	name     string // "p0", "p1", …: also the payload prefix
	clientID string
	topic    string
	qos      byte
	max      int
	window   int
	rate     int // messages per second; 0 = as fast as acknowledgements allow

	state        []uint8 // index 1..max
	acked        int     // messages that reached msgAcked before the kill
	ackedLater   int     // QoS 2 messages resent after the restart and PUBREC'd then
	incomplete   int     // QoS 2 flows still open when recover gave up
	resentPub    int     // PUBLISH packets resent with DUP after the restart
	resentRel    int     // PUBREL packets resent after the restart
	anomalies    int     // acks for ids not in the expected state (broker bug or confusion)
	sessionFound bool    // CONNACK of the reconnect said session present
	stillSending bool    // had not sent all max messages when the broker died
}

func newPublisher(i int, qos byte, max, window, rate int) *publisher {
	name := "p" + strconv.Itoa(i)
	return &publisher{
		name:     name,
		clientID: fmt.Sprintf("crash-pub-q%d-%s", qos, name),
		topic:    fmt.Sprintf("crash/q%d/%s", qos, name),
		qos:      qos,
		max:      max,
		window:   window,
		rate:     rate,
		state:    make([]uint8, max+1),
	}
}

func (p *publisher) publish(seq int, dup bool) *codec.Publish {
	return &codec.Publish{
		Dup:      dup,
		QoS:      p.qos,
		Topic:    []byte(p.topic),
		PacketID: uint16(seq),
		Payload:  []byte(p.name + ":" + strconv.Itoa(seq)),
	}
}

// connect opens the publisher's connection. QoS 2 publishers keep a
// persistent session (clean session 0) so the broker keeps their inbound
// QoS 2 state (ids PUBREC'd, awaiting PUBREL) across the reconnect.
func (p *publisher) connect(ep endpoint) (*mqtttest.Conn, bool, error) {
	return dial(ep, p.clientID, p.qos == 1)
}

// traffic publishes as fast as acknowledgements allow until the connection
// dies (the broker is killed) or all max messages are completed and the
// connection is closed by the cycle. A PUBREC is answered at once with
// PUBREL; if that write fails the message stays msgAcked and recover
// finishes the flow.
func (p *publisher) traffic(c *mqtttest.Conn) {
	pkts := make(chan any, 4*p.window)
	go func() {
		defer close(pkts)
		for {
			pkt, err := c.Next(noDeadline)
			if err != nil {
				return
			}
			pkts <- pkt
		}
	}()
	next, inflight, writable := 1, 0, true
	// With a rate, sends are spaced by interval so that the kill lands
	// mid-stream even against a fast broker; without, acks are the only pace.
	var interval time.Duration
	if p.rate > 0 {
		interval = time.Second / time.Duration(p.rate)
	}
	due := time.Now()
	pace := time.NewTimer(0)
	defer pace.Stop()
	for {
		for writable && inflight < p.window && next <= p.max {
			if interval > 0 && time.Now().Before(due) {
				break
			}
			// Marked before the write: a failed write may still have
			// delivered the packet, so it must count as possibly sent.
			p.state[next] = msgSent
			if err := c.Send(p.publish(next, false)); err != nil {
				writable = false
				break
			}
			next++
			inflight++
			due = due.Add(interval)
		}
		var tick <-chan time.Time
		if interval > 0 && writable && inflight < p.window && next <= p.max {
			pace.Reset(time.Until(due))
			tick = pace.C
		}
		// Every packet that arrived before the connection died is consumed,
		// so an acknowledgement received is never forgotten.
		var pkt any
		var ok bool
		select {
		case pkt, ok = <-pkts:
		case <-tick:
			continue
		}
		if !ok {
			p.stillSending = next <= p.max || inflight > 0
			return
		}
		a, isAck := pkt.(*codec.Ack)
		if !isAck {
			p.anomalies++
			continue
		}
		seq := int(a.PacketID)
		if seq < 1 || seq > p.max {
			p.anomalies++
			continue
		}
		switch {
		case a.Type == codec.PUBACK && p.qos == 1 && p.state[seq] == msgSent:
			p.state[seq] = msgAcked
			p.acked++
			inflight--
		case a.Type == codec.PUBREC && p.qos == 2 && p.state[seq] == msgSent:
			p.state[seq] = msgAcked
			p.acked++
			if writable && c.Ack(codec.PUBREL, a.PacketID) != nil {
				writable = false
			}
		case a.Type == codec.PUBCOMP && p.qos == 2 && p.state[seq] == msgAcked:
			p.state[seq] = msgCompleted
			inflight--
		default:
			p.anomalies++
		}
	}
}

// recover reconnects a QoS 2 publisher after the restart with the same
// client id and clean session 0, and resends, in their original order and
// with their original packet ids [MQTT-4.4.0-1], a PUBREL for every message
// PUBREC'd but not PUBCOMP'd and a DUP PUBLISH [MQTT-3.3.1-1] for every
// message sent but never PUBREC'd. It waits until each flow completes
// (PUBCOMP) or timeout passes; flows left open are counted as incomplete.
// A resent PUBLISH that is PUBREC'd now is acknowledged now: it too must
// reach the subscriber exactly once.
func (p *publisher) recover(ep endpoint, timeout time.Duration) error {
	c, present, err := p.connect(ep)
	if err != nil {
		p.incomplete = p.openFlows()
		return err
	}
	defer c.Disconnect()
	p.sessionFound = present
	open := 0
	for seq := 1; seq <= p.max; seq++ {
		var err error
		switch p.state[seq] {
		case msgAcked:
			err = c.Ack(codec.PUBREL, uint16(seq))
			p.resentRel++
		case msgSent:
			err = c.Send(p.publish(seq, true))
			p.resentPub++
		default:
			continue
		}
		if err != nil {
			p.incomplete = p.openFlows()
			return err
		}
		open++
	}
	deadline := time.Now().Add(timeout)
	for open > 0 {
		pkt, err := c.Next(deadline)
		if err != nil {
			p.incomplete = p.openFlows()
			if err == mqtttest.ErrTimeout {
				return nil // reported as incomplete, not as a harness error
			}
			return err
		}
		a, isAck := pkt.(*codec.Ack)
		if !isAck || int(a.PacketID) < 1 || int(a.PacketID) > p.max {
			p.anomalies++
			continue
		}
		seq := int(a.PacketID)
		switch {
		case a.Type == codec.PUBREC && p.state[seq] == msgSent:
			p.state[seq] = msgAcked
			p.ackedLater++
			if err := c.Ack(codec.PUBREL, a.PacketID); err != nil {
				p.incomplete = p.openFlows()
				return err
			}
		case a.Type == codec.PUBCOMP && p.state[seq] == msgAcked:
			p.state[seq] = msgCompleted
			open--
		default:
			p.anomalies++
		}
	}
	return nil
}

// openFlows counts QoS 2 messages whose flow has not reached PUBCOMP.
func (p *publisher) openFlows() int {
	n := 0
	for _, s := range p.state[1:] {
		if s == msgSent || s == msgAcked {
			n++
		}
	}
	return n
}

// ackedSet reports, per seq, whether the broker acknowledged it at any point
// (before the kill, or, for a resent QoS 2 message, after the restart).
func (p *publisher) ackedSet() []bool {
	set := make([]bool, p.max+1)
	for seq, s := range p.state {
		set[seq] = s == msgAcked || s == msgCompleted
	}
	return set
}

// sentSet reports, per seq, whether a PUBLISH was ever attempted: a message
// delivered that was never sent is a phantom.
func (p *publisher) sentSet() []bool {
	set := make([]bool, p.max+1)
	for seq, s := range p.state {
		set[seq] = s != msgUnsent
	}
	return set
}
