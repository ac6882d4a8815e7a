package main

import (
	"bytes"
	"strconv"
	"time"

	"github.com/ternmq/tern/codec"
	"github.com/ternmq/tern/internal/mqtttest"
)

// delivery is one application-level delivery seen by a subscriber: a
// PUBLISH that was new to it (a QoS 2 PUBLISH resent with the packet id of a
// flow still awaiting PUBREL is the same delivery, not a new one).
type delivery struct {
	pub string
	seq int
}

// subscribeOffline creates a persistent session for clientID subscribed to
// filter at qos, then DISCONNECTs so that everything published afterwards is
// queued in that session while it is offline.
func subscribeOffline(ep endpoint, clientID, filter string, qos byte) error {
	c, _, err := dial(ep, clientID, false)
	if err != nil {
		return err
	}
	if err := subscribe(c, filter, qos, nil); err != nil {
		c.Close()
		return err
	}
	c.Disconnect()
	return nil
}

// online is the QoS 1 subscriber of -online: it stays connected while the
// publishers send, acknowledging each delivery at once, until the broker
// is killed. Its deliveries count with those collected after the restart.
type online struct {
	conn       *mqtttest.Conn
	done       chan struct{}
	deliveries []delivery // valid once done is closed
	unparsable int
}

// subscribeOnline creates the persistent session like subscribeOffline but
// keeps receiving on it (PUBACK to every QoS 1 PUBLISH) until the
// connection ends.
func subscribeOnline(ep endpoint, clientID, filter string) (*online, error) {
	c, _, err := dial(ep, clientID, false)
	if err != nil {
		return nil, err
	}
	o := &online{conn: c, done: make(chan struct{})}
	record := func(pkt any) error {
		p, ok := pkt.(*codec.Publish)
		if !ok {
			return nil
		}
		if d, ok := parsePayload(p.Payload); ok {
			o.deliveries = append(o.deliveries, d)
		} else {
			o.unparsable++
		}
		return c.Ack(codec.PUBACK, p.PacketID)
	}
	if err := subscribe(c, filter, 1, func(pkt any) { _ = record(pkt) }); err != nil {
		c.Close()
		return nil, err
	}
	go func() {
		defer close(o.done)
		defer c.Close()
		for {
			pkt, err := c.Next(time.Now().Add(time.Minute))
			if err != nil || record(pkt) != nil {
				return // the broker was killed
			}
		}
	}()
	return o, nil
}

// collected is what a subscriber saw after the restart.
type collected struct {
	sessionFound bool       // CONNACK session present on the reconnect
	deliveries   []delivery // in arrival order
	unparsable   int        // payloads not of the form "<pub>:<seq>"
}

// collect reconnects the persistent subscriber clientID and receives until
// every message in expect (expect[pub][seq], the acknowledged ones) has
// arrived and then nothing more for grace (time for a duplicate to show),
// or, while some are still missing, until nothing has arrived for quiet; in
// any case until total has passed. It acknowledges like a
// well-behaved receiver: PUBACK for QoS 1; for QoS 2 it delivers on the
// PUBLISH, answers PUBREC, and treats a PUBLISH whose packet id is still
// awaiting PUBREL as the same message (the receiver side of the QoS 2
// exactly-once protocol, [MQTT-4.3.3-2], "Method B" of §4.3.3), answering
// PUBCOMP to PUBREL. Any duplicate it then records is the broker's.
//
// before are deliveries the subscriber received before the restart
// (-online): they start the result and count as seen.
func collect(ep endpoint, clientID string, expect map[string][]bool, before []delivery, quiet, grace, total time.Duration) (collected, error) {
	got := collected{deliveries: before}
	c, present, err := dial(ep, clientID, false)
	if err != nil {
		return got, err
	}
	defer c.Disconnect()
	got.sessionFound = present
	awaitingRel := make(map[uint16]bool)
	missing := 0
	seen := make(map[string][]bool, len(expect))
	for pub, acked := range expect {
		seen[pub] = make([]bool, len(acked))
		for _, a := range acked {
			if a {
				missing++
			}
		}
	}
	for _, d := range before {
		if sn := seen[d.pub]; d.seq < len(sn) && !sn[d.seq] {
			sn[d.seq] = true
			if expect[d.pub][d.seq] {
				missing--
			}
		}
	}
	end := time.Now().Add(total)
	for {
		wait := quiet
		if missing == 0 {
			wait = grace
		}
		deadline := time.Now().Add(wait)
		if deadline.After(end) {
			deadline = end
		}
		pkt, err := c.Next(deadline)
		if err == mqtttest.ErrTimeout {
			return got, nil
		}
		if err != nil {
			return got, err
		}
		switch p := pkt.(type) {
		case *codec.Publish:
			if p.QoS == 2 && awaitingRel[p.PacketID] {
				err = c.Ack(codec.PUBREC, p.PacketID)
				break
			}
			if d, ok := parsePayload(p.Payload); ok {
				got.deliveries = append(got.deliveries, d)
				if sn := seen[d.pub]; d.seq < len(sn) && !sn[d.seq] {
					sn[d.seq] = true
					if expect[d.pub][d.seq] {
						missing--
					}
				}
			} else {
				got.unparsable++
			}
			switch p.QoS {
			case 1:
				err = c.Ack(codec.PUBACK, p.PacketID)
			case 2:
				awaitingRel[p.PacketID] = true
				err = c.Ack(codec.PUBREC, p.PacketID)
			}
		case *codec.Ack:
			if p.Type == codec.PUBREL {
				delete(awaitingRel, p.PacketID)
				err = c.Ack(codec.PUBCOMP, p.PacketID)
			}
		}
		if err != nil {
			return got, err
		}
	}
}

// parsePayload splits "<pub>:<seq>".
func parsePayload(b []byte) (delivery, bool) {
	i := bytes.LastIndexByte(b, ':')
	if i <= 0 {
		return delivery{}, false
	}
	seq, err := strconv.Atoi(string(b[i+1:]))
	if err != nil || seq < 1 {
		return delivery{}, false
	}
	return delivery{pub: string(b[:i]), seq: seq}, true
}

// verdict is the outcome of checking one publisher's messages as seen by
// its subscriber.
type verdict struct {
	acked       int // messages the broker acknowledged
	lost        int // acknowledged but never delivered
	duplicated  int // extra deliveries of a message that must arrive exactly once
	redelivered int // extra deliveries of an at-least-once message (allowed)
	outOfOrder  int // first deliveries with a lower seq than an earlier first delivery
	phantom     int // deliveries of a seq never published
}

// check compares the seqs delivered for one publisher (in arrival order)
// with what the broker acknowledged (acked[seq]) and what was sent at all
// (sent[seq]). exactlyOnce selects QoS 2 accounting: a second delivery of a
// seq is a duplicate, not a permitted redelivery. Unacknowledged messages
// may or may not arrive; either is fine.
//
// Order is judged on first deliveries only: a QoS 1 redelivery after a
// reconnect legitimately repeats older seqs, but the first time each
// message shows up must follow publish order [MQTT-4.6.0-6].
func check(acked, sent []bool, arrivals []int, exactlyOnce bool) verdict {
	var v verdict
	count := make([]int, len(acked))
	highest := 0
	for _, seq := range arrivals {
		if seq < 1 || seq >= len(sent) || !sent[seq] {
			v.phantom++
			continue
		}
		count[seq]++
		if count[seq] > 1 {
			if exactlyOnce {
				v.duplicated++
			} else {
				v.redelivered++
			}
			continue
		}
		if seq < highest {
			v.outOfOrder++
		} else {
			highest = seq
		}
	}
	for seq := 1; seq < len(acked); seq++ {
		if acked[seq] {
			v.acked++
			if count[seq] == 0 {
				v.lost++
			}
		}
	}
	return v
}

// checkRetained connects a fresh clean-session client, subscribes to topic
// and reports whether the retained message delivered on subscription
// [MQTT-3.3.1-6] carries want. A retained message survives only if the
// broker stored it durably before acknowledging it.
func checkRetained(ep endpoint, topic, want string, wait time.Duration) (bool, string, error) {
	c, _, err := dial(ep, "crash-retained-check", true)
	if err != nil {
		return false, "", err
	}
	defer c.Disconnect()
	var got *codec.Publish
	keep := func(pkt any) {
		if p, ok := pkt.(*codec.Publish); ok && got == nil {
			got = p
		}
	}
	if err := subscribe(c, topic, 1, keep); err != nil {
		return false, "", err
	}
	deadline := time.Now().Add(wait)
	for got == nil {
		pkt, err := c.Next(deadline)
		if err == mqtttest.ErrTimeout {
			return false, "", nil
		}
		if err != nil {
			return false, "", err
		}
		keep(pkt)
	}
	if got.QoS == 1 {
		_ = c.Ack(codec.PUBACK, got.PacketID)
	}
	return got.Retain && string(got.Payload) == want, string(got.Payload), nil
}

// setRetained publishes want to topic with RETAIN at QoS 1 and waits for the
// PUBACK: from then on the broker has promised to keep it.
func setRetained(ep endpoint, topic, want string) error {
	c, _, err := dial(ep, "crash-retained-set", true)
	if err != nil {
		return err
	}
	defer c.Disconnect()
	err = c.Send(&codec.Publish{QoS: 1, Retain: true, Topic: []byte(topic), PacketID: 1, Payload: []byte(want)})
	if err != nil {
		return err
	}
	deadline := time.Now().Add(ioTimeout)
	for {
		pkt, err := c.Next(deadline)
		if err != nil {
			return err
		}
		if a, ok := pkt.(*codec.Ack); ok && a.Type == codec.PUBACK && a.PacketID == 1 {
			return nil
		}
	}
}
