//go:build linux

package bench

import (
	"context"
	"net"
	"runtime"
	"strconv"
	"time"
)

// The measured window of a Run and the report assembled from it: what the
// harness and the broker used (usage), how long the window was and what
// was received around it (window), the idle and publishing variants of
// the window, the drain after it, and the merge of the loops' records.

// usage samples CPU and memory of the harness and, when its process is
// known, of the broker. Used by Run's goroutine only.
type usage struct {
	brokerPID          int
	broker0            ProcSample // broker before any client connected
	rss0               int64      // harness RSS before any client connected
	cpu0               int64      // harness CPU at the window's start
	sys0               int64      // of which kernel time (connect phase only)
	cpu1               int64      // … and at its end
	bs0, bs1           ProcSample // broker at the window's start and end
	peak               int64      // highest broker RSS seen
	low                int64      // lowest broker RSS seen in the window (0: none yet)
	rssHeld            int64      // harness RSS with every client still connected
	mallocs0, mallocs1 uint64     // harness heap allocations at the window\'s start and end
}

// newUsage finds the broker's process (Config.BrokerPID, or whoever listens
// on the first broker's port) and takes the baselines.
func newUsage(cfg *Config) *usage {
	u := &usage{brokerPID: cfg.BrokerPID}
	if u.brokerPID == 0 {
		if _, port, err := net.SplitHostPort(cfg.Brokers[0]); err == nil {
			p, _ := strconv.Atoi(port)
			u.brokerPID, _ = FindListenerPID(p)
		}
	}
	if u.brokerPID > 0 {
		u.broker0, _ = SampleProc(u.brokerPID)
	}
	u.rss0 = SelfRSS()
	return u
}

// beginConnect samples CPU before the connect phase.
func (u *usage) beginConnect() {
	u.cpu0, u.sys0 = selfCPU()
	if u.brokerPID > 0 {
		u.bs0, _ = SampleProc(u.brokerPID)
	}
}

// endConnect reports the CPU of the connect phase per client connected.
func (u *usage) endConnect(rep *Report, connected int64) {
	if connected <= 0 {
		return
	}
	cpu, sys := selfCPU()
	rep.Connect.HarnessCPUPerConnUs = float64(cpu-u.cpu0) / 1e3 / float64(connected)
	rep.Connect.HarnessSysPerConnUs = float64(sys-u.sys0) / 1e3 / float64(connected)
	if u.brokerPID > 0 {
		// A broker's first sample may read 0 CPU ticks (a fresh process):
		// the sample's RSS says it was taken.
		if s, err := SampleProc(u.brokerPID); err == nil && u.bs0.RSSBytes > 0 {
			rep.Connect.BrokerCPUPerConnUs = float64(s.CPUNanos-u.bs0.CPUNanos) / 1e3 / float64(connected)
			rep.Connect.BrokerSysPerConnUs = float64(s.SysNanos-u.bs0.SysNanos) / 1e3 / float64(connected)
		}
	}
}

// begin samples CPU at the start of the measured window.
func (u *usage) begin() {
	u.cpu0 = SelfCPU()
	u.mallocs0 = mallocs()
	if u.brokerPID > 0 {
		u.bs0, _ = SampleProc(u.brokerPID)
	}
}

// end samples CPU and memory at the end of the measured window.
func (u *usage) end() {
	u.cpu1 = SelfCPU()
	u.mallocs1 = mallocs()
	if u.brokerPID > 0 {
		u.bs1, _ = SampleProc(u.brokerPID)
	}
}

// samplePeak updates the broker's peak RSS.
func (u *usage) samplePeak() {
	if u.brokerPID > 0 {
		if s, err := SampleProc(u.brokerPID); err == nil && s.RSSBytes > u.peak {
			u.peak = s.RSSBytes
		}
	}
}

// sample reads the broker's RSS (0 if unknown) and updates its lowest and
// highest values.
func (u *usage) sample() int64 {
	if u.brokerPID <= 0 {
		return 0
	}
	s, err := SampleProc(u.brokerPID)
	if err != nil {
		return 0
	}
	u.peak = max(u.peak, s.RSSBytes)
	if u.low == 0 || s.RSSBytes < u.low {
		u.low = s.RSSBytes
	}
	return s.RSSBytes
}

// report fills the harness's and the broker's resource use over a window
// of secs seconds in which msgs messages were sent and received by
// connected clients, delivered of them received.
func (u *usage) report(rep *Report, secs, msgs, delivered float64, connected int64) {
	h := &rep.Harness
	h.CPUSeconds = float64(u.cpu1-u.cpu0) / 1e9
	if secs > 0 {
		h.CPUPercent = 100 * h.CPUSeconds / secs
	}
	if msgs > 0 {
		h.CPUPerMsgUs = h.CPUSeconds * 1e6 / msgs
	}
	if delivered > 0 {
		rep.HarnessCPUPerMsgUs = h.CPUSeconds * 1e6 / delivered
		rep.HarnessAllocsPerMsg = float64(u.mallocs1-u.mallocs0) / delivered
	}
	h.RSSBytes = u.rssHeld
	if connected > 0 {
		h.RSSPerConnBytes = float64(u.rssHeld-u.rss0) / float64(connected)
	}
	if u.brokerPID > 0 && u.bs1.RSSBytes > 0 {
		b := &ProcReport{PID: u.brokerPID, RSSBytes: u.bs1.RSSBytes, RSSPeakBytes: max(u.peak, u.bs1.RSSBytes), RSSMinBytes: u.low}
		b.CPUSeconds = float64(u.bs1.CPUNanos-u.bs0.CPUNanos) / 1e9
		if secs > 0 {
			b.CPUPercent = 100 * b.CPUSeconds / secs
		}
		if msgs > 0 {
			b.CPUPerMsgUs = b.CPUSeconds * 1e6 / msgs
		}
		if delivered > 0 {
			rep.BrokerCPUPerMsgUs = b.CPUSeconds * 1e6 / delivered
		}
		if connected > 0 && u.broker0.RSSBytes > 0 {
			b.RSSPerConnBytes = float64(u.bs1.RSSBytes-u.broker0.RSSBytes) / float64(connected)
		}
		rep.Broker = b
	}
}

// window is the measured part of a run.
type window struct {
	measured       time.Duration // duration minus warm-up, or less if cancelled
	recvLo, recvHi int64         // deliveries counted at its start and end
}

// rates fills the send and receive rates over the window. The standalone
// sub scenario cannot tell intended times of what it did not send, so it
// counts every delivery in the window.
func (w window) rates(rep *Report, sentIn, recvIn int64) {
	if secs := w.measured.Seconds(); secs > 0 {
		rep.SendRate = float64(sentIn) / secs
		rep.RecvRate = float64(recvIn) / secs
		rep.ArrivalRate = float64(w.recvHi-w.recvLo) / secs
		if rep.Scenario == ScenarioSub {
			rep.RecvRate = float64(w.recvHi-w.recvLo) / secs
		}
	}
}

// holdIdle is the conn scenario's window: the clients stay connected for
// the duration while progress and the broker's memory are sampled.
func (r *runner) holdIdle(ctx context.Context, u *usage, prog *progress) window {
	u.begin()
	end := time.Now().Add(r.cfg.Duration)
	r.ser.begin(r, u, time.Now())
	for time.Now().Before(end) && ctx.Err() == nil {
		sleepCtx(ctx, min(time.Second, time.Until(end)))
		prog.tick()
		r.ser.tick()
	}
	u.end()
	return window{measured: r.cfg.Duration}
}

// publishAndMeasure starts every publisher's schedule a little ahead, lets
// them run for the duration (the first Warmup of it unmeasured), then
// stops them.
func (r *runner) publishAndMeasure(ctx context.Context, u *usage, prog *progress) window {
	cfg := &r.cfg
	start := time.Now().Add(20 * time.Millisecond)
	lo := start.Add(cfg.Warmup)
	hi := start.Add(cfg.Duration)
	if cfg.Scenario == ScenarioSub {
		hi = time.Unix(0, 1<<62)
	}
	for _, l := range r.loops {
		l.post(func(l *loop) { l.startPublishing(start.UnixNano(), lo.UnixNano(), hi.UnixNano()) })
	}
	end := start.Add(cfg.Duration)
	warmed := cfg.Warmup == 0
	var w window
	r.ser.begin(r, u, start)
	u.begin()
	for time.Now().Before(end) && ctx.Err() == nil {
		next := time.Second
		if !warmed && time.Until(lo) < next {
			next = time.Until(lo)
		}
		sleepCtx(ctx, min(next, time.Until(end)))
		if !warmed && !time.Now().Before(lo) {
			warmed = true
			u.begin()
			w.recvLo = r.sum(func(s *loopStats) int64 { return s.recv.Load() })
		}
		prog.tick()
		r.ser.tick()
	}
	w.measured = min(time.Since(lo), cfg.Duration-cfg.Warmup)
	for _, l := range r.loops {
		l.call(func(l *loop) { l.stopPublishing() }, 2*time.Second)
	}
	w.recvHi = r.sum(func(s *loopStats) int64 { return s.recv.Load() })
	u.end()
	return w
}

// drain waits, at most Config.Drain, for the deliveries still in flight
// after publishing stopped: every message written, times the subscribers
// that should get it. The pub and sub scenarios cannot know that number.
func (r *runner) drain(ctx context.Context) {
	cfg := &r.cfg
	if cfg.Scenario == ScenarioPub || cfg.Scenario == ScenarioSub {
		return
	}
	factor := int64(1)
	if cfg.Scenario == ScenarioFanIn || cfg.Scenario == ScenarioFanOut {
		factor = int64(cfg.Subs)
	}
	want := r.sum(func(s *loopStats) int64 { return s.written.Load() }) * factor
	deadline := time.Now().Add(cfg.Drain)
	for time.Now().Before(deadline) && ctx.Err() == nil &&
		r.sum(func(s *loopStats) int64 { return s.recv.Load() }) < want {
		sleepCtx(ctx, 10*time.Millisecond)
		r.ser.tick()
	}
}

// collect merges what the loops recorded into rep (latencies, counters,
// failures) and returns the merged ledger, each publisher's spent sequence
// numbers, and the publications and deliveries intended in the window. The
// loops must have exited.
func (r *runner) collect(rep *Report) (ledger *Ledger, sentBy []uint64, sentIn, recvIn int64) {
	lat, lag, cl, th := NewHistogram(), NewHistogram(), NewHistogram(), NewHistogram()
	var tlsRep TLSReport
	ledger = NewLedger()
	sentBy = make([]uint64, r.cfg.Pubs)
	rep.Connect.Failures = map[string]int{}
	for _, l := range r.loops {
		lat.Merge(l.lat)
		lag.Merge(l.lag)
		cl.Merge(l.connLat)
		th.Merge(l.tlsLat)
		tlsRep.Full += l.tlsFull
		tlsRep.Resumed += l.tlsResumed
		rep.Connect.MaxInFlight += l.dialMax
		for g, n := range l.tlsGroups {
			if tlsRep.Groups == nil {
				tlsRep.Groups = map[string]int64{}
			}
			tlsRep.Groups[g] += n
		}
		rep.Connect.Retransmitted += l.retransConns
		ledger.Merge(l.ledger)
		for i, s := range l.sentBy {
			sentBy[i] = max(sentBy[i], s)
		}
		for k, v := range l.failures {
			if len(k) > 22 && k[:22] == "dropped after connect:" {
				rep.Connect.Dropped += v
			}
			rep.Connect.Failures[k] += v
		}
		sentIn += l.sentIn
		recvIn += l.recvIn
		rep.Rejected += uint64(l.rejected)
		rep.Sent += uint64(l.stats.sent.Load())
		rep.Received += uint64(l.stats.recv.Load())
		rep.Foreign += uint64(l.stats.foreign.Load())
		rep.Connect.Failed += int(l.stats.failed.Load())
	}
	rep.Connect.Latency = cl.Summarize()
	rep.Connect.Parallel = r.cfg.Parallel
	if r.cfg.TLS {
		tlsRep.Latency = th.Summarize()
		rep.Connect.TLS = &tlsRep
	}
	rep.Latency = lat.Summarize()
	rep.SendLag = lag.Summarize()
	return ledger, sentBy, sentIn, recvIn
}

// expectations states, per scenario, which (publisher, receiver) pairs
// should have received every message the publisher sent.
func expectations(cfg *Config, sentBy []uint64) []Expectation {
	var expect []Expectation
	switch cfg.Scenario {
	case ScenarioP2P:
		for i := range sentBy {
			expect = append(expect, Expectation{Pub: uint32(i), Rcv: uint32(i), Sent: sentBy[i]})
		}
	case ScenarioFanIn, ScenarioFanOut:
		for i := range sentBy {
			for j := 0; j < cfg.Subs; j++ {
				expect = append(expect, Expectation{Pub: uint32(i), Rcv: uint32(j), Sent: sentBy[i]})
			}
		}
	case ScenarioShared:
		for i := range sentBy {
			expect = append(expect, Expectation{Pub: uint32(i), Rcv: 0, Sent: sentBy[i]})
		}
	}
	return expect
}

// mallocs returns the heap allocations this process made so far (a brief
// stop of the world: called twice per run).
func mallocs() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.Mallocs
}
