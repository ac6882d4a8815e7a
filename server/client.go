package server

import (
	"errors"
	"sync/atomic"

	"github.com/panjf2000/gnet/v2"

	"github.com/ternmq/tern/codec"
)

type clientState uint8

const (
	stateNew       clientState = iota // waiting for CONNECT
	stateConnected                    // CONNACK 0 sent
	stateClosed                       // OnClose ran: the gnet.Conn must not be used again
)

// client is one network connection. Every field is owned by the connection's
// event loop, except wakeQueued and takenOver (atomics, set from other
// loops) and the fields written once before the session is published to
// other loops (version, loop).
type client struct {
	loop *loop
	conn gnet.Conn
	sess *session
	will *message
	cold *clientCold // rarely used fields, allocated on first use
	id   string

	lastSeen  int64 // unix nanoseconds of the last packet received
	openedAt  int64 // unix seconds
	keepAlive uint16

	state    clientState
	version  byte
	graceful bool // DISCONNECT (normal) received: no will
	loopback bool

	wakeQueued  atomic.Bool     // on its loop's drain list
	takenOver   atomic.Bool     // another connection took the session
	lastPending *pendingReplies // replies waiting for a commit; later replies queue behind
	v5          *v5State        // 5.0-only state (v5.go); nil before 5.0
}

// clientCold holds what most connections never set, so that an idle
// connection does not pay for it (a fleet of a million idle devices).
type clientCold struct {
	user      string // for the Authorizer; set only when one is configured
	closeWhy  string
	willDelay uint32 // 5.0 Will Delay Interval, seconds
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
	if u != "" && (o.Authorizer != nil || o.Authenticator != nil || len(o.EnhancedAuth) > 0) {
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
func (c *client) onTraffic() gnet.Action {
	l := c.loop
	l.now = nanotime()
	if c.state == stateClosed {
		return gnet.Close
	}
	buf, _ := c.conn.Peek(-1)
	off := 0
	act := gnet.None
	for off < len(buf) {
		h, body, n, err := codec.ReadPacket(buf[off:], c.loop.srv.opts.MaxPacketSize)
		if err == codec.ErrIncomplete {
			break
		}
		if err != nil {
			act = c.fail(err)
			break
		}
		off += n
		c.lastSeen = l.now
		if act = c.handle(h, body); act != gnet.None {
			break
		}
	}
	if off > 0 {
		_, _ = c.conn.Discard(off)
		l.srv.stats.bytesIn.Add(uint64(off))
	}
	c.finishEvent()
	l.drainLocal()
	c.loop.srv.submit(l, &l.tx, nil) // what draining wrote (acknowledged deliveries are deleted lazily)
	return act
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
	code := codec.UnspecifiedError
	var ce *codec.Error
	if errors.As(err, &ce) {
		code = ce.Code
	}
	c.setCloseWhy(err.Error())
	if c.version == codec.Version5 && c.state == stateConnected {
		d := codec.Disconnect{ReasonCode: byte(code)}
		c.setReasonAlways(&d.Props, c.closeReason())
		c.loop.out = d.Append(c.loop.out, c.version)
	} else if c.version == codec.Version5 && c.state == stateNew {
		return c.refuse(c.version, code, c.closeReason()) // a CONNECT refused after it decoded
	}
	c.loop.srv.log.Debug("closing connection", "client_id", c.id, "reason", c.closeReason())
	return gnet.Close
}

// closeNow closes the connection from a loop task (not from OnTraffic),
// telling a 5.0 client the reason first.
func (c *client) closeNow(code codec.ReasonCode, why string) {
	if c.state == stateClosed {
		return
	}
	c.setCloseWhy(why)
	if c.version == codec.Version5 && c.state == stateConnected {
		d := codec.Disconnect{ReasonCode: byte(code)}
		c.setReasonAlways(&d.Props, why)
		_, _ = c.conn.Write(d.Append(nil, c.version))
	}
	_ = c.loop.el.Close(c.conn)
}

// checkDeadline is the timing wheel's callback: it closes a connection that
// sent no CONNECT in time or was silent for 1.5× its keepalive
// [MQTT-3.1.2-24], and otherwise returns when to look again (0: never).
func (c *client) checkDeadline(now int64) int64 {
	switch c.state {
	case stateClosed:
		return 0
	case stateNew:
		due := c.openedAt + int64(c.loop.srv.opts.ConnectTimeout.Seconds())
		if now >= due {
			c.closeNow(codec.MaximumConnectTime, "no CONNECT within the connect timeout")
			return 0
		}
		return due
	}
	if c.keepAlive == 0 {
		return 0
	}
	limit := int64(c.keepAlive) * 1500 * 1e6 // 1.5 × keepalive in ns
	if c.loop.now-c.lastSeen >= limit {
		c.closeNow(codec.KeepAliveTimeout, "keepalive expired")
		return 0
	}
	return (c.lastSeen+limit)/1e9 + 1
}

func (c *client) handleDisconnect(h codec.FixedHeader, body []byte) gnet.Action {
	d := &c.loop.disconnect
	if err := d.Decode(h, body, c.version); err != nil {
		return c.fail(err)
	}
	// 5.0: reason 0x04 asks for the will to be published anyway.
	c.graceful = !(c.version == codec.Version5 && d.ReasonCode == byte(codec.DisconnectWithWill))
	if c.version == codec.Version5 && d.Props.Has(codec.PropSessionExpiry) {
		s := c.sess
		s.mu.Lock()
		if s.expiry == 0 && d.Props.SessionExpiry != 0 {
			s.mu.Unlock()
			c.graceful = false
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
	l := c.loop
	l.now = nanotime()
	was := c.state
	c.state = stateClosed
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
		s.online.Store(false)
		s.offlineAt = l.now / 1e9
	}
	persistent, expiry := s.persistent, s.expiry
	if mine && persistent {
		c.loop.srv.putSessionLocked(&l.tx, s, l.now/1e6)
	}
	s.mu.Unlock()
	if mine {
		if persistent {
			c.loop.srv.scheduleExpiry(s, l.now/1e9+int64(expiry))
		} else {
			c.loop.srv.endSession(&l.tx, s)
		}
	}
	if c.will != nil && !c.graceful {
		c.loop.srv.publishWill(l, c) // now, after its delay, or never (will.go)
	}
	c.loop.srv.submit(l, &l.tx, nil)
	// The will's deliveries to clients on this loop were listed locally;
	// OnClose is not inside a read event, so nothing else would drain them.
	l.drainLocal()
	c.loop.srv.log.Info("client disconnected", "client_id", c.id, "remote", remoteString(c.conn), "reason", why)
}

func remoteString(conn gnet.Conn) string {
	if a := conn.RemoteAddr(); a != nil {
		return a.String()
	}
	return ""
}
