package persist

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
)

// backlogBounds is what Recover reported for one client.
type backlogBounds struct{ first, last, bytes uint64 }

// testRecoverBacklog: with Visitor.Backlog, Recover visits sessions,
// inbound markers and retained messages, never a message record or an
// outbound entry, and reports each queue's bounds with the byte count last
// written for it (Batch.PutBacklogBytes); DeleteSession removes the count.
func testRecoverBacklog(t *testing.T, h harness) {
	s := h.open(t)
	b := s.NewBatch()
	id := b.PutMessage(testMessage("t", []byte("x")))
	b.PutSession("a", &Session{ProtocolVersion: 5})
	b.PutSession("b", &Session{ProtocolVersion: 4}) // nothing queued
	b.PutSession("ab", &Session{ProtocolVersion: 4})
	for _, seq := range []uint64{7, 8, 300, 1 << 40} {
		b.AddRef(id)
		b.PutOutbound("a", seq, Outbound{MessageID: id, QoS: 1})
	}
	b.AddRef(id)
	b.PutOutbound("ab", 5, Outbound{MessageID: id, QoS: 1, State: AwaitingPuback, PacketID: 5})
	b.PutOutbound("nosession", 3, Outbound{QoS: 2, State: AwaitingPubcomp, PacketID: 3})
	b.PutBacklogBytes("a", 1)
	b.PutBacklogBytes("a", 4242) // the last write counts
	b.PutBacklogBytes("b", 99)   // no backlog: not reported
	b.PutInbound("a", 9, Inbound{ReceivedAt: 1})
	b.PutInbound("b", 10, Inbound{ReceivedAt: 2})
	r := testMessage("r/t", []byte("retained"))
	r.Retain = true
	b.PutRetained(r)
	commit(t, s, b)
	s = restart(t, h, s)

	backlogs := map[string]backlogBounds{}
	var sessions, inbound, retained int
	st, err := s.Recover(Visitor{
		Session:  func(string, *Session) error { sessions++; return nil },
		Inbound:  func(string, uint16, Inbound) error { inbound++; return nil },
		Retained: func(*Message) error { retained++; return nil },
		Backlog: func(c string, first, last, bytes uint64) error {
			if _, dup := backlogs[c]; dup {
				t.Errorf("client %q reported twice", c)
			}
			backlogs[c] = backlogBounds{first, last, bytes}
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]backlogBounds{"a": {7, 1 << 40, 4242}, "ab": {5, 5, 0}, "nosession": {3, 3, 0}}
	if fmt.Sprint(backlogs) != fmt.Sprint(want) {
		t.Errorf("backlogs %v, want %v", backlogs, want)
	}
	if sessions != 3 || inbound != 2 || retained != 1 || st.Messages != 0 || st.Outbound != 0 || st.Backlogs != 3 || st.Corrupt != 0 {
		t.Errorf("visited %d sessions, %d inbound, %d retained; stats %+v", sessions, inbound, retained, st)
	}
	stop := errors.New("stop")
	if _, err := s.Recover(Visitor{Backlog: func(string, uint64, uint64, uint64) error { return stop }}); !errors.Is(err, stop) {
		t.Errorf("Backlog error not returned: %v", err)
	}
	if _, err := s.Recover(Visitor{Backlog: func(string, uint64, uint64, uint64) error { return nil }, Outbound: func(string, uint64, Outbound) error { return nil }}); !errors.Is(err, ErrInvalid) {
		t.Errorf("Backlog with Outbound: %v", err)
	}
	if ci, err := s.Inspect("a"); err != nil || ci.BacklogBytes != 4242 {
		t.Errorf("Inspect: backlog bytes %d, err %v; want 4242", ci.BacklogBytes, err)
	}
	if u, err := s.Usage(); err != nil || u.BacklogCounts.Count != 2 || u.Corrupt.Count != 0 {
		t.Errorf("Usage: %d backlog counts, %d corrupt, err %v; want 2, 0", u.BacklogCounts.Count, u.Corrupt.Count, err)
	}
	d := s.NewBatch()
	d.DeleteSession("a")
	commit(t, s, d)
	if ci, err := s.Inspect("a"); err != nil || ci.BacklogBytes != 0 || ci.Outbound.Count != 0 {
		t.Errorf("after DeleteSession: %+v, %v", ci, err)
	}
}

type readResult struct {
	seq uint64
	o   Outbound
	m   *Message
	bad error
}

func readAll(t *testing.T, s Store, client string, from uint64, max int) (out []readResult, next uint64, n int) {
	t.Helper()
	next, n, err := s.ReadOutbound(client, from, max, func(seq uint64, o Outbound, m *Message, bad error) error {
		out = append(out, readResult{seq, o, m, bad})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n != len(out) {
		t.Fatalf("n %d, %d calls", n, len(out))
	}
	return out, next, n
}

// testReadOutbound: entries come in sequence order from fromSeq, at most
// max, with their message except in AwaitingPubcomp; next resumes where
// the last call stopped and n < max marks the end; another client's
// entries never appear.
func testReadOutbound(t *testing.T, h harness) {
	s := h.open(t)
	b := s.NewBatch()
	var ids []uint64
	const n = 50
	for i := range n {
		id := b.PutMessage(testMessage(fmt.Sprint("t/", i%3), []byte(fmt.Sprint("payload ", i))))
		ids = append(ids, id)
		b.AddRef(id)
		st, pid := Queued, uint16(0)
		if i < 2 {
			st, pid = AwaitingPuback, uint16(i+1)
		}
		b.PutOutbound("c", uint64(100+2*i), Outbound{MessageID: id, QoS: 1, State: st, PacketID: pid})
		b.AddRef(id)
		b.PutOutbound("c\x00", uint64(100+2*i), Outbound{MessageID: id, QoS: 1}) // sorts right after "c"
	}
	b.PutOutbound("c", 99, Outbound{QoS: 2, State: AwaitingPubcomp, PacketID: 9})
	b.PutOutbound("c", math.MaxUint64, Outbound{QoS: 2, State: AwaitingPubcomp, PacketID: 10})
	commit(t, s, b)
	s = restart(t, h, s)

	all, next, got := readAll(t, s, "c", 0, 1000)
	if got != n+2 || next != math.MaxUint64 {
		t.Fatalf("read %d entries, next %d; want %d, %d", got, next, n+2, uint64(math.MaxUint64))
	}
	if all[0].seq != 99 || all[0].m != nil || all[0].o.State != AwaitingPubcomp {
		t.Errorf("first entry %+v", all[0])
	}
	for i := range n {
		e := all[i+1]
		if e.seq != uint64(100+2*i) || e.m == nil || string(e.m.Payload) != fmt.Sprint("payload ", i) || e.o.MessageID != ids[i] {
			t.Fatalf("entry %d: %+v", i, e)
		}
		if e.m.Topic != fmt.Sprint("t/", i%3) || e.m.Publisher != "pub-1" {
			t.Fatalf("entry %d message %+v", i, e.m)
		}
	}
	if all[1].o.State != AwaitingPuback || all[1].o.PacketID != 1 {
		t.Errorf("inflight entry %+v", all[1])
	}
	// Pages of 7 from the middle, resuming at next, reach the same entries.
	var paged []uint64
	for from := uint64(101); ; {
		out, nx, k := readAll(t, s, "c", from, 7)
		for _, e := range out {
			paged = append(paged, e.seq)
		}
		if k < 7 {
			break
		}
		if nx <= from {
			t.Fatalf("next %d does not advance from %d", nx, from)
		}
		from = nx
	}
	var want []uint64
	for _, e := range all[2:] {
		want = append(want, e.seq)
	}
	if !slices.Equal(paged, want) {
		t.Errorf("paged %v\nwant %v", paged, want)
	}
	if out, next, k := readAll(t, s, "nobody", 0, 10); len(out) != 0 || k != 0 || next != 0 {
		t.Errorf("unknown client: %d entries, next %d", len(out), next)
	}
	if _, next, k := readAll(t, s, "c", 5, 0); k != 0 || next != 5 {
		t.Errorf("max 0: n %d next %d", k, next)
	}
	// An error from fn stops the read at that entry.
	stop := errors.New("stop")
	calls := 0
	next, k, err := s.ReadOutbound("c", 0, 10, func(seq uint64, _ Outbound, _ *Message, _ error) error {
		if calls++; calls == 3 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || k != 2 || next != 102 {
		t.Errorf("fn error: err %v, n %d, next %d; want stop, 2, 102", err, k, next)
	}
}

// testReadOutboundDangling: an entry whose message is missing or corrupt,
// or that does not decode itself, is passed with bad set (and the entry,
// when it decodes, so its reference can be released) and counted; the
// read goes on. A key that does not parse has no sequence and is skipped.
func testReadOutboundDangling(t *testing.T, h harness) {
	s := h.open(t)
	b := s.NewBatch()
	var ids []uint64
	for i := range 4 {
		id := b.PutMessage(testMessage("t", []byte{byte('a' + i)}))
		ids = append(ids, id)
		b.AddRef(id)
		b.PutOutbound("c", uint64(i+1), Outbound{MessageID: id, QoS: 1})
	}
	commit(t, s, b)
	rawWrite(t, s,
		[2][]byte{appendMessageKey(nil, ids[1]), nil},                             // missing
		[2][]byte{appendMessageKey(nil, ids[2]), {messageVersion, 0xF0}},          // corrupt
		[2][]byte{appendOutboundKey(nil, "c", 10), {outboundVersion, 9, 9}},       // entry corrupt
		[2][]byte{append(appendOutboundKey(nil, "c", 11), 0), []byte("long key")}, // key corrupt
	)
	before := s.Stats()
	out, next, k := readAll(t, s, "c", 0, 10)
	if k != 5 || next != 12 {
		t.Fatalf("read %d (%+v), next %d; want entries 1, 2, 3, 4, 10, next 12", k, out, next)
	}
	for i, want := range []struct {
		seq   uint64
		id    uint64
		bad   error
		dirty bool
	}{{1, ids[0], nil, false}, {2, ids[1], ErrDanglingReference, true}, {3, ids[2], ErrCorrupt, true}, {4, ids[3], nil, false}, {10, 0, ErrCorrupt, true}} {
		e := out[i]
		if e.seq != want.seq || e.o.MessageID != want.id || (e.bad != nil) != want.dirty || (want.bad != nil && !errors.Is(e.bad, want.bad)) || (e.m == nil) != want.dirty {
			t.Errorf("entry %d: %+v; want seq %d, message %d, bad %v", i, e, want.seq, want.id, want.bad)
		}
	}
	st := s.Stats()
	if st.DanglingRead-before.DanglingRead != 2 || st.CorruptRead-before.CorruptRead != 2 {
		t.Errorf("dangling %d, corrupt %d; want 2, 2", st.DanglingRead-before.DanglingRead, st.CorruptRead-before.CorruptRead)
	}
}

// testReadOutboundVisibility: what CommitWait returned for is visible to
// the next ReadOutbound, including deletions.
func testReadOutboundVisibility(t *testing.T, h harness) {
	s := h.open(t)
	for i := range 20 {
		b := s.NewBatch()
		id := b.PutMessage(testMessage("t", []byte{byte(i)}))
		b.AddRef(id)
		b.PutOutbound("c", uint64(i), Outbound{MessageID: id, QoS: 1})
		commit(t, s, b)
		out, _, _ := readAll(t, s, "c", uint64(i), 10)
		if len(out) != 1 || out[0].m.Payload[0] != byte(i) {
			t.Fatalf("entry %d not visible after CommitWait: %+v", i, out)
		}
		if i%2 == 1 {
			b := s.NewBatch()
			b.DeleteOutbound("c", uint64(i))
			b.Release(id)
			commit(t, s, b)
			if out, _, _ := readAll(t, s, "c", uint64(i), 10); len(out) != 0 {
				t.Fatalf("deleted entry %d still read", i)
			}
		}
	}
	if _, _, k := readAll(t, s, "c", 0, 100); k != 10 {
		t.Errorf("%d entries left, want 10", k)
	}
}

// testReadOutboundConcurrent: readers page through a queue while a
// producer appends and a consumer acknowledges; every entry read has its
// message (a message is never deleted under an entry a snapshot shows),
// in order.
func testReadOutboundConcurrent(t *testing.T, h harness) {
	s := h.open(t)
	const total = 600
	var wg sync.WaitGroup
	acked := make(chan uint64, total)
	wg.Add(1)
	go func() { // producer
		defer wg.Done()
		defer close(acked)
		for i := range total {
			b := s.NewBatch()
			id := b.PutMessage(testMessage("t", []byte(fmt.Sprint(i))))
			b.AddRef(id)
			b.PutOutbound("c", uint64(i), Outbound{MessageID: id, QoS: 1})
			if err := s.CommitWait(b); err != nil {
				t.Error(err)
				return
			}
			acked <- id
		}
	}()
	wg.Add(1)
	go func() { // consumer: acknowledges the oldest entries
		defer wg.Done()
		var seq uint64
		for id := range acked {
			if seq%2 == 0 {
				b := s.NewBatch()
				b.DeleteOutbound("c", seq)
				b.Release(id)
				if err := s.CommitWait(b); err != nil {
					t.Error(err)
					return
				}
			}
			seq++
		}
	}()
	for r := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 30 {
				var last uint64
				first := true
				for from := uint64(r); ; {
					nx, k, err := s.ReadOutbound("c", from, 16, func(seq uint64, _ Outbound, m *Message, _ error) error {
						if m == nil || string(m.Payload) != fmt.Sprint(seq) {
							return fmt.Errorf("entry %d read with message %+v", seq, m)
						}
						if !first && seq <= last {
							return fmt.Errorf("entry %d after %d", seq, last)
						}
						first, last = false, seq
						return nil
					})
					if err != nil {
						t.Error(err)
						return
					}
					if k < 16 {
						break
					}
					from = nx
				}
			}
		}()
	}
	wg.Wait()
	if st := s.Stats(); st.DanglingRead != 0 || st.CorruptRead != 0 {
		t.Errorf("stats %+v", st)
	}
}

// testDiskUsage: the store's bytes grow with what it holds; free space is
// reported (unbounded in memory).
func testDiskUsage(t *testing.T, h harness) {
	s := h.open(t)
	used0, free0, err := s.DiskUsage()
	if err != nil {
		t.Fatal(err)
	}
	b := s.NewBatch()
	b.PutRetained(&Message{Topic: "big", Payload: randomPayload(rand.New(rand.NewPCG(5, 5)), 1<<20)})
	commit(t, s, b)
	used1, free1, err := s.DiskUsage()
	if err != nil {
		t.Fatal(err)
	}
	if used1 < used0+1<<20 || free0 == 0 || free1 == 0 {
		t.Errorf("disk usage: used %d -> %d, free %d -> %d", used0, used1, free0, free1)
	}
	if h.reopen == nil && free1 != math.MaxUint64 {
		t.Errorf("memory store free %d, want MaxUint64", free1)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.DiskUsage(); !errors.Is(err, ErrClosed) {
		t.Errorf("DiskUsage after Close: %v", err)
	}
	if _, _, err := s.ReadOutbound("c", 0, 1, func(uint64, Outbound, *Message, error) error { return nil }); !errors.Is(err, ErrClosed) {
		t.Errorf("ReadOutbound after Close: %v", err)
	}
}
