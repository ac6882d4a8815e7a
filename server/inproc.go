package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/ternmq/tern/codec"
	"github.com/ternmq/tern/trie"
)

// The in-process client.
//
// # Design
//
// An in-process client (Server.Client) is a real MQTT 5.0 client of the
// broker whose connection is a pair of in-memory buffers instead of a
// socket. The broker side is the ordinary *client, driven through the
// same gnet handler (OnOpen, OnTraffic, OnClose) as a TCP, TLS or
// WebSocket connection; so every guarantee — QoS 1/2 flows, the group
// commit and its fsync before an acknowledgement, persistent sessions and
// their disk-backed queues, the Authorizer and hooks, every limit,
// pacing and the slow-consumer rules — is the network path's code, not a
// second implementation of it:
//
//	Client.Publish ─encode─▶ pipeConn.pending ─post onReadable─▶ in-process loop:
//	  OnTraffic: handlePublish … route … group commit ─▶ PUBACK ─▶ pipeConn.Write
//	pipeConn.Write (on the loop) parses what the broker writes:
//	  CONNACK, PUBACK, PUBREC, PUBCOMP, SUBACK, UNSUBACK → wake the waiting call
//	  PUBLISH, PUBREL → delivery buffer ─▶ dispatcher goroutine: decode,
//	    call the handlers, then PUBACK / PUBREC / PUBCOMP back to the broker
//
// The connection runs on an in-process loop (inprocLoop): a goroutine that
// runs posted tasks one at a time, which gives the single-owner guarantee
// of a gnet event loop; there are up to Options.EventLoops of them, shared
// by all in-process clients round robin. A Client costs that share plus one
// dispatcher goroutine.
//
// Costs per message: one encode into the pending buffer and one decode by
// the broker (no syscall, no copy beyond the broker's one message copy),
// and for deliveries one copy into the delivery buffer and one decode.
// Nothing allocates per message once warm, except the topic string handed
// to a handler when it differs from the previous message's.
//
// # Back-pressure
//
// Nothing is unbounded:
//
//   - Publish blocks while the broker has not read half its paced-input
//     limit of this client's input (inprocInputLimit) — the broker stops
//     reading a paced publisher (pace.go), so a slow subscriber slows
//     in-process publishers exactly as it slows network ones. QoS 1/2
//     publishes are further bounded by the broker's Receive Maximum: at
//     most that many wait for acknowledgements at once; more block.
//   - Deliveries wait in the delivery buffer while a handler runs. The
//     broker counts that buffer as the connection's unsent output: QoS 1/2
//     stays within the client's Receive Maximum (ClientOptions), the rest
//     waits in the session's queue (on disk for a persistent session, and
//     pacing publishers for a clean one); QoS 0 beyond
//     Options.MaxOutboundBytes is dropped and counted, as for a socket
//     that does not keep up. A handler that makes no progress for
//     Options.SlowConsumerTimeout while publishers wait for it is
//     disconnected like any slow consumer (Done is closed, Err says why).
//
// # Identity
//
// An in-process client is code of the embedding program: it is not
// authenticated (neither the Authenticator nor an Authenticate hook is
// asked) and is allowed on any configuration. ClientOptions.Username is
// its identity: the Authorizer and Authorize hooks see it, and it owns
// its session like any authenticated user.

// inprocInputLimit bounds the bytes a Client may hand the broker that the
// broker has not read yet; Publish blocks beyond it. A packet is queued
// only if it fits under the limit or nothing else waits (a packet is at
// most MaxPacketSize, half the paced-input limit), so a paced in-process
// publisher is held back, never disconnected for its unread input.
func (o *Options) inprocInputLimit() int64 { return int64(o.pacedInputLimit() / 2) }

// ErrPacketTooLarge is returned by an in-process client's publish whose
// PUBLISH would exceed Options.MaxPacketSize (the broker would refuse it
// and close the connection); nothing is sent.
var ErrPacketTooLarge = errors.New("packet too large")

// ErrClientClosed is returned by the methods of a Client whose connection
// to the broker ended (Close, takeover, slow consumer, server Close).
var ErrClientClosed = errors.New("in-process client closed")

// Message is a message delivered to an in-process client's handler, or
// one to publish with Client.PublishMessage.
type Message struct {
	Topic   string
	Payload []byte // delivered: valid only during the handler call (copy to keep)
	QoS     byte
	Retain  bool
	// ResponseTopic and CorrelationData are MQTT 5.0's request/response
	// properties. Delivered CorrelationData is valid only during the call.
	ResponseTopic   string
	CorrelationData []byte
	ContentType     string
	// Expiry is the Message Expiry Interval (0: none); delivered, the
	// time the message has left.
	Expiry time.Duration
	// Duplicate is set on a delivery that may have been handled before
	// (a QoS 1 re-delivery after a restart or reconnect).
	Duplicate bool
}

// Subscription is one topic filter of an in-process client with the
// handler its messages go to.
type Subscription struct {
	Filter string // a topic filter; "$share/group/filter" for a shared subscription
	QoS    byte   // the maximum QoS of deliveries
	// Handler receives every message the filter matches. It runs on the
	// client's dispatcher goroutine, one message at a time, in order; the
	// *Message and its byte slices are valid only during the call. A
	// slow handler slows deliveries (see the back-pressure rules above).
	Handler func(*Message)
}

// ClientOptions configures an in-process client.
type ClientOptions struct {
	// Username is the client's identity for the Authorizer, the Authorize
	// hooks and session ownership. Default: "" (anonymous).
	Username string
	// SessionExpiry is how long the session outlives the client: 0 (the
	// default) is a clean session that ends with the Client; above 0 the
	// session is persistent (capped by Options.MaxSessionExpiry): a
	// Client with the same id resumes it — its subscriptions, and the QoS
	// 1/2 messages queued meanwhile, also across a broker restart.
	SessionExpiry time.Duration
	// Subscriptions are registered before the client connects, so that a
	// resumed session's queued messages find their handler; they are then
	// subscribed (again) once connected.
	Subscriptions []Subscription
	// OnMessage receives the messages no Subscription handler matches
	// (e.g. messages of a resumed session's subscription this Client has
	// not registered). Default: nil — such messages are dropped, counted
	// in Server.Stats().MessagesDropped and logged.
	OnMessage func(*Message)
	// ReceiveMaximum is how many QoS 1/2 deliveries may wait for this
	// client's handlers at once. Default: Options.ReceiveMaximum.
	ReceiveMaximum int
}

// Client is an in-process MQTT client of a Server: see Server.Client.
// Every method is safe for concurrent use from any goroutine, including
// from a handler (but a handler that publishes QoS 1/2 to a topic its own
// client subscribes waits for its own queue; see Publish).
type Client struct {
	srv  *Server
	id   string
	conn *pipeConn

	hmu     sync.RWMutex // guards subs and onMsg
	subs    []Subscription
	onMsg   func(*Message)
	slots   chan uint16      // free packet ids; its capacity bounds QoS 1/2 in flight
	waiters []chan ackResult // per packet id: the acknowledgement for the call waiting
	// abandoned[id] is 1 while the call that sent packet id gave up
	// waiting (its context ended): the acknowledgement then frees the id.
	abandoned []atomic.Uint32
	// callbacks[id] is PublishAsync's done for packet id: set by the
	// publisher before the packet is queued, read and cleared by the loop
	// when the acknowledgement arrives (the queueing orders the two).
	callbacks []func(error)
	connack   chan codec.Connack
	closeMu   sync.Mutex
	closeErr  error
	done      chan struct{}
	exited    chan struct{} // the dispatcher returned

	// Dispatcher state (dispatcher goroutine only).
	msg       Message
	dec       codec.Publish
	qos2      [1024]uint64 // packet ids of QoS 2 deliveries handled, awaiting PUBREL
	lastTopic string
}

// Client connects a new in-process client with client identifier id
// (required) and returns once the broker accepted it (CONNACK). It may be
// called from any goroutine once New returned; the broker need not listen.
// A client with the id of a connected one takes its session over (the
// older one is closed, as for network clients).
func (s *Server) Client(id string, opts ClientOptions) (*Client, error) {
	if id == "" {
		return nil, errors.New("in-process client: id is required")
	}
	if s.closing.Load() {
		return nil, ErrClientClosed
	}
	if opts.ReceiveMaximum <= 0 || opts.ReceiveMaximum > maxUint16 {
		opts.ReceiveMaximum = s.opts.ReceiveMaximum
	}
	for _, sub := range opts.Subscriptions {
		if sub.Handler == nil || sub.QoS > 2 {
			return nil, fmt.Errorf("in-process client: subscription %q needs a handler and a QoS 0-2", sub.Filter)
		}
	}
	l := s.inprocLoop()
	if l == nil {
		return nil, ErrClientClosed
	}
	window := s.opts.ReceiveMaximum
	c := &Client{srv: s, id: id, onMsg: opts.OnMessage, subs: append([]Subscription(nil), opts.Subscriptions...),
		slots: make(chan uint16, window), waiters: make([]chan ackResult, window+1), abandoned: make([]atomic.Uint32, window+1),
		callbacks: make([]func(error), window+1),
		connack:   make(chan codec.Connack, 1), done: make(chan struct{}), exited: make(chan struct{})}
	for i := 1; i <= window; i++ {
		c.slots <- uint16(i)
		c.waiters[i] = make(chan ackResult, 1)
	}
	c.conn = newPipeConn(c, l)
	if err := s.inprocAdd(c); err != nil {
		return nil, err
	}
	go c.dispatch()
	if err := l.post(c.conn.open); err != nil {
		c.conn.closed(ErrClientClosed)
		return nil, ErrClientClosed
	}
	p := codec.Connect{ProtocolVersion: codec.Version5, ClientID: []byte(id), CleanStart: opts.SessionExpiry <= 0}
	if opts.Username != "" {
		p.Username, p.UsernameFlag = []byte(opts.Username), true
	}
	if opts.SessionExpiry > 0 {
		p.Props.SessionExpiry = uint32(min(opts.SessionExpiry/time.Second, 1<<32-1))
		p.Props.Set(codec.PropSessionExpiry)
	}
	p.Props.ReceiveMaximum = uint16(opts.ReceiveMaximum)
	p.Props.Set(codec.PropReceiveMaximum)
	if err := c.conn.send(p.Append(nil), false); err != nil {
		return nil, err
	}
	t := time.NewTimer(s.opts.ConnectTimeout)
	defer t.Stop()
	select {
	case ack := <-c.connack:
		if ack.ReasonCode >= 0x80 {
			c.Close()
			return nil, fmt.Errorf("in-process client %q refused: %w", id, codec.Errf(ack.ReasonCode, "", "%s", ack.Props.ReasonString))
		}
	case <-c.done:
		return nil, c.Err()
	case <-t.C:
		c.Close()
		return nil, fmt.Errorf("in-process client %q: no CONNACK within the connect timeout", id)
	}
	for _, sub := range opts.Subscriptions {
		if err := c.subscribe(context.Background(), sub.Filter, sub.QoS); err != nil {
			c.Close()
			return nil, err
		}
	}
	return c, nil
}

// ID returns the client identifier. Safe from any goroutine.
func (c *Client) ID() string { return c.id }

// Done is closed when the client's connection ended. Safe from any goroutine.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err says why the connection ended (nil while it is open, ErrClientClosed
// after Close). Safe from any goroutine.
func (c *Client) Err() error {
	c.closeMu.Lock()
	defer c.closeMu.Unlock()
	return c.closeErr
}

// Publish publishes payload to topic and, for QoS 1 and 2, returns once
// the broker acknowledged it: after the message is in the store and
// synced for every matching persistent session (with DurabilitySync) —
// the acknowledgement a network client would get (PUBACK, PUBREC). QoS 0
// returns once the broker has the message queued. It blocks while the
// broker holds this client back (pacing, see the package's back-pressure
// rules) and while Receive Maximum QoS 1/2 publishes of this client wait
// for their acknowledgements. A refusal (ACL, quota) is an error carrying
// the reason code (codec.CodeOf). Safe from any goroutine, concurrently;
// the broker handles concurrent publishes in the order they were queued.
//
// A handler that publishes QoS 1/2 to a topic its own client subscribes
// may wait for its own delivery queue; prefer another Client for that.
func (c *Client) Publish(topic string, payload []byte, qos byte, retain bool) error {
	return c.PublishMessage(context.Background(), &Message{Topic: topic, Payload: payload, QoS: qos, Retain: retain})
}

// PublishMessage is Publish with MQTT 5.0 properties (response topic,
// correlation data, content type, expiry) and a context that bounds the
// wait: when ctx ends first, the call returns ctx.Err() and the message
// may still be delivered. m is not retained after the call. Safe from any
// goroutine.
func (c *Client) PublishMessage(ctx context.Context, m *Message) error {
	return c.publish(ctx, m, nil)
}

// PublishAsync queues m and returns without waiting for the broker's
// acknowledgement: done (if not nil) is called with its outcome — nil, or
// the refusal — once it arrives (QoS 0: at once; if the connection ends
// first: with the reason). It still blocks while
// the broker holds this client back and while Receive Maximum QoS 1/2
// publishes are unacknowledged, so a loop of PublishAsync keeps a window
// of messages in flight without growing anything. done runs on the
// broker's loop goroutine for this client: it must be quick and must not
// call a method of this Client or Server that waits for the broker. The
// message is copied before PublishAsync returns. Safe from any goroutine.
func (c *Client) PublishAsync(m *Message, done func(error)) error {
	return c.publish(context.Background(), m, done)
}

// publish queues m; for QoS 1/2 it then waits for the acknowledgement, or
// with done set leaves it to answer.
func (c *Client) publish(ctx context.Context, m *Message, done func(error)) error {
	if m.QoS > 2 {
		return errors.New("qos must be 0, 1 or 2")
	}
	if err := trie.ValidateTopic([]byte(m.Topic), c.srv.opts.MaxTopicLevels); err != nil {
		return errors.Join(ErrInvalidTopic, err)
	}
	var id uint16
	if m.QoS > 0 {
		var err error
		if id, err = c.takeSlot(ctx); err != nil {
			return err
		}
	}
	pc := c.conn
	pc.mu.Lock()
	p := &pc.enc
	p.Topic = append(p.Topic[:0], m.Topic...)
	p.Payload, p.QoS, p.Retain, p.PacketID, p.Dup = m.Payload, m.QoS, m.Retain, id, false
	p.Props.Reset()
	if m.ResponseTopic != "" {
		p.Props.ResponseTopic = append(pc.rt[:0], m.ResponseTopic...)
		pc.rt = p.Props.ResponseTopic
		p.Props.Set(codec.PropResponseTopic)
	}
	if m.CorrelationData != nil {
		p.Props.CorrelationData = m.CorrelationData
		p.Props.Set(codec.PropCorrelationData)
	}
	if m.ContentType != "" {
		p.Props.ContentType = []byte(m.ContentType)
		p.Props.Set(codec.PropContentType)
	}
	if m.Expiry > 0 {
		p.Props.MessageExpiry = uint32(max(1, min(m.Expiry/time.Second, 1<<32-1)))
		p.Props.Set(codec.PropMessageExpiry)
	}
	if size := p.Size(codec.Version5); size > c.srv.opts.MaxPacketSize {
		p.Payload, p.Props.CorrelationData = nil, nil
		pc.mu.Unlock()
		if id != 0 {
			c.slots <- id
		}
		return fmt.Errorf("%w: %d bytes, max_packet_size is %d", ErrPacketTooLarge, size, c.srv.opts.MaxPacketSize)
	}
	if id != 0 && done != nil {
		c.callbacks[id] = done
	}
	err := pc.sendLocked(nil, true)
	p.Payload, p.Props.CorrelationData = nil, nil // not kept past the call
	if err != nil && id != 0 {
		c.callbacks[id] = nil // done is called below, not by closeOnLoop
	}
	pc.mu.Unlock()
	if err != nil || id == 0 {
		if done != nil {
			done(err)
		}
		return err
	}
	if done != nil {
		return nil
	}
	if rc, err := c.await(ctx, id); err != nil || rc >= 0x80 {
		return ackError(err, rc, "publish to", m.Topic)
	}
	return nil
}

// ackError is the error of a call whose wait ended with err or whose
// acknowledgement carried the failure code rc.
func ackError(err error, rc codec.ReasonCode, what, name string) error {
	if err != nil {
		return err
	}
	return fmt.Errorf("%s %s: %w", what, name, codec.Errf(rc, "", "refused by the broker"))
}

// Subscribe subscribes filter at qos with handler (see Subscription) and
// returns once the broker granted it (SUBACK, after a persistent session's
// record is synced). Subscribing a filter again replaces its handler and
// QoS. Safe from any goroutine.
func (c *Client) Subscribe(filter string, qos byte, handler func(*Message)) error {
	if handler == nil || qos > 2 {
		return errors.New("subscribe needs a handler and a QoS 0-2")
	}
	c.hmu.Lock()
	old := -1
	for i := range c.subs {
		if c.subs[i].Filter == filter {
			old = i
		}
	}
	var prev Subscription
	if old >= 0 {
		prev = c.subs[old]
		c.subs[old] = Subscription{Filter: filter, QoS: qos, Handler: handler}
	} else {
		c.subs = append(c.subs, Subscription{Filter: filter, QoS: qos, Handler: handler})
	}
	c.hmu.Unlock()
	err := c.subscribe(context.Background(), filter, qos)
	if err != nil {
		c.hmu.Lock()
		if old >= 0 {
			c.subs[c.findSub(filter)] = prev
		} else if i := c.findSub(filter); i >= 0 {
			c.subs = append(c.subs[:i], c.subs[i+1:]...)
		}
		c.hmu.Unlock()
	}
	return err
}

// SubscribeChan subscribes filter at qos and returns a channel of copies
// of its messages (with buf slots). The dispatcher waits while the
// channel is full, so a slow reader applies the back-pressure a slow
// handler does. The channel is closed when the client's connection ends.
// A resumed persistent session may deliver queued messages as soon as it
// connects, before this call: register its handlers in
// ClientOptions.Subscriptions instead. Safe from any goroutine.
func (c *Client) SubscribeChan(filter string, qos byte, buf int) (<-chan Message, error) {
	ch := make(chan Message, buf)
	var once sync.Once
	go func() { <-c.exited; once.Do(func() { close(ch) }) }()
	err := c.Subscribe(filter, qos, func(m *Message) {
		cp := *m
		cp.Payload = append([]byte(nil), m.Payload...)
		cp.CorrelationData = append([]byte(nil), m.CorrelationData...)
		select {
		case ch <- cp:
		case <-c.done:
		}
	})
	if err != nil {
		return nil, err
	}
	return ch, nil
}

// Unsubscribe removes filter and its handler, returning once the broker
// confirmed it (UNSUBACK). Safe from any goroutine.
func (c *Client) Unsubscribe(filter string) error {
	id, err := c.takeSlot(context.Background())
	if err != nil {
		return err
	}
	u := codec.Unsubscribe{PacketID: id, Filters: [][]byte{[]byte(filter)}}
	if err := c.conn.send(u.Append(nil, codec.Version5), true); err != nil {
		return err // closed: ids no longer matter
	}
	if rc, err := c.await(context.Background(), id); err != nil || rc >= 0x80 {
		return ackError(err, rc, "unsubscribe", filter)
	}
	c.hmu.Lock()
	if i := c.findSub(filter); i >= 0 {
		c.subs = append(c.subs[:i], c.subs[i+1:]...)
	}
	c.hmu.Unlock()
	return nil
}

// Close disconnects the client normally (DISCONNECT 0x00: no will, a
// persistent session stays, with its subscriptions, until it expires) and
// returns once the broker released the connection and every handler call
// returned — so it must not be called from a handler (use go c.Close()).
// Safe from any goroutine; idempotent.
func (c *Client) Close() error {
	d := codec.Disconnect{}
	_ = c.conn.send(d.Append(nil, codec.Version5), false)
	select {
	case <-c.done:
	case <-time.After(c.srv.opts.ConnectTimeout):
		_ = c.conn.loop.post(func() { c.conn.closeOnLoop(ErrClientClosed) })
		<-c.done
	}
	<-c.exited
	return nil
}

func (c *Client) findSub(filter string) int {
	for i := range c.subs {
		if c.subs[i].Filter == filter {
			return i
		}
	}
	return -1
}

// subscribe sends one SUBSCRIBE and waits for its SUBACK.
func (c *Client) subscribe(ctx context.Context, filter string, qos byte) error {
	id, err := c.takeSlot(ctx)
	if err != nil {
		return err
	}
	sp := codec.Subscribe{PacketID: id, Subscriptions: []codec.Subscription{{Filter: []byte(filter), QoS: qos}}}
	if err := c.conn.send(sp.Append(nil, codec.Version5), true); err != nil {
		return err // closed: ids no longer matter
	}
	if rc, err := c.await(ctx, id); err != nil || rc >= 0x80 {
		return ackError(err, rc, "subscribe", filter)
	}
	return nil
}

// takeSlot takes a free packet id, waiting while Receive Maximum requests
// are unacknowledged.
func (c *Client) takeSlot(ctx context.Context) (uint16, error) {
	select {
	case id := <-c.slots:
		return id, nil
	case <-c.done:
		return 0, c.Err()
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// ackResult is an acknowledgement handed to the waiting call: its reason
// code, and whether it ends the packet id's use (false for a PUBREC that
// PUBREL/PUBCOMP follow: PUBCOMP frees the id).
type ackResult struct {
	rc   codec.ReasonCode
	free bool
}

// await waits for the acknowledgement of packet id and frees the id when
// the acknowledgement ends its use. The id is freed exactly once: by this
// call once it received the acknowledgement, or — when the call gave up
// (ctx) — by the acknowledgement arriving later (answer).
func (c *Client) await(ctx context.Context, id uint16) (codec.ReasonCode, error) {
	var r ackResult
	select {
	case r = <-c.waiters[id]:
	case <-c.done:
		return 0, c.Err()
	case <-ctx.Done():
		c.abandoned[id].Store(1)
		select {
		case r = <-c.waiters[id]: // it arrived meanwhile: free it here, unless answer did
			if c.abandoned[id].CompareAndSwap(1, 0) && r.free {
				c.slots <- id
			}
		default:
		}
		return 0, ctx.Err()
	}
	if r.free {
		c.slots <- id
	}
	return r.rc, nil
}

// acked runs on the loop (pipeConn.Write) for each acknowledgement the
// broker sends: it answers the waiting call and frees the packet id.
func (c *Client) acked(h codec.FixedHeader, body []byte) {
	var a codec.Ack
	switch h.Type {
	case codec.CONNACK:
		var ack codec.Connack
		if ack.Decode(h, body, codec.Version5) == nil {
			ack.Props.ReasonString = append([]byte(nil), ack.Props.ReasonString...)
			select {
			case c.connack <- ack:
			default:
			}
		}
		return
	case codec.SUBACK, codec.UNSUBACK:
		if len(body) < 2 {
			return
		}
		id := uint16(body[0])<<8 | uint16(body[1])
		var rc codec.ReasonCode
		if h.Type == codec.SUBACK {
			var s codec.Suback
			if s.Decode(h, body, codec.Version5) == nil && len(s.ReasonCodes) > 0 {
				rc = s.ReasonCodes[0]
			}
		} else {
			var u codec.Unsuback
			if u.Decode(h, body, codec.Version5) == nil && len(u.ReasonCodes) > 0 {
				rc = u.ReasonCodes[0]
			}
		}
		c.answer(id, rc, true)
		return
	case codec.PUBACK, codec.PUBREC, codec.PUBCOMP:
	default:
		return
	}
	if a.Decode(h, body, codec.Version5) != nil {
		return
	}
	switch h.Type {
	case codec.PUBACK:
		c.answer(a.PacketID, a.ReasonCode, true)
	case codec.PUBREC:
		ok := a.ReasonCode < 0x80
		c.answer(a.PacketID, a.ReasonCode, !ok) // received: Publish returns; the id is free at PUBCOMP
		if ok {
			rel := codec.Ack{Type: codec.PUBREL, PacketID: a.PacketID}
			c.conn.ackBuf = rel.Append(c.conn.ackBuf[:0], codec.Version5)
			_ = c.conn.sendOnLoop(c.conn.ackBuf)
		}
	case codec.PUBCOMP:
		c.freeSlot(a.PacketID)
	}
}

// answer hands an acknowledgement to the call waiting for packet id (see
// await for who frees the id). Loop only.
func (c *Client) answer(id uint16, rc codec.ReasonCode, free bool) {
	if int(id) >= len(c.waiters) || id == 0 {
		return
	}
	if cb := c.callbacks[id]; cb != nil { // PublishAsync
		c.callbacks[id] = nil
		if free {
			c.freeSlot(id)
		}
		var err error
		if rc >= 0x80 {
			err = codec.Errf(rc, "", "publish refused by the broker")
		}
		cb(err)
		return
	}
	select {
	case c.waiters[id] <- ackResult{rc: rc, free: free}:
	default:
	}
	if c.abandoned[id].CompareAndSwap(1, 0) { // nobody waits: take it back
		select {
		case <-c.waiters[id]:
		default:
		}
		if free {
			c.freeSlot(id)
		}
	}
}

func (c *Client) freeSlot(id uint16) {
	if int(id) < len(c.waiters) && id != 0 {
		select {
		case c.slots <- id:
		default: // never: each id is taken once
		}
	}
}

// dispatch is the dispatcher goroutine: it hands PUBLISH packets to the
// handlers and acknowledges them after the handler returned, so a QoS 1/2
// message is acknowledged only once it was handled.
func (c *Client) dispatch() {
	defer close(c.exited)
	pc := c.conn
	var buf []byte
	for {
		pc.omu.Lock()
		for len(pc.out) == 0 && !pc.outClosed {
			pc.ocond.Wait()
		}
		if len(pc.out) == 0 {
			pc.omu.Unlock()
			return
		}
		buf, pc.out = pc.out, buf[:0]
		pc.omu.Unlock()
		for off := 0; off < len(buf); {
			h, body, n, err := codec.ReadPacket(buf[off:], 0)
			if err != nil {
				break // the broker writes whole, valid packets
			}
			c.deliver(h, body)
			off += n
			pc.outBytes.Add(-int64(n))
		}
		if cap(buf) > 1<<20 {
			buf = nil
		}
	}
}

// deliver handles one PUBLISH or PUBREL from the broker. Dispatcher only.
func (c *Client) deliver(h codec.FixedHeader, body []byte) {
	if h.Type == codec.PUBREL {
		var a codec.Ack
		if a.Decode(h, body, codec.Version5) == nil {
			c.qos2[a.PacketID/64] &^= 1 << (a.PacketID % 64)
			comp := codec.Ack{Type: codec.PUBCOMP, PacketID: a.PacketID}
			c.conn.dispBuf = comp.Append(c.conn.dispBuf[:0], codec.Version5)
			_ = c.conn.send(c.conn.dispBuf, false)
		}
		return
	}
	if h.Type != codec.PUBLISH {
		return
	}
	p := &c.dec
	if p.Decode(h, body, codec.Version5) != nil {
		return
	}
	seen := p.QoS == 2 && c.qos2[p.PacketID/64]&(1<<(p.PacketID%64)) != 0
	if !seen { // a QoS 2 PUBLISH re-sent before PUBREL is not handled twice [MQTT-4.3.3-9]
		c.handle(p)
	}
	switch p.QoS {
	case 1:
		a := codec.Ack{Type: codec.PUBACK, PacketID: p.PacketID}
		c.conn.dispBuf = a.Append(c.conn.dispBuf[:0], codec.Version5)
		_ = c.conn.send(c.conn.dispBuf, false)
	case 2:
		c.qos2[p.PacketID/64] |= 1 << (p.PacketID % 64)
		a := codec.Ack{Type: codec.PUBREC, PacketID: p.PacketID}
		c.conn.dispBuf = a.Append(c.conn.dispBuf[:0], codec.Version5)
		_ = c.conn.send(c.conn.dispBuf, false)
	}
}

// handle calls every handler whose filter matches p's topic, or OnMessage.
func (c *Client) handle(p *codec.Publish) {
	m := &c.msg
	if string(p.Topic) != c.lastTopic {
		c.lastTopic = string(p.Topic)
	}
	*m = Message{Topic: c.lastTopic, Payload: p.Payload, QoS: p.QoS, Retain: p.Retain, Duplicate: p.Dup}
	if p.Props.Has(codec.PropResponseTopic) {
		m.ResponseTopic = string(p.Props.ResponseTopic)
	}
	if p.Props.Has(codec.PropCorrelationData) {
		m.CorrelationData = p.Props.CorrelationData
	}
	if p.Props.Has(codec.PropContentType) {
		m.ContentType = string(p.Props.ContentType)
	}
	if p.Props.Has(codec.PropMessageExpiry) {
		m.Expiry = time.Duration(p.Props.MessageExpiry) * time.Second
	}
	handled := false
	c.hmu.RLock()
	for i := 0; i < len(c.subs); i++ { // not range: a handler may (un)subscribe meanwhile
		f := c.subs[i].Filter
		if _, inner, shared := trie.SplitShared(f); shared {
			f = inner
		}
		if trie.MatchTopic(f, m.Topic) {
			h := c.subs[i].Handler
			c.hmu.RUnlock()
			h(m)
			handled = true
			c.hmu.RLock()
		}
	}
	onMsg := c.onMsg
	c.hmu.RUnlock()
	if !handled {
		if onMsg != nil {
			onMsg(m)
			return
		}
		c.srv.stats.dropped.Add(1)
		c.srv.log.Warn("in-process client: message matches no handler, dropped (set ClientOptions.OnMessage)",
			"client_id", c.id, "topic", m.Topic)
	}
}

// closed records why the connection ended and wakes every waiting call.
func (c *Client) closed(err error) {
	c.closeMu.Lock()
	if c.closeErr == nil {
		if err == nil {
			err = ErrClientClosed
		}
		c.closeErr = err
		close(c.done)
	}
	c.closeMu.Unlock()
}

// inprocAddr is the address an in-process connection reports.
type inprocAddr struct{}

func (inprocAddr) Network() string { return "inproc" }
func (inprocAddr) String() string  { return "inproc" }

// pipeConn is the broker side of an in-process client's connection: a
// gnet.Conn over memory. The embedded interface is nil: only the methods
// the broker calls are implemented.
//
// Ownership: in, ctx and isClosed belong to the loop goroutine; pending,
// scheduled, enc and rt are shared with the client's goroutines under mu;
// out and outClosed with the dispatcher under omu.
type pipeConn struct {
	gnet.Conn
	cl   *Client
	loop *inprocLoop
	ctx  any

	in       []byte
	isClosed bool

	mu           sync.Mutex
	cond         *sync.Cond // Publish waits on it for input room
	pending      []byte
	scheduled    bool
	dead         bool
	enc          codec.Publish
	rt           []byte
	ackBuf       []byte // loop only: PUBREL scratch
	dispBuf      []byte // dispatcher only: PUBACK/PUBREC scratch
	inBytes      atomic.Int64
	onReadableFn func()

	omu       sync.Mutex
	ocond     *sync.Cond
	out       []byte
	outClosed bool
	outBytes  atomic.Int64 // written by the broker, not yet handled
	partial   []byte       // loop only: an incomplete packet Write got (never, in practice)
}

func newPipeConn(c *Client, l *inprocLoop) *pipeConn {
	pc := &pipeConn{cl: c, loop: l}
	pc.cond = sync.NewCond(&pc.mu)
	pc.ocond = sync.NewCond(&pc.omu)
	pc.onReadableFn = pc.onReadable
	return pc
}

// open runs OnOpen on the loop and marks the broker's client as in-process.
func (pc *pipeConn) open() {
	h := pc.cl.srv.inprocHandler()
	if _, act := h.OnOpen(pc); act == gnet.Close {
		pc.closeOnLoop(errors.New("refused at open (server closing or at max_connections)"))
		return
	}
	if cl, _ := pc.ctx.(*client); cl != nil {
		cl.flags.set(flagInproc)
	}
}

// send queues packet bytes for the broker. limit: wait while the broker
// has too many bytes of this client unread (inprocInputLimit; Publish,
// Subscribe); acknowledgements never wait (they free the broker's windows,
// and waiting for room could deadlock with a paced client).
func (pc *pipeConn) send(b []byte, limit bool) error {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	return pc.sendLocked(b, limit)
}

// sendLocked is send with mu held; b == nil sends pc.enc, encoded once
// there is room.
func (pc *pipeConn) sendLocked(b []byte, limit bool) error {
	need := int64(len(b))
	if b == nil {
		need = int64(pc.enc.Size(codec.Version5))
	}
	max := pc.cl.srv.opts.inprocInputLimit()
	for limit && !pc.dead && pc.inBytes.Load() > 0 && pc.inBytes.Load()+need > max {
		pc.cond.Wait()
	}
	if pc.dead {
		return pc.cl.Err()
	}
	n := len(pc.pending)
	if b == nil {
		pc.pending = pc.enc.Append(pc.pending, codec.Version5)
	} else {
		pc.pending = append(pc.pending, b...)
	}
	pc.inBytes.Add(int64(len(pc.pending) - n))
	if !pc.scheduled {
		pc.scheduled = true
		if pc.loop.post(pc.onReadableFn) != nil {
			pc.scheduled = false
			return ErrClientClosed
		}
	}
	return nil
}

// sendOnLoop is send for the loop goroutine (Write answering PUBREC).
func (pc *pipeConn) sendOnLoop(b []byte) error { return pc.send(b, false) }

// onReadable hands the pending input to OnTraffic. Loop only.
func (pc *pipeConn) onReadable() {
	pc.mu.Lock()
	pc.in = append(pc.in, pc.pending...)
	pc.pending = pc.pending[:0]
	pc.scheduled = false
	pc.mu.Unlock()
	if pc.isClosed {
		return
	}
	if act := pc.cl.srv.inprocHandler().OnTraffic(pc); act == gnet.Close {
		pc.closeOnLoop(nil)
	}
}

// closeOnLoop runs OnClose once and ends the client's side. Loop only.
func (pc *pipeConn) closeOnLoop(err error) {
	if pc.isClosed {
		return
	}
	pc.isClosed = true
	why := err
	if cl, _ := pc.ctx.(*client); cl != nil && why == nil {
		if r := cl.closeReason(); r != "" && r != "client sent DISCONNECT" {
			why = errors.New(r)
		} else if cl.takenOver.Load() {
			why = errors.New("session taken over by a new connection")
		}
	}
	if pc.ctx != nil {
		pc.cl.srv.inprocHandler().OnClose(pc, err)
	}
	pc.closed(why)
	// PublishAsync calls whose acknowledgement will never come.
	var pending []func(error)
	pc.mu.Lock()
	for i, cb := range pc.cl.callbacks {
		if cb != nil {
			pending = append(pending, cb)
			pc.cl.callbacks[i] = nil
		}
	}
	pc.mu.Unlock()
	for _, cb := range pending {
		cb(pc.cl.Err())
	}
}

// closed ends the client's side: waiting calls return, the dispatcher
// finishes what it has and exits. Any goroutine.
func (pc *pipeConn) closed(why error) {
	pc.cl.closed(why)
	pc.mu.Lock()
	pc.dead = true
	pc.cond.Broadcast()
	pc.mu.Unlock()
	pc.omu.Lock()
	pc.outClosed = true
	pc.ocond.Signal()
	pc.omu.Unlock()
	pc.cl.srv.inprocRemove(pc.cl)
}

// Write takes what the broker sends: acknowledgements answer the waiting
// call at once, deliveries go to the dispatcher. The broker writes whole
// packets; a stray partial one is kept until completed. Loop only (as gnet).
func (pc *pipeConn) Write(b []byte) (int, error) {
	if pc.isClosed {
		return 0, net.ErrClosed
	}
	n := len(b)
	if len(pc.partial) > 0 {
		pc.partial = append(pc.partial, b...)
		b = pc.partial
	}
	off, deliveries := 0, false
	for off < len(b) {
		h, body, size, err := codec.ReadPacket(b[off:], 0)
		if err == codec.ErrIncomplete {
			break
		}
		if err != nil {
			return off, err
		}
		switch h.Type {
		case codec.PUBLISH, codec.PUBREL:
			pc.omu.Lock()
			pc.out = append(pc.out, b[off:off+size]...)
			pc.omu.Unlock()
			pc.outBytes.Add(int64(size))
			deliveries = true
		case codec.DISCONNECT:
			var d codec.Disconnect
			if d.Decode(h, body, codec.Version5) == nil {
				pc.cl.closed(fmt.Errorf("disconnected by the broker: %w",
					codec.Errf(d.ReasonCode, "", "%s", d.Props.ReasonString)))
			}
		default:
			pc.cl.acked(h, body)
		}
		off += size
	}
	pc.partial = append(pc.partial[:0], b[off:]...)
	if deliveries {
		pc.omu.Lock()
		pc.ocond.Signal()
		pc.omu.Unlock()
	}
	return n, nil
}

// AsyncWrite is Write; cb, if any, runs on the loop.
func (pc *pipeConn) AsyncWrite(b []byte, cb gnet.AsyncCallback) error {
	return pc.loop.post(func() {
		_, err := pc.Write(b)
		if cb != nil {
			_ = cb(pc, err)
		}
	})
}

// OutboundBuffered is what the broker wrote that the handlers have not
// taken yet: the slow-consumer measure. Any goroutine.
func (pc *pipeConn) OutboundBuffered() int { return int(pc.outBytes.Load()) }

// Peek returns the buffered input (n ≤ 0: all of it). Loop only.
func (pc *pipeConn) Peek(n int) ([]byte, error) {
	if n <= 0 || n > len(pc.in) {
		return pc.in, nil
	}
	return pc.in[:n], nil
}

// Discard drops n bytes of buffered input and lets a waiting Publish go
// on. Loop only.
func (pc *pipeConn) Discard(n int) (int, error) {
	n = min(n, len(pc.in))
	pc.in = pc.in[:copy(pc.in, pc.in[n:])]
	if pc.inBytes.Add(-int64(n)) < pc.cl.srv.opts.inprocInputLimit() {
		pc.mu.Lock()
		pc.cond.Broadcast()
		pc.mu.Unlock()
	}
	return n, nil
}

// InboundBuffered is how much input waits for the broker. Loop only.
func (pc *pipeConn) InboundBuffered() int { return len(pc.in) }

// Close closes the connection from any goroutine.
func (pc *pipeConn) Close() error { return pc.loop.post(func() { pc.closeOnLoop(nil) }) }

// Context returns the broker's per-connection state. Loop only.
func (pc *pipeConn) Context() any { return pc.ctx }

// SetContext sets the broker's per-connection state. Loop only.
func (pc *pipeConn) SetContext(v any) { pc.ctx = v }

// EventLoop returns the in-process loop the connection runs on.
func (pc *pipeConn) EventLoop() gnet.EventLoop { return pc.loop }

// LocalAddr reports "inproc".
func (pc *pipeConn) LocalAddr() net.Addr { return inprocAddr{} }

// RemoteAddr reports "inproc".
func (pc *pipeConn) RemoteAddr() net.Addr { return inprocAddr{} }

// inprocLoop implements gnet.EventLoop for in-process connections: a
// goroutine running posted tasks one at a time, in order.
//
// Concurrency: post and Execute are safe from any goroutine; Close runs
// on the loop (as gnet requires).
type inprocLoop struct {
	mu      sync.Mutex
	tasks   []func()
	runs    []inprocRun
	stopped bool
	wake    chan struct{}
	exited  chan struct{}
}

type inprocRun struct {
	r   gnet.Runnable
	ctx context.Context
}

func newInprocLoop() *inprocLoop {
	l := &inprocLoop{wake: make(chan struct{}, 1), exited: make(chan struct{})}
	go l.run()
	return l
}

func (l *inprocLoop) post(fn func()) error {
	l.mu.Lock()
	if l.stopped {
		l.mu.Unlock()
		return ErrClientClosed
	}
	l.tasks = append(l.tasks, fn)
	l.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
	return nil
}

func (l *inprocLoop) run() {
	defer close(l.exited)
	var tasks []func()
	var runs []inprocRun
	for range l.wake {
		for {
			l.mu.Lock()
			tasks, l.tasks = l.tasks, tasks[:0]
			runs, l.runs = l.runs, runs[:0]
			stop := l.stopped && len(tasks) == 0 && len(runs) == 0
			l.mu.Unlock()
			if stop {
				return
			}
			if len(tasks) == 0 && len(runs) == 0 {
				break
			}
			for i, fn := range tasks {
				fn()
				tasks[i] = nil
			}
			for i := range runs {
				_ = runs[i].r.Run(runs[i].ctx)
				runs[i] = inprocRun{}
			}
		}
	}
}

// stop refuses further tasks, runs those queued and waits for the exit.
func (l *inprocLoop) stop() {
	l.mu.Lock()
	l.stopped = true
	l.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
	<-l.exited
}

// Execute runs r on the loop. Safe from any goroutine; allocation-free.
func (l *inprocLoop) Execute(ctx context.Context, r gnet.Runnable) error {
	l.mu.Lock()
	if l.stopped {
		l.mu.Unlock()
		return ErrClientClosed
	}
	l.runs = append(l.runs, inprocRun{r: r, ctx: ctx})
	l.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
	return nil
}

// Close closes c, which must be an in-process connection. Loop only.
func (l *inprocLoop) Close(c gnet.Conn) error {
	if pc, ok := c.(*pipeConn); ok {
		pc.closeOnLoop(nil)
		return nil
	}
	return errors.New("inproc: not an in-process connection")
}

// Register is not supported.
func (l *inprocLoop) Register(context.Context, net.Addr) (<-chan gnet.RegisteredResult, error) {
	return nil, errors.New("inproc: Register not supported")
}

// Enroll is not supported.
func (l *inprocLoop) Enroll(context.Context, net.Conn) (<-chan gnet.RegisteredResult, error) {
	return nil, errors.New("inproc: Enroll not supported")
}

// Schedule is not supported.
func (l *inprocLoop) Schedule(context.Context, gnet.Runnable, time.Duration) error {
	return errors.New("inproc: Schedule not supported")
}

// inprocState is the server's set of in-process loops and clients.
type inprocState struct {
	mu      sync.Mutex
	loops   []*inprocLoop
	next    int
	clients map[*Client]struct{}
	closed  bool
	h       handler
}

// inprocHandler is the gnet handler in-process connections are driven by.
// Its server field is set once, when the first loop starts, before any
// in-process connection exists.
func (s *Server) inprocHandler() *handler { return &s.inproc.h }

// inprocLoop picks a loop for a new client, starting the loops on first
// use; nil once the server is closing.
func (s *Server) inprocLoop() *inprocLoop {
	st := &s.inproc
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.closed {
		return nil
	}
	if st.loops == nil {
		st.h.s = s
		for range max(1, s.opts.EventLoops) {
			st.loops = append(st.loops, newInprocLoop())
		}
	}
	st.next++
	return st.loops[st.next%len(st.loops)]
}

func (s *Server) inprocAdd(c *Client) error {
	st := &s.inproc
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.closed {
		return ErrClientClosed
	}
	if st.clients == nil {
		st.clients = make(map[*Client]struct{})
	}
	st.clients[c] = struct{}{}
	return nil
}

func (s *Server) inprocRemove(c *Client) {
	st := &s.inproc
	st.mu.Lock()
	delete(st.clients, c)
	st.mu.Unlock()
}

// closeInproc closes every in-process client (OnClose runs: persistent
// sessions are stored offline, wills fire) and stops the loops. Called by
// Close before the store closes.
func (s *Server) closeInproc() {
	st := &s.inproc
	st.mu.Lock()
	st.closed = true
	clients := make([]*Client, 0, len(st.clients))
	for c := range st.clients {
		clients = append(clients, c)
	}
	loops := st.loops
	st.mu.Unlock()
	for _, c := range clients {
		pc := c.conn
		if pc.loop.post(func() { pc.closeOnLoop(errors.New("server closing")) }) == nil {
			<-c.done
		}
	}
	for _, l := range loops {
		l.stop()
	}
}
