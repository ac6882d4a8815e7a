package server

import (
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// Returning memory after a connect storm (Options.MemoryReturnAfter).
//
// A storm of connections allocates far more than it keeps: every CONNECT
// passes through read buffers, parsed packets and log fields that are
// garbage a moment later, and with GOGC=100 the Go heap grows to about twice
// what is live before a collection frees it. The runtime's background
// scavenger gives freed pages back to the OS only slowly, and not below the
// heap goal, so after 19,000 devices connected an idle broker's RSS stays
// ~20 % above its live heap (BENCHMARKS.md, "Connection cost"). Once the
// number of connections has stayed within 1 % for MemoryReturnAfter, the
// ticker runs debug.FreeOSMemory once (a full collection plus returning
// every free page); it is not run again until the count has moved by more
// than 1 % and settled again, so a steady broker pays nothing and a storm
// pays one collection of the live heap (measured: ~20-40 ms of CPU at
// 19,000 idle connections, a 30 MiB heap).

// A settled count triggers the return only after a real change: at least
// memReturnMinConns connections came or went since the last return, or
// memReturnMinFree bytes of heap are free and not yet returned. (Right
// after a storm the free heap is often ~0: the last collection ran during
// the storm and the storm's garbage is still counted as allocated, so the
// forced collection is what frees it.)
const (
	memReturnMinConns = 1024
	memReturnMinFree  = 4 << 20
)

// memReturn is the ticker's state for returnMemory. Ticker goroutine only.
type memReturn struct {
	conns int64     // the connection count the current settling is measured from
	since time.Time // when it was last seen moving by more than 1 %
	armed bool      // the count moved since the last return
	// returned is the connection count at the last return.
	returned int64
	// sample is reused across reads of runtime/metrics.
	sample [1]metrics.Sample
}

// returnMemory is the ticker's check described above. Ticker goroutine only.
func (s *Server) returnMemory(now time.Time) {
	after := s.opts.MemoryReturnAfter
	if after <= 0 {
		return
	}
	m := &s.memReturn
	n := s.conns.Load()
	if d := n - m.conns; d > m.conns/100+16 || -d > m.conns/100+16 {
		m.conns, m.since, m.armed = n, now, true
		return
	}
	if !m.armed || now.Sub(m.since) < after {
		return
	}
	m.armed = false
	m.sample[0].Name = "/memory/classes/heap/free:bytes" // free, not yet returned
	metrics.Read(m.sample[:])
	free := m.sample[0].Value.Uint64()
	if moved := n - m.returned; moved < memReturnMinConns && -moved < memReturnMinConns && free < memReturnMinFree {
		return
	}
	m.returned = n
	start := time.Now()
	debug.FreeOSMemory()
	s.log.Info("connections settled: collected and returned the free heap to the OS",
		"connections", n, "free_before_mib", free>>20, "took", time.Since(start).Round(time.Millisecond))
}
