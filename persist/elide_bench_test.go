package persist

import (
	"fmt"
	"testing"
)

// BenchmarkElidePlan measures the committer's write-avoidance plan alone
// (elider.plan and reset, no engine) for the group a busy broker cuts:
// 512 QoS 1 deliveries to 16 persistent sessions, 32 per publisher
// batch, each followed by the subscriber's batch marking them sent and the
// one deleting them (their PUBACKs). One op is one group; ns/msg (wall)
// and cpu-ns/msg (the process's CPU time) are per delivery.
func BenchmarkElidePlan(b *testing.B) {
	const sessions, perBatch, batches = 16, 32, 16
	o := quietOptions()
	o.Dir = b.TempDir()
	p := openPebble(b, o)
	m := testMessage("t", make([]byte, 64))
	var group []*Batch
	seq := uint64(0)
	for range batches {
		pub, sent, ack := p.NewBatch(), p.NewBatch(), p.NewBatch()
		for i := range perBatch {
			seq++
			c := fmt.Sprint("sub-", i%sessions)
			id := insertDelivery(pub, c, seq, 1, m)
			sent.PutOutbound(c, seq, Outbound{MessageID: id, QoS: 1, State: AwaitingPuback, PacketID: uint16(seq) | 1})
			ack.DeleteOutbound(c, seq)
			ack.Release(id)
		}
		group = append(group, pub, sent, ack)
	}
	e := &p.elide
	b.ReportAllocs()
	cpu0 := cpuTime()
	b.ResetTimer()
	for range b.N {
		e.plan(group)
		if e.gone != batches*perBatch {
			b.Fatalf("%d messages gone, want %d", e.gone, batches*perBatch)
		}
		e.reset()
	}
	b.StopTimer()
	msgs := float64(b.N * batches * perBatch)
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/msgs, "ns/msg")
	b.ReportMetric(float64(cpuTime()-cpu0)/msgs, "cpu-ns/msg") // steadier than wall time on a loaded machine
}
