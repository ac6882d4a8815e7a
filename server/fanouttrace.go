//go:build fanouttrace

package server

import (
	"encoding/binary"
	"fmt"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"
)

// The fan-out stage trace (BENCHMARKS.md "Fan-out p99, 2026-12-02
// evening"), built only with -tags fanouttrace: for messages carrying the
// `tern bench` payload header (magic "Tc", the intended send time in unix
// nanoseconds at bytes 18..26), it records how long after that instant
// each stage of the fan-out was reached, in 2 µs buckets (to 100 ms):
//
//	read     the publisher's read event began (l.now of onTraffic)
//	routed   route returned on the publisher's loop (every delivery queued, the hand-off flushed)
//	drain.L  a subscriber's drain began on the publisher's loop
//	drain.R  a subscriber's drain began on another loop (after the cross-loop wake-up)
//	write.L  the subscriber's write(2) returned, publisher's loop
//	write.R  the same, other loop
//	wcall    the duration of one drain's write (µs, not since send)
//
// SIGUSR1 prints the histograms' percentiles to stderr and resets them (a
// script sends one at the end of the warm-up and one at the end of the
// run). Not for production: a time.Now per delivery.

const (
	trBuckets = 50000 // 2 µs each: 100 ms, then overflow
	trRead    = iota - 1
	trRouted
	trDrainL
	trDrainR
	trWriteL
	trWriteR
	trWcall
	trXRouted // the same stages since the read event (the broker's own part)
	trXDrainL
	trXDrainR
	trXWriteL
	trXWriteR
	trStages
)

var trNames = [trStages]string{"read", "routed", "drain.L", "drain.R", "write.L", "write.R", "wcall",
	"r>routed", "r>drain.L", "r>drain.R", "r>write.L", "r>write.R"}

// trReadAt[seq%len] is the read time of the message with that bench
// sequence number (one publisher: the fan-out scenario).
var trReadAt [1 << 16]atomic.Int64

func traceSeq(m *message) uint64 { return binary.BigEndian.Uint64(m.payload[10:]) % (1 << 16) }

var trHist [trStages][trBuckets + 1]atomic.Uint64

// trRemote[l.id] is set while loop l.id runs drainRemote.
var trRemote [64]atomic.Bool

func init() {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGUSR1)
	go func() {
		for range ch {
			traceDump()
		}
	}()
}

func traceIntended(m *message) int64 {
	p := m.payload
	if len(p) < 26 || p[0] != 'T' || p[1] != 'c' {
		return 0
	}
	return int64(binary.BigEndian.Uint64(p[18:]))
}

func trAdd(stage int, d int64) {
	b := d / 2e3
	if b < 0 {
		b = 0
	}
	if b > trBuckets {
		b = trBuckets
	}
	trHist[stage][b].Add(1)
}

// traceRouteStart records the read stage of m.
func traceRouteStart(l *loop, m *message) {
	if at := traceIntended(m); at != 0 && l != nil {
		trAdd(trRead, l.now-at)
		trReadAt[traceSeq(m)].Store(l.now)
	}
}

// traceRouted records the end of m's routing.
func traceRouted(m *message) {
	if at := traceIntended(m); at != 0 {
		now := time.Now().UnixNano()
		trAdd(trRouted, now-at)
		trAdd(trXRouted, now-trReadAt[traceSeq(m)].Load())
	}
}

// traceRemote marks loop l as inside drainRemote (on) or not.
func traceRemote(l *loop, on bool) { trRemote[l.id%64].Store(on) }

// trSent[l.id] lists the messages the current drain on loop l.id encoded.
var trSent [64][]*message

// traceSent notes that the drain running on l encoded m.
func traceSent(l *loop, m *message) { trSent[l.id%64] = append(trSent[l.id%64], m) }

// traceDrain records, for the messages the drain on l encoded (traceSent),
// which began at start and whose write returned at end, the drain and
// write stages.
func traceDrain(l *loop, start, end int64) {
	ms := trSent[l.id%64]
	for i, m := range ms {
		ms[i] = nil
		at := traceIntended(m)
		if at == 0 {
			continue
		}
		r := trReadAt[traceSeq(m)].Load()
		if trRemote[l.id%64].Load() {
			trAdd(trDrainR, start-at)
			trAdd(trWriteR, end-at)
			trAdd(trXDrainR, start-r)
			trAdd(trXWriteR, end-r)
		} else {
			trAdd(trDrainL, start-at)
			trAdd(trWriteL, end-at)
			trAdd(trXDrainL, start-r)
			trAdd(trXWriteL, end-r)
		}
	}
	trSent[l.id%64] = ms[:0]
}

// traceWcall records one write's duration.
func traceWcall(d int64) { trAdd(trWcall, d) }

// traceNow is time.Now in unix nanoseconds (0 without the tag).
func traceNow() int64 { return time.Now().UnixNano() }

func traceDump() {
	fmt.Fprintf(os.Stderr, "fanouttrace %s (µs since the intended send; wcall: µs per write)\n", time.Now().UTC().Format(time.TimeOnly))
	for s := 0; s < trStages; s++ {
		var n uint64
		var counts [trBuckets + 1]uint64
		for b := range counts {
			counts[b] = trHist[s][b].Swap(0)
			n += counts[b]
		}
		if n == 0 {
			continue
		}
		line := fmt.Sprintf("  %-8s n=%-8d", trNames[s], n)
		for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
			want := uint64(q*float64(n) + 0.5)
			var acc uint64
			for b, c := range counts {
				acc += c
				if acc >= want {
					if b == trBuckets {
						line += fmt.Sprintf(" p%g>%dms", q*100, trBuckets/500)
					} else {
						line += fmt.Sprintf(" p%g=%d", q*100, (b+1)*2)
					}
					break
				}
			}
		}
		fmt.Fprintln(os.Stderr, line)
	}
}
