package server

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/ternmq/tern/persist"
)

// syncGate holds or fails the store's WAL fsyncs on demand (an errorfs
// injector): a disk that stalls, then a machine that loses power.
type syncGate struct {
	mu      sync.Mutex
	cond    *sync.Cond
	blocked bool
	failing bool
}

func newSyncGate() *syncGate {
	g := &syncGate{}
	g.cond = sync.NewCond(&g.mu)
	return g
}

func (g *syncGate) String() string { return "syncGate" }

// MaybeError implements errorfs.Injector.
func (g *syncGate) MaybeError(op errorfs.Op) error {
	if !strings.HasSuffix(op.Path, ".log") {
		return nil
	}
	switch op.Kind {
	case errorfs.OpFileSync, errorfs.OpFileSyncData, errorfs.OpFileSyncTo:
	default:
		return nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	for g.blocked && !g.failing {
		g.cond.Wait()
	}
	if g.failing {
		return errorfs.ErrInjected
	}
	return nil
}

func (g *syncGate) set(blocked, failing bool) {
	g.mu.Lock()
	g.blocked, g.failing = blocked, failing
	g.cond.Broadcast()
	g.mu.Unlock()
}

// gatedBroker runs a broker on a store in fs whose fsyncs g controls, with
// one group in flight (the widest write-avoidance window).
func gatedBroker(t *testing.T, fs vfs.FS, g *syncGate, addr string) (*Server, persist.Store) {
	t.Helper()
	st, err := persist.OpenPebble(persist.Options{Dir: "/db", FS: errorfs.Wrap(fs, g), MaxInFlightGroups: 1, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Options{Listeners: []string{addr}, Store: st, EventLoops: 2, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- s.Serve() }()
	<-s.Ready()
	if len(s.Addrs()) == 0 {
		t.Fatalf("serve: %v", <-errc)
	}
	t.Cleanup(func() { _ = s.Close(); <-errc })
	return s, st
}

// TestWriteAvoidedMessageDeliveredOnce: QoS 1 messages to a persistent
// session, acknowledged by the subscriber while the publisher's batch
// waits for the fsync before it, are never written — and each is
// delivered exactly once, with no re-delivery when the subscriber comes
// back after a restart [MQTT-4.3.2-1]: nothing of them is left in the
// store.
func TestWriteAvoidedMessageDeliveredOnce(t *testing.T) {
	g := newSyncGate()
	mem := vfs.NewMem()
	srv, st := gatedBroker(t, mem, g, "127.0.0.1:0")
	addr := srv.Addrs()[0].String()
	r := newReceived()
	persistent := func(o *mqtt.ClientOptions) { o.SetCleanSession(false) }
	sub := pahoClient(t, addr, "avoid-sub", persistent, func(o *mqtt.ClientOptions) { o.SetDefaultPublishHandler(r.handler) })
	subscribe(t, sub, "avoid/#", 1, r)
	pub := pahoClient(t, addr, "avoid-pub")

	const n = 20
	for i := range n {
		g.set(true, false) // the next fsync stalls: what queues behind it forms one group
		first := pub.Publish("avoid/x", 1, false, fmt.Sprint("first-", i))
		r.waitN(t, 2*i+1, 5*time.Second) // delivered before it is durable
		tok := pub.Publish("avoid/x", 1, false, fmt.Sprint(i))
		r.waitN(t, 2*i+2, 5*time.Second)  // delivered; paho PUBACKs it once the handler returned
		time.Sleep(10 * time.Millisecond) // the PUBACK reaches the store's queue, behind the stalled group
		g.set(false, false)
		wait(t, first, "publish first")
		wait(t, tok, "publish")
	}
	stats := st.Stats()
	if stats.MessagesAvoided == 0 {
		t.Fatalf("no message avoided (%d writes avoided)", stats.WritesAvoided)
	}
	t.Logf("%d of %d messages never written, %d writes avoided", stats.MessagesAvoided, 2*n, stats.WritesAvoided)
	r.quiet(t, 2*n, 300*time.Millisecond)
	sub.Disconnect(50)
	waitOffline(t, srv, "avoid-sub")
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}

	// Restart on the same files: the session is back, with nothing queued.
	srv2, _ := gatedBroker(t, mem, newSyncGate(), "127.0.0.1:0")
	r2 := newReceived()
	sub2 := pahoClient(t, srv2.Addrs()[0].String(), "avoid-sub", persistent, func(o *mqtt.ClientOptions) { o.SetDefaultPublishHandler(r2.handler) })
	r2.quiet(t, 0, 500*time.Millisecond)
	pub2 := pahoClient(t, srv2.Addrs()[0].String(), "avoid-pub2")
	wait(t, pub2.Publish("avoid/x", 1, false, "after"), "publish after restart")
	if m := r2.waitN(t, 1, 5*time.Second)[0]; string(m.Payload()) != "after" {
		t.Fatalf("after restart got %q, want only the new message", m.Payload())
	}
	sub2.Disconnect(50)
}

// TestWriteAvoidanceCrashBeforePubackResends: power is lost after the
// subscriber acknowledged a QoS 1 message but before the publisher got its
// PUBACK (the group holding the message was never fsynced). After the
// restart the publisher sends it again and the subscriber gets it again:
// at least once [MQTT-4.3.2-1], never lost.
func TestWriteAvoidanceCrashBeforePubackResends(t *testing.T) {
	const addr = "127.0.0.1:26577" // fixed: paho reconnects to the same address
	g := newSyncGate()
	mem := vfs.NewCrashableMem()
	srv, _ := gatedBroker(t, mem, g, addr)
	r := newReceived()
	reconnecting := func(o *mqtt.ClientOptions) {
		o.SetCleanSession(false).SetAutoReconnect(true).SetMaxReconnectInterval(100 * time.Millisecond)
	}
	sub := pahoClient(t, addr, "crash-sub", reconnecting, func(o *mqtt.ClientOptions) { o.SetDefaultPublishHandler(r.handler) })
	subscribe(t, sub, "crash/#", 1, r)
	pub := pahoClient(t, addr, "crash-pub", reconnecting)

	g.set(true, false) // fsyncs stall from here
	tok := pub.Publish("crash/x", 1, false, "m1")
	if m := r.waitN(t, 1, 5*time.Second)[0]; string(m.Payload()) != "m1" {
		t.Fatalf("got %q", m.Payload())
	}
	time.Sleep(100 * time.Millisecond) // the subscriber's PUBACK reaches the store's queue
	if tok.WaitTimeout(0) {
		t.Fatal("publisher acknowledged before its message was durable")
	}
	clone := mem.CrashClone(vfs.CrashCloneCfg{}) // power lost: only what was fsynced
	g.set(false, true)                           // the old broker's disk is gone: its fsyncs fail
	_ = srv.Close()

	gatedBroker(t, clone, newSyncGate(), addr)
	wait(t, tok, "publish after the restart (re-sent by paho)")
	got := r.waitN(t, 2, 10*time.Second)
	if string(got[1].Payload()) != "m1" {
		t.Fatalf("after restart got %q, want m1 again", got[1].Payload())
	}
	t.Logf("m1 delivered %d times, second with DUP %v", len(got), got[1].Duplicate())
}
