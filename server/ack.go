package server

import (
	"github.com/panjf2000/gnet/v2"
	"github.com/ternmq/tern/codec"
	"github.com/ternmq/tern/persist"
	"github.com/ternmq/tern/qos"
)

func (c *client) handleAck(h codec.FixedHeader, body []byte) gnet.Action {
	l := c.loop
	a := &l.ack
	if err := a.Decode(h, body, c.version); err != nil {
		return c.fail(err)
	}
	s := c.sess
	more := false
	switch a.Type {
	case codec.PUBACK:
		s.mu.Lock()
		f := s.flowLocked(&c.loop.srv.opts)
		if om, ok := f.window.Ack(a.PacketID); ok {
			c.loop.srv.forgetDelivery(&l.tx, s, om, false)
		}
		more = f.acknowledgedLocked(l.now)
		s.mu.Unlock()
	case codec.PUBREC:
		s.mu.Lock()
		f := s.flowLocked(&c.loop.srv.opts)
		var ok bool
		if a.ReasonCode.IsError() { // 5.0: the flow ends here, no PUBREL
			if e, found := f.window.Get(a.PacketID); found {
				f.window.Drop(a.PacketID)
				c.loop.srv.forgetDelivery(&l.tx, s, e.Msg, e.State == qos.AwaitPubcomp)
			}
		} else {
			e, found := f.window.Get(a.PacketID)
			ok = f.window.Received(a.PacketID)
			if ok && found && e.State == qos.AwaitPubrec && e.Msg.stored && s.stored && c.loop.srv.store != nil {
				// PUBREL may go only once this is durable: after PUBREL the
				// receiver forgets the id, and a re-sent PUBLISH would be new.
				b := l.tx.batch(c.loop.srv)
				b.PutOutbound(s.id, e.Msg.seq, persist.Outbound{QoS: 2, State: persist.AwaitingPubcomp, PacketID: a.PacketID})
				b.Release(e.Msg.m.id)
				c.loop.srv.unaccountBacklogLocked(&l.tx, s, e.Msg.m) // only PUBREL is left to store
			}
		}
		more = f.acknowledgedLocked(l.now)
		s.mu.Unlock()
		if ok {
			rel := codec.Ack{Type: codec.PUBREL, PacketID: a.PacketID}
			l.out = rel.Append(l.out, c.version)
		} else if c.version == codec.Version5 && !a.ReasonCode.IsError() {
			rel := codec.Ack{Type: codec.PUBREL, PacketID: a.PacketID, ReasonCode: codec.PacketIDNotFound}
			l.out = rel.Append(l.out, c.version)
		}
	case codec.PUBCOMP:
		s.mu.Lock()
		f := s.flowLocked(&c.loop.srv.opts)
		if om, ok := f.window.Complete(a.PacketID); ok {
			c.loop.srv.forgetDelivery(&l.tx, s, om, true)
		}
		more = f.acknowledgedLocked(l.now)
		s.mu.Unlock()
	case codec.PUBREL:
		s.mu.Lock()
		known := s.flowLocked(&c.loop.srv.opts).inbound.Release(a.PacketID)
		if known && s.storable() && c.loop.srv.store != nil {
			l.tx.batch(c.loop.srv).DeleteInbound(s.id, a.PacketID) // PUBCOMP waits for it
		}
		s.mu.Unlock()
		comp := codec.Ack{Type: codec.PUBCOMP, PacketID: a.PacketID}
		if !known && c.version == codec.Version5 {
			comp.ReasonCode = codec.PacketIDNotFound
		}
		// PUBCOMP even for an unknown id, so a client retrying after a
		// broker restart completes its flow [MQTT-4.3.3-11].
		l.out = comp.Append(l.out, c.version)
	}
	if more && c.wakeQueued.CompareAndSwap(false, true) {
		l.local = append(l.local, c)
	}
	return gnet.None
}

// acknowledgedLocked records that the client acknowledged something (the
// slow-consumer clock, pace.go) and reports whether more waits to be sent,
// in memory or on disk. s.mu held.
func (f *flow) acknowledgedLocked(now int64) bool {
	f.lastProgress = now
	return f.queue.Len() > 0 || f.spilled
}
