package server

import (
	"io"
	"log/slog"
	"testing"
	"time"
)

// TestMemoryReturnOnceAfterSettle: the return runs once the connection
// count has stayed within 1 % for MemoryReturnAfter after a change of at
// least memReturnMinConns, not while it moves, not again while it stays,
// and never when turned off.
func TestMemoryReturnOnceAfterSettle(t *testing.T) {
	s := &Server{opts: Options{MemoryReturnAfter: 5 * time.Second}, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	t0 := time.Unix(1000, 0)
	step := func(sec int, conns int64) bool {
		before := s.memReturn.returned
		s.conns.Store(conns)
		s.returnMemory(t0.Add(time.Duration(sec) * time.Second))
		return s.memReturn.returned != before
	}
	// A storm: the count climbs for 4 s, no return meanwhile.
	for i, n := range []int64{2000, 6000, 10000, 14000, 19000} {
		if step(i, n) {
			t.Fatalf("returned at %d s while the count moved", i)
		}
	}
	// Settled (within 1 %): nothing before 5 s, one return at 5 s.
	for sec := 5; sec < 9; sec++ {
		if step(sec, 19000+int64(sec)) {
			t.Fatalf("returned after %d s settled, want 5 s", sec-4)
		}
	}
	if !step(9, 19010) {
		t.Fatal("no return 5 s after the count settled")
	}
	for sec := 10; sec < 30; sec++ {
		if step(sec, 19010) {
			t.Fatalf("returned again at %d s with nothing changed", sec)
		}
	}
	// A small change (under memReturnMinConns) that settles: no return
	// unless the free heap is large, which it is not in this test.
	step(30, 19500)
	for sec := 31; sec < 40; sec++ {
		if step(sec, 19500) && s.memReturn.returned != 19500 {
			t.Fatalf("returned at %d s recording %d", sec, s.memReturn.returned)
		}
	}
	// Off.
	s.opts.MemoryReturnAfter = -1
	s.memReturn = memReturn{}
	step(40, 0)
	for sec := 41; sec < 60; sec++ {
		if step(sec, 5000) {
			t.Fatal("returned with memory_return_after off")
		}
	}
}

// TestRemoteAddrInline: the peer address gnet now keeps inline (patch 3 in
// third_party/gnet/PATCHES.md) and builds on demand is the client's own
// address, for introspection and hooks alike.
func TestRemoteAddrInline(t *testing.T) {
	srv, addr := startBroker(t, func(o *Options) { o.Durability = DurabilityNone })
	conns := dialIdleSubscribed(t, addr, 3, "peer")
	for k, c := range conns {
		id := "peer-00000" + string(rune('0'+k))
		info, ok := srv.ClientInfo(id)
		if !ok || info.RemoteAddr != c.LocalAddr().String() {
			t.Fatalf("%s: remote %q (found %v), want the client's own %q", id, info.RemoteAddr, ok, c.LocalAddr())
		}
		_ = c.Close()
	}
}
