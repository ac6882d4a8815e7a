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

// batchMessage appends one message for node; false if it cannot be sent.
func (n *Node) batchMessage(node string, shard int, m *server.ClusterMessage, seq uint64, groups []string, now int64) bool {
	n.omu.Lock()
	buf := n.outMsgs[outKey{node, shard}]
	// A length-prefixed frame: encoded into the scratch, then copied.
	n.scratch = appendMessage(n.scratch[:0], m, seq, groups, now)
	if len(n.scratch) > maxPayload-16 {
		n.omu.Unlock()
		n.stats.oversize.Add(1)
		return false
	}
	buf = binary.AppendUvarint(buf, uint64(len(n.scratch)))
	buf = append(buf, n.scratch...)
	if seq != 0 {
		n.outReply[outKey{node, shard}] = true
	}
	n.outMsgs[outKey{node, shard}] = buf
	big := len(buf) >= batchFlushBytes
	n.omu.Unlock()
	n.stats.forwarded.Add(1)
	if big {
		n.flush()
	} else {
		n.kick()
	}
	return true
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
	buf := n.outAcks[reply]
	if len(buf) == 0 {
		buf = appendBytes(buf, []byte(n.self))
	}
	for _, seq := range seqs {
		buf = binary.AppendUvarint(buf, seq)
		buf = append(buf, code)
	}
	n.outAcks[reply] = buf
	n.omu.Unlock()
	n.kick()
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

// flush publishes every non-empty buffer. Buffers swap with spares, so the
// appenders are held only for the swap, not for the publishing.
func (n *Node) flush() {
	n.fl.Lock() // one flush at a time: buffers of one key leave in order
	defer n.fl.Unlock()
	n.omu.Lock()
	msgs, replies, acks := n.outMsgs, n.outReply, n.outAcks
	n.outMsgs, n.outReply, n.outAcks = n.spareMsgs, n.spareReply, n.spareAcks
	n.omu.Unlock()
	for k, buf := range msgs {
		if len(buf) == 0 {
			continue
		}
		subj := n.msgSubject(k.node, k.shard)
		if replies[k] {
			_ = n.nc.PublishRequest(subj, n.subj.acks(n.self), buf)
		} else {
			_ = n.nc.Publish(subj, buf)
		}
		msgs[k] = buf[:0]
	}
	for r, buf := range acks {
		if len(buf) > 0 {
			_ = n.nc.Publish(r, buf)
		}
		acks[r] = buf[:0]
	}
	clear(replies)
	// Keep the spares small: a buffer that grew under a burst is let go.
	for k, buf := range msgs {
		if cap(buf) > batchFlushBytes {
			delete(msgs, k)
		}
	}
	for r, buf := range acks {
		if cap(buf) > batchFlushBytes {
			delete(acks, r)
		}
	}
	n.omu.Lock()
	n.spareMsgs, n.spareReply, n.spareAcks = msgs, replies, acks
	n.omu.Unlock()
}
