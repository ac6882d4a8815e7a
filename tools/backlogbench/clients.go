package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ternmq/tern/codec"
	"github.com/ternmq/tern/internal/mqtttest"
)

// payloadHeader is the part of every payload the check reads: the session
// index (u32) and the message's sequence number for that session (u64),
// big-endian; zeros follow up to -size.
const payloadHeader = 12

func putPayload(p []byte, session uint32, seq uint64) {
	binary.BigEndian.PutUint32(p, session)
	binary.BigEndian.PutUint64(p[4:], seq)
}

func sessionID(i int) string { return "bl-s-" + strconv.Itoa(i) }
func topicOf(i int) []byte   { return []byte("bl/" + strconv.Itoa(i)) }

// createSessions makes every persistent session, subscribed at QoS 1 to its
// topic, and takes it offline with a normal DISCONNECT.
func createSessions(o options) error {
	for i := 0; i < o.sessions; i++ {
		c, err := mqtttest.Dial(o.addr)
		if err != nil {
			return err
		}
		ack, err := c.Connect(codec.Connect{ClientID: []byte(sessionID(i)), CleanStart: false, KeepAlive: 60})
		if err != nil || ack.ReasonCode != 0 {
			c.Close()
			return fmt.Errorf("session %d: CONNACK %v %v", i, ack, err)
		}
		sa, err := c.Subscribe(1, nil, codec.Subscription{Filter: topicOf(i), QoS: 1})
		if err != nil || len(sa.ReasonCodes) != 1 || sa.ReasonCodes[0] != 1 {
			c.Close()
			return fmt.Errorf("session %d: SUBACK %v %v", i, sa, err)
		}
		c.Disconnect()
	}
	return nil
}

// publishAll runs the publishers and returns when every message has been
// acknowledged.
func publishAll(o options, deadline time.Time) error {
	var wg sync.WaitGroup
	errs := make(chan error, o.pubs)
	var acked atomic.Int64
	for k := 0; k < o.pubs; k++ {
		var topics []int
		for i := k; i < o.sessions; i += o.pubs {
			topics = append(topics, i)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := publishOne(o, k, topics, deadline, &acked); err != nil {
				errs <- fmt.Errorf("publisher %d: %w", k, err)
			}
		}()
	}
	stop := make(chan struct{})
	go func() { // progress every 10 s
		t := time.NewTicker(10 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				logf("  %d acknowledged", acked.Load())
			}
		}
	}()
	wg.Wait()
	close(stop)
	close(errs)
	return errors.Join(collect(errs)...)
}

func collect(ch chan error) []error {
	var out []error
	for e := range ch {
		out = append(out, e)
	}
	return out
}

// publishOne sends per messages to each of topics, round-robin, keeping at
// most o.inflight unacknowledged, and waits for the last PUBACK. PUBACKs
// come in publish order [MQTT-4.6.0-2], so the packet ids cycle.
func publishOne(o options, k int, topics []int, deadline time.Time, acked *atomic.Int64) error {
	nc, err := net.DialTimeout("tcp", o.addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer nc.Close()
	c := mqtttest.New(nc)
	ack, err := c.Connect(codec.Connect{ClientID: []byte("bl-p-" + strconv.Itoa(k)), CleanStart: true, KeepAlive: 60})
	if err != nil || ack.ReasonCode != 0 {
		return fmt.Errorf("CONNACK %v %v", ack, err)
	}
	total := len(topics) * o.per
	slots := make(chan struct{}, o.inflight)
	for i := 0; i < o.inflight; i++ {
		slots <- struct{}{}
	}
	readErr := make(chan error, 1)
	go func() { readErr <- readAcks(c, total, slots, deadline, acked) }()

	out := make([]byte, 0, 64<<10)
	flush := func() error {
		if len(out) == 0 {
			return nil
		}
		nc.SetWriteDeadline(deadline)
		_, err := nc.Write(out)
		out = out[:0]
		return err
	}
	payload := make([]byte, o.size)
	for n := 0; n < total; n++ {
		select {
		case <-slots:
		default:
			if err := flush(); err != nil {
				return err
			}
			select {
			case <-slots:
			case err := <-readErr:
				return fmt.Errorf("after %d sent: %v", n, err)
			}
		}
		ti := topics[n%len(topics)]
		putPayload(payload, uint32(ti), uint64(n/len(topics)))
		p := codec.Publish{QoS: 1, Topic: topicOf(ti), Payload: payload, PacketID: uint16(n%65535) + 1}
		out = p.Append(out, codec.Version311)
		if len(out) >= 32<<10 {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := flush(); err != nil {
		return err
	}
	if err := <-readErr; err != nil {
		return err
	}
	c.Disconnect()
	return nil
}

// readAcks counts total PUBACKs, each freeing a slot, checking that they
// come in publish order.
func readAcks(c *mqtttest.Conn, total int, slots chan struct{}, deadline time.Time, acked *atomic.Int64) error {
	for n := 0; n < total; n++ {
		pkt, err := c.Next(deadline)
		if err != nil {
			return fmt.Errorf("waiting for PUBACK %d of %d: %w", n+1, total, err)
		}
		a, ok := pkt.(*codec.Ack)
		if !ok || a.Type != codec.PUBACK {
			return fmt.Errorf("want PUBACK, got %T %+v", pkt, pkt)
		}
		if want := uint16(n%65535) + 1; a.PacketID != want || a.ReasonCode >= 0x80 {
			return fmt.Errorf("PUBACK id %d reason 0x%02x, want id %d accepted", a.PacketID, a.ReasonCode, want)
		}
		acked.Add(1)
		slots <- struct{}{}
	}
	return nil
}

// drainResult is what the reconnecting sessions received.
type drainResult struct {
	elapsed                   time.Duration
	received, lost, dups, ooo int64
	noSession                 int
	rates                     []float64 // per session, msg/s from CONNACK to its last message
	rssPeak                   int64
	errs                      []string
}

// drainAll reconnects every session at once, acknowledges everything and
// checks each session's messages: all per of them, in order.
func drainAll(o options, b *broker, deadline time.Time) drainResult {
	var res drainResult
	var mu sync.Mutex
	var wg sync.WaitGroup
	stop := make(chan struct{})
	go func() { // the broker's peak RSS while draining
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				r := b.rss()
				mu.Lock()
				res.rssPeak = max(res.rssPeak, r)
				mu.Unlock()
			}
		}
	}()
	t0 := time.Now()
	var last time.Time
	for i := 0; i < o.sessions; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := drainOne(o, i, deadline)
			mu.Lock()
			defer mu.Unlock()
			res.received += s.distinct
			res.lost += int64(o.per) - s.distinct
			res.dups += s.dups
			res.ooo += s.ooo
			if !s.present {
				res.noSession++
			}
			if s.err != nil {
				res.errs = append(res.errs, fmt.Sprintf("session %d: %v", i, s.err))
			}
			if s.distinct == int64(o.per) {
				res.rates = append(res.rates, float64(o.per)/s.elapsed.Seconds())
				if s.done.After(last) {
					last = s.done
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	if last.IsZero() {
		last = time.Now()
	}
	res.elapsed = last.Sub(t0)
	return res
}

// sessionResult is one session's drain.
type sessionResult struct {
	present   bool
	distinct  int64
	dups, ooo int64
	elapsed   time.Duration // CONNACK → last expected message
	done      time.Time
	err       error
}

// drainOne resumes session i and reads until it has all its messages (or
// nothing came for 30 s), acknowledging each read burst in one write.
func drainOne(o options, i int, deadline time.Time) (r sessionResult) {
	nc, err := net.DialTimeout("tcp", o.addr, 10*time.Second)
	if err != nil {
		r.err = err
		return r
	}
	defer nc.Close()
	c := mqtttest.New(nc)
	c.Timeout = 30 * time.Second
	ack, err := c.Connect(codec.Connect{ClientID: []byte(sessionID(i)), CleanStart: false, KeepAlive: 60})
	if err != nil || ack.ReasonCode != 0 {
		r.err = fmt.Errorf("CONNACK %v %v", ack, err)
		return r
	}
	start := time.Now()
	r.present = ack.SessionPresent
	seen := make([]uint64, (o.per+63)/64)
	next := uint64(0)
	buf := append([]byte(nil), c.Buffered()...)
	store := buf
	rd := make([]byte, 64<<10)
	var out []byte
	var pub codec.Publish
	for r.distinct < int64(o.per) {
		for {
			h, body, total, err := codec.ReadPacket(buf, 0)
			if err == codec.ErrIncomplete {
				break
			}
			if err != nil {
				r.err = err
				return r
			}
			if h.Type == codec.PUBLISH {
				pub.Props.Reset()
				if err := pub.Decode(h, body, codec.Version311); err != nil {
					r.err = err
					return r
				}
				if len(pub.Payload) < payloadHeader || binary.BigEndian.Uint32(pub.Payload) != uint32(i) {
					r.err = fmt.Errorf("foreign payload on %s", pub.Topic)
					return r
				}
				seq := binary.BigEndian.Uint64(pub.Payload[4:])
				switch {
				case seq >= uint64(o.per):
					r.err = fmt.Errorf("sequence %d beyond the %d published", seq, o.per)
					return r
				case seen[seq/64]&(1<<(seq%64)) != 0:
					r.dups++
				default:
					seen[seq/64] |= 1 << (seq % 64)
					r.distinct++
					if seq != next {
						r.ooo++
					}
					next = max(next, seq+1)
				}
				if pub.QoS == 1 {
					out = (&codec.Ack{Type: codec.PUBACK, PacketID: pub.PacketID}).Append(out, codec.Version311)
				}
			}
			buf = buf[total:]
		}
		if len(out) > 0 {
			nc.SetWriteDeadline(deadline)
			if _, err := nc.Write(out); err != nil {
				r.err = err
				return r
			}
			out = out[:0]
		}
		if r.distinct >= int64(o.per) {
			break
		}
		nc.SetReadDeadline(minTime(deadline, time.Now().Add(30*time.Second)))
		n, err := nc.Read(rd)
		if err != nil {
			r.err = fmt.Errorf("after %d of %d: %w", r.distinct, o.per, err)
			return r
		}
		store = append(store[:0], buf...) // the unparsed tail to the front (memmove)
		buf = append(store, rd[:n]...)
		store = buf
	}
	r.done = time.Now()
	r.elapsed = r.done.Sub(start)
	_, _ = nc.Write((&codec.Disconnect{}).Append(nil, codec.Version311))
	return r
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
