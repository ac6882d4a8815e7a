//go:build linux

package bench

import (
	"fmt"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ternmq/tern/codec"
)

// The MQTT side of a client: the handshake (CONNECT, CONNACK, then
// SUBSCRIBE and SUBACK for subscribers), deliveries and their
// acknowledgements, and the packet ids of QoS 1/2 publishers.

// sendConnect writes c's CONNECT once its TCP connect completed.
func (l *loop) sendConnect(c *conn) {
	cfg := &l.r.cfg
	p := codec.Connect{
		ProtocolName:    []byte("MQTT"),
		ProtocolVersion: cfg.Protocol,
		CleanStart:      !cfg.Persistent,
		KeepAlive:       uint16(cfg.KeepAlive / time.Second),
		ClientID:        l.r.clientID(c),
	}
	if cfg.Username != "" {
		p.UsernameFlag, p.Username = true, []byte(cfg.Username)
	}
	if cfg.Password != "" {
		p.PasswordFlag, p.Password = true, []byte(cfg.Password)
	}
	if cfg.Protocol == codec.Version5 {
		p.Props.ReceiveMaximum = 65535
		p.Props.Set(codec.PropReceiveMaximum)
		if cfg.Persistent {
			p.Props.SessionExpiry = cfg.SessionExpiry
			p.Props.Set(codec.PropSessionExpiry)
		}
	}
	l.enc = p.Append(l.enc[:0])
	l.write(c, l.enc, time.Now().UnixNano())
}

// packet handles one packet from the broker.
func (l *loop) packet(c *conn, h codec.FixedHeader, body []byte, now int64) {
	v := l.r.cfg.Protocol
	switch h.Type {
	case codec.CONNACK:
		if c.state != stConnack {
			l.lostConn(c, "unexpected CONNACK")
			return
		}
		l.cack.Props.Reset()
		if err := l.cack.Decode(h, body, v); err != nil {
			l.fail(c, "bad CONNACK: "+err.Error())
			return
		}
		if l.cack.ReasonCode != 0 {
			l.fail(c, fmt.Sprintf("CONNACK refused: 0x%02x", l.cack.ReasonCode))
			return
		}
		c.window = l.r.cfg.Inflight
		if v == codec.Version5 && l.cack.Props.Has(codec.PropReceiveMaximum) && int(l.cack.Props.ReceiveMaximum) < c.window {
			c.window = int(l.cack.Props.ReceiveMaximum)
		}
		if len(c.filter) > 0 {
			s := codec.Subscribe{PacketID: 1, Subscriptions: []codec.Subscription{{Filter: c.filter, QoS: l.r.cfg.QoS}}}
			l.enc = s.Append(l.enc[:0], v)
			c.state = stSuback
			l.write(c, l.enc, now)
			return
		}
		l.ready(c, now)
	case codec.SUBACK:
		if c.state != stSuback {
			return
		}
		l.sack.Props.Reset()
		if err := l.sack.Decode(h, body, v); err != nil {
			l.fail(c, "bad SUBACK: "+err.Error())
			return
		}
		if len(l.sack.ReasonCodes) != 1 || l.sack.ReasonCodes[0] >= 0x80 {
			l.fail(c, fmt.Sprintf("SUBACK refused: % x", l.sack.ReasonCodes))
			return
		}
		l.ready(c, now)
	case codec.PUBLISH:
		l.pub.Props.Reset()
		if err := l.pub.Decode(h, body, v); err != nil {
			l.lostConn(c, "bad PUBLISH: "+err.Error())
			return
		}
		l.deliver(c, &l.pub, now)
	case codec.PUBACK, codec.PUBREC, codec.PUBREL, codec.PUBCOMP:
		l.ack.Props.Reset()
		if err := l.ack.Decode(h, body, v); err != nil {
			l.lostConn(c, "bad ack: "+err.Error())
			return
		}
		l.onAck(c, now)
	case codec.PINGRESP:
	case codec.DISCONNECT:
		l.disc.Props.Reset()
		_ = l.disc.Decode(h, body, v)
		l.lostConn(c, fmt.Sprintf("DISCONNECT from broker: 0x%02x", l.disc.ReasonCode))
	default:
		l.lostConn(c, fmt.Sprintf("unexpected packet type %d", h.Type))
	}
}

// ready marks c usable and records its connect latency.
func (l *loop) ready(c *conn, now int64) {
	c.state = stReady
	l.dialing--
	l.connLat.Record(now - c.dialAt)
	if l.r.cfg.Scenario == ScenarioConn {
		// A full listen queue drops SYNs and the kernel retries after 1 s,
		// 3 s…: count the clients that met it, so a p99 of about a second
		// is explained. (One getsockopt per client: conn scenario only.)
		if ti, err := unix.GetsockoptTCPInfo(c.fd, unix.IPPROTO_TCP, unix.TCP_INFO); err == nil && ti.Total_retrans > 0 {
			l.retransConns++
		}
	}
	l.stats.connected.Add(1)
}

// deliver accounts one received PUBLISH and acknowledges it.
func (l *loop) deliver(c *conn, p *codec.Publish, now int64) {
	run, pub, seq, at, ok := ParseHeader(p.Payload)
	// Another run's messages on the same topics (another harness, an
	// earlier step still draining) are foreign: counted, never credited.
	// A standalone subscriber cannot know its publishers' run and takes
	// any.
	if ok && run != l.r.runID && l.r.cfg.Scenario != ScenarioSub {
		ok = false
	}
	if !ok {
		l.stats.foreign.Add(1)
	} else {
		l.stats.recv.Add(1)
		dup := l.ledger.Receive(pub, c.rcv, c.pubID, seq)
		if !dup {
			l.latIv.Record(now - at)
		}
		if !dup && at >= l.measureLo && at < l.measureHi {
			l.lat.Record(now - at)
			l.recvIn++
		}
	}
	switch p.QoS {
	case 1:
		l.ack = codec.Ack{Type: codec.PUBACK, PacketID: p.PacketID}
		l.enc = l.ack.Append(l.enc[:0], l.r.cfg.Protocol)
		l.write(c, l.enc, now)
	case 2:
		l.ack = codec.Ack{Type: codec.PUBREC, PacketID: p.PacketID}
		l.enc = l.ack.Append(l.enc[:0], l.r.cfg.Protocol)
		l.write(c, l.enc, now)
	}
}

// onAck handles the acknowledgement in l.ack: answers the QoS 2 steps and
// frees the packet id when a publication completed.
func (l *loop) onAck(c *conn, now int64) {
	a := &l.ack
	switch a.Type {
	case codec.PUBREL: // we are the receiver of a QoS 2 message
		out := codec.Ack{Type: codec.PUBCOMP, PacketID: a.PacketID}
		l.enc = out.Append(l.enc[:0], l.r.cfg.Protocol)
		l.write(c, l.enc, now)
		return
	case codec.PUBREC:
		if a.ReasonCode >= 0x80 {
			l.rejected++
			l.freeID(c, a.PacketID)
			return
		}
		out := codec.Ack{Type: codec.PUBREL, PacketID: a.PacketID}
		l.enc = out.Append(l.enc[:0], l.r.cfg.Protocol)
		l.write(c, l.enc, now)
		return
	case codec.PUBACK, codec.PUBCOMP:
		if a.ReasonCode >= 0x80 {
			l.rejected++
		}
		l.freeID(c, a.PacketID)
	}
}

// freeID releases packet id of c; a publisher that was blocked on its
// window is queued again.
func (l *loop) freeID(c *conn, id uint16) {
	if c.ids == nil || c.ids[id/64]&(1<<(id%64)) == 0 {
		return // not ours: ignore rather than corrupt the window
	}
	c.ids[id/64] &^= 1 << (id % 64)
	c.inflt--
	if c.blocked && c.inflt < c.window && !l.outFull(c) {
		c.blocked = false
		l.enqueue(c)
	}
}

// takeID finds a free packet id, or 0 if none is free.
func (c *conn) takeID() uint16 {
	if c.ids == nil {
		c.ids = make([]uint64, idSpace/64)
	}
	for tries := 0; tries < idSpace; tries++ {
		c.nextID++
		if c.nextID == 0 {
			c.nextID = 1
		}
		id := c.nextID
		if c.ids[id/64]&(1<<(id%64)) == 0 {
			c.ids[id/64] |= 1 << (id % 64)
			return id
		}
	}
	return 0
}

// disconnectAll sends DISCONNECT on every ready connection and closes all.
func (l *loop) disconnectAll() {
	var d codec.Disconnect
	l.flushDirty()
	for _, c := range l.conns {
		if c == nil {
			continue
		}
		if c.state == stReady && !c.wantOut {
			l.enc = d.Append(l.enc[:0], l.r.cfg.Protocol)
			l.write(c, l.enc, 0)
			c.dirty = false
			l.flush(c) // one attempt; a full socket just closes
		}
		l.closeConn(c)
	}
	l.stop = true
}

// clientID builds the client id of c: stable across runs for persistent
// sessions, so a second run resumes the same sessions.
func (r *runner) clientID(c *conn) []byte {
	b := []byte(r.cfg.ClientIDPrefix)
	switch c.role {
	case rolePub:
		b = append(b, 'p')
		b = strconv.AppendUint(b, uint64(c.pubID), 10)
	case roleSub:
		b = append(b, 's')
		b = strconv.AppendUint(b, uint64(c.pubID), 10)
	default:
		b = append(b, 'c')
		b = strconv.AppendUint(b, uint64(c.pubID), 10)
	}
	return b
}
