//go:build linux

package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// runner holds one Run's loops and configuration.
type runner struct {
	cfg     Config
	loops   []*loop
	wg      sync.WaitGroup
	closing atomic.Bool
	issued  int
}

// Run executes the scenario cfg describes and returns its report. It
// returns an error only when the run could not start (bad configuration,
// no event loop); connection failures and losses are in the report.
// Cancelling ctx ends the run early and still returns a report.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	cfg.EnsureDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.ClientIDPrefix == "" {
		if cfg.Persistent {
			cfg.ClientIDPrefix = "tern-bench-" // stable: a second run resumes the sessions
		} else {
			var b [3]byte
			rand.Read(b[:])
			cfg.ClientIDPrefix = "tb" + hex.EncodeToString(b[:]) + "-"
		}
	}
	brokers := make([]unix.Sockaddr, len(cfg.Brokers))
	for i, b := range cfg.Brokers {
		sa, err := resolve(b)
		if err != nil {
			return nil, fmt.Errorf("bench: broker %s: %w", b, err)
		}
		brokers[i] = sa
	}
	var sources []unix.Sockaddr
	for _, s := range cfg.Sources {
		sources = append(sources, sockaddr(net.ParseIP(s), 0))
	}

	r := &runner{cfg: cfg}
	n := cfg.Loops
	if n == 0 {
		n = runtime.GOMAXPROCS(0)
	}
	for i := 0; i < n; i++ {
		l, err := newLoop(r)
		if err != nil {
			for _, l := range r.loops {
				l.closeFDs()
			}
			return nil, err
		}
		r.loops = append(r.loops, l)
	}
	for _, l := range r.loops {
		r.wg.Add(1)
		go func() { defer r.wg.Done(); l.run() }()
	}
	defer r.shutdown()

	rep := &Report{Scenario: cfg.Scenario, Brokers: cfg.Brokers, Protocol: ProtocolName(cfg.Protocol),
		QoS: cfg.QoS, Size: cfg.Size, Rate: cfg.Rate, Duration: cfg.Duration.Seconds(),
		Warmup: cfg.Warmup.Seconds(), StartedAt: time.Now()}
	rep.Harness.Loops = n

	brokerPID := cfg.BrokerPID
	if brokerPID == 0 {
		if _, port, err := net.SplitHostPort(cfg.Brokers[0]); err == nil {
			p, _ := strconv.Atoi(port)
			brokerPID, _ = FindListenerPID(p)
		}
	}
	var broker0 ProcSample
	if brokerPID > 0 {
		broker0, _ = SampleProc(brokerPID)
	}
	rss0 := SelfRSS()

	// Build the clients: subscribers first, so publishers never publish
	// into a topic nobody listens to yet.
	var subs, pubs []spec
	pick := func(i int) (unix.Sockaddr, unix.Sockaddr) {
		var src unix.Sockaddr
		if len(sources) > 0 {
			src = sources[i%len(sources)]
		}
		return brokers[i%len(brokers)], src
	}
	switch cfg.Scenario {
	case ScenarioConn:
		rep.Conns = cfg.Conns
		for i := 0; i < cfg.Conns; i++ {
			b, s := pick(i)
			sp := spec{role: roleIdle, idx: i, broker: b, source: s}
			if cfg.Subscribe {
				sp.filter = []byte(cfg.filterFor(i))
			}
			subs = append(subs, sp)
		}
	default:
		rep.Pubs, rep.Subs = cfg.Pubs, cfg.Subs
		for i := 0; i < cfg.Subs; i++ {
			b, s := pick(i)
			rcv := uint32(i)
			if cfg.Scenario == ScenarioShared {
				rcv = 0 // the group is the receiver
			}
			subs = append(subs, spec{role: roleSub, idx: i, rcv: rcv, broker: b, source: s, filter: []byte(cfg.filterFor(i))})
		}
		for i := 0; i < cfg.Pubs; i++ {
			b, s := pick(cfg.Subs + i)
			pubs = append(pubs, spec{role: rolePub, idx: i, broker: b, source: s, topic: []byte(expand(cfg.Topic, i))})
		}
	}

	t0 := time.Now()
	r.connect(ctx, subs)
	r.connect(ctx, pubs)
	connectTime := time.Since(t0)
	connected := r.sum(func(s *loopStats) int64 { return s.connected.Load() })
	if connectTime > 0 {
		rep.Connect.RatePerS = float64(connected) / connectTime.Seconds()
	}

	var cpu0, cpu1 int64
	var bs0, bs1 ProcSample
	var peak int64
	var sampleBroker = func() {
		if brokerPID > 0 {
			if s, err := SampleProc(brokerPID); err == nil && s.RSSBytes > peak {
				peak = s.RSSBytes
			}
		}
	}
	var measured time.Duration
	var recvLo, recvHi int64
	prog := newProgress(r, cfg)

	if cfg.Scenario == ScenarioConn {
		cpu0 = SelfCPU()
		if brokerPID > 0 {
			bs0, _ = SampleProc(brokerPID)
		}
		end := time.Now().Add(cfg.Duration)
		for time.Now().Before(end) && ctx.Err() == nil {
			sleepCtx(ctx, min(time.Second, time.Until(end)))
			prog.tick()
			sampleBroker()
		}
		measured = cfg.Duration
	} else {
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
		cpu0 = SelfCPU()
		if brokerPID > 0 {
			bs0, _ = SampleProc(brokerPID)
		}
		for time.Now().Before(end) && ctx.Err() == nil {
			next := time.Second
			if !warmed && time.Until(lo) < next {
				next = time.Until(lo)
			}
			sleepCtx(ctx, min(next, time.Until(end)))
			if !warmed && !time.Now().Before(lo) {
				warmed = true
				cpu0 = SelfCPU()
				if brokerPID > 0 {
					bs0, _ = SampleProc(brokerPID)
				}
				recvLo = r.sum(func(s *loopStats) int64 { return s.recv.Load() })
			}
			prog.tick()
			sampleBroker()
		}
		measured = time.Since(lo)
		if measured > cfg.Duration-cfg.Warmup {
			measured = cfg.Duration - cfg.Warmup
		}
		for _, l := range r.loops {
			l.call(func(l *loop) { l.stopPublishing() }, 2*time.Second)
		}
		recvHi = r.sum(func(s *loopStats) int64 { return s.recv.Load() })
		cpu1 = SelfCPU()
		if brokerPID > 0 {
			bs1, _ = SampleProc(brokerPID)
		}
		// Drain: wait for the deliveries still in flight.
		if cfg.Scenario != ScenarioPub && cfg.Scenario != ScenarioSub {
			factor := int64(1)
			if cfg.Scenario == ScenarioFanIn || cfg.Scenario == ScenarioFanOut {
				factor = int64(cfg.Subs)
			}
			want := r.sum(func(s *loopStats) int64 { return s.written.Load() }) * factor
			deadline := time.Now().Add(cfg.Drain)
			for time.Now().Before(deadline) && ctx.Err() == nil &&
				r.sum(func(s *loopStats) int64 { return s.recv.Load() }) < want {
				sleepCtx(ctx, 10*time.Millisecond)
			}
		}
	}
	if cfg.Scenario == ScenarioConn {
		cpu1 = SelfCPU()
		if brokerPID > 0 {
			bs1, _ = SampleProc(brokerPID)
		}
	}
	prog.done()
	rssHeld := SelfRSS()
	sampleBroker()

	r.shutdown()

	// The loops have exited: their state is ours to read.
	lat, lag, cl := NewHistogram(), NewHistogram(), NewHistogram()
	ledger := NewLedger()
	sentBy := make([]uint64, cfg.Pubs)
	var sentIn, recvIn int64
	rep.Connect.Failures = map[string]int{}
	for _, l := range r.loops {
		lat.Merge(l.lat)
		lag.Merge(l.lag)
		cl.Merge(l.connLat)
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
	rep.Connect.Attempted = r.issued
	rep.Connect.Connected = int(connected)
	rep.Connect.Latency = cl.Summarize()
	rep.Latency = lat.Summarize()
	rep.SendLag = lag.Summarize()
	if secs := measured.Seconds(); secs > 0 {
		rep.SendRate = float64(sentIn) / secs
		rep.RecvRate = float64(recvIn) / secs
		if cfg.Scenario == ScenarioSub {
			rep.RecvRate = float64(recvHi-recvLo) / secs
		}
	}

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
	if cfg.Scenario != ScenarioPub && cfg.Scenario != ScenarioConn {
		rep.Delivery = ledger.Tally(expect)
		rep.Lost = rep.Delivery.Lost
	}

	secs := measured.Seconds()
	h := &rep.Harness
	h.CPUSeconds = float64(cpu1-cpu0) / 1e9
	if secs > 0 {
		h.CPUPercent = 100 * h.CPUSeconds / secs
	}
	if msgs := float64(sentIn + recvIn); msgs > 0 {
		h.CPUPerMsgUs = h.CPUSeconds * 1e6 / msgs
	}
	h.RSSBytes = rssHeld
	if connected > 0 {
		h.RSSPerConnBytes = float64(rssHeld-rss0) / float64(connected)
	}
	if brokerPID > 0 && bs1.RSSBytes > 0 {
		b := &ProcReport{PID: brokerPID, RSSBytes: bs1.RSSBytes, RSSPeakBytes: max(peak, bs1.RSSBytes)}
		b.CPUSeconds = float64(bs1.CPUNanos-bs0.CPUNanos) / 1e9
		if secs > 0 {
			b.CPUPercent = 100 * b.CPUSeconds / secs
		}
		if msgs := float64(sentIn + recvIn); msgs > 0 {
			b.CPUPerMsgUs = b.CPUSeconds * 1e6 / msgs
		}
		if connected > 0 && broker0.RSSBytes > 0 {
			b.RSSPerConnBytes = float64(bs1.RSSBytes-broker0.RSSBytes) / float64(connected)
		}
		rep.Broker = b
	}
	return rep, nil
}

// connect opens the clients of specs at the configured rate and waits until
// each is ready or failed (or the connect timeout passed).
func (r *runner) connect(ctx context.Context, specs []spec) {
	if len(specs) == 0 {
		return
	}
	done0 := r.sum(func(s *loopStats) int64 { return s.connected.Load() + s.failed.Load() })
	start := time.Now()
	issued := 0
	for issued < len(specs) && ctx.Err() == nil {
		want := len(specs)
		if r.cfg.ConnectRate > 0 {
			want = min(len(specs), int(r.cfg.ConnectRate*time.Since(start).Seconds())+1)
		}
		// Bound the handshakes in flight so a slow broker sees the rate
		// we promised, not a pile of SYNs.
		batch := want - issued
		if batch > 0 {
			per := make([][]spec, len(r.loops))
			for i := issued; i < issued+batch; i++ {
				k := i % len(r.loops)
				per[k] = append(per[k], specs[i])
			}
			for k, l := range r.loops {
				if len(per[k]) == 0 {
					continue
				}
				b := per[k]
				l.post(func(l *loop) {
					now := time.Now().UnixNano()
					for i := range b {
						l.dial(&b[i], now)
					}
				})
			}
			issued += batch
		}
		if issued < len(specs) {
			sleepCtx(ctx, 2*time.Millisecond)
		}
	}
	r.issued += issued
	deadline := time.Now().Add(r.cfg.ConnectTimeout + 2*time.Second)
	for ctx.Err() == nil && time.Now().Before(deadline) {
		done := r.sum(func(s *loopStats) int64 { return s.connected.Load() + s.failed.Load() })
		if done-done0 >= int64(issued) {
			return
		}
		sleepCtx(ctx, 5*time.Millisecond)
	}
}

// shutdown disconnects every client and waits for the loops to exit. It is
// idempotent.
func (r *runner) shutdown() {
	if r.closing.Swap(true) {
		return
	}
	for _, l := range r.loops {
		l.post(func(l *loop) { l.disconnectAll() })
	}
	r.wg.Wait()
}

func (r *runner) sum(f func(*loopStats) int64) int64 {
	var n int64
	for _, l := range r.loops {
		n += f(&l.stats)
	}
	return n
}

// snapshotLatency merges every loop's latency histogram, through the loops.
func (r *runner) snapshotLatency() *Histogram {
	h := NewHistogram()
	var mu sync.Mutex
	for _, l := range r.loops {
		l.call(func(l *loop) { mu.Lock(); h.Merge(l.lat); mu.Unlock() }, 200*time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	out := NewHistogram()
	out.Merge(h)
	return out
}

func sleepCtx(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
