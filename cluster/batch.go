package cluster

import (
	"encoding/binary"
	"errors"

	"github.com/ternmq/tern/server"
)

// Batching. Forwarded messages and confirmations are not one NATS message
// each: they are appended to a buffer per (node, shard) — confirmations per
// reply subject — and a flusher goroutine publishes what gathered whenever
// it is woken. Under load one NATS message carries many MQTT messages (the
// cost per message of the NATS hops, parse and route, is shared); when idle
// the flusher runs at once, so a lone message waits for no timer. The order
// of one buffer is the order of the appends, so a publisher's messages keep
// their order per topic.

// batchFlushBytes is the size at which a buffer is flushed by the appender
// itself rather than waiting for the flusher (a bound on memory).
const batchFlushBytes = 1 << 20

// outKey names one outgoing buffer.
type outKey struct {
	node  string
	shard int
}

// outBuf is one outgoing buffer (a node's receive shard, or a reply
// subject for confirmations) and the spare it swaps with when flushed, so
// a steady stream reuses two buffers. Entries stay in their map: there is
// one per (node, shard) and one per confirming subject, bounded by the
// cluster's size. omu guards every field but subj (set once).
type outBuf struct {
	subj  string
	buf   []byte
	spare []byte
	reply bool // a message in buf asks for confirmations
}

// flushItem is one buffer taken by a flush.
type flushItem struct {
	ob    *outBuf
	buf   []byte
	reply bool
	ack   bool
}

// batchMessage appends one message for node; false if it cannot be sent.
// The flusher is woken only by the append that finds the buffer empty:
// one that finds it non-empty is taken by the flush that wake-up causes
// (the wake-up is consumed before the flush takes the buffers).
func (n *Node) batchMessage(node string, shard int, m *server.ClusterMessage, seq uint64, groups []string, now int64) bool {
	n.omu.Lock()
	ob := n.outLocked(node, shard)
	// A length-prefixed frame: encoded into the scratch, then copied.
	n.scratch = appendMessage(n.scratch[:0], m, seq, groups, now)
	if len(n.scratch) > maxPayload-16 {
		n.omu.Unlock()
		n.stats.oversize.Add(1)
		return false
	}
	was := len(ob.buf)
	ob.buf = binary.AppendUvarint(ob.buf, uint64(len(n.scratch)))
	ob.buf = append(ob.buf, n.scratch...)
	if seq != 0 {
		ob.reply = true
	}
	big := len(ob.buf) >= batchFlushBytes
	n.omu.Unlock()
	n.stats.forwarded.Add(1)
	switch {
	case big:
		n.flush()
	case was == 0:
		n.kick()
	}
	return true
}

// outLocked returns the outgoing buffer of node's receive shard. omu held.
func (n *Node) outLocked(node string, shard int) *outBuf {
	k := outKey{node, shard}
	ob := n.out[k]
	if ob == nil {
		ob = &outBuf{subj: n.msgSubject(node, shard)}
		n.out[k] = ob
	}
	return ob
}

// Confirmation codes on the wire (one byte after each sequence).
const (
	ackFailed byte = 0 // not stored (store error, undecodable)
	ackOK     byte = 1 // stored (synced under durability sync)
	ackQuota  byte = 2 // refused: a matching persistent session's backlog or the store is full
)

// ackCode is the confirmation of a RemoteDeliver outcome.
func ackCode(err error) byte {
	switch {
	case err == nil:
		return ackOK
	case errors.Is(err, server.ErrQuotaExceeded):
		return ackQuota
	}
	return ackFailed
}

// batchAck appends one confirmation for reply.
func (n *Node) batchAck(reply string, seq uint64, code byte) {
	n.batchAcks(reply, []uint64{seq}, code)
}

// batchAcks appends the same confirmation code for each of seqs, for reply.
func (n *Node) batchAcks(reply string, seqs []uint64, code byte) {
	n.omu.Lock()
	ob := n.acks[reply]
	if ob == nil {
		ob = &outBuf{subj: reply}
		n.acks[reply] = ob
	}
	was := len(ob.buf)
	if was == 0 {
		ob.buf = appendBytes(ob.buf, []byte(n.self))
	}
	for _, seq := range seqs {
		ob.buf = binary.AppendUvarint(ob.buf, seq)
		ob.buf = append(ob.buf, code)
	}
	big := len(ob.buf) >= batchFlushBytes
	n.omu.Unlock()
	switch {
	case big:
		n.flush()
	case was == 0:
		n.kick()
	}
}

// kick wakes the flusher.
func (n *Node) kick() {
	select {
	case n.flushc <- struct{}{}:
	default:
	}
}

// flusher publishes the gathered buffers each time it is woken.
func (n *Node) flusher() {
	defer n.wg.Done()
	for {
		select {
		case <-n.done:
			n.flush()
			return
		case <-n.flushc:
			n.flush()
		}
	}
}

// flush publishes every non-empty buffer. Buffers swap with their spares,
// so the appenders are held only for the swap, not for the publishing.
func (n *Node) flush() {
	n.fl.Lock() // one flush at a time: buffers of one key leave in order
	defer n.fl.Unlock()
	n.flushInterest()
	items := n.flushing[:0]
	n.omu.Lock()
	take := func(ob *outBuf, ack bool) {
		if len(ob.buf) == 0 {
			return
		}
		items = append(items, flushItem{ob: ob, buf: ob.buf, reply: ob.reply, ack: ack})
		ob.buf, ob.spare, ob.reply = ob.spare[:0], nil, false
	}
	for _, ob := range n.out {
		take(ob, false)
	}
	for _, ob := range n.acks {
		take(ob, true)
	}
	n.omu.Unlock()
	for _, it := range items {
		if it.reply {
			_ = n.nc.PublishRequest(it.ob.subj, n.ackSubj, it.buf)
		} else {
			_ = n.nc.Publish(it.ob.subj, it.buf)
		}
	}
	n.omu.Lock()
	for _, it := range items {
		// Keep the spares small: a buffer that grew under a burst is let go.
		if it.ob.spare == nil && cap(it.buf) <= batchFlushBytes {
			it.ob.spare = it.buf[:0]
		}
	}
	n.omu.Unlock()
	clear(items)
	n.flushing = items[:0]
}
