package server

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"

	"github.com/ternmq/tern/codec"
)

type clientState uint8

const (
	stateNew       clientState = iota // waiting for CONNECT
	stateConnected                    // CONNACK 0 sent
	stateClosing                      // the broker closed it after saying why: session released, input discarded (linger)
	stateClosed                       // OnClose ran: the gnet.Conn must not be used again
)

// client is one network connection. Every field is owned by the connection's
// event loop, except wakeQueued and takenOver (atomics, set from other
// loops) and the fields written once before the session is published to
// other loops (version, loop).
//
// An idle device costs this struct for its whole connection, so it is
// kept at 112 bytes (an allocator size class): what most connections
// never use lives behind cold, sizes are the smallest that hold their
// values, and the fields are ordered so that no padding is left
// (TestClientStructSize checks it).
type client struct {
	loop *loop
	conn gnet.Conn
	sess *session
	will *message
	cold *clientCold // rarely used fields, allocated on first use
	id   string

	lastPending *pendingReplies // replies waiting for a commit; later replies queue behind
	v5          *v5State        // 5.0-only state (v5.go); nil before 5.0

	// lastSeen is the unix second of the last packet received, rounded
	// up, so that the keepalive check measured from it never fires early.
	lastSeen uint32
	deadline uint32 // unix seconds: stateNew, the connect timeout; stateClosing, the end of the linger
	partial  int32  // bytes of an incomplete packet counted in Server.partialBytes
	// since (unix seconds) and listener (1 + index in
	// Server.listenerList, 0: unknown) are set once by CONNECT before the
	// connection becomes its session's owner (under session.mu), so the
	// introspection API (introspect.go) may read them from any goroutine
	// while holding that session's mu and seeing this client as owner. The
	// client's address is read the same way, through remoteAddr (see
	// peerAddr).
	since     uint32
	keepAlive uint16
	flags     clientFlags // the loop's booleans, one bit each (flagGraceful…)

	state    clientState
	version  byte
	listener uint8
	// hasProxied: cold.proxied holds the PROXY header's address (set once,
	// before CONNECT). Readers on other goroutines (peerAddr) test it
	// rather than c.cold, which the loop may allocate at any time.
	hasProxied bool

	wakeQueued atomic.Bool // on its loop's drain list
	takenOver  atomic.Bool // another connection took the session
}

// clientFlags are a client's booleans, packed so that an idle connection
// pays two bytes for them, not one each (the client struct stays in the
// 112-byte size class). Only the client's loop reads or writes them: bits
// of one word must not be set from two goroutines.
type clientFlags uint16

const (
	flagGraceful  clientFlags = 1 << iota // DISCONNECT (normal) received: no will
	flagLoopback                          // came in on a loopback listener (connect.go: anonymous allowed)
	flagWriteShut                         // stateClosing: the write side is half-closed
	flagPaced                             // held back by full subscriber queues: input not read, replies held (pace.go)
	// flagAuthenticating: the CONNECT waits for the Authenticator
	// (authpool.go), a hook or the cluster's claim: input not read.
	flagAuthenticating
	flagProxyWait // a PROXY protocol header must come first (proxyproto.go)
	flagThrottled // over the publish rate: input not read until it allows more (ratelimit.go)
	flagInproc    // an in-process Client (inproc.go): trusted, never authenticated
	// flagConnackHeld: the CONNACK waits for the new persistent session's
	// store write (connect.go); nothing is delivered before it leaves.
	flagConnackHeld
)

// has reports whether any of the bits in b is set.
func (f clientFlags) has(b clientFlags) bool { return f&b != 0 }
func (f *clientFlags) set(b clientFlags)     { *f |= b }
func (f *clientFlags) clear(b clientFlags)   { *f &^= b }
func (f *clientFlags) put(b clientFlags, on bool) {
	if on {
		*f |= b
	} else {
		*f &^= b
	}
}

// clientCold holds what most connections never set, so that an idle
// connection does not pay for it (a fleet of a million idle devices).
type clientCold struct {
	lst       *listenerState // the listener's settings, when it has any (ratelimit.go)
	user      string         // for the Authorizer; set only when one is configured
	closeWhy  string
	willDelay uint32 // 5.0 Will Delay Interval, seconds
	// Pacing (pace.go): how many subscriber sessions hold this publisher
	// back, and the replies held until they all release it.
	pacedOn      int
	pacedBy      []*session // the sessions it registered on while pacedOn > 0
	pacedReplies *pendingReplies
	// proxied is the client address a PROXY protocol header gave
	// (proxyproto.go); nil: the connection's peer address.
	proxied net.Addr
	rate    *rateState // publish-rate buckets (ratelimit.go)
	// authz holds the Authorize hooks' verdicts while the packet that
	// waited for them is handled again (hooks.go).
	authz *authzPending
}

func (c *client) coldState() *clientCold {
	if c.cold == nil {
		c.cold = &clientCold{}
	}
	return c.cold
}

func (c *client) setCloseWhy(why string) { c.coldState().closeWhy = why }

func (c *client) closeReason() string {
	if c.cold == nil {
		return ""
	}
	return c.cold.closeWhy
}

// setUser keeps the username only when an auth hook will ask for it.
func (c *client) setUser(u string) {
	o := &c.loop.srv.opts
	if u != "" && (o.Authorizer != nil || o.Authenticator != nil || len(o.EnhancedAuth) > 0 || len(o.Hooks) > 0) {
		c.coldState().user = u
	}
}

func (c *client) username() string {
	if c.cold == nil {
		return ""
	}
	return c.cold.user
}

func (c *client) willDelaySecs() uint32 {
	if c.cold == nil {
		return 0
	}
	return c.cold.willDelay
}

// maxOut is the client's 5.0 Maximum Packet Size; 0 = none.
func (c *client) maxOut() uint32 {
	if c.v5 == nil {
		return 0
	}
	return c.v5.maxPacketOut
}

// onTraffic decodes and handles every whole packet buffered, then flushes
// replies and drains the deliveries this event produced on this loop.
//
// Input bounds. Every packet is checked against the largest size the
// connection may send in its state (maxInbound) from its fixed header,
// before its body is buffered. The bytes of a packet that has not fully
// arrived stay in gnet's inbound buffer and count in Server.partialBytes,
// capped broker-wide (holdPartial). While such a packet is incomplete,
// later events look only at its fixed header (stillPartial): a packet
// arriving in many small reads is copied out of gnet's buffer once, when
// whole, not once per read.
func (c *client) onTraffic() gnet.Action {
	l := c.loop
	l.now = nanotime()
	switch c.state {
	case stateClosing:
		c.discardInput()
		return gnet.None
	case stateClosed:
		return gnet.Close
	}
	if c.flags.has(flagPaced | flagAuthenticating | flagThrottled) { // input waits: for drained subscribers (pace.go), for a verdict (authpool.go), for the publish rate (ratelimit.go)
		if c.pacedInputOver() {
			return c.endEvent(c.fail(codec.Errf(c.pacedCode(), "", "kept sending while paced")))
		}
		return gnet.None
	}
	if c.flags.has(flagProxyWait) { // proxyproto.go: the PROXY header comes before any MQTT
		act, done := c.readProxyHeader()
		if !done {
			return act
		}
	}
	var buf []byte
	rest := 0 // bytes of an incomplete packet left buffered
	if c.partial > 0 && c.stillPartial() {
		rest = c.conn.InboundBuffered()
	} else {
		buf, _ = c.conn.Peek(-1)
	}
	off := 0
	act := gnet.None
	for off < len(buf) {
		h, body, n, err := codec.ReadPacket(buf[off:], c.maxInbound())
		if err == codec.ErrIncomplete {
			break
		}
		if err != nil {
			act = c.failFrame(err, buf[off:])
			break
		}
		if h.Type == codec.PUBLISH && c.state == stateConnected && c.throttlePublish(n) {
			break // ratelimit.go: left unread until the rate allows it
		}
		off += n
		c.lastSeen = ceilSecond(l.now)
		if act = c.handle(h, body); act != gnet.None || c.flags.has(flagPaced|flagAuthenticating) {
			break
		}
	}
	if off > 0 {
		_, _ = c.conn.Discard(off)
		l.srv.stats.bytesIn.Add(uint64(off))
	}
	if buf != nil {
		rest = len(buf) - off
	}
	if act == gnet.None && rest != int(c.partial) {
		act = c.holdPartial(rest)
	}
	return c.endEvent(act)
}

// endEvent ends a read event whose outcome is act: it sends (or holds for
// the commit) the replies the event produced, drains what it delivered on
// this loop, and turns a close after a reason into a linger. Every return
// of onTraffic after handling input goes through it: replies left in the
// loop's scratch buffer would otherwise go out on the next connection.
func (c *client) endEvent(act gnet.Action) gnet.Action {
	l := c.loop
	said := len(l.out) > 0 || c.lastPending != nil // replies, maybe the reason for closing
	c.finishEvent()
	l.drainLocal()
	c.loop.srv.submit(l, &l.tx, nil) // what draining wrote (acknowledged deliveries are deleted lazily)
	if act == gnet.Close && said {
		act = c.linger()
	}
	return act
}

// maxInbound is the largest packet the connection may send now: until its
// CONNECT is handled, Limits.MaxFirstPacketSize (an unauthenticated peer
// cannot make the broker buffer MaxPacketSize), then MaxPacketSize.
func (c *client) maxInbound() int {
	o := &c.loop.srv.opts
	if c.state == stateNew && o.Limits.MaxFirstPacketSize < o.MaxPacketSize {
		return o.Limits.MaxFirstPacketSize
	}
	return o.MaxPacketSize
}

// stillPartial reports whether the packet the last event left incomplete
// is still incomplete, reading only its fixed header.
func (c *client) stillPartial() bool {
	avail := c.conn.InboundBuffered()
	hdr, _ := c.conn.Peek(min(avail, 5))
	need := packetSize(hdr)
	return need > 0 && avail < need
}

// packetSize returns the total size, fixed header included, that the
// packet at the start of b announces, or 0 while b does not hold its whole
// fixed header or the header is malformed (ReadPacket reports that).
func packetSize(b []byte) int {
	rl, shift := 0, 0
	for i := 1; i < len(b) && i <= 4; i++ {
		rl |= int(b[i]&0x7F) << shift
		if b[i]&0x80 == 0 {
			return 1 + i + rl
		}
		shift += 7
	}
	return 0
}

// holdPartial records that rest bytes of an incomplete packet stay
// buffered, against the broker-wide cap Limits.MaxPartialBytes: a
// connection whose partial packet would take the total over it is closed
// (a 5.0 client that completed CONNECT is told 0x89 Server busy).
func (c *client) holdPartial(rest int) gnet.Action {
	s := c.loop.srv
	delta := int64(rest) - int64(c.partial)
	if delta > 0 {
		total := s.partialBytes.Add(delta)
		if total > s.opts.Limits.MaxPartialBytes {
			s.partialBytes.Add(-delta)
			s.refuse(limitPartialBytes, c.id, c.username(), remoteString(c.conn),
				"closed: its incomplete packet would take all connections' over max_partial_bytes")
			return c.fail(codec.Errf(codec.ServerBusy, "", "incomplete packets of all connections over max_partial_bytes"))
		}
		if total > s.partialPeak.Load() {
			s.partialPeak.Store(total) // a racy maximum is close enough for releasePartialMemory
		}
	} else {
		s.partialBytes.Add(delta)
	}
	c.partial = int32(rest)
	return gnet.None
}

// Incomplete packets sit in gnet's per-connection inbound ring buffers,
// which gnet hands to a sync.Pool when the connection closes or the
// buffer empties. A pool lets go of its objects only after two garbage
// collections, Go's background scavenger returns a heap chunk's free pages
// to the OS only after the chunk stayed sparse through a further
// collection, and a broker that went quiet after a flood of partial
// packets allocates too little to start any collection for minutes: the
// flood's memory would stay resident (measured: 1,000 partial 60 KiB
// CONNECTs, 65 MiB still resident 10 s after they closed). So once the
// bytes held in partial packets fell partialReleaseBytes below their
// peak, the ticker has four collections run a quarter second apart, off
// its goroutine and at most once per partialReleaseEvery; the memory is
// back with the OS about a second later. Four collections cost what
// marking the live heap four times costs, rarely: only after tens of MiB
// of partial packets were held and let go.
const (
	partialReleaseBytes = 32 << 20
	partialReleaseEvery = 30 * time.Second
)

// releasePartialMemory is the ticker's check described above. Ticker
// goroutine only.
func (s *Server) releasePartialMemory(now time.Time) {
	cur := s.partialBytes.Load()
	if s.partialPeak.Load()-cur < partialReleaseBytes || now.Sub(s.partialGC) < partialReleaseEvery {
		return
	}
	s.partialPeak.Store(cur)
	s.partialGC = now
	go func() {
		for i := range 4 {
			if i > 0 {
				time.Sleep(250 * time.Millisecond)
			}
			runtime.GC()
		}
	}()
}

// releasePartial takes the connection's incomplete packet out of the
// broker-wide count (it was consumed, discarded or its socket closed).
func (c *client) releasePartial() {
	if c.partial != 0 {
		c.loop.srv.partialBytes.Add(-int64(c.partial))
		c.partial = 0
	}
}

// failFrame handles a packet ReadPacket refused from its fixed header, b
// starting at it. A first packet over the size allowed before CONNECT is
// counted as a refusal of max_first_packet_size; when b shows it is a 5.0
// CONNECT the client is told with CONNACK 0x95 Packet too large (3.1.1
// has no such code: the connection is just closed).
func (c *client) failFrame(err error, b []byte) gnet.Action {
	var ce *codec.Error
	if c.state != stateNew || !errors.As(err, &ce) || ce.Code != codec.PacketTooLarge {
		return c.fail(err)
	}
	c.loop.srv.refuse(limitFirstPacket, "", "", remoteString(c.conn), "closed: first packet too large: "+err.Error())
	if connectVersion(b) == codec.Version5 {
		return c.refuse(codec.Version5, codec.PacketTooLarge, "first packet too large: "+err.Error())
	}
	c.setCloseWhy("first packet too large: " + err.Error())
	return gnet.Close
}

// connectVersion returns the protocol level of the CONNECT at the start of
// b if b holds enough of it to tell, else 0.
func connectVersion(b []byte) byte {
	if len(b) == 0 || codec.PacketType(b[0]>>4) != codec.CONNECT {
		return 0
	}
	i := 1
	for i < len(b) && i < 4 && b[i]&0x80 != 0 {
		i++
	}
	i++ // past the remaining length
	if len(b) < i+7 || string(b[i:i+6]) != "\x00\x04MQTT" {
		return 0
	}
	return b[i+6]
}

// Closing with a reason. A connection the broker closes after telling the
// client why (a 5.0 DISCONNECT, a refusing CONNACK) must not be closed at
// once: a close() with unread input makes the kernel answer with RST, and
// a RST makes the client's kernel drop what it received but the client
// had not read yet — the reason among it. Instead (linger) the session
// side ends at once (stateClosing: nothing else is sent or handled), the
// write side is half-closed (FIN right after the reason) as soon as
// nothing of the broker's waits to be written, input is read and
// discarded so none stays unread, and the socket is closed when the
// client closes its end or after lingerSecs, whichever comes first.

// lingerSecs bounds the linger: the timing wheel closes the socket 1 to
// 2 s after the reason.
const lingerSecs = 1

// lingerMaxOutbound: a reason queued behind more output than this (a slow
// consumer) would not reach the client during the linger anyway, so such
// a connection is closed at once.
const lingerMaxOutbound = 64 << 10

// linger starts the close described above and returns the action for the
// current event. Standard-library connections (TLS, WebSocket) have no
// descriptor to half-close and server/stdnet flushes and lingers on its
// own, so they are closed at once; so are server/wsloop's, which linger
// on their own with the WebSocket closing handshake (a half-close would
// come before their close frame).
func (c *client) linger() gnet.Action {
	if _, ws := c.conn.(interface{ CloseHandshake() bool }); ws || !c.loop.fds || c.conn.OutboundBuffered() > lingerMaxOutbound {
		return gnet.Close
	}
	c.end(nil, stateClosing)
	c.discardInput()
	c.deadline = uint32(c.loop.now/1e9) + lingerSecs
	c.loop.wheel.add(c, int64(c.deadline))
	return gnet.None
}

// discardInput drops what a closing connection received and half-closes
// its write side once the broker has nothing left to write to it (no
// replies held for a commit, gnet's outbound buffer empty).
func (c *client) discardInput() {
	_, _ = c.conn.Discard(c.conn.InboundBuffered())
	c.releasePartial()
	if c.flags.has(flagWriteShut) || c.lastPending != nil || c.conn.OutboundBuffered() > 0 {
		return
	}
	c.flags.set(flagWriteShut)
	_ = unix.Shutdown(c.conn.Fd(), unix.SHUT_WR)
}

// flush writes the replies gathered in the loop's scratch buffer.
func (c *client) flush() {
	l := c.loop
	if len(l.out) > 0 && c.state != stateClosed {
		_, _ = c.conn.Write(l.out)
	}
	l.out = l.out[:0]
}

func (c *client) handle(h codec.FixedHeader, body []byte) gnet.Action {
	if c.authPending() { // a CONNECT waits for its AUTH exchange (auth.go)
		return c.continueConnectAuth(h, body)
	}
	if h.Type == codec.CONNECT {
		if c.state != stateNew {
			return c.fail(codec.Errf(codec.ProtocolError, "MQTT-3.1.0-2", "second CONNECT on one connection"))
		}
		return c.handleConnect(h, body)
	}
	if c.state != stateConnected {
		return c.fail(codec.Errf(codec.ProtocolError, "MQTT-3.1.0-1", "first packet is %d, not CONNECT", h.Type))
	}
	switch h.Type {
	case codec.PUBLISH:
		return c.handlePublish(h, body)
	case codec.PUBACK, codec.PUBREC, codec.PUBREL, codec.PUBCOMP:
		return c.handleAck(h, body)
	case codec.SUBSCRIBE:
		return c.handleSubscribe(h, body)
	case codec.UNSUBSCRIBE:
		return c.handleUnsubscribe(h, body)
	case codec.PINGREQ:
		if h.RemainingLength != 0 {
			return c.fail(codec.Errf(codec.MalformedPacket, "", "PINGREQ with a body"))
		}
		c.loop.out = codec.AppendPingresp(c.loop.out)
		return gnet.None
	case codec.DISCONNECT:
		return c.handleDisconnect(h, body)
	case codec.AUTH:
		return c.handleAuth(h, body) // enhanced authentication (auth.go)
	default:
		// CONNACK, SUBACK, UNSUBACK, PINGRESP only flow server → client.
		return c.fail(codec.Errf(codec.ProtocolError, "", "server-only packet type %d sent by a client", h.Type))
	}
}

// fail closes the connection for err: a 5.0 client that completed CONNECT is
// first told why with a DISCONNECT carrying the reason code [MQTT-4.13.1-1].
// 3.1.1 has no way to say why; the network connection is simply closed.
func (c *client) fail(err error) gnet.Action {
	code := codec.CodeOf(err, codec.UnspecifiedError)
	c.setCloseWhy(err.Error())
	if c.version == codec.Version5 && c.state == stateConnected {
		d := codec.Disconnect{ReasonCode: code}
		c.setReasonAlways(&d.Props, c.closeReason())
		c.loop.out = d.Append(c.loop.out, c.version)
	} else if c.version == codec.Version5 && c.state == stateNew {
		return c.refuse(c.version, code, c.closeReason()) // a CONNECT refused after it decoded
	}
	c.loop.srv.log.Debug("closing connection", "client_id", c.id, "reason", c.closeReason())
	return gnet.Close
}

// closeNow closes the connection from a loop task (not from OnTraffic),
// telling a 5.0 client the reason first (and then lingering, see linger).
func (c *client) closeNow(code codec.ReasonCode, why string) {
	if c.state >= stateClosing {
		return
	}
	c.setCloseWhy(why)
	if c.version == codec.Version5 && c.state == stateConnected {
		d := codec.Disconnect{ReasonCode: code}
		c.setReasonAlways(&d.Props, why)
		_, _ = c.conn.Write(d.Append(nil, c.version))
		if c.linger() == gnet.None {
			return
		}
	}
	_ = closeConn(c.loop.el, c.conn)
}

// checkDeadline is the timing wheel's callback: it closes a connection that
// sent no CONNECT in time, was silent for 1.5× its keepalive
// [MQTT-3.1.2-24] or lingered long enough, and otherwise returns when to
// look again (0: never).
//
// The connect timeout bounds the client's time to send its CONNECT (the
// spec: a Server that gets no CONNECT "within a reasonable amount of time
// after the Network Connection is established" SHOULD close it, 3.1.1
// §3.1 and 5.0 §3.1.4; the first packet must be CONNECT [MQTT-3.1.0-1]):
// it is what defeats a slowloris peer. It does not bound the broker's own
// work once the CONNECT is in: while an Authenticator, a hook or the
// cluster decides (flagAuthenticating) the connection is not closed for it —
// each of those waits has its own bound (the auth pool's queue, the hook
// timeout, the cluster claim) — and a new persistent session's CONNACK
// waiting for its record's fsync is already past stateNew. Nor does it
// count time the loop itself was stalled (blocked in the store's
// back-pressure under load): a connection whose bytes wait unread in its
// socket when its deadline comes is looked at again a second later, after
// the loop has read them. Before, a CONNECT that waited in an overloaded
// auth pool, or in the socket of a stalled loop, past the connect timeout
// was closed before CONNACK although the client had done its part.
func (c *client) checkDeadline(now int64) int64 {
	switch c.state {
	case stateClosed:
		return 0
	case stateNew:
		if c.flags.has(flagAuthenticating) {
			return now + 1 // the broker is deciding; look again when it is done
		}
		if now >= int64(c.deadline) && c.unreadInput() {
			// The client's bytes wait in the socket: the loop was behind
			// (stalled in the store's back-pressure), not the client. The
			// read comes before the next tick; a partial CONNECT is then
			// in gnet's buffer, not the socket, and closed at that tick.
			return now + 1
		}
		if now >= int64(c.deadline) {
			// Counted and logged (rate-limited): a connect storm on an
			// overloaded broker shows here, not only in clients' errors.
			c.loop.srv.refuse(limitConnectTimeout, c.id, "", remoteString(c.conn), "no CONNECT within the connect timeout")
			c.closeNow(codec.MaximumConnectTime, "no CONNECT within the connect timeout")
			return 0
		}
		return int64(c.deadline)
	case stateClosing:
		if now >= int64(c.deadline) {
			_ = closeConn(c.loop.el, c.conn)
			return 0
		}
		return int64(c.deadline)
	}
	if c.keepAlive == 0 {
		return 0
	}
	limit := int64(c.keepAlive) * 1500 * 1e6 // 1.5 × keepalive in ns
	end := int64(c.lastSeen)*1e9 + limit     // lastSeen was rounded up: never early
	if c.loop.now >= end {
		c.closeNow(codec.KeepAliveTimeout, "keepalive expired")
		return 0
	}
	return end/1e9 + 1
}

// unreadInput reports whether bytes the client sent wait in its socket,
// not yet read by the loop. Raw sockets on gnet loops only (a TLS or
// WebSocket connection joined through Register is not asked).
func (c *client) unreadInput() bool {
	return c.loop.fds && socketPending(c.conn.Fd())
}

func (c *client) handleDisconnect(h codec.FixedHeader, body []byte) gnet.Action {
	d := &c.loop.disconnect
	if err := d.Decode(h, body, c.version); err != nil {
		return c.fail(err)
	}
	// 5.0: reason 0x04 asks for the will to be published anyway.
	c.flags.put(flagGraceful, !(c.version == codec.Version5 && d.ReasonCode == codec.DisconnectWithWill))
	if c.version == codec.Version5 && d.Props.Has(codec.PropSessionExpiry) {
		s := c.sess
		s.mu.Lock()
		if s.expiry == 0 && d.Props.SessionExpiry != 0 {
			s.mu.Unlock()
			c.flags.clear(flagGraceful)
			return c.fail(codec.Errf(codec.ProtocolError, "MQTT-3.14.2-2", "session expiry set on DISCONNECT after CONNECT had 0"))
		}
		s.expiry = c.loop.srv.capExpiry(d.Props.SessionExpiry)
		s.persistent = s.expiry > 0
		s.mu.Unlock()
	}
	c.setCloseWhy("client sent DISCONNECT")
	return gnet.Close
}

// onClose runs once, on the loop, when the network connection is gone.
func (c *client) onClose(err error) {
	c.releasePartial()
	c.end(err, stateClosed)
}

// end releases the connection's side of its session (the session goes
// offline or ends, the will is published) and moves the state to to:
// stateClosing while the socket lingers, stateClosed once it is gone. The
// session side is released once, by whichever call comes first.
func (c *client) end(err error, to clientState) {
	l := c.loop
	l.now = nanotime()
	was := c.state
	c.state = to
	if was != stateConnected {
		return
	}
	c.loop.srv.stats.connected.Add(-1)
	why := c.closeReason()
	switch {
	case c.takenOver.Load():
		why = "session taken over by a new connection"
	case why == "" && err != nil:
		why = err.Error()
	case why == "":
		why = "connection closed by peer"
	}
	s := c.sess
	s.mu.Lock()
	mine := s.owner == c
	if mine {
		s.owner = nil
		s.setOnline(false)
		s.offlineAt = l.now / 1e6
	}
	persistent, expiry := s.persistent, s.expiry
	var waiters []*client
	if mine {
		waiters = s.takeWaitersLocked() // pace.go: nobody waits for an absent subscriber
		if persistent {
			c.loop.srv.putSessionLocked(&l.tx, s, l.now/1e6)
			c.loop.srv.releaseBacklogLocked(s) // backlog.go: its deliveries wait in the store
		}
	}
	s.mu.Unlock()
	if waiters != nil {
		c.loop.srv.releasePaced(waiters)
	}
	if mine {
		if persistent {
			c.loop.srv.scheduleExpiry(s, l.now/1e6+int64(expiry)*1000)
		} else {
			c.loop.srv.endSession(&l.tx, s)
		}
	}
	c.abandonPacing() // pace.go: it still holds one message past a subscriber's soft limit
	if c.will != nil && !c.flags.has(flagGraceful) {
		c.loop.srv.publishWill(l, c) // now, after its delay, or never (will.go)
	}
	c.loop.srv.submit(l, &l.tx, nil)
	// The will's deliveries to clients on this loop were listed locally;
	// OnClose is not inside a read event, so nothing else would drain them.
	l.drainLocal()
	if c.loop.srv.log.Enabled(context.Background(), slog.LevelInfo) { // the address's formatting is per close
		c.loop.srv.log.Info("client disconnected", "client_id", c.id, "remote", remoteString(c.conn), "reason", why)
	}
	if hs := c.loop.srv.hooks.onDisconnect; hs != nil {
		var reason error
		if !c.flags.has(flagGraceful) || c.closeReason() != "client sent DISCONNECT" {
			reason = errors.New(why)
		}
		info := c.clientInfo()
		for _, f := range hs {
			f(info, reason)
		}
	}
}

func remoteString(conn gnet.Conn) string {
	if c, ok := conn.Context().(*client); ok {
		return c.remote()
	}
	if a := conn.RemoteAddr(); a != nil {
		return a.String()
	}
	return ""
}

// remoteAddr is the client's address: the one a PROXY protocol header
// named (proxyproto.go), else the connection's peer.
func (c *client) remoteAddr() net.Addr {
	if c.hasProxied {
		return c.cold.proxied
	}
	return c.conn.RemoteAddr()
}

// peerAddr is the client's address for the introspection API, which
// calls it from any goroutine while holding the session's mu and seeing c
// as the session's owner. That is safe without a copy in the client: the
// PROXY header's address (hasProxied, and cold.proxied, whose c.cold
// never changes once set) is written before CONNECT, and gnet clears its
// Conn's addresses only after OnClose, whose end() first takes the
// session's mu to drop c as owner; so every such read happens before that
// write.
func (c *client) peerAddr() net.Addr { return c.remoteAddr() }

// ceilSecond is unix nanoseconds ns as a unix second, rounded up.
func ceilSecond(ns int64) uint32 { return uint32((ns + 1e9 - 1) / 1e9) }

// remote is remoteAddr as a string for logs ("" if unknown).
func (c *client) remote() string {
	if a := c.remoteAddr(); a != nil {
		return a.String()
	}
	return ""
}
