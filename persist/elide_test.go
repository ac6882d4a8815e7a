package persist

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// oneGroup commits batches so that they form one group: a first batch
// takes the only pipeline slot and waits for a slow fsync, while the
// others queue behind it and are cut together. It returns when all are
// done.
func oneGroup(t *testing.T, p *Pebble, batches ...*Batch) {
	t.Helper()
	var wg sync.WaitGroup
	commit := func(b *Batch) {
		wg.Add(1)
		p.Commit(b, func(err error) {
			if err != nil {
				t.Error(err)
			}
			wg.Done()
		})
	}
	g0 := p.Stats().Groups
	commit(putSession(p, "blocker"))
	time.Sleep(20 * time.Millisecond) // the blocker is applied and awaits its fsync
	for _, b := range batches {
		commit(b)
	}
	wg.Wait()
	if g := p.Stats().Groups - g0; g != 2 {
		t.Fatalf("%d groups, want 2 (the blocker, then the batches)", g)
	}
}

func slowSyncStore(t *testing.T) (*Pebble, Options) {
	o, inj := injectedOptions(t)
	inj.delay.Store(int64(100 * time.Millisecond))
	o.MaxInFlightGroups = 1
	return openPebble(t, o), o
}

// TestWriteAvoidanceDeliveredWithinGroup: a QoS 1 message stored,
// marked sent and acknowledged within one group writes nothing (message,
// entry and both deletions avoided), and a restart finds neither; what
// the group leaves (another delivery) is written.
func TestWriteAvoidanceDeliveredWithinGroup(t *testing.T) {
	p, _ := slowSyncStore(t)
	a := p.NewBatch()
	id := insertDelivery(a, "c", 1, 1, testMessage("t", []byte("x")))
	keep := insertDelivery(a, "c", 2, 1, testMessage("t", []byte("kept")))
	b := p.NewBatch()
	b.PutOutbound("c", 1, Outbound{MessageID: id, QoS: 1, State: AwaitingPuback, PacketID: 1})
	c := p.NewBatch()
	c.DeleteOutbound("c", 1)
	c.Release(id)
	oneGroup(t, p, a, b, c)

	st := p.Stats()
	if st.MessagesAvoided != 1 || st.WritesAvoided != 5 {
		t.Errorf("avoided %d messages, %d writes; want 1 and 5 (message, insert, sent, entry and message deletions)", st.MessagesAvoided, st.WritesAvoided)
	}
	if st.LiveMessages != 1 {
		t.Errorf("%d live messages, want 1", st.LiveMessages)
	}
	snap := recoverAll(t, p)
	if len(snap.Messages) != 1 || snap.Messages[keep] == nil {
		t.Errorf("messages %v, want only %d", snap.Messages, keep)
	}
	if es := snap.Outbound["c"]; len(es) != 1 || es[0].Seq != 2 {
		t.Errorf("outbound %v, want only seq 2", es)
	}
	if u := usage(t, p); u.OrphanMessages != 0 || u.DanglingEntries != 0 {
		t.Errorf("%d orphans, %d dangling", u.OrphanMessages, u.DanglingEntries)
	}
}

// TestWriteAvoidanceKeepsDeletionOfStoredEntry: an entry stored by an
// earlier group and rewritten then deleted within one group: the rewrite
// is avoided, the deletions are not (the entry and message exist on disk).
func TestWriteAvoidanceKeepsDeletionOfStoredEntry(t *testing.T) {
	p, o := slowSyncStore(t)
	a := p.NewBatch()
	id := insertDelivery(a, "c", 5, 1, testMessage("t", []byte("x")))
	if err := p.CommitWait(a); err != nil {
		t.Fatal(err)
	}
	b := p.NewBatch()
	b.PutOutbound("c", 5, Outbound{MessageID: id, QoS: 1, State: AwaitingPuback, PacketID: 5})
	c := p.NewBatch()
	c.DeleteOutbound("c", 5)
	c.Release(id)
	oneGroup(t, p, b, c)
	if st := p.Stats(); st.WritesAvoided != 1 || st.MessagesAvoided != 0 {
		t.Errorf("avoided %d writes, %d messages; want 1 (the rewrite) and 0", st.WritesAvoided, st.MessagesAvoided)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	q := openPebble(t, o)
	snap := recoverAll(t, q)
	if len(snap.Messages) != 0 || len(snap.Outbound["c"]) != 0 {
		t.Errorf("after restart: messages %v, outbound %v; want none", snap.Messages, snap.Outbound["c"])
	}
	if u := usage(t, q); u.Outbound.Count != 0 || u.DanglingEntries != 0 {
		t.Errorf("after restart: %d entries (%d dangling), want none", u.Outbound.Count, u.DanglingEntries)
	}
}

// TestWriteAvoidanceLastWriteWins: a key inserted, deleted and set again
// in one group ends set; a message shared by two entries and released by
// both is never written, nor is its count record.
func TestWriteAvoidanceLastWriteWins(t *testing.T) {
	p, _ := slowSyncStore(t)
	a := p.NewBatch()
	id := a.PutMessage(testMessage("t", []byte("shared")))
	a.AddRef(id)
	a.AddRef(id)
	a.InsertOutbound("c", 7, Outbound{MessageID: id, QoS: 1})
	a.InsertOutbound("d", 1, Outbound{MessageID: id, QoS: 2})
	b := p.NewBatch()
	b.DeleteOutbound("c", 7)
	b.Release(id)
	c := p.NewBatch()
	again := c.PutMessage(testMessage("t", []byte("again")))
	c.AddRef(again)
	c.PutOutbound("c", 7, Outbound{MessageID: again, QoS: 1})
	d := p.NewBatch()
	d.PutOutbound("d", 1, Outbound{QoS: 2, State: AwaitingPubcomp, PacketID: 1}) // PUBREC: the message goes
	d.Release(id)
	oneGroup(t, p, a, b, c, d)
	if st := p.Stats(); st.MessagesAvoided != 1 || st.SharedMessages != 0 {
		t.Errorf("avoided %d messages, %d shared; want 1 and 0", st.MessagesAvoided, st.SharedMessages)
	}
	snap := recoverAll(t, p)
	if es := snap.Outbound["c"]; len(es) != 1 || es[0].MessageID != again {
		t.Errorf("c: %v, want seq 7 -> message %d", es, again)
	}
	if es := snap.Outbound["d"]; len(es) != 1 || es[0].State != AwaitingPubcomp {
		t.Errorf("d: %v, want seq 1 awaiting PUBCOMP", es)
	}
	if len(snap.Messages) != 1 || snap.Messages[again] == nil {
		t.Errorf("messages %v, want only %d", snap.Messages, again)
	}
	if u := usage(t, p); u.Refs.Count != 0 || u.OrphanMessages != 0 || u.DanglingEntries != 0 {
		t.Errorf("%d count records, %d orphans, %d dangling", u.Refs.Count, u.OrphanMessages, u.DanglingEntries)
	}
}

// TestWriteAvoidanceOffWhenGroupMaySplit: a group holding a DeleteSession
// (which the committer applies in two writes) avoids nothing, and the
// result is the same.
func TestWriteAvoidanceOffWhenGroupMaySplit(t *testing.T) {
	p, _ := slowSyncStore(t)
	a := p.NewBatch()
	id := insertDelivery(a, "c", 1, 1, testMessage("t", []byte("x")))
	b := p.NewBatch()
	b.DeleteOutbound("c", 1)
	b.Release(id)
	c := p.NewBatch()
	c.DeleteSession("other")
	oneGroup(t, p, a, b, c)
	if st := p.Stats(); st.WritesAvoided != 0 {
		t.Errorf("avoided %d writes in a group that may be split", st.WritesAvoided)
	}
	if snap := recoverAll(t, p); len(snap.Messages) != 0 || len(snap.Outbound) != 0 {
		t.Errorf("messages %v, outbound %v; want none", snap.Messages, snap.Outbound)
	}
}

// TestWriteAvoidanceOffForAddRefOfAnotherBatch: a group in which a batch
// adds a reference to a message another batch put (the committer checks
// that it exists, applying what is merged so far) avoids nothing, and the
// message stays with its second entry.
func TestWriteAvoidanceOffForAddRefOfAnotherBatch(t *testing.T) {
	p, _ := slowSyncStore(t)
	a := p.NewBatch()
	id := insertDelivery(a, "c", 1, 1, testMessage("t", []byte("x")))
	b := p.NewBatch()
	b.AddRef(id)
	b.InsertOutbound("d", 1, Outbound{MessageID: id, QoS: 1})
	c := p.NewBatch()
	c.DeleteOutbound("c", 1)
	c.Release(id)
	oneGroup(t, p, a, b, c)
	if st := p.Stats(); st.WritesAvoided != 0 {
		t.Errorf("avoided %d writes in a group that may be split", st.WritesAvoided)
	}
	snap := recoverAll(t, p)
	if len(snap.Messages) != 1 || snap.Messages[id] == nil || len(snap.Outbound["c"]) != 0 || len(snap.Outbound["d"]) != 1 {
		t.Errorf("messages %v, outbound %v; want %d with d's entry only", snap.Messages, snap.Outbound, id)
	}
}

// TestWriteAvoidancePowerLoss: writers submit a delivery and, without
// waiting, its acknowledgement, so many are avoided; power is cut (in
// effect) at random moments. Every cut holds each delivery whose put was
// acknowledged and whose deletion was not yet submitted, no delivery
// whose deletion was acknowledged, and no orphan or dangling record.
func TestWriteAvoidancePowerLoss(t *testing.T) {
	mem, p := crashableStore(t, 2*time.Millisecond)

	const workers, perWorker = 8, 200000
	state := newDeliveryFlags(workers, perWorker)
	var stop atomic.Bool
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := powerClient(w)
			for i := 1; i < perWorker && !stop.Load(); i++ {
				a := p.NewBatch()
				id := insertDelivery(a, client, uint64(i), 1, testMessage("t/"+client, make([]byte, 64)))
				putDone := make(chan error, 1)
				p.Commit(a, func(err error) { putDone <- err })
				var delDone chan error
				if i%4 != 0 { // every fourth stays
					b := p.NewBatch()
					b.PutOutbound(client, uint64(i), Outbound{MessageID: id, QoS: 1, State: AwaitingPuback, PacketID: uint16(i)})
					b.DeleteOutbound(client, uint64(i))
					b.Release(id)
					state[w][i].delSent.Store(true)
					delDone = make(chan error, 1)
					p.Commit(b, func(err error) { delDone <- err })
				}
				if err := <-putDone; err != nil {
					t.Error(err)
					return
				}
				state[w][i].put.Store(true)
				if delDone != nil {
					if err := <-delDone; err != nil {
						t.Error(err)
						return
					}
					state[w][i].del.Store(true)
				}
			}
		}()
	}
	cuts := takePowerCuts(mem, state, 4, 3)
	stop.Store(true)
	wg.Wait()
	st := p.Stats()
	t.Logf("%d batches in %d groups, %d fsyncs; %d messages and %d writes avoided", st.Batches, st.Groups, st.Syncs, st.MessagesAvoided, st.WritesAvoided)
	if st.MessagesAvoided == 0 {
		t.Fatal("no message avoided: nothing tested")
	}
	checkPowerCuts(t, cuts, state)
}

// insertDelivery puts m and a new outbound entry seq of client pointing at
// it, as the server stores a delivery; it returns the message id.
func insertDelivery(b *Batch, client string, seq uint64, q byte, m *Message) uint64 {
	id := b.PutMessage(m)
	b.AddRef(id)
	b.InsertOutbound(client, seq, Outbound{MessageID: id, QoS: q})
	return id
}

// BenchmarkDeliveryLifecycle commits the store's share of QoS 1
// deliveries to online persistent sessions: per message a batch storing it
// (message, reference, inserted entry), one marking it sent and one
// deleting it (its PUBACK), 16 sessions at a time, the three batches of a
// message queued together so that they share a group — the case write
// avoidance removes — against the same with Options.NoWriteAvoidance. One
// op is one message; allocs/op are the store's per message.
func BenchmarkDeliveryLifecycle(b *testing.B) {
	const sessions = 16
	payload := make([]byte, 64)
	for _, avoid := range []bool{true, false} {
		b.Run(fmt.Sprintf("avoid=%v", avoid), func(b *testing.B) {
			o := quietOptions()
			o.Dir = b.TempDir()
			o.NoWriteAvoidance = !avoid
			p := openPebble(b, o)
			m := testMessage("t", payload)
			clients := make([]string, sessions)
			for i := range clients {
				clients[i] = fmt.Sprint("sub-", i)
			}
			var wg sync.WaitGroup
			done := func(err error) {
				if err != nil {
					b.Error(err)
				}
				wg.Done()
			}
			b.ReportAllocs()
			cpu0 := cpuTime()
			b.ResetTimer()
			for n := 0; n < b.N; n += sessions {
				for i, c := range clients {
					seq := uint64(n + i + 1)
					a := p.NewBatch()
					id := insertDelivery(a, c, seq, 1, m)
					s := p.NewBatch()
					s.PutOutbound(c, seq, Outbound{MessageID: id, QoS: 1, State: AwaitingPuback, PacketID: uint16(seq) | 1})
					d := p.NewBatch()
					d.DeleteOutbound(c, seq)
					d.Release(id)
					wg.Add(3)
					p.Commit(a, done)
					p.Commit(s, done)
					p.Commit(d, done)
				}
				wg.Wait()
			}
			b.StopTimer()
			b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/msg")
			st := p.Stats()
			b.ReportMetric(float64(st.MessagesAvoided)/float64(b.N), "avoided/msg")
			b.ReportMetric(float64(st.Syncs)/float64(b.N), "fsyncs/msg")
		})
	}
}

// TestWriteAvoidanceIDBeyondWindow: a group whose batches put ids farther
// apart than the elider's window (a batch built long before the others of
// its group) tracks only the ids near the lowest. A message beyond the
// window, delivered and acknowledged within the group, is written and
// deleted as without avoidance; one beyond it that stays queued is kept
// with its entry; the message inside the window is avoided as usual. No
// orphan, no dangling entry, the right live count.
func TestWriteAvoidanceIDBeyondWindow(t *testing.T) {
	p, o := slowSyncStore(t)
	a := p.NewBatch()
	low := insertDelivery(a, "c", 1, 1, testMessage("t", []byte("low")))
	// Draw ids until the next one is beyond the window of a group that
	// puts two messages.
	p.nextID.Add(maxRefWindow(2) + 10)
	b := p.NewBatch()
	high := insertDelivery(b, "d", 1, 1, testMessage("t", []byte("high")))
	kept := insertDelivery(b, "d", 2, 1, testMessage("t", []byte("kept")))
	if high-low < maxRefWindow(3) {
		t.Fatalf("ids %d and %d are within one window", low, high)
	}
	c := p.NewBatch()
	c.DeleteOutbound("c", 1)
	c.Release(low)
	c.DeleteOutbound("d", 1)
	c.Release(high)
	oneGroup(t, p, a, b, c)

	if st := p.Stats(); st.MessagesAvoided != 1 || st.LiveMessages != 1 {
		t.Errorf("%d messages avoided, %d live; want 1 (the one in the window) and 1", st.MessagesAvoided, st.LiveMessages)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	q := openPebble(t, o)
	snap := recoverAll(t, q)
	if len(snap.Messages) != 1 || snap.Messages[kept] == nil || len(snap.Outbound["c"]) != 0 || len(snap.Outbound["d"]) != 1 {
		t.Errorf("after restart: messages %v, outbound %v; want only %d, at d's seq 2", snap.Messages, snap.Outbound, kept)
	}
	if u := usage(t, q); u.OrphanMessages != 0 || u.DanglingEntries != 0 || u.Outbound.Count != 1 {
		t.Errorf("after restart: %d orphans, %d dangling, %d entries", u.OrphanMessages, u.DanglingEntries, u.Outbound.Count)
	}
}
