package cluster

import (
	"log/slog"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/ternmq/tern/server"
	"github.com/ternmq/tern/trie"
)

// nopAcker counts the outcomes Forward's confirmations hand back.
type nopAcker struct{ n int }

func (a *nopAcker) Ack(uint64, error) { a.n++ }

// benchNode is a Node with its tables and buffers but no NATS: enough for
// Forward, batchMessage and confirm, which never publish themselves unless
// a buffer passes batchFlushBytes (the benchmarks empty them before).
func benchNode() *Node {
	opts := server.ClusterOptions{Node: "n1", Listen: "127.0.0.1:0"}
	opts.EnsureDefaults()
	n := &Node{opts: opts, self: "n1", subj: newSubjects(opts.Name), log: slog.New(slog.DiscardHandler),
		out: make(map[outKey]*outBuf), acks: make(map[string]*outBuf),
		flushc: make(chan struct{}, 1), peers: map[string]*peer{"n2": {name: "n2", alive: true}}}
	n.hash = nodeHash("n1")
	n.table = trie.New[string](n.alive)
	n.table.Subscribe("bench/+", trie.Sub[string]{Subscriber: "n2", QoS: 2})
	return n
}

// drainOut empties n's outgoing buffers as a flush would, without NATS.
func drainOut(n *Node) {
	n.omu.Lock()
	for _, ob := range n.out {
		ob.buf = ob.buf[:0]
	}
	for _, ob := range n.acks {
		ob.buf = ob.buf[:0]
	}
	n.omu.Unlock()
	select {
	case <-n.flushc:
	default:
	}
}

// BenchmarkForwardQoS1 is the forwarding path of one QoS 1 message to one
// other node, its confirmation included: match, pending, encoding into the
// batch, confirm. Allocations per message: 0.
func BenchmarkForwardQoS1(b *testing.B) {
	n := benchNode()
	a := &nopAcker{}
	payload := make([]byte, 64)
	m := server.ClusterMessage{Topic: []byte("bench/1"), Payload: payload, QoS: 1}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		m.Origin = 0
		if _, wait := n.Forward(&m, a); !wait {
			b.Fatal("Forward did not wait for a confirmation")
		}
		n.confirm(m.Origin, "n2", ackOK)
		if i%4096 == 0 {
			drainOut(n)
		}
	}
	b.StopTimer()
	if a.n != b.N {
		b.Fatalf("%d outcomes for %d messages", a.n, b.N)
	}
}

// BenchmarkForwardConfirmBatch is BenchmarkForwardQoS1 with the
// confirmations as they travel: 64 forwarded, then confirmed in one batch
// (batchAcks on the confirming node, onAck on this one), per message.
// Allocations per message: one string of the confirming node's name per
// batch (1/64).
func BenchmarkForwardConfirmBatch(b *testing.B) {
	n, peer := benchNode(), benchNode()
	peer.self = "n2" // the confirming node
	a := &nopAcker{}
	m := server.ClusterMessage{Topic: []byte("bench/1"), Payload: make([]byte, 64), QoS: 1}
	seqs := make([]uint64, 0, 64)
	msg := &nats.Msg{}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += 64 {
		seqs = seqs[:0]
		for k := 0; k < 64; k++ {
			m.Origin = 0
			n.Forward(&m, a)
			seqs = append(seqs, m.Origin)
		}
		drainOut(n)
		peer.batchAcks("reply", seqs, ackOK)
		peer.omu.Lock()
		msg.Data = peer.acks["reply"].buf
		peer.omu.Unlock()
		n.onAck(msg)
		drainOut(peer)
	}
	b.StopTimer()
	if a.n < b.N {
		b.Fatalf("%d outcomes for %d messages", a.n, b.N)
	}
}
