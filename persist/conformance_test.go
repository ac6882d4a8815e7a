package persist

// Longer than 600 lines on purpose: the one conformance suite both Store
// implementations (Pebble, Memory) must pass; splitting it would hide that
// every case runs against both.

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"
)

// harness opens one kind of store for the conformance suite.
type harness struct {
	name string
	open func(t *testing.T) Store
	// reopen closes s and opens the same data again; nil when the store
	// cannot survive a restart (Memory).
	reopen func(t *testing.T, s Store) Store
}

func quietOptions() Options {
	return Options{Logger: discardLogger()}
}

func harnesses() []harness {
	return []harness{
		{
			name: "memory",
			open: func(t *testing.T) Store {
				s, err := NewMemory(quietOptions())
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = s.Close() })
				return s
			},
		},
		{
			name: "pebble",
			open: func(t *testing.T) Store {
				o := quietOptions()
				o.Dir = t.TempDir()
				return openPebble(t, o)
			},
			reopen: func(t *testing.T, s Store) Store {
				p := s.(*Pebble)
				o := p.opts
				if err := p.Close(); err != nil {
					t.Fatal(err)
				}
				return openPebble(t, o)
			},
		},
	}
}

func openPebble(t testing.TB, o Options) *Pebble {
	t.Helper()
	p, err := OpenPebble(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// TestConformance runs the same behavioural suite against Memory and Pebble.
func TestConformance(t *testing.T) {
	tests := []struct {
		name string
		fn   func(t *testing.T, h harness)
	}{
		{"RoundTripEveryRecord", testRoundTrip},
		{"OutboundSequenceOrder", testOutboundOrder},
		{"StoreOnce", testStoreOnce},
		{"DeleteSessionReleasesReferences", testDeleteSession},
		{"DeleteSessionSeesSameBatch", testDeleteSessionSameBatch},
		{"RetainedReplaceAndClear", testRetained},
		{"UnreferencedMessageNotKept", testUnreferenced},
		{"InvalidBatchWritesNothing", testInvalidBatch},
		{"MessageIDsMonotonic", testIDsMonotonic},
		{"ExpireSessions", testExpireSessions},
		{"Inspect", testInspect},
		{"ConcurrentCommitters", testConcurrent},
		{"AddRefOrPut", testAddRefOrPut},
		{"CommitAfterClose", testCommitAfterClose},
	}
	for _, h := range harnesses() {
		t.Run(h.name, func(t *testing.T) {
			for _, tc := range tests {
				t.Run(tc.name, func(t *testing.T) { tc.fn(t, h) })
			}
		})
	}
}

// snapshot is everything Recover reports, for comparisons.
type snapshot struct {
	Messages map[uint64]*Message
	Sessions map[string]*Session
	Inbound  map[string]map[uint16]Inbound
	Outbound map[string][]seqEntry
	Retained map[string]*Message
	Corrupt  [][]byte
	Stats    RecoveryStats
}

type seqEntry struct {
	Seq uint64
	Outbound
}

func recoverAll(t *testing.T, s Store) snapshot {
	t.Helper()
	snap := snapshot{
		Messages: map[uint64]*Message{},
		Sessions: map[string]*Session{},
		Inbound:  map[string]map[uint16]Inbound{},
		Outbound: map[string][]seqEntry{},
		Retained: map[string]*Message{},
	}
	st, err := s.Recover(Visitor{
		Message: func(id uint64, m *Message) error { snap.Messages[id] = m; return nil },
		Session: func(c string, ss *Session) error { snap.Sessions[c] = ss; return nil },
		Inbound: func(c string, pid uint16, in Inbound) error {
			if snap.Inbound[c] == nil {
				snap.Inbound[c] = map[uint16]Inbound{}
			}
			snap.Inbound[c][pid] = in
			return nil
		},
		Outbound: func(c string, seq uint64, o Outbound) error {
			snap.Outbound[c] = append(snap.Outbound[c], seqEntry{seq, o})
			return nil
		},
		Retained: func(m *Message) error { snap.Retained[m.Topic] = m; return nil },
		Corrupt:  func(k []byte, err error) { snap.Corrupt = append(snap.Corrupt, k) },
	})
	if err != nil {
		t.Fatal(err)
	}
	snap.Stats = st
	return snap
}

func commit(t testing.TB, s Store, b *Batch) {
	t.Helper()
	if err := s.CommitWait(b); err != nil {
		t.Fatal(err)
	}
}

// restart reopens the store when the harness can; otherwise returns s.
func restart(t *testing.T, h harness, s Store) Store {
	if h.reopen == nil {
		return s
	}
	return h.reopen(t, s)
}

func testMessage(topic string, payload []byte) *Message {
	return &Message{Topic: topic, Payload: payload, QoS: 1, Publisher: "pub-1"}
}

func testRoundTrip(t *testing.T, h harness) {
	s := h.open(t)
	rng := rand.New(rand.NewPCG(7, 7))
	msgs := []*Message{
		{Topic: "a/b", Payload: []byte("hello"), QoS: 1, Publisher: "p"},
		{Topic: "t/json", Payload: jsonPayload(rng, 8<<10), QoS: 2, Retain: true, Properties: []byte{0x01, 0x01, 0x03, 0x00, 0x04, 't', 'e', 'x', 't'}, ExpiresAt: 1700000000123, Publisher: "p2"},
		{Topic: "t/random", Payload: randomPayload(rng, 4<<10), QoS: 1, Publisher: ""},
		{Topic: "t/empty", Payload: []byte{}, QoS: 0},
	}
	sess := &Session{ProtocolVersion: 5, ExpiryInterval: 3600, DisconnectedAt: 1700000000000, Subscriptions: []Subscription{
		{Filter: "a/#", QoS: 1, Options: 0x05, ID: 7},
		{Filter: "$share/g/t/+", QoS: 2, Options: 0x2A, ID: MaxSubscriptionID},
		{Filter: "x", QoS: 0},
	}}
	b := s.NewBatch()
	b.PutSession("c1", sess)
	b.PutSession("c2", &Session{ProtocolVersion: 4, ExpiryInterval: NoExpiry})
	ids := make([]uint64, len(msgs))
	for i, m := range msgs {
		ids[i] = b.PutMessage(m)
		b.AddRef(ids[i])
	}
	outs := []seqEntry{
		{1, Outbound{MessageID: ids[0], QoS: 1, State: AwaitingPuback, PacketID: 10}},
		{2, Outbound{MessageID: ids[1], QoS: 2, State: AwaitingPubrec, PacketID: 11}},
		{3, Outbound{MessageID: ids[2], QoS: 1, State: Queued}},
		{4, Outbound{MessageID: ids[3], QoS: 0, State: Queued}},
		{5, Outbound{MessageID: 0, QoS: 2, State: AwaitingPubcomp, PacketID: 65535}},
	}
	for _, o := range outs {
		b.PutOutbound("c1", o.Seq, o.Outbound)
	}
	b.PutInbound("c1", 1, Inbound{ReceivedAt: 5})
	b.PutInbound("c1", 65535, Inbound{ReceivedAt: 6})
	b.PutRetained(msgs[1])
	commit(t, s, b)

	s = restart(t, h, s)
	snap := recoverAll(t, s)
	want := map[uint64]*Message{}
	for i, m := range msgs {
		want[ids[i]] = m
	}
	if !reflect.DeepEqual(snap.Messages, want) {
		t.Errorf("messages:\n got %+v\nwant %+v", snap.Messages, want)
	}
	if !reflect.DeepEqual(snap.Sessions["c1"], sess) {
		t.Errorf("session c1: got %+v want %+v", snap.Sessions["c1"], sess)
	}
	if got := snap.Sessions["c2"]; got == nil || got.ExpiryInterval != NoExpiry || got.Subscriptions != nil {
		t.Errorf("session c2: got %+v", got)
	}
	if !reflect.DeepEqual(snap.Outbound["c1"], outs) {
		t.Errorf("outbound:\n got %+v\nwant %+v", snap.Outbound["c1"], outs)
	}
	if want := map[uint16]Inbound{1: {5}, 65535: {6}}; !reflect.DeepEqual(snap.Inbound["c1"], want) {
		t.Errorf("inbound: got %v want %v", snap.Inbound["c1"], want)
	}
	if !reflect.DeepEqual(snap.Retained, map[string]*Message{"t/json": msgs[1]}) {
		t.Errorf("retained: got %+v", snap.Retained)
	}
	if snap.Stats.Corrupt != 0 || len(snap.Corrupt) != 0 {
		t.Errorf("corrupt records: %d", snap.Stats.Corrupt)
	}
	if st := snap.Stats; st.Messages != 4 || st.Sessions != 2 || st.Outbound != 5 || st.Inbound != 2 || st.Retained != 1 {
		t.Errorf("stats %+v", st)
	}
}

func testOutboundOrder(t *testing.T, h harness) {
	s := h.open(t)
	// Client ids that are prefixes of each other must not interleave, and
	// sequences across byte boundaries must sort numerically.
	clients := []string{"a", "ab", "a\x00", "b", ""}
	seqs := []uint64{1, 255, 256, 65535, 65536, 1 << 32, 1<<64 - 1, 2, 3}
	rng := rand.New(rand.NewPCG(1, 1))
	b := s.NewBatch()
	id := b.PutMessage(testMessage("t", []byte("x")))
	for _, c := range clients {
		b.PutSession(c, &Session{ProtocolVersion: 4})
		for _, i := range rng.Perm(len(seqs)) {
			b.PutOutbound(c, seqs[i], Outbound{MessageID: id, QoS: 1})
			b.AddRef(id)
		}
	}
	commit(t, s, b)
	s = restart(t, h, s)
	snap := recoverAll(t, s)
	sorted := slices.Clone(seqs)
	slices.Sort(sorted)
	for _, c := range clients {
		var got []uint64
		for _, e := range snap.Outbound[c] {
			got = append(got, e.Seq)
		}
		if !slices.Equal(got, sorted) {
			t.Errorf("client %q: sequence order %v, want %v", c, got, sorted)
		}
	}
	if len(snap.Sessions) != len(clients) {
		t.Errorf("sessions %d, want %d", len(snap.Sessions), len(clients))
	}
}

func usage(t *testing.T, s Store) Usage {
	t.Helper()
	u, err := s.Usage()
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func testStoreOnce(t *testing.T, h harness) {
	s := h.open(t)
	const n = 100
	b := s.NewBatch()
	id := b.PutMessage(testMessage("fan/out", bytes.Repeat([]byte("payload "), 200)))
	for i := range n {
		c := fmt.Sprintf("sub-%03d", i)
		b.PutOutbound(c, 1, Outbound{MessageID: id, QoS: 1})
		b.AddRef(id)
	}
	commit(t, s, b)
	if u := usage(t, s); u.Messages.Count != 1 || u.Outbound.Count != n {
		t.Fatalf("after fan-out: %d message records, %d entries; want 1, %d", u.Messages.Count, u.Outbound.Count, n)
	}
	s = restart(t, h, s) // reference counts are rebuilt from the entries
	for i := range n {
		b := s.NewBatch()
		b.DeleteOutbound(fmt.Sprintf("sub-%03d", i), 1)
		b.Release(id)
		commit(t, s, b)
		want := int64(1)
		if i == n-1 {
			want = 0
		}
		if u := usage(t, s); u.Messages.Count != want {
			t.Fatalf("after %d releases: %d message records, want %d", i+1, u.Messages.Count, want)
		}
	}
	if st := s.Stats(); st.LiveMessages != 0 || st.RefErrors != 0 {
		t.Errorf("stats after last release: %+v", st)
	}
}

// assertEmpty checks that nothing but meta records is left.
func assertEmpty(t *testing.T, s Store) {
	t.Helper()
	u := usage(t, s)
	u.Meta, u.DiskBytes, u.TableBytes, u.WALBytes = EntityUsage{}, 0, 0, 0
	if u != (Usage{}) {
		t.Errorf("store not empty: %+v", u)
	}
}

func testDeleteSession(t *testing.T, h harness) {
	s := h.open(t)
	b := s.NewBatch()
	shared := b.PutMessage(testMessage("t/shared", []byte("s")))
	onlyA := b.PutMessage(testMessage("t/a", []byte("a")))
	for _, c := range []string{"A", "B"} {
		b.PutSession(c, &Session{ProtocolVersion: 5, ExpiryInterval: 60, Subscriptions: []Subscription{{Filter: "t/#", QoS: 1}}})
		b.PutOutbound(c, 1, Outbound{MessageID: shared, QoS: 1, State: AwaitingPuback, PacketID: 1})
		b.AddRef(shared)
		b.PutInbound(c, 9, Inbound{ReceivedAt: 1})
	}
	b.PutOutbound("A", 2, Outbound{MessageID: onlyA, QoS: 1})
	b.AddRef(onlyA)
	b.PutOutbound("A", 3, Outbound{QoS: 2, State: AwaitingPubcomp, PacketID: 3})
	commit(t, s, b)
	s = restart(t, h, s)

	b = s.NewBatch()
	b.DeleteSession("A")
	commit(t, s, b)
	snap := recoverAll(t, s)
	if _, ok := snap.Messages[onlyA]; ok {
		t.Error("message referenced only by A survived DeleteSession(A)")
	}
	if _, ok := snap.Messages[shared]; !ok {
		t.Error("message still referenced by B was deleted")
	}
	if snap.Sessions["A"] != nil || snap.Outbound["A"] != nil || snap.Inbound["A"] != nil {
		t.Error("A's records survived DeleteSession")
	}
	if snap.Sessions["B"] == nil || len(snap.Outbound["B"]) != 1 || len(snap.Inbound["B"]) != 1 {
		t.Error("B's records were touched")
	}
	b = s.NewBatch()
	b.DeleteSession("B")
	commit(t, s, b)
	assertEmpty(t, s)
	if st := s.Stats(); st.LiveMessages != 0 || st.RefErrors != 0 {
		t.Errorf("stats: %+v", st)
	}
}

func testDeleteSessionSameBatch(t *testing.T, h harness) {
	s := h.open(t)
	b := s.NewBatch()
	id := b.PutMessage(testMessage("t", []byte("x")))
	b.PutSession("c", &Session{ProtocolVersion: 4})
	b.PutOutbound("c", 1, Outbound{MessageID: id, QoS: 1})
	b.AddRef(id)
	b.DeleteSession("c")
	// A session created again after the delete, in the same batch, stays.
	b.PutSession("c", &Session{ProtocolVersion: 5})
	commit(t, s, b)
	snap := recoverAll(t, s)
	if len(snap.Messages) != 0 || len(snap.Outbound) != 0 {
		t.Errorf("left behind: %d messages, %d outbound", len(snap.Messages), len(snap.Outbound))
	}
	if got := snap.Sessions["c"]; got == nil || got.ProtocolVersion != 5 {
		t.Errorf("session put after the delete: %+v", got)
	}
}

func testRetained(t *testing.T, h harness) {
	s := h.open(t)
	for i := range 3 {
		b := s.NewBatch()
		m := testMessage("r/t", bytes.Repeat([]byte{byte('a' + i)}, 2000))
		m.Retain = true
		b.PutRetained(m)
		commit(t, s, b)
	}
	s = restart(t, h, s)
	snap := recoverAll(t, s)
	if got := snap.Retained["r/t"]; got == nil || got.Payload[0] != 'c' || len(snap.Retained) != 1 {
		t.Fatalf("retained after replace: %+v", snap.Retained)
	}
	b := s.NewBatch()
	b.DeleteRetained("r/t")
	commit(t, s, b)
	assertEmpty(t, s)
}

func testUnreferenced(t *testing.T, h harness) {
	s := h.open(t)
	b := s.NewBatch()
	b.PutMessage(testMessage("t", []byte("nobody wants me")))
	id2 := b.PutMessage(testMessage("t", []byte("released in the same batch")))
	b.AddRef(id2)
	b.Release(id2)
	commit(t, s, b)
	assertEmpty(t, s)
	if st := s.Stats(); st.Unreferenced != 1 || st.LiveMessages != 0 {
		t.Errorf("stats %+v", st)
	}
}

func testInvalidBatch(t *testing.T, h harness) {
	s := h.open(t)
	cases := []struct {
		name string
		fill func(b *Batch)
	}{
		{"outbound packet id 0 while in flight [MQTT-2.2.1-3]", func(b *Batch) {
			b.PutOutbound("c", 1, Outbound{MessageID: 1, QoS: 1, State: AwaitingPuback})
		}},
		{"inbound packet id 0 [MQTT-2.2.1-3]", func(b *Batch) { b.PutInbound("c", 0, Inbound{}) }},
		{"QoS 3", func(b *Batch) { b.PutMessage(&Message{Topic: "t", QoS: 3}) }},
		{"empty topic", func(b *Batch) { b.PutRetained(&Message{}) }},
		{"long client id", func(b *Batch) { b.PutSession(string(make([]byte, 70000)), &Session{ProtocolVersion: 4}) }},
		{"protocol version", func(b *Batch) { b.PutSession("c", &Session{ProtocolVersion: 9}) }},
		{"subscription id", func(b *Batch) {
			b.PutSession("c", &Session{ProtocolVersion: 5, Subscriptions: []Subscription{{Filter: "x", ID: MaxSubscriptionID + 1}}})
		}},
		{"release id 0", func(b *Batch) { b.Release(0) }},
	}
	for _, tc := range cases {
		b := s.NewBatch()
		b.PutSession("good", &Session{ProtocolVersion: 4})
		tc.fill(b)
		b.PutSession("good2", &Session{ProtocolVersion: 4})
		if err := s.CommitWait(b); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: err %v, want ErrInvalid", tc.name, err)
		}
	}
	assertEmpty(t, s)
}

func testIDsMonotonic(t *testing.T, h harness) {
	s := h.open(t)
	var last uint64
	for range 3 {
		b := s.NewBatch()
		id := b.PutMessage(testMessage("t", []byte("x")))
		b.AddRef(id)
		b.PutOutbound("c", id, Outbound{MessageID: id, QoS: 1})
		commit(t, s, b)
		if id <= last {
			t.Fatalf("id %d after %d", id, last)
		}
		last = id
		b = s.NewBatch()
		b.DeleteOutbound("c", id)
		b.Release(id)
		commit(t, s, b)
		s = restart(t, h, s) // no message record is left to derive the id from
	}
	b := s.NewBatch()
	if id := b.PutMessage(testMessage("t", nil)); id <= last {
		t.Fatalf("id %d after restart, last was %d", id, last)
	}
}

func testExpireSessions(t *testing.T, h harness) {
	s := h.open(t)
	now := time.UnixMilli(1_800_000_000_000)
	b := s.NewBatch()
	id := b.PutMessage(testMessage("t", []byte("x")))
	sessions := map[string]*Session{
		"expired":     {ProtocolVersion: 5, ExpiryInterval: 60, DisconnectedAt: now.UnixMilli() - 61_000},
		"just-now":    {ProtocolVersion: 5, ExpiryInterval: 60, DisconnectedAt: now.UnixMilli() - 60_000},
		"not-yet":     {ProtocolVersion: 5, ExpiryInterval: 60, DisconnectedAt: now.UnixMilli() - 59_000},
		"connected":   {ProtocolVersion: 4, ExpiryInterval: 60, DisconnectedAt: 0},
		"never":       {ProtocolVersion: 5, ExpiryInterval: NoExpiry, DisconnectedAt: 1},
		"zero-expiry": {ProtocolVersion: 5, ExpiryInterval: 0, DisconnectedAt: now.UnixMilli() - 1},
	}
	for c, ss := range sessions {
		b.PutSession(c, ss)
		b.PutOutbound(c, 1, Outbound{MessageID: id, QoS: 1})
		b.AddRef(id)
	}
	commit(t, s, b)
	kept := false
	n, err := s.ExpireSessions(now, func(c string, ss *Session) bool {
		kept = kept || c == "just-now"
		return c == "just-now" // the caller expires it itself
	})
	if err != nil {
		t.Fatal(err)
	}
	if n != 2 || !kept {
		t.Errorf("expired %d sessions, want 2; keep asked about just-now: %v", n, kept)
	}
	snap := recoverAll(t, s)
	for _, c := range []string{"expired", "zero-expiry"} {
		if snap.Sessions[c] != nil || snap.Outbound[c] != nil {
			t.Errorf("%s survived", c)
		}
	}
	for _, c := range []string{"not-yet", "connected", "never", "just-now"} {
		if snap.Sessions[c] == nil || len(snap.Outbound[c]) != 1 {
			t.Errorf("%s was expired", c)
		}
	}
	if st := s.Stats(); st.LiveMessages != 1 {
		t.Errorf("live messages %d", st.LiveMessages)
	}
	if n, err := s.ExpireSessions(now, nil); err != nil || n != 1 {
		t.Errorf("second pass without keep: expired %d, %v; want 1 (just-now)", n, err)
	}
}

func testInspect(t *testing.T, h harness) {
	s := h.open(t)
	b := s.NewBatch()
	id := b.PutMessage(testMessage("t", []byte("x")))
	b.PutSession("c", &Session{ProtocolVersion: 5, Subscriptions: []Subscription{{Filter: "t", QoS: 1}}})
	for seq := uint64(10); seq < 15; seq++ {
		st := Queued
		pid := uint16(0)
		if seq == 10 {
			st, pid = AwaitingPuback, 1
		}
		b.PutOutbound("c", seq, Outbound{MessageID: id, QoS: 1, State: st, PacketID: pid})
		b.AddRef(id)
	}
	b.PutInbound("c", 4, Inbound{})
	b.PutSession("other", &Session{ProtocolVersion: 4})
	commit(t, s, b)
	ci, err := s.Inspect("c")
	if err != nil {
		t.Fatal(err)
	}
	if ci.Session == nil || ci.Outbound.Count != 5 || ci.Inbound.Count != 1 || ci.FirstSeq != 10 || ci.LastSeq != 14 ||
		ci.States[Queued] != 4 || ci.States[AwaitingPuback] != 1 {
		t.Errorf("inspect: %+v", ci)
	}
	u := usage(t, s)
	if u.Sessions.Count != 2 || u.Messages.Count != 1 || u.Outbound.Count != 5 || u.Inbound.Count != 1 || u.Sessions.Bytes == 0 {
		t.Errorf("usage: %+v", u)
	}
}

func testConcurrent(t *testing.T, h harness) {
	s := h.open(t)
	const workers, perWorker = 8, 50
	var wg sync.WaitGroup
	errs := make(chan error, workers*perWorker)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWorker {
				b := s.NewBatch()
				id := b.PutMessage(testMessage("t", []byte("x")))
				for j := range 3 {
					c := fmt.Sprintf("w%d-c%d", w, j)
					b.PutOutbound(c, uint64(i), Outbound{MessageID: id, QoS: 1})
					b.AddRef(id)
				}
				var once sync.WaitGroup
				once.Add(1)
				s.Commit(b, func(err error) {
					if err != nil {
						errs <- err
					}
					once.Done()
				})
				once.Wait()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// Each worker's clients are deleted concurrently: every message loses
	// its three references from three different batches.
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 3 {
				b := s.NewBatch()
				b.DeleteSession(fmt.Sprintf("w%d-c%d", w, j))
				if err := s.CommitWait(b); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	assertEmpty(t, s)
	st := s.Stats()
	if st.LiveMessages != 0 || st.RefErrors != 0 || st.Batches != workers*perWorker+workers*3 {
		t.Errorf("stats %+v", st)
	}
}

func testCommitAfterClose(t *testing.T, h harness) {
	s := h.open(t)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	b := s.NewBatch()
	b.PutSession("c", &Session{ProtocolVersion: 4})
	if err := s.CommitWait(b); !errors.Is(err, ErrClosed) {
		t.Errorf("commit after close: %v", err)
	}
	if err := s.Close(); !errors.Is(err, ErrClosed) {
		t.Errorf("second close: %v", err)
	}
}

// TestMemoryDeleteSessionDropsClientMap checks the memory engine's fast
// path: a session delete drops the client's map instead of scanning.
func TestMemoryDeleteSessionDropsClientMap(t *testing.T) {
	m, err := NewMemory(quietOptions())
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	commit(t, m, putSession(m, "a"))
	commit(t, m, putSession(m, "b"))
	eng := m.eng.(*memEngine)
	w := eng.newWriter()
	lo, hi := clientBounds("a")
	w.delRange(lo, hi)
	// A range that is not a client range must not take the fast path.
	w.delRange([]byte{prefixRetained}, []byte{prefixRetained + 1})
	if err := eng.apply(w, false); err != nil {
		t.Fatal(err)
	}
	if _, ok := eng.clients[string(lo)]; ok || len(eng.clients) != 1 {
		t.Errorf("client maps after delete: %d", len(eng.clients))
	}
}

func testAddRefOrPut(t *testing.T, h harness) {
	s := h.open(t)
	m := testMessage("t", []byte("again"))
	b := s.NewBatch()
	id := b.PutMessage(m)
	b.AddRef(id)
	b.PutOutbound("A", 1, Outbound{MessageID: id, QoS: 1})
	commit(t, s, b)

	// Still referenced: only a reference is added, nothing rewritten.
	b = s.NewBatch()
	b.AddRefOrPut(id, m)
	b.PutOutbound("B", 1, Outbound{MessageID: id, QoS: 1})
	commit(t, s, b)
	// Both references go; the message is deleted.
	for _, c := range []string{"A", "B"} {
		b = s.NewBatch()
		b.DeleteOutbound(c, 1)
		b.Release(id)
		commit(t, s, b)
	}
	if u := usage(t, s); u.Messages.Count != 0 {
		t.Fatalf("message not deleted: %+v", u)
	}
	// A later delivery of the same in-memory message writes it again.
	b = s.NewBatch()
	b.AddRefOrPut(id, m)
	b.PutOutbound("C", 1, Outbound{MessageID: id, QoS: 1})
	commit(t, s, b)
	s = restart(t, h, s)
	snap := recoverAll(t, s)
	if !reflect.DeepEqual(snap.Messages[id], m) || len(snap.Outbound["C"]) != 1 || snap.Stats.Corrupt != 0 {
		t.Errorf("after rewrite: messages %v, outbound %v, corrupt %d", snap.Messages, snap.Outbound, snap.Stats.Corrupt)
	}
	if st := s.Stats(); st.RefErrors != 0 || st.LiveMessages != 1 {
		t.Errorf("stats %+v", st)
	}
	// Release and re-reference in one batch: the reference wins.
	b = s.NewBatch()
	b.DeleteOutbound("C", 1)
	b.Release(id)
	b.AddRefOrPut(id, m)
	b.PutOutbound("D", 1, Outbound{MessageID: id, QoS: 1})
	commit(t, s, b)
	if u := usage(t, s); u.Messages.Count != 1 {
		t.Errorf("message lost when released and re-referenced in one batch: %+v", u)
	}
}
