//go:build linux

package bench

import (
	"sync"
	"time"
)

// series records Report.Series: one Second per second of the publishing
// phase and of the drain after it (or of the hold, for idle connections).
// It shows what a whole-run summary hides — a rate that changes over the
// run (a publisher paced, then resuming), latency that grows with run
// length, a connection dropped at a given moment, broker memory over time.
// Used by Run's goroutine only.
type series struct {
	r                  *runner
	u                  *usage
	start              time.Time
	next               time.Time
	lastSent, lastRecv int64
	out                []Second
}

// begin starts the series at start (when publishing starts).
func (s *series) begin(r *runner, u *usage, start time.Time) {
	*s = series{r: r, u: u, start: start, next: start.Add(time.Second)}
	s.lastSent = r.sum(func(st *loopStats) int64 { return st.sent.Load() })
	s.lastRecv = r.sum(func(st *loopStats) int64 { return st.recv.Load() })
}

// tick records a Second if one has passed since the last; callers call it
// at least once a second.
func (s *series) tick() {
	// 50 ms of slack: the caller's one-second sleeps start a little before
	// the series does, and must not skip its first second.
	if s.r == nil || time.Now().Before(s.next.Add(-50*time.Millisecond)) {
		return
	}
	s.record()
}

// finish records the last, partial second (its T says where it ends).
func (s *series) finish() {
	if s.r == nil || time.Now().Before(s.next.Add(-time.Second+10*time.Millisecond)) {
		return // nothing since the last record
	}
	s.record()
}

// record appends the Second ending now.
func (s *series) record() {
	now := time.Now()
	s.next = now.Add(time.Second)
	sent := s.r.sum(func(st *loopStats) int64 { return st.sent.Load() })
	recv := s.r.sum(func(st *loopStats) int64 { return st.recv.Load() })
	live := s.r.sum(func(st *loopStats) int64 { return st.connected.Load() - st.closed.Load() })
	sec := Second{T: now.Sub(s.start).Seconds(), Sent: sent - s.lastSent, Received: recv - s.lastRecv,
		Conns: live, BrokerRSS: s.u.sample()}
	s.lastSent, s.lastRecv = sent, recv
	// The deliveries of this second, through the loops (each resets its own).
	h := NewHistogram()
	var mu sync.Mutex
	for _, l := range s.r.loops {
		l.call(func(l *loop) { mu.Lock(); h.Merge(l.latIv); mu.Unlock(); l.latIv.Reset() }, 200*time.Millisecond)
	}
	mu.Lock()
	if h.Count() > 0 {
		sec.P99Us = float64(h.Quantile(0.99)) / 1e3
	}
	mu.Unlock()
	s.out = append(s.out, sec)
}
