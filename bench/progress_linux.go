//go:build linux

package bench

import (
	"fmt"
	"time"
)

// progress prints one status line per second to Config.Progress (a
// terminal): elapsed, live connections, sent/s, received/s, p99 so far and
// the harness's own CPU, so a saturated harness is visible while it runs.
type progress struct {
	r                *runner
	start            time.Time
	last             time.Time
	lastSent, lastRx int64
	lastCPU          int64
	printed          bool
}

func newProgress(r *runner, _ Config) *progress {
	now := time.Now()
	return &progress{r: r, start: now, last: now, lastCPU: SelfCPU()}
}

func (p *progress) tick() {
	w := p.r.cfg.Progress
	if w == nil {
		return
	}
	now := time.Now()
	dt := now.Sub(p.last).Seconds()
	if dt <= 0 {
		return
	}
	sent := p.r.sum(func(s *loopStats) int64 { return s.sent.Load() })
	rx := p.r.sum(func(s *loopStats) int64 { return s.recv.Load() })
	live := p.r.sum(func(s *loopStats) int64 { return s.connected.Load() - s.closed.Load() })
	cpu := SelfCPU()
	p99 := p.r.snapshotLatency().Quantile(0.99)
	fmt.Fprintf(w, "\r%6.1fs  conns %7d  sent/s %9.0f  recv/s %9.0f  p99 %9s  harness cpu %4.0f%%   ",
		now.Sub(p.start).Seconds(), live, float64(sent-p.lastSent)/dt, float64(rx-p.lastRx)/dt,
		us(float64(p99)/1e3), 100*float64(cpu-p.lastCPU)/1e9/dt)
	p.printed = true
	p.last, p.lastSent, p.lastRx, p.lastCPU = now, sent, rx, cpu
}

func (p *progress) done() {
	if p.printed && p.r.cfg.Progress != nil {
		fmt.Fprintln(p.r.cfg.Progress)
	}
}
