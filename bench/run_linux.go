//go:build linux

package bench

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net"
	"runtime"
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
	ser     series // per-second record; Run's goroutine only
	runID   uint32 // random, in every payload: other runs' messages are foreign
}

// Run executes the scenario cfg describes and returns its report. It
// returns an error only when the run could not start (bad configuration,
// no event loop); connection failures and losses are in the report.
// Cancelling ctx ends the run early and still returns a report.
//
// The steps: prepare the configuration and addresses, start the loops,
// take baseline samples, connect the clients (subscribers first), run the
// measured window (idle connections, or publishing then draining), shut
// the loops down, then assemble the report from what they recorded.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	cfg, brokers, sources, err := prepare(cfg)
	if err != nil {
		return nil, err
	}
	if cfg.TLS {
		if err := prepareTLS(ctx, &cfg, brokers); err != nil {
			return nil, err
		}
	}
	r, err := startLoops(cfg)
	if err != nil {
		return nil, err
	}
	defer r.shutdown()

	rep := newReport(&cfg, len(r.loops))
	u := newUsage(&cfg) // baselines before any client exists
	subs, pubs := clientSpecs(&cfg, brokers, sources)
	u.beginConnect()
	connected := r.connectAll(ctx, rep, subs, pubs)
	u.endConnect(rep, connected)

	prog := newProgress(r, cfg)
	var w window
	if cfg.Scenario == ScenarioConn {
		w = r.holdIdle(ctx, u, prog)
	} else {
		w = r.publishAndMeasure(ctx, u, prog)
		r.drain(ctx)
	}
	r.ser.finish()
	prog.done()
	u.rssHeld = SelfRSS()
	u.samplePeak()

	r.shutdown()
	// The loops have exited: their state is ours to read.
	ledger, sentBy, sentIn, recvIn := r.collect(rep)
	rep.Connect.Attempted = r.issued
	rep.Connect.Connected = int(connected)
	w.rates(rep, sentIn, recvIn)
	rep.Series = r.ser.out
	if cfg.Scenario != ScenarioPub && cfg.Scenario != ScenarioConn {
		rep.Delivery = ledger.Tally(expectations(&cfg, sentBy))
		rep.Lost = rep.Delivery.Lost
	}
	u.report(rep, w.measured.Seconds(), float64(sentIn+recvIn), float64(recvIn), connected)
	return rep, nil
}

// target is one broker address resolved, with its TLS configuration.
type target struct {
	sa   unix.Sockaddr
	addr string
	conf *tlsTarget // nil: plain TCP
}

// prepare completes cfg (defaults, a client id prefix) and resolves the
// broker and source addresses.
func prepare(cfg Config) (Config, [][]target, []unix.Sockaddr, error) {
	cfg.EnsureDefaults()
	if err := cfg.Validate(); err != nil {
		return cfg, nil, nil, err
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
	// brokers[0]: every client (subscribers); brokers[1]: publishers.
	brokers := make([][]target, 2)
	for k, list := range [][]string{cfg.Brokers, cfg.PubBrokers} {
		for _, b := range list {
			sa, err := resolve(b)
			if err != nil {
				return cfg, nil, nil, fmt.Errorf("bench: broker %s: %w", b, err)
			}
			brokers[k] = append(brokers[k], target{sa: sa, addr: b})
		}
	}
	if len(brokers[1]) == 0 {
		brokers[1] = brokers[0]
	}
	var sources []unix.Sockaddr
	for _, s := range cfg.Sources {
		sources = append(sources, sockaddr(net.ParseIP(s), 0))
	}
	return cfg, brokers, sources, nil
}

// startLoops creates the event loops (Config.Loops, or GOMAXPROCS) and
// starts their goroutines.
func startLoops(cfg Config) (*runner, error) {
	var id [4]byte
	rand.Read(id[:])
	r := &runner{cfg: cfg, runID: binary.BigEndian.Uint32(id[:])}
	n := cfg.Loops
	if n == 0 {
		n = runtime.GOMAXPROCS(0)
	}
	for i := 0; i < n; i++ {
		l, err := newLoop(r)
		if err == nil && cfg.Parallel > 0 {
			// Spread the connect slots over the loops (at least one each).
			l.budget = max(1, cfg.Parallel/n+btoi(i < cfg.Parallel%n))
		}
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
	return r, nil
}

// newReport starts the report with the run's parameters.
func newReport(cfg *Config, loops int) *Report {
	rep := &Report{Scenario: cfg.Scenario, Brokers: cfg.Brokers, Protocol: ProtocolName(cfg.Protocol),
		QoS: cfg.QoS, Size: cfg.Size, Rate: cfg.Rate, Duration: cfg.Duration.Seconds(),
		Warmup: cfg.Warmup.Seconds(), StartedAt: time.Now(), ClosedLoop: cfg.ClosedLoop, SubRate: cfg.SubRate}
	rep.Harness.Loops = loops
	if cfg.Scenario == ScenarioConn {
		rep.Conns = cfg.Conns
	} else {
		rep.Pubs, rep.Subs = cfg.Pubs, cfg.Subs
	}
	return rep
}

// clientSpecs lists the clients to open: subscribers (or, for the conn
// scenario, idle clients) and publishers, spread round-robin over the
// brokers and source addresses.
func clientSpecs(cfg *Config, brokerSets [][]target, sources []unix.Sockaddr) (subs, pubs []spec) {
	brokers := brokerSets[0]
	pick := func(i int) (target, unix.Sockaddr) {
		var src unix.Sockaddr
		if len(sources) > 0 {
			src = sources[i%len(sources)]
		}
		return brokers[i%len(brokers)], src
	}
	if cfg.Scenario == ScenarioConn {
		for i := 0; i < cfg.Conns; i++ {
			b, s := pick(i)
			sp := spec{role: roleIdle, idx: i, broker: b.sa, conf: b.conf, source: s}
			if cfg.Subscribe {
				sp.filter = []byte(cfg.filterFor(i))
			}
			subs = append(subs, sp)
		}
		return subs, nil
	}
	for i := 0; i < cfg.Subs; i++ {
		b, s := pick(i)
		rcv := uint32(i)
		if cfg.Scenario == ScenarioShared {
			rcv = 0 // the group is the receiver
		}
		subs = append(subs, spec{role: roleSub, idx: i, rcv: rcv, broker: b.sa, conf: b.conf, source: s, filter: []byte(cfg.filterFor(i))})
	}
	brokers = brokerSets[1]
	for i := 0; i < cfg.Pubs; i++ {
		b, s := pick(cfg.Subs + i)
		pubs = append(pubs, spec{role: rolePub, idx: i, broker: b.sa, conf: b.conf, source: s, topic: []byte(expand(cfg.Topic, i))})
	}
	return subs, pubs
}

// connectAll opens the subscribers, then the publishers, so publishers
// never publish into a topic nobody listens to yet. It records the
// achieved connect rate and returns how many clients are connected.
func (r *runner) connectAll(ctx context.Context, rep *Report, subs, pubs []spec) int64 {
	t0 := time.Now()
	r.connect(ctx, subs)
	r.connect(ctx, pubs)
	connectTime := time.Since(t0)
	connected := r.sum(func(s *loopStats) int64 { return s.connected.Load() })
	if connectTime > 0 {
		rep.Connect.RatePerS = float64(connected) / connectTime.Seconds()
	}
	return connected
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
					l.pending = append(l.pending, b...)
					l.dialPending(time.Now().UnixNano())
				})
			}
			issued += batch
		}
		if issued < len(specs) {
			sleepCtx(ctx, 2*time.Millisecond)
		}
	}
	r.issued += issued
	// Every client is ready or failed within ConnectTimeout of its dial,
	// but with Config.Parallel the last dials wait for earlier clients:
	// give up only when nothing completed for a whole timeout.
	patience := r.cfg.ConnectTimeout + 2*time.Second
	deadline := time.Now().Add(patience)
	last := int64(-1)
	for ctx.Err() == nil && time.Now().Before(deadline) {
		done := r.sum(func(s *loopStats) int64 { return s.connected.Load() + s.failed.Load() })
		if done-done0 >= int64(issued) {
			return
		}
		if done != last {
			last, deadline = done, time.Now().Add(patience)
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

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
