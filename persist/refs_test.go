package persist

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// coreOf returns the shared core of a store.
func coreOf(s Store) *core {
	switch v := s.(type) {
	case *Pebble:
		return v.core
	case *Memory:
		return v.core
	}
	panic(fmt.Sprintf("unknown store %T", s))
}

// rawWrite applies sets (value non-nil) and deletes (value nil) directly
// to the engine, bypassing batches and reference counts.
func rawWrite(t testing.TB, s Store, kvs ...[2][]byte) {
	t.Helper()
	c := coreOf(s)
	w := c.eng.newWriter()
	defer w.release()
	for _, kv := range kvs {
		if kv[1] == nil {
			w.del(kv[0])
		} else {
			w.set(kv[0], kv[1])
		}
	}
	if err := c.eng.apply(w, true); err != nil {
		t.Fatal(err)
	}
}

// checkCounts recounts every reference from the outbound entries and
// checks what the store keeps against it: a count record for exactly the
// messages with two or more references, holding their count; the same
// counts in memory; the live-message record; no orphan message and no
// dangling entry. It waits for nothing: call it after CommitWait.
func checkCounts(t testing.TB, s Store) {
	t.Helper()
	c := coreOf(s)
	refs := map[uint64]uint32{}
	msgs := map[uint64]bool{}
	records := map[uint64]uint32{}
	var live uint64
	var haveLive bool
	err := c.scan(nil, nil, func(k, v []byte) error {
		switch k[0] {
		case prefixMessage:
			id, err := parseMessageKey(k)
			if err != nil {
				return err
			}
			msgs[id] = true
		case prefixClient:
			ck, err := parseClientKey(k)
			if err != nil {
				return err
			}
			if ck.kind == kindOutbound {
				o, err := decodeOutbound(v)
				if err != nil {
					return err
				}
				if o.MessageID != 0 {
					refs[o.MessageID]++
				}
			}
		case prefixRefs:
			id, err := parseRefsKey(k)
			if err != nil {
				return err
			}
			n, err := decodeRefs(v)
			if err != nil {
				return err
			}
			records[id] = n
		case prefixMeta:
			if string(k) == string(metaLive) {
				n, err := decodeMetaU64(v)
				if err != nil {
					return err
				}
				live, haveLive = n, true
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for id := range msgs {
		if refs[id] == 0 {
			t.Errorf("message %d is stored without a reference (orphan)", id)
		}
	}
	want := map[uint64]uint32{}
	for id, n := range refs {
		if !msgs[id] {
			t.Errorf("message %d is referenced %d times but not stored (dangling)", id, n)
		}
		if n >= 2 {
			want[id] = n
		}
	}
	if !mapsEqual(records, want) {
		t.Errorf("count records %v, recounted %v", records, want)
	}
	if st := s.Stats(); st.SharedMessages != len(want) || st.LiveMessages != len(msgs) {
		t.Errorf("stats: %d shared, %d live; store holds %d shared, %d messages", st.SharedMessages, st.LiveMessages, len(want), len(msgs))
	}
	if (haveLive || len(msgs) > 0) && live != uint64(len(msgs)) {
		t.Errorf("live-message record %d, %d messages stored", live, len(msgs))
	}
}

func mapsEqual(a, b map[uint64]uint32) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// TestConformanceQueues runs the disk-backed-queue suite (counts of shared
// messages, Recover with backlogs, ReadOutbound, DiskUsage) against Memory
// and Pebble.
func TestConformanceQueues(t *testing.T) {
	tests := []struct {
		name string
		fn   func(t *testing.T, h harness)
	}{
		{"CountsOnlyForSharedMessages", testSharedCounts},
		{"CountsAcrossRestartAndDeleteSession", testCountsDeleteSession},
		{"AddRefAcrossBatches", testAddRefAcrossBatches},
		{"RandomModel", testRefModel},
		{"RecoverBacklog", testRecoverBacklog},
		{"ReadOutboundOrderAndLimits", testReadOutbound},
		{"ReadOutboundSkipsDangling", testReadOutboundDangling},
		{"ReadOutboundSeesCommitted", testReadOutboundVisibility},
		{"ReadOutboundConcurrentCommits", testReadOutboundConcurrent},
		{"DiskUsage", testDiskUsage},
	}
	for _, h := range harnesses() {
		t.Run(h.name, func(t *testing.T) {
			for _, tc := range tests {
				t.Run(tc.name, func(t *testing.T) { tc.fn(t, h) })
			}
		})
	}
}

// testSharedCounts: a message with one reference has no count record; one
// with three has one, kept across restarts, and loses it when it is down
// to one reference; the last release deletes the message.
func testSharedCounts(t *testing.T, h harness) {
	s := h.open(t)
	b := s.NewBatch()
	single := b.PutMessage(testMessage("t/1", []byte("one")))
	b.AddRef(single)
	b.PutOutbound("a", 1, Outbound{MessageID: single, QoS: 1})
	shared := b.PutMessage(testMessage("t/3", []byte("three")))
	for _, c := range []string{"a", "b", "c"} {
		b.AddRef(shared)
		b.PutOutbound(c, 2, Outbound{MessageID: shared, QoS: 1})
	}
	commit(t, s, b)
	if u := usage(t, s); u.Refs.Count != 1 || u.Messages.Count != 2 {
		t.Fatalf("count records %d, messages %d; want 1, 2", u.Refs.Count, u.Messages.Count)
	}
	checkCounts(t, s)
	for i, c := range []string{"a", "b", "c"} {
		s = restart(t, h, s)
		checkCounts(t, s)
		b := s.NewBatch()
		b.DeleteOutbound(c, 2)
		b.Release(shared)
		commit(t, s, b)
		u := usage(t, s)
		wantRefs, wantMsgs := int64(0), int64(2) // down to one reference: no count
		switch i {
		case 0:
			wantRefs = 1 // still shared by two
		case 2:
			wantMsgs = 1
		}
		if u.Refs.Count != wantRefs || u.Messages.Count != wantMsgs {
			t.Fatalf("after %d releases: %d count records, %d messages; want %d, %d", i+1, u.Refs.Count, u.Messages.Count, wantRefs, wantMsgs)
		}
		checkCounts(t, s)
	}
	if st := s.Stats(); st.RefErrors != 0 || st.LiveMessages != 1 || st.SharedMessages != 0 {
		t.Errorf("stats %+v", st)
	}
}

// testCountsDeleteSession: DeleteSession releases the references of the
// client's entries, shared or not, across a restart.
func testCountsDeleteSession(t *testing.T, h harness) {
	s := h.open(t)
	b := s.NewBatch()
	var ids []uint64
	for i := range 4 {
		id := b.PutMessage(testMessage(fmt.Sprint("t/", i), []byte("x")))
		ids = append(ids, id)
		// Message i is referenced by clients 0..i.
		for c := 0; c <= i; c++ {
			b.AddRef(id)
			b.PutOutbound(fmt.Sprint("c", c), uint64(10+i), Outbound{MessageID: id, QoS: 1})
		}
	}
	// Client 0 holds message 3 twice.
	b.AddRef(ids[3])
	b.PutOutbound("c0", 99, Outbound{MessageID: ids[3], QoS: 1})
	commit(t, s, b)
	checkCounts(t, s)
	for c := range 4 {
		s = restart(t, h, s)
		b := s.NewBatch()
		b.DeleteSession(fmt.Sprint("c", c))
		commit(t, s, b)
		checkCounts(t, s)
		if u := usage(t, s); u.Messages.Count != int64(3-c) {
			t.Errorf("after deleting %d sessions: %d messages, want %d", c+1, u.Messages.Count, 3-c)
		}
	}
	assertEmpty(t, s)
}

// testAddRefAcrossBatches: AddRef of a message put by an earlier batch
// works while it is referenced and is refused (RefErrors) once it is gone;
// AddRefOrPut writes it again then.
func testAddRefAcrossBatches(t *testing.T, h harness) {
	s := h.open(t)
	m := testMessage("t", []byte("later"))
	b := s.NewBatch()
	id := b.PutMessage(m)
	b.AddRef(id)
	b.PutOutbound("a", 1, Outbound{MessageID: id, QoS: 1})
	commit(t, s, b)
	s = restart(t, h, s)
	b = s.NewBatch()
	b.AddRef(id) // one reference, no count: the committer reads the record
	b.PutOutbound("b", 1, Outbound{MessageID: id, QoS: 1})
	commit(t, s, b)
	checkCounts(t, s)
	for _, c := range []string{"a", "b"} {
		b = s.NewBatch()
		b.DeleteOutbound(c, 1)
		b.Release(id)
		commit(t, s, b)
	}
	checkCounts(t, s)
	b = s.NewBatch()
	b.AddRef(id) // gone
	commit(t, s, b)
	if st := s.Stats(); st.RefErrors != 1 || st.Rewritten != 0 {
		t.Errorf("AddRef of a deleted message: stats %+v", st)
	}
	b = s.NewBatch()
	b.AddRefOrPut(id, m)
	b.PutOutbound("c", 1, Outbound{MessageID: id, QoS: 1})
	b.AddRefOrPut(id, m) // the second one in the batch only counts
	b.PutOutbound("d", 1, Outbound{MessageID: id, QoS: 1})
	commit(t, s, b)
	if st := s.Stats(); st.Rewritten != 1 {
		t.Errorf("rewritten %d, want 1", st.Rewritten)
	}
	checkCounts(t, s)
	s = restart(t, h, s)
	checkCounts(t, s)
	var got *Message
	if _, _, err := s.ReadOutbound("d", 0, 10, func(_ uint64, _ Outbound, m *Message, _ error) error { got = m; return nil }); err != nil {
		t.Fatal(err)
	}
	if got == nil || string(got.Payload) != "later" {
		t.Errorf("rewritten message reads back as %+v", got)
	}
}

// TestCountsResolvedInCommitOrder drives the committer directly with
// groups whose batches depend on each other: counts must follow commit
// order even when a DeleteSession queued ahead releases what a later batch
// references.
func TestCountsResolvedInCommitOrder(t *testing.T) {
	for _, h := range harnesses() {
		t.Run(h.name, func(t *testing.T) {
			s := h.open(t)
			c := coreOf(s)
			put := func(client string, seq uint64, m *Message) uint64 {
				b := s.NewBatch()
				id := b.PutMessage(m)
				b.AddRef(id)
				b.PutOutbound(client, seq, Outbound{MessageID: id, QoS: 1})
				commit(t, s, b)
				return id
			}
			// group commits the batches as one group on the committer
			// (Commit queues them back to back while the committer is
			// held on the queue lock, so they are merged).
			group := func(bs ...*Batch) {
				t.Helper()
				errs := make(chan error, len(bs))
				c.mu.Lock()
				for _, b := range bs {
					b.done = func(err error) { errs <- err }
					c.mu.queue = append(c.mu.queue, b)
					c.mu.bytes += len(b.buf)
				}
				c.mu.work.Signal()
				c.mu.Unlock()
				for range bs {
					if err := <-errs; err != nil {
						t.Fatal(err)
					}
				}
			}
			m := testMessage("t", []byte("x"))

			// A holds X's only reference; A is deleted, then X is
			// referenced again by a batch queued behind the deletion.
			x := put("A", 1, m)
			b1 := s.NewBatch()
			b1.DeleteSession("A")
			b2 := s.NewBatch()
			b2.AddRefOrPut(x, m)
			b2.PutOutbound("B", 1, Outbound{MessageID: x, QoS: 1})
			group(b1, b2)
			checkCounts(t, s)
			if st := s.Stats(); st.Rewritten != 1 {
				t.Errorf("X deleted with A and referenced after: rewritten %d, want 1", st.Rewritten)
			}

			// Y is shared by C and D; C is deleted while a batch behind it
			// adds E's reference and another releases D's.
			b := s.NewBatch()
			y := b.PutMessage(m)
			for _, cl := range []string{"C", "D"} {
				b.AddRef(y)
				b.PutOutbound(cl, 1, Outbound{MessageID: y, QoS: 1})
			}
			commit(t, s, b)
			b1 = s.NewBatch()
			b1.DeleteSession("C")
			b2 = s.NewBatch()
			b2.AddRef(y)
			b2.PutOutbound("E", 1, Outbound{MessageID: y, QoS: 1})
			b3 := s.NewBatch()
			b3.DeleteOutbound("D", 1)
			b3.Release(y)
			group(b1, b2, b3)
			checkCounts(t, s)

			// Entries written in the same batch before and after a
			// DeleteSession: only the ones before are released.
			z := put("F", 1, m)
			b = s.NewBatch()
			b.AddRef(z)
			b.PutOutbound("F", 2, Outbound{MessageID: z, QoS: 1})
			b.DeleteOutbound("F", 1) // its reference moves to entry 3
			b.PutOutbound("F", 3, Outbound{MessageID: z, QoS: 1})
			b.DeleteSession("F")
			b.AddRef(z)
			b.PutOutbound("F", 4, Outbound{MessageID: z, QoS: 1})
			b.AddRef(z)
			b.PutOutbound("G", 1, Outbound{MessageID: z, QoS: 1})
			group(s.NewBatch(), b)
			checkCounts(t, s)
			s = restart(t, h, s)
			checkCounts(t, s)
			if st := s.Stats(); st.RefErrors != 0 {
				t.Errorf("ref errors %d", st.RefErrors)
			}
		})
	}
}

// testRefModel runs random publishes, acknowledgements, cross-batch
// references, deletions and restarts against a model of what must be
// stored, committing asynchronously so batches share groups.
func testRefModel(t *testing.T, h harness) {
	s := h.open(t)
	rng := rand.New(rand.NewPCG(11, 12))
	type entry struct {
		id      uint64
		pubcomp bool
	}
	clients := []string{"a", "b", "c", "d", "e"}
	queues := map[string]map[uint64]entry{}
	for _, c := range clients {
		queues[c] = map[uint64]entry{}
	}
	msgs := map[uint64]*Message{} // every message ever put, for AddRefOrPut
	var ids []uint64
	refs := func() map[uint64]int {
		r := map[uint64]int{}
		for _, q := range queues {
			for _, e := range q {
				if !e.pubcomp {
					r[e.id]++
				}
			}
		}
		return r
	}
	var seq uint64
	pending := make(chan error, 100000)
	inflight := 0
	wait := func() {
		for ; inflight > 0; inflight-- {
			if err := <-pending; err != nil {
				t.Fatal(err)
			}
		}
	}
	submit := func(b *Batch) {
		inflight++
		s.Commit(b, func(err error) { pending <- err })
	}
	randomEntry := func() (string, uint64, entry, bool) {
		c := clients[rng.IntN(len(clients))]
		for sq, e := range queues[c] {
			return c, sq, e, true
		}
		return "", 0, entry{}, false
	}
	for step := range 3000 {
		b := s.NewBatch()
		switch op := rng.IntN(100); {
		case op < 35: // publish to 0..3 clients
			m := testMessage(fmt.Sprint("t/", step), []byte(fmt.Sprint(step)))
			id := b.PutMessage(m)
			msgs[id] = m
			ids = append(ids, id)
			for _, i := range rng.Perm(len(clients))[:rng.IntN(4)] {
				seq++
				b.AddRef(id)
				b.PutOutbound(clients[i], seq, Outbound{MessageID: id, QoS: 1})
				queues[clients[i]][seq] = entry{id: id}
			}
		case op < 65: // acknowledge one entry
			if c, sq, e, ok := randomEntry(); ok {
				b.DeleteOutbound(c, sq)
				if !e.pubcomp {
					b.Release(e.id)
				}
				delete(queues[c], sq)
			}
		case op < 75: // QoS 2 entry reaches PUBREL: the message is released
			if c, sq, e, ok := randomEntry(); ok && !e.pubcomp {
				b.PutOutbound(c, sq, Outbound{QoS: 2, State: AwaitingPubcomp, PacketID: 7})
				b.Release(e.id)
				queues[c][sq] = entry{pubcomp: true}
			}
		case op < 85: // a message from an earlier batch, maybe gone
			if len(ids) > 0 {
				id := ids[rng.IntN(len(ids))]
				c := clients[rng.IntN(len(clients))]
				seq++
				b.AddRefOrPut(id, msgs[id])
				b.PutOutbound(c, seq, Outbound{MessageID: id, QoS: 1})
				queues[c][seq] = entry{id: id}
			}
		case op < 92: // AddRef of a message known to be referenced
			if _, _, e, ok := randomEntry(); ok && !e.pubcomp {
				c := clients[rng.IntN(len(clients))]
				seq++
				b.AddRef(e.id)
				b.PutOutbound(c, seq, Outbound{MessageID: e.id, QoS: 1})
				queues[c][seq] = entry{id: e.id}
			}
		case op < 96:
			c := clients[rng.IntN(len(clients))]
			b.DeleteSession(c)
			queues[c] = map[uint64]entry{}
		default:
			wait()
			if rng.IntN(3) == 0 {
				s = restart(t, h, s)
				b = s.NewBatch()
			}
			checkCounts(t, s)
		}
		submit(b)
	}
	wait()
	checkCounts(t, s)
	s = restart(t, h, s)
	checkCounts(t, s)
	// What is stored is what the model holds.
	want := refs()
	snap := recoverAll(t, s)
	if len(snap.Messages) != len(want) {
		t.Errorf("%d messages stored, model holds %d", len(snap.Messages), len(want))
	}
	for id := range want {
		if m := snap.Messages[id]; m == nil || string(m.Payload) != string(msgs[id].Payload) {
			t.Errorf("message %d: %+v", id, m)
		}
	}
	for _, c := range clients {
		var got, exp []uint64
		for _, e := range snap.Outbound[c] {
			got = append(got, e.Seq)
		}
		for sq := range queues[c] {
			exp = append(exp, sq)
		}
		slices.Sort(exp)
		if !slices.Equal(got, exp) {
			t.Errorf("client %s: entries %v, model %v", c, got, exp)
		}
	}
	if st := s.Stats(); st.RefErrors != 0 || snap.Stats.Corrupt != 0 {
		t.Errorf("ref errors %d, corrupt %d", st.RefErrors, snap.Stats.Corrupt)
	}
}
