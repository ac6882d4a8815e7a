package main

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/ternmq/tern/internal/mqtttest"
)

// Topics and client ids shared by every cycle. Each cycle has its own broker
// and data directory, so reusing the names cannot mix cycles.
const (
	subQ1ID     = "crash-sub-q1"
	subQ2ID     = "crash-sub-q2"
	filterQ1    = "crash/q1/#"
	filterQ2    = "crash/q2/#"
	retainTopic = "crash/retained"
)

// config is everything one cycle needs; main fills it from flags, the test
// from constants.
type config struct {
	tern       string        // path of the tern binary
	workDir    string        // parent of the per-cycle data directories
	extraArgs  []string      // appended to `tern serve` (e.g. --durability sync)
	tls        *tlsSetup     // clients connect over TLS to a --tls-listen of this setup; nil: plain TCP
	publishers int           // even indexes publish at QoS 1, odd at QoS 2
	window     int           // messages in flight per publisher
	maxMsgs    int           // messages per publisher per cycle (≤ 65535: seq is the packet id)
	rate       int           // messages per second per publisher; 0 = unpaced
	killMin    time.Duration // the kill lands uniformly in [killMin, killMax) after traffic starts
	killMax    time.Duration
	quiet      time.Duration // a subscriber still missing messages gives up after this long with nothing new
	grace      time.Duration // a subscriber with everything waits this long for duplicates
	collectMax time.Duration // and in any case after this long
	keepFailed bool          // keep the data directory of a failed cycle
	control    bool          // harness self-check: drop the publishers' connections instead of killing the broker
	online     bool          // the QoS 1 subscriber stays connected and acknowledges during the traffic
	verbose    bool
	logf       func(format string, args ...any) // where notes go (required)
}

// result is the outcome of one cycle. Counters are of messages unless said.
type result struct {
	killAfter       time.Duration
	stillSending    int // publishers still mid-stream when the broker died
	acked           int // acknowledged messages (PUBACK / PUBREC), all publishers
	ackedLater      int // of which QoS 2 resends PUBREC'd after the restart
	lost            int // acknowledged, never delivered
	duplicated      int // QoS 2 delivered more than once
	redelivered     int // QoS 1 delivered more than once (allowed)
	outOfOrder      int // first deliveries out of publish order
	phantom         int // deliveries of messages never published
	qos2Incomplete  int // QoS 2 publisher flows that did not reach PUBCOMP after the restart
	retainedMissing int // 1 if the retained message did not survive
	sessionsLost    int // subscribers/QoS 2 publishers whose reconnect found no session
	anomalies       int // unexpected acks seen by publishers, unparsable payloads
	// avoided is the broker's tern_store_messages_avoided_total read just
	// before the kill (-online; -1 when it could not be read): messages it
	// never wrote because their subscriber acknowledged them first.
	avoided int
}

// failed reports whether the cycle broke the durability promise.
func (r result) failed() bool {
	return r.lost+r.duplicated+r.outOfOrder+r.phantom+r.qos2Incomplete+r.retainedMissing > 0
}

func (r result) String() string {
	retained := "ok"
	if r.retainedMissing > 0 {
		retained = "MISSING"
	}
	return fmt.Sprintf("kill@%v still_sending=%d acked=%d (after_restart=%d) lost=%d duplicated=%d out_of_order=%d redelivered_q1=%d phantom=%d qos2_incomplete=%d retained=%s sessions_lost=%d anomalies=%d",
		r.killAfter.Round(time.Millisecond), r.stillSending, r.acked, r.ackedLater, r.lost, r.duplicated,
		r.outOfOrder, r.redelivered, r.phantom, r.qos2Incomplete, retained, r.sessionsLost, r.anomalies) + r.avoidedNote()
}

// avoidedNote reports avoided writes when they were read (-online).
func (r result) avoidedNote() string {
	if r.avoided <= 0 {
		return ""
	}
	return fmt.Sprintf(" never_written=%d", r.avoided)
}

func (c *config) debugf(format string, args ...any) {
	if c.verbose {
		c.logf(format, args...)
	}
}

// runCycle is one crash: fresh broker and data directory; persistent
// subscribers subscribe and go offline; a retained message is set; the
// publishers run until SIGKILL at a random moment; the broker restarts on
// the same directory and port; QoS 2 publishers finish their interrupted
// flows; the subscribers collect; the retained message is checked.
//
// Every broker it starts is dead when it returns, whatever happened.
// An error means the harness could not carry out the cycle (or the broker
// would not start again); the result holds what was measured until then.
func runCycle(cfg *config, reg *registry, n int, rng *rand.Rand) (res result, err error) {
	dataDir, err := os.MkdirTemp(cfg.workDir, "cycle-"+strconv.Itoa(n)+"-")
	if err != nil {
		return res, err
	}
	defer func() {
		if cfg.keepFailed && (err != nil || res.failed()) {
			cfg.logf("cycle %d: data kept in %s", n, dataDir)
			return
		}
		removeAll(dataDir)
	}()
	addr, err := freeAddr()
	if err != nil {
		return res, err
	}
	ep, extra := endpoint{addr: addr}, cfg.extraArgs
	if cfg.tls != nil {
		tlsAddr, err := freeAddr()
		if err != nil {
			return res, err
		}
		ep = endpoint{addr: tlsAddr, tls: cfg.tls.client}
		extra = append(cfg.tls.serveArgs(tlsAddr), extra...)
	}

	first, admin := extra, ""
	if cfg.online {
		// The broker's /metrics, read before the kill, tell how many
		// messages it never wrote.
		if admin, err = freeAddr(); err != nil {
			return res, err
		}
		first = append([]string{"--admin", admin}, extra...)
	}
	b, err := startBroker(reg, cfg.tern, dataDir, addr, first, ep)
	if err != nil {
		return res, err
	}
	defer b.kill()

	var on *online
	if cfg.online {
		on, err = subscribeOnline(ep, subQ1ID, filterQ1)
	} else {
		err = subscribeOffline(ep, subQ1ID, filterQ1, 1)
	}
	if err != nil {
		return res, fmt.Errorf("subscriber %s: %w", subQ1ID, err)
	}
	if err := subscribeOffline(ep, subQ2ID, filterQ2, 2); err != nil {
		return res, fmt.Errorf("subscriber %s: %w", subQ2ID, err)
	}
	retained := "cycle-" + strconv.Itoa(n)
	if err := setRetained(ep, retainTopic, retained); err != nil {
		return res, fmt.Errorf("set retained: %w", err)
	}

	pubs := make([]*publisher, cfg.publishers)
	conns := make([]*mqtttest.Conn, cfg.publishers)
	for i := range pubs {
		qos := byte(1)
		if i%2 == 1 {
			qos = 2
		}
		pubs[i] = newPublisher(i, qos, cfg.maxMsgs, cfg.window, cfg.rate)
		c, _, err := pubs[i].connect(ep)
		if err != nil {
			for _, c := range conns[:i] {
				c.Close()
			}
			return res, fmt.Errorf("publisher %s: %w", pubs[i].clientID, err)
		}
		conns[i] = c
	}
	var wg sync.WaitGroup
	for i := range pubs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pubs[i].traffic(conns[i])
		}()
	}
	res.killAfter = cfg.killMin
	if span := cfg.killMax - cfg.killMin; span > 0 {
		res.killAfter += time.Duration(rng.Int64N(int64(span)))
	}
	time.Sleep(res.killAfter)
	if admin != "" {
		res.avoided = scrapeCounter(admin, "tern_store_messages_avoided_total")
	}
	died := b.exited()
	if cfg.control {
		// The publishers "crash" instead of the broker: same recovery
		// path, nothing may be lost even without a store.
		for _, c := range conns {
			c.Close()
		}
		if on != nil {
			on.conn.Close()
		}
	} else {
		b.kill()
	}
	// The kernel closes the broker's sockets, so every publisher sees EOF or
	// a reset at once; closing our side too bounds the wait regardless.
	waited := make(chan struct{})
	go func() { wg.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-time.After(5 * time.Second):
		for _, c := range conns {
			c.Close()
		}
		<-waited
	}
	for _, c := range conns {
		c.Close()
	}
	var before [2][]delivery
	if on != nil {
		select {
		case <-on.done:
		case <-time.After(5 * time.Second):
			return res, fmt.Errorf("online subscriber %s still connected after the kill", subQ1ID)
		}
		before[0] = on.deliveries
		res.anomalies += on.unparsable
	}
	if died || (cfg.control && b.exited()) {
		return res, fmt.Errorf("tern died on its own; output:\n%s", b.out)
	}
	for _, p := range pubs {
		res.acked += p.acked
		res.anomalies += p.anomalies
		if p.stillSending {
			res.stillSending++
		}
	}

	b2 := b
	if !cfg.control {
		b2, err = startBroker(reg, cfg.tern, dataDir, addr, extra, ep)
		if err != nil {
			return res, fmt.Errorf("restart after SIGKILL: %w", err)
		}
		defer b2.kill()
	}

	// QoS 2 publishers first, so their resent messages are queued before
	// the subscribers drain their sessions.
	errs := make([]error, len(pubs))
	for i, p := range pubs {
		if p.qos != 2 {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = p.recover(ep, ioTimeout)
		}()
	}
	wg.Wait()
	for i, p := range pubs {
		if errs[i] != nil {
			cfg.debugf("cycle %d: %s recover: %v", n, p.clientID, errs[i])
		}
		if p.qos == 2 {
			res.acked += p.ackedLater
			res.ackedLater += p.ackedLater
			res.qos2Incomplete += p.incomplete
			res.anomalies += p.anomalies
			if !p.sessionFound {
				res.sessionsLost++
			}
			cfg.debugf("cycle %d: %s acked=%d resent_pubrel=%d resent_publish=%d acked_after_restart=%d incomplete=%d session_present=%v",
				n, p.clientID, p.acked, p.resentRel, p.resentPub, p.ackedLater, p.incomplete, p.sessionFound)
		} else {
			cfg.debugf("cycle %d: %s acked=%d", n, p.clientID, p.acked)
		}
	}

	var got [2]collected
	var collectErr [2]error
	var retainedOK bool
	var retainedGot string
	var retainedErr error
	expect := [2]map[string][]bool{{}, {}}
	for _, p := range pubs {
		expect[p.qos-1][p.name] = p.ackedSet()
	}
	for i, id := range []string{subQ1ID, subQ2ID} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i], collectErr[i] = collect(ep, id, expect[i], before[i], cfg.quiet, cfg.grace, cfg.collectMax)
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		retainedOK, retainedGot, retainedErr = checkRetained(ep, retainTopic, retained, 2*time.Second)
	}()
	wg.Wait()
	for i, id := range []string{subQ1ID, subQ2ID} {
		if collectErr[i] != nil {
			return res, fmt.Errorf("subscriber %s after restart: %w", id, collectErr[i])
		}
		if !got[i].sessionFound {
			res.sessionsLost++
		}
		res.anomalies += got[i].unparsable
	}
	if retainedErr != nil {
		return res, fmt.Errorf("retained check: %w", retainedErr)
	}
	if !retainedOK {
		res.retainedMissing = 1
		cfg.debugf("cycle %d: retained %s: want %q, got %q", n, retainTopic, retained, retainedGot)
	}

	// Group deliveries by publisher, keeping arrival order. A publisher's
	// messages count only at the subscriber of its QoS; anything else is a
	// phantom (a routing bug).
	qosOf := make(map[string]byte)
	for _, p := range pubs {
		qosOf[p.name] = p.qos
	}
	arrivals := make(map[string][]int)
	for i := range got {
		for _, d := range got[i].deliveries {
			if qosOf[d.pub] != byte(i+1) {
				res.phantom++
				continue
			}
			arrivals[d.pub] = append(arrivals[d.pub], d.seq)
		}
	}
	for _, p := range pubs {
		v := check(p.ackedSet(), p.sentSet(), arrivals[p.name], p.qos == 2)
		res.lost += v.lost
		res.duplicated += v.duplicated
		res.redelivered += v.redelivered
		res.outOfOrder += v.outOfOrder
		res.phantom += v.phantom
		cfg.debugf("cycle %d: %s delivered=%d lost=%d duplicated=%d redelivered=%d out_of_order=%d phantom=%d",
			n, p.topic, len(arrivals[p.name]), v.lost, v.duplicated, v.redelivered, v.outOfOrder, v.phantom)
	}
	if res.failed() && cfg.verbose {
		cfg.debugf("cycle %d: broker output after restart:\n%s", n, b2.out)
	}
	return res, nil
}
