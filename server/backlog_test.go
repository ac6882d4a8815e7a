package server

// Tests of the disk-backed backlog's edges (backlog.go, recover.go,
// share.go) on a real broker with a real Pebble store: a stored delivery
// that cannot be read, the session quota across a restart, and the
// backlog of a persistent $share member whose session expires.

import (
	"bytes"
	"encoding/binary"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/eclipse/paho.golang/paho"

	"github.com/ternmq/tern/codec"
)

// rawStore opens the broker's Pebble directory directly (the broker must
// be stopped), for a test that damages records the way a bad disk would.
func rawStore(t *testing.T, dir string) *pebble.DB {
	t.Helper()
	db, err := pebble.Open(dir, &pebble.Options{Logger: pebbleTestLogger{t}})
	if err != nil {
		t.Fatal(err)
	}
	return db
}

// pebbleTestLogger keeps Pebble's replay chatter out of the test output.
type pebbleTestLogger struct{ t *testing.T }

func (pebbleTestLogger) Infof(string, ...any)           {}
func (l pebbleTestLogger) Errorf(f string, args ...any) { l.t.Logf("pebble: "+f, args...) }
func (l pebbleTestLogger) Fatalf(f string, args ...any) { l.t.Fatalf("pebble: "+f, args...) }

// messageKeyOf returns the key of the message record whose payload is
// payload (records end with their uncompressed payload; key 0x02 | id).
func messageKeyOf(t *testing.T, db *pebble.DB, payload []byte) []byte {
	t.Helper()
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: []byte{0x02}, UpperBound: []byte{0x03}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = it.Close() }()
	for ok := it.First(); ok; ok = it.Next() {
		if bytes.HasSuffix(it.Value(), payload) {
			return bytes.Clone(it.Key())
		}
	}
	t.Fatalf("no message record with payload %q", payload)
	return nil
}

// outboundKeyOf returns the key of client's outbound entry referencing
// the message with key msgKey (entry bytes 5-12 are the message id).
func outboundKeyOf(t *testing.T, db *pebble.DB, client string, msgKey []byte) []byte {
	t.Helper()
	prefix := append([]byte{0x03, byte(len(client) >> 8), byte(len(client))}, client...)
	lo, hi := append(bytes.Clone(prefix), 0x03), append(bytes.Clone(prefix), 0x04)
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = it.Close() }()
	for ok := it.First(); ok; ok = it.Next() {
		if v := it.Value(); len(v) == 13 && binary.BigEndian.Uint64(v[5:]) == binary.BigEndian.Uint64(msgKey[1:]) {
			return bytes.Clone(it.Key())
		}
	}
	t.Fatalf("no outbound entry of %q for message %x", client, msgKey)
	return nil
}

// resumeRawSub takes persistent session id back with an acknowledging raw
// 3.1.1 client, waits for n messages (and 300 ms more, for extras), closes
// it and returns the sequence numbers and DUP flags received.
func resumeRawSub(t *testing.T, addr, id string, n int, d time.Duration) ([]int, []bool) {
	t.Helper()
	back, ca := startRawSub(t, addr, id, false, "", 0, true, 0)
	if !ca.SessionPresent {
		t.Fatalf("session %s lost", id)
	}
	back.waitN(t, n, d)
	time.Sleep(300 * time.Millisecond)
	seqs, dups := back.seqs()
	back.close()
	if len(seqs) != n {
		t.Fatalf("session %s got %d messages, want %d", id, len(seqs), n)
	}
	return seqs, dups
}

// metricValue reads one metric line from the broker's /metrics handler.
func metricValue(t *testing.T, srv *Server, name string) string {
	t.Helper()
	rec := httptest.NewRecorder()
	srv.handleMetrics(rec, httptest.NewRequest("GET", "/metrics", nil))
	for line := range strings.Lines(rec.Body.String()) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+" "); ok {
			return v
		}
	}
	t.Fatalf("metric %s not exported", name)
	return ""
}

// Two stored deliveries of an offline persistent session are damaged on
// disk while the broker is down: one message record overwritten with
// garbage, and one outbound entry. When the session returns, each is
// deleted as its turn comes (a tombstone), counted in
// tern_store_corrupt_total and logged, and the session gets every other
// message, in order [MQTT-4.6.0-6], instead of its backlog stalling at
// the first bad record. The tombstones are committed: nothing of the
// backlog is left in the store once the rest is acknowledged.
func TestBacklogCorruptDeliveryTombstoned_MQTT_4_6_0_6(t *testing.T) {
	t.Parallel()
	const n, badMsg, badEntry = 2000, 700, 1500 // both beyond the first memory window
	b := newQBroker(t, nil)
	off, _ := startRawSub(t, b.addr, "cb-sub", false, "cb/t", 1, true, 0)
	off.close()
	waitConnected(t, b.srv, 0)
	pub := pahoClient(t, b.addr, "cb-pub")
	publishSeq(t, pub, "cb/t", 1, 0, n, 64, nil)
	pub.Disconnect(50)
	b.stop()

	db := rawStore(t, b.opts.DataDir)
	msgKey := messageKeyOf(t, db, seqPayload(badMsg))
	entryKey := outboundKeyOf(t, db, "cb-sub", messageKeyOf(t, db, seqPayload(badEntry)))
	if err := db.Set(msgKey, []byte{0xEE, 0xEE, 0xEE}, pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if err := db.Set(entryKey, []byte{0x01, 0x09}, pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	b.start()
	back, _ := startRawSub(t, b.addr, "cb-sub", false, "", 0, true, 0)
	back.waitN(t, n-2, 30*time.Second)
	time.Sleep(300 * time.Millisecond)
	seqs, _ := back.seqs()
	want := make([]int, 0, n-2)
	for i := range n {
		if i != badMsg && i != badEntry {
			want = append(want, i)
		}
	}
	if len(seqs) != len(want) {
		t.Fatalf("got %d messages, want %d", len(seqs), len(want))
	}
	for i := range want {
		if seqs[i] != want[i] {
			t.Fatalf("message %d has sequence %d, want %d", i, seqs[i], want[i])
		}
	}
	if got := metricValue(t, b.srv, "tern_store_corrupt_total"); got != "2" {
		t.Errorf("tern_store_corrupt_total = %s, want 2", got)
	}
	// The garbage message lost its only reference with its entry; the
	// message of the unreadable entry stays (its id was in the entry),
	// an orphan that Options.RepairReferences removes.
	waitUntil(t, 5*time.Second, "the backlog to leave the store", func() bool {
		info, err := b.srv.store.Inspect("cb-sub")
		return err == nil && info.Outbound.Count == 0
	})
	if live := b.srv.store.Stats().LiveMessages; live > 1 {
		t.Errorf("%d live messages after everything was acknowledged or tombstoned, want at most 1 (the orphan)", live)
	}
}

// The per-session quota holds across a restart: a persistent session
// filled to max_session_backlog_bytes while offline is still full after
// the broker restarts on its data dir (its count is stored with the
// backlog and recovered with its bounds, not recounted from zero), so the
// next message for it is refused with PUBACK 0x97 on 5.0 [MQTT-3.4.2-1
// reason codes]; once the session drains, messages are accepted again.
func TestBacklogQuotaAcrossRestart(t *testing.T) {
	t.Parallel()
	const quota = 16 << 10
	b := newQBroker(t, func(o *Options) { o.MaxSessionBacklogBytes = quota })
	off, _ := startRawSub(t, b.addr, "qr-sub", false, "qr/t", 1, true, 0)
	off.close()
	waitConnected(t, b.srv, 0)
	pad := make([]byte, 1000)
	next := 0
	// send publishes one QoS 1 message of ~1 KB on a fresh 5.0
	// connection (a restart closes the old one) and returns its PUBACK
	// reason code.
	var pub *rawConn
	send := func() codec.ReasonCode {
		t.Helper()
		id := uint16(next%60000 + 1)
		pub.publish(codec.Publish{QoS: 1, PacketID: id, Topic: []byte("qr/t"), Payload: append(seqPayload(next), pad...)})
		a := pub.readAck(5*time.Second, codec.PUBACK)
		if a.PacketID != id {
			t.Fatalf("PUBACK for %d, want %d", a.PacketID, id)
		}
		if a.ReasonCode == 0 {
			next++
		}
		return a.ReasonCode
	}
	pub, _ = dialRaw5(t, b.addr, codec.Connect{ClientID: []byte("qr-pub"), CleanStart: true})
	for send() == 0 {
		if next > 2*quota/1000 {
			t.Fatalf("%d messages of 1 KB accepted for a %d-byte quota", next, quota)
		}
	}
	accepted := next
	t.Logf("quota refused after %d messages of ~1 KB", accepted)

	b.restart()
	pub, _ = dialRaw5(t, b.addr, codec.Connect{ClientID: []byte("qr-pub"), CleanStart: true})
	for i := range 3 {
		if rc := send(); rc != codec.QuotaExceeded {
			t.Fatalf("message %d for the full session after the restart: PUBACK %#x, want 0x97", i, rc)
		}
	}
	if r := b.srv.Refused()["max_session_backlog_bytes"]; r != 3 {
		t.Errorf("Refused()[max_session_backlog_bytes] = %d after the restart, want 3", r)
	}

	// Drained, the session takes about as much again.
	seqs, dups := resumeRawSub(t, b.addr, "qr-sub", accepted, 10*time.Second)
	wantSeq(t, seqs, dups, 0, accepted)
	waitUntil(t, 5*time.Second, "the acknowledgements to empty the backlog", func() bool {
		info, err := b.srv.store.Inspect("qr-sub")
		return err == nil && info.Outbound.Count == 0
	})
	for send() == 0 {
	}
	if again := next - accepted; again < accepted-1 {
		t.Errorf("after draining, the session took %d messages, want about %d: the quota count did not come down", again, accepted)
	}
}

// A hole in a stored backlog that nothing will ever fill — here a
// tombstoned delivery, sent around while the entries before it were
// still in flight — must not stall the session when it returns: entries
// around it were given back to the store when the client left, and the
// hole lies between them. The session is taken back once (the hole was
// made while connected) and after a restart (the hole is on disk), and
// gets every readable message each time, in order [MQTT-4.6.0-6], with
// DUP set on those already sent [MQTT-3.3.1-1].
func TestBacklogHoleAcrossReconnect_MQTT_4_6_0_6(t *testing.T) {
	t.Parallel()
	const n, bad = 300, 5
	b := newQBroker(t, nil)
	off, _ := startRawSub(t, b.addr, "hb-sub", false, "hb/t", 1, true, 0)
	off.close()
	waitConnected(t, b.srv, 0)
	pub := pahoClient(t, b.addr, "hb-pub")
	publishSeq(t, pub, "hb/t", 1, 0, n, 64, nil)
	pub.Disconnect(50)
	b.stop()
	db := rawStore(t, b.opts.DataDir)
	if err := db.Set(messageKeyOf(t, db, seqPayload(bad)), []byte{0xEE}, pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	b.start()

	check := func(s *rawSub, want int) {
		t.Helper()
		s.waitN(t, want, 10*time.Second)
		time.Sleep(200 * time.Millisecond)
		seqs, _ := s.seqs()
		if len(seqs) != want {
			t.Fatalf("got %d messages, want %d", len(seqs), want)
		}
		for i, got := range seqs {
			if w := i + min(i/bad, 1); got != w { // every sequence but bad
				t.Fatalf("message %d has sequence %d, want %d", i, got, w)
			}
		}
	}
	// It receives the inflight window (64) without acknowledging: the
	// tombstone is made behind the entries in flight.
	first, _ := startRawSub(t, b.addr, "hb-sub", false, "", 0, false, 0)
	check(first, DefaultReceiveMaximum)
	first.close()
	waitConnected(t, b.srv, 0)
	if got := metricValue(t, b.srv, "tern_store_corrupt_total"); got != "1" {
		t.Fatalf("tern_store_corrupt_total = %s, want 1", got)
	}
	// Back without acknowledging again: the whole window comes back, past
	// the hole.
	second, _ := startRawSub(t, b.addr, "hb-sub", false, "", 0, false, 0)
	check(second, DefaultReceiveMaximum)
	second.close()
	waitConnected(t, b.srv, 0)
	// After a restart everything readable comes, acknowledged.
	b.restart()
	third, _ := startRawSub(t, b.addr, "hb-sub", false, "", 0, true, 0)
	check(third, n-1)
}

// A persistent $share member whose session expires does not take the
// group's messages stored for it along: they go to another member of the
// group, read back from the store in order, before its backlog is deleted
// ([MQTT-4.8.2-4 note]: "the Server SHOULD send the Application Message to
// another Client"). The expiring member (raw 5.0) had 1,000 messages
// queued on disk while offline, came back once to take 10 without
// acknowledging them, and left with a Session Expiry of 1 s; the other
// member (paho.golang) gets all 1,000, in order, the 10 it never saw
// without DUP.
func TestBacklogSharedMemberExpiryRedispatch_MQTT_4_8_2(t *testing.T) {
	t.Parallel()
	const n, inflight = 1000, 10
	b := newQBroker(t, nil)
	connectA := func(clean bool) *rawConn {
		p := codec.Connect{ClientID: []byte("sx-a"), CleanStart: clean}
		p.Props.SessionExpiry = 3600
		p.Props.Set(codec.PropSessionExpiry)
		p.Props.ReceiveMaximum = inflight
		p.Props.Set(codec.PropReceiveMaximum)
		a, _ := dialRaw5(t, b.addr, p)
		return a
	}
	a := connectA(true)
	if codes := a.subscribe(1, "$share/g/sx/#", 1); len(codes) != 1 || codes[0] != 1 {
		t.Fatalf("SUBACK %v", codes)
	}
	_ = a.conn().Close()
	waitConnected(t, b.srv, 0)

	pub := pahoClient(t, b.addr, "sx-pub")
	publishSeq(t, pub, "sx/t", 1, 0, n, 64, nil) // the group's only member is offline: all wait in its store
	pub.Disconnect(50)

	bc, _, got := paho5(t, b.addr, "sx-b", &paho.ConnectProperties{SessionExpiryInterval: u32(3600)})
	sub5(t, bc, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "$share/g/sx/#", QoS: 1}}})

	a = connectA(false)
	for i := range inflight {
		if p := a.readPublish(5 * time.Second); seqOf(p.Payload) != i {
			t.Fatalf("member a got sequence %d, want %d", seqOf(p.Payload), i)
		}
	}
	d := codec.Disconnect{}
	d.Props.SessionExpiry = 1
	d.Props.Set(codec.PropSessionExpiry)
	a.send(d.Append(nil, codec.Version5))
	_ = a.conn().Close()

	got.waitN(t, n, 20*time.Second)
	got.quiet(t, n, 300*time.Millisecond)
	msgs := got.snapshot()
	for i, p := range msgs {
		if seqOf(p.Payload) != i || p.Duplicate() {
			t.Fatalf("member b's message %d: sequence %d, DUP %v; want %d, no DUP", i, seqOf(p.Payload), p.Duplicate(), i)
		}
	}
	if r := b.srv.stats.redispatched.Load(); r != n {
		t.Errorf("redispatched %d, want %d", r, n)
	}
	info, err := b.srv.store.Inspect("sx-a")
	if err != nil || info.Session != nil || info.Outbound.Count != 0 {
		t.Errorf("the expired member's data is still stored: %+v, %v", info, err)
	}
}

// The same for a member whose session expired while the broker was down:
// it is not deleted when the store opens but recovered and expired once
// every session is loaded, so its stored group messages go to the other
// member — here offline and persistent too, which finds them in its own
// backlog when it returns: every message once, its own share and then the
// expired member's, each in order.
func TestBacklogSharedMemberExpiredWhileDown_MQTT_4_8_2(t *testing.T) {
	t.Parallel()
	const n = 600
	b := newQBroker(t, nil)
	pa := codec.Connect{ClientID: []byte("sd-a"), CleanStart: true}
	pa.Props.SessionExpiry = 1
	pa.Props.Set(codec.PropSessionExpiry)
	a, _ := dialRaw5(t, b.addr, pa)
	if codes := a.subscribe(1, "$share/g/sd/#", 1); len(codes) != 1 || codes[0] != 1 {
		t.Fatalf("SUBACK %v", codes)
	}
	_ = a.conn().Close()
	off, _ := startRawSub(t, b.addr, "sd-b", false, "$share/g/sd/#", 1, true, 0)
	off.close()
	waitConnected(t, b.srv, 0)
	pub := pahoClient(t, b.addr, "sd-pub")
	publishSeq(t, pub, "sd/t", 1, 0, n, 64, nil) // both members offline: split between their stores
	pub.Disconnect(50)
	b.stop()
	time.Sleep(1500 * time.Millisecond) // sd-a's expiry passes while the broker is down
	b.start()

	seqs, _ := resumeRawSub(t, b.addr, "sd-b", n, 20*time.Second)
	seen, descents := make([]bool, n), 0
	for i, s := range seqs {
		if s < 0 || s >= n || seen[s] {
			t.Fatalf("message %d: sequence %d unknown or repeated", i, s)
		}
		seen[s] = true
		if i > 0 && s < seqs[i-1] {
			descents++
		}
	}
	if descents > 1 {
		t.Errorf("member b's messages are not its share then a's, each in order (%d descents)", descents)
	}
	if r := b.srv.stats.redispatched.Load(); r == 0 || r >= n {
		t.Errorf("redispatched %d, want a's share of %d", r, n)
	}
	waitUntil(t, 5*time.Second, "the expired member's data to leave the store", func() bool {
		info, err := b.srv.store.Inspect("sd-a")
		return err == nil && info.Session == nil && info.Outbound.Count == 0
	})
}
