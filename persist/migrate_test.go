package persist

import (
	"errors"
	"testing"

	"github.com/cockroachdb/pebble/v2"
)

// writeSchema1 writes what a schema-1 store holds (no count records, no
// live-message record) directly into a fresh Pebble directory.
func writeSchema1(t *testing.T, dir string, kvs [][2][]byte) {
	t.Helper()
	db, err := pebble.Open(dir, &pebble.Options{FormatMajorVersion: pebble.FormatNewest})
	if err != nil {
		t.Fatal(err)
	}
	b := db.NewBatch()
	_ = b.Set(metaSchema, appendMetaU64(nil, schemaNoRefs), nil)
	for _, kv := range kvs {
		_ = b.Set(kv[0], kv[1], nil)
	}
	if err := b.Commit(pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestMigrateSchema1 opens a store in the layout written before count
// records existed: the open migrates it once (counts for shared messages,
// orphans deleted, dangling entries counted, schema 2), nothing queued is
// lost, and the next open does not scan again.
func TestMigrateSchema1(t *testing.T) {
	o := quietOptions()
	o.Dir = t.TempDir()
	msg := func(id uint64, p string) [2][]byte {
		return [2][]byte{appendMessageKey(nil, id), appendMessage(nil, testMessage("t", []byte(p)), 0)}
	}
	out := func(c string, seq, id uint64) [2][]byte {
		return [2][]byte{appendOutboundKey(nil, c, seq), appendOutbound(nil, Outbound{MessageID: id, QoS: 1})}
	}
	writeSchema1(t, o.Dir, [][2][]byte{
		{metaIDCeiling, appendMetaU64(nil, 1000)},
		{appendSessionKey(nil, "a"), appendSession(nil, &Session{ProtocolVersion: 5})},
		msg(1, "single"), msg(2, "shared by three"), msg(3, "orphan"), msg(4, "shared by two"),
		out("a", 1, 1), out("a", 2, 2), out("b", 1, 2), out("c", 1, 2),
		out("a", 3, 4), out("b", 2, 4),
		out("c", 2, 77), // dangling
		{appendOutboundKey(nil, "c", 3), appendOutbound(nil, Outbound{QoS: 2, State: AwaitingPubcomp, PacketID: 1})},
	})
	p := openPebble(t, o)
	st := p.Stats()
	if !st.Migrated || st.OrphansDeleted != 1 || st.DanglingAtOpen != 1 || st.SharedMessages != 2 || st.LiveMessages != 3 {
		t.Errorf("after migration: %+v", st)
	}
	if u := usage(t, p); u.Refs.Count != 2 || u.Messages.Count != 3 || u.OrphanMessages != 0 || u.DanglingEntries != 1 {
		t.Errorf("usage after migration: %+v", u)
	}
	b := p.NewBatch()
	if id := b.PutMessage(testMessage("t", nil)); id < 1000 {
		t.Errorf("id %d below the ceiling", id)
	}
	// The dangling entry is dropped by the caller; then the counts match.
	b = p.NewBatch()
	b.DeleteOutbound("c", 2)
	commit(t, p, b)
	checkCounts(t, p)
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	p = openPebble(t, o)
	if st := p.Stats(); st.Migrated || st.SharedMessages != 2 || st.LiveMessages != 3 {
		t.Errorf("second open: %+v", st)
	}
	// Release everything: each message goes with its last reference.
	for _, e := range []struct {
		c   string
		seq uint64
		id  uint64
	}{{"a", 2, 2}, {"b", 1, 2}, {"a", 3, 4}, {"a", 1, 1}, {"c", 1, 2}, {"b", 2, 4}} {
		b := p.NewBatch()
		b.DeleteOutbound(e.c, e.seq)
		b.Release(e.id)
		commit(t, p, b)
		checkCounts(t, p)
	}
	if u := usage(t, p); u.Messages.Count != 0 || u.Refs.Count != 0 {
		t.Errorf("after releasing everything: %+v", u)
	}
}

// TestSchemaFromNewerBuildRefused: a store written by a newer key schema
// is not opened (it could be misread).
func TestSchemaFromNewerBuildRefused(t *testing.T) {
	o := quietOptions()
	o.Dir = t.TempDir()
	p := openPebble(t, o)
	rawWrite(t, p, [2][]byte{metaSchema, appendMetaU64(nil, schemaVersion+1)})
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenPebble(o); !errors.Is(err, ErrUnknownVersion) {
		t.Errorf("open of a schema %d store: %v", schemaVersion+1, err)
	}
}

// TestCorruptCountRecordRebuilds: a count record that does not decode
// could understate a count, so the open recounts everything.
func TestCorruptCountRecordRebuilds(t *testing.T) {
	o := quietOptions()
	o.Dir = t.TempDir()
	p := openPebble(t, o)
	b := p.NewBatch()
	id := b.PutMessage(testMessage("t", []byte("x")))
	for _, c := range []string{"a", "b"} {
		b.AddRef(id)
		b.PutOutbound(c, 1, Outbound{MessageID: id, QoS: 1})
	}
	commit(t, p, b)
	rawWrite(t, p, [2][]byte{appendRefsKey(nil, id), []byte{refsVersion, 0xFF}})
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	p = openPebble(t, o)
	if st := p.Stats(); !st.Migrated || st.SharedMessages != 1 {
		t.Errorf("stats %+v", st)
	}
	checkCounts(t, p)
}
