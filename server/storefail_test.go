package server

import (
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"

	"github.com/ternmq/tern/codec"
	"github.com/ternmq/tern/persist"
)

// walFailer fails Pebble WAL writes and syncs once armed: a full disk or an
// I/O error under the store.
type walFailer struct{ fail atomic.Bool }

func (w *walFailer) String() string { return "walFailer" }

func (w *walFailer) MaybeError(op errorfs.Op) error {
	if !strings.HasSuffix(op.Path, ".log") || !w.fail.Load() {
		return nil
	}
	switch op.Kind {
	case errorfs.OpFileSync, errorfs.OpFileSyncData, errorfs.OpFileSyncTo, errorfs.OpFileWrite, errorfs.OpFileWriteAt:
		return errorfs.ErrInjected
	}
	return nil
}

// When the store cannot write, the broker refuses QoS 1/2 publishes that
// need it (no PUBACK; the connection is closed, with reason 0x80 for 5.0)
// instead of acknowledging what it could not store, and logs why. Traffic
// that needs no store (clean sessions) keeps flowing.
func TestStoreFailureRefusesDurablePublishes(t *testing.T) {
	inj := &walFailer{}
	st, err := persist.OpenPebble(persist.Options{Dir: t.TempDir(), FS: errorfs.Wrap(vfs.Default, inj), Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	_, addr := startBroker(t, func(o *Options) { o.Store = st })

	sub := dialRaw(t, addr)
	sub.connect(codec.Connect{ClientID: []byte("fail-sub"), KeepAlive: 60}, 0) // persistent
	sub.subscribe(1, "durable/#", 1)
	live := dialRaw(t, addr)
	live.connect(codec.Connect{ClientID: []byte("fail-live"), CleanStart: true, KeepAlive: 60}, 0)
	live.subscribe(1, "volatile/#", 1)

	pub := dialRaw(t, addr)
	pub.connect(codec.Connect{ClientID: []byte("fail-pub"), CleanStart: true, KeepAlive: 60}, 0)
	pub.publish(codec.Publish{QoS: 1, PacketID: 1, Topic: []byte("durable/a"), Payload: []byte("stored")})
	if a := pub.readAck(5*time.Second, codec.PUBACK); a.PacketID != 1 {
		t.Fatalf("PUBACK %d", a.PacketID)
	}
	sub.readPublish(5 * time.Second)

	inj.fail.Store(true)
	pub.publish(codec.Publish{QoS: 1, PacketID: 2, Topic: []byte("durable/a"), Payload: []byte("not stored")})
	for _, h := range pub.expectClosed(5 * time.Second) {
		if h.Type == codec.PUBACK {
			t.Fatal("PUBACK for a message the store could not write")
		}
	}

	// A 5.0 publisher is told why.
	pub5 := dialRaw(t, addr)
	pub5.connect(codec.Connect{ProtocolVersion: codec.Version5, ClientID: []byte("fail-pub5"), CleanStart: true, KeepAlive: 60}, 0)
	pub5.publish(codec.Publish{QoS: 1, PacketID: 3, Topic: []byte("durable/b"), Payload: []byte("x")})
	h, body := pub5.read(5 * time.Second)
	if h.Type != codec.DISCONNECT {
		t.Fatalf("5.0 publisher got packet %d, want DISCONNECT", h.Type)
	}
	var d codec.Disconnect
	if err := d.Decode(h, body, codec.Version5); err != nil || d.ReasonCode < 0x80 {
		t.Fatalf("DISCONNECT reason %#x (%v), want a failure code", d.ReasonCode, err)
	}

	// Clean-session traffic needs no store and is unaffected.
	pub2 := dialRaw(t, addr)
	pub2.connect(codec.Connect{ClientID: []byte("fail-pub2"), CleanStart: true, KeepAlive: 60}, 0)
	pub2.publish(codec.Publish{QoS: 1, PacketID: 4, Topic: []byte("volatile/x"), Payload: []byte("ok")})
	pub2.readAck(5*time.Second, codec.PUBACK)
	if p := live.readPublish(5 * time.Second); string(p.Payload) != "ok" {
		t.Fatalf("clean subscriber got %q", p.Payload)
	}
}

// A new persistent session is promised by CONNACK only once its record is
// in the store [MQTT-3.2.0-1]: when the store cannot write it, the client
// gets no CONNACK (the connection is closed), while a clean session, which
// needs no store, still connects. And a persistent session created while
// the store works is acknowledged after its record is durable: it is in
// the store as soon as CONNACK arrives.
func TestPersistentConnackWaitsForStore_MQTT_3_2_0_1(t *testing.T) {
	inj := &walFailer{}
	st, err := persist.OpenPebble(persist.Options{Dir: t.TempDir(), FS: errorfs.Wrap(vfs.Default, inj), Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	_, addr := startBroker(t, func(o *Options) { o.Store = st })

	ok := dialRaw(t, addr)
	ok.connect(codec.Connect{ClientID: []byte("durable-ok"), KeepAlive: 60}, 0) // persistent
	found := false
	if _, err := st.Recover(persist.Visitor{Session: func(id string, _ *persist.Session) error { found = found || id == "durable-ok"; return nil }}); err != nil {
		t.Fatal(err)
	}
	if !found {
		t.Fatal("CONNACK arrived before the persistent session was in the store")
	}

	inj.fail.Store(true)
	p := dialRaw(t, addr)
	p.send((&codec.Connect{ProtocolName: []byte("MQTT"), ProtocolVersion: codec.Version311, ClientID: []byte("durable-fail"), KeepAlive: 60}).Append(nil))
	for _, h := range p.expectClosed(5 * time.Second) {
		if h.Type == codec.CONNACK {
			t.Fatal("CONNACK for a persistent session the store could not write")
		}
	}
	clean := dialRaw(t, addr)
	clean.connect(codec.Connect{ClientID: []byte("clean-ok"), CleanStart: true, KeepAlive: 60}, 0)
}
