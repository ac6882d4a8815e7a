// Command crashtest proves Tern's durability promise by killing the broker.
//
// The promise: a QoS 1 PUBLISH is acknowledged (PUBACK) and a
// QoS 2 PUBLISH received (PUBREC) only once everything needed to deliver it to
// every matching persistent session is synced to disk; so nothing
// acknowledged is lost when `tern` is killed with SIGKILL, and QoS 2 is never
// delivered twice. The broker is a black box: crashtest runs `tern serve` as
// a subprocess and talks MQTT 3.1.1 to it over loopback with a small raw
// client built on the codec package, which lets it pick packet identifiers
// and decide when PUBREL is sent. With -tls loops (or stdnet) every client
// connects over TLS instead, to a --tls-listen served by that engine with a
// self-signed certificate the harness makes and trusts.
//
// # One cycle
//
//	broker #1, fresh --data DIR                          broker #2, same DIR and port
//	|                                           SIGKILL  |
//	| crash-sub-q1 SUB crash/q1/# QoS 1, DISCONNECT  |   | QoS 2 publishers reconnect (clean 0):
//	| crash-sub-q2 SUB crash/q2/# QoS 2, DISCONNECT  |   |   PUBREL for ids PUBREC'd, not PUBCOMP'd
//	| RETAIN crash/retained "cycle-N", QoS 1, PUBACK |   |   DUP PUBLISH for ids sent, not PUBREC'd
//	| p0,p2,… QoS 1 → crash/q1/pI  "pI:1","pI:2",…   |   | both subscribers reconnect (clean 0)
//	| p1,p3,… QoS 2 → crash/q2/pI  window W each     |   |   and collect (-quiet, -grace)
//	|<----- 200ms … 1.5s after traffic starts ------>|   | fresh client reads crash/retained
//
// A message counts as acknowledged when its PUBACK (QoS 1) or PUBREC (QoS 2)
// reached the publisher — before the kill, or, for a QoS 2 message resent
// with DUP after the restart, then. Per publisher the subscriber must then
// have received every acknowledged seq (else: lost), each QoS 2 seq at most
// once (else: duplicated; the subscriber acts as a correct QoS 2 receiver, so
// a duplicate is the broker's), and first deliveries in publish order (else:
// out of order, [MQTT-4.6.0-6]). Unacknowledged messages may or may not
// arrive. QoS 2 flows resumed after the restart must reach PUBCOMP, and the
// retained message must still be "cycle-N".
//
// With -online the QoS 1 subscriber does not go offline: it stays
// connected through the traffic and acknowledges every delivery at once, so
// most QoS 1 messages are acknowledged by it before the broker has written
// them, and the broker avoids writing them at all (persist, "Write
// avoidance"). Its deliveries before the kill count with those after the
// restart: every message PUBACKed to its publisher must be in one or the
// other.
//
// The broker advertises durability by having a --durability flag in
// `tern serve --help`; crashtest passes --durability sync. A broker without
// that flag keeps everything in memory and will lose it all: crashtest then
// refuses to run unless -force is given (useful to check the harness itself).
//
// Usage:
//
//	go run ./tools/crashtest -cycles 50            # builds ./cmd/tern first
//	go run ./tools/crashtest -tern bin/tern -seed 7 -v
//
// It prints one line per cycle and the totals; the exit status is 1 if any
// acknowledged message was lost, any QoS 2 message duplicated, any message
// reordered or invented, any QoS 2 flow left open, any retained message
// missing or any cycle could not be carried out; 2 for bad usage.
package main

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// totals sums the results of all cycles.
type totals struct {
	cycles, errors int
	result
}

func (t *totals) add(r result) {
	t.cycles++
	t.acked += r.acked
	t.ackedLater += r.ackedLater
	t.lost += r.lost
	t.duplicated += r.duplicated
	t.redelivered += r.redelivered
	t.outOfOrder += r.outOfOrder
	t.phantom += r.phantom
	t.qos2Incomplete += r.qos2Incomplete
	t.retainedMissing += r.retainedMissing
	t.sessionsLost += r.sessionsLost
	t.anomalies += r.anomalies
	t.stillSending += r.stillSending
	t.avoided += max(r.avoided, 0)
}

func (t *totals) failed() bool { return t.errors > 0 || t.result.failed() }

func (t *totals) String() string {
	return fmt.Sprintf("totals: cycles=%d acknowledged=%d lost=%d duplicated=%d out_of_order=%d retained_missing=%d qos2_incomplete=%d phantom=%d redelivered_q1=%d sessions_lost=%d anomalies=%d errors=%d",
		t.cycles, t.acked, t.lost, t.duplicated, t.outOfOrder, t.retainedMissing, t.qos2Incomplete,
		t.phantom, t.redelivered, t.sessionsLost, t.anomalies, t.errors) + t.avoidedNote()
}

func main() { os.Exit(run(os.Args[1:])) }

func run(args []string) int {
	fs := flag.NewFlagSet("crashtest", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: crashtest [flags]\n\nKills tern with SIGKILL mid-traffic, restarts it and checks that nothing acknowledged\nwas lost and no QoS 2 message was delivered twice. See `go doc ./tools/crashtest`.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	cycles := fs.Int("cycles", 10, "number of crash cycles (1–10000)")
	ternBin := fs.String("tern", "", "`PATH` of the tern binary (default: go build ./cmd/tern into a temporary directory)")
	seed := fs.Uint64("seed", 0, "random seed for the kill moments (default: from the clock; printed)")
	publishers := fs.Int("publishers", 4, "publishers per cycle, alternating QoS 1 and QoS 2 (2–64)")
	window := fs.Int("window", 16, "messages in flight per publisher (1–1000)")
	// Paced by default: unpaced, a fast broker finishes max-msgs before the
	// kill in most cycles, and a kill of an idle broker tests less.
	rate := fs.Int("rate", 3000, "messages per second per publisher, at most (0 = as fast as acknowledgements allow); with -max-msgs it sets how long traffic lasts (default 4500/3000 = 1.5s = -kill-max)")
	maxMsgs := fs.Int("max-msgs", 4500, "messages per publisher per cycle (1–65535); each offline subscriber queues publishers/2 × this, far more than the broker keeps in memory (512), so recovery pages the backlog from disk")
	killMin := fs.Duration("kill-min", 200*time.Millisecond, "earliest kill after traffic starts")
	killMax := fs.Duration("kill-max", 1500*time.Millisecond, "latest kill after traffic starts")
	quiet := fs.Duration("quiet", 3*time.Second, "a reconnected subscriber still missing acknowledged messages gives up after this long with nothing new")
	grace := fs.Duration("grace", time.Second, "a reconnected subscriber that has every acknowledged message waits this long for duplicates")
	collectMax := fs.Duration("collect-max", 30*time.Second, "upper bound on a subscriber's collection after the restart")
	durability := fs.String("durability", "sync", "value passed to tern serve --durability")
	force := fs.Bool("force", false, "run even if the broker does not advertise --durability (expect losses)")
	control := fs.Bool("control", false, "harness self-check: close the publishers' connections instead of killing the broker and skip the restart; any correct broker, durable or not, must then pass")
	ports := fs.String("ports", "", "`FROM-TO`: take the broker's ports from this range of 127.0.0.1 (default: any free port)")
	onlineSub := fs.Bool("online", false, "the QoS 1 subscriber stays connected and acknowledges while the publishers send (most deliveries are acknowledged before they are written: the broker's write avoidance), instead of queueing offline")
	tlsEngine := fs.String("tls", "", "`ENGINE` (loops or stdnet): the clients connect over TLS to a --tls-listen served by that engine (a self-signed certificate the harness makes); empty: plain TCP")
	keep := fs.Bool("keep", false, "keep the data directory of a failing cycle for inspection (tern store inspect)")
	verbose := fs.Bool("v", false, "per-publisher details and broker output of failing cycles")
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}
	if *ports != "" {
		if _, err := fmt.Sscanf(*ports, "%d-%d", &portFrom, &portTo); err != nil || portFrom < 1 || portTo < portFrom || portTo > 65535 {
			fmt.Fprintf(os.Stderr, "crashtest: -ports %q: want FROM-TO\n", *ports)
			return 2
		}
	}
	switch {
	case fs.NArg() > 0:
		fmt.Fprintf(os.Stderr, "crashtest: unexpected argument %q (flags only; see -h)\n", fs.Arg(0))
		return 2
	case *cycles < 1 || *cycles > 10000:
		fmt.Fprintln(os.Stderr, "crashtest: -cycles must be 1–10000")
		return 2
	case *publishers < 2 || *publishers > 64:
		fmt.Fprintln(os.Stderr, "crashtest: -publishers must be 2–64")
		return 2
	case *window < 1 || *window > 1000:
		fmt.Fprintln(os.Stderr, "crashtest: -window must be 1–1000")
		return 2
	case *maxMsgs < 1 || *maxMsgs > 65535:
		fmt.Fprintln(os.Stderr, "crashtest: -max-msgs must be 1–65535 (the seq is the packet id)")
		return 2
	case *tlsEngine != "" && *tlsEngine != "loops" && *tlsEngine != "stdnet":
		fmt.Fprintln(os.Stderr, "crashtest: -tls must be loops or stdnet")
		return 2
	case *rate < 0 || *rate > 1000000:
		fmt.Fprintln(os.Stderr, "crashtest: -rate must be 0–1000000")
		return 2
	case *killMin <= 0 || *killMax < *killMin || *killMax > time.Minute:
		fmt.Fprintln(os.Stderr, "crashtest: need 0 < -kill-min ≤ -kill-max ≤ 1m")
		return 2
	case *quiet <= 0 || *grace <= 0 || *collectMax < *quiet || *collectMax > 10*time.Minute:
		fmt.Fprintln(os.Stderr, "crashtest: need 0 < -quiet ≤ -collect-max ≤ 10m and -grace > 0")
		return 2
	}

	workDir, err := os.MkdirTemp("", "crashtest-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "crashtest: %v\n", err)
		return 2
	}
	defer removeAll(workDir)
	bin := *ternBin
	if bin == "" {
		fmt.Println("building ./cmd/tern …")
		if bin, err = buildTern(workDir); err != nil {
			fmt.Fprintf(os.Stderr, "crashtest: %v\n", err)
			return 2
		}
	}
	durable, err := advertisesDurability(bin)
	if err != nil {
		fmt.Fprintf(os.Stderr, "crashtest: %v\n", err)
		return 2
	}
	var extra []string
	if durable {
		extra = []string{"--durability", *durability}
	} else if !*force && !*control {
		fmt.Fprintf(os.Stderr, "crashtest: %s does not advertise --durability in `tern serve --help`: it keeps state in memory and a crash loses everything. Pass -force to run anyway.\n", bin)
		return 2
	} else if !*control {
		fmt.Println("warning: broker does not advertise --durability; running anyway (-force): expect losses")
	}
	if *control {
		fmt.Println("control mode: the broker is not killed; every cycle must pass")
	}

	var tlsCfg *tlsSetup
	if *tlsEngine != "" {
		if tlsCfg, err = newTLSSetup(workDir, *tlsEngine); err != nil {
			fmt.Fprintf(os.Stderr, "crashtest: %v\n", err)
			return 2
		}
	}
	if *seed == 0 {
		*seed = uint64(time.Now().UnixNano())
	}
	rng := rand.New(rand.NewPCG(*seed, 0x7e77))
	reg := &registry{}
	cfg := &config{
		tern: bin, workDir: workDir, extraArgs: extra, tls: tlsCfg,
		publishers: *publishers, window: *window, maxMsgs: *maxMsgs, rate: *rate,
		killMin: *killMin, killMax: *killMax, quiet: *quiet, grace: *grace, collectMax: *collectMax,
		keepFailed: *keep, control: *control, online: *onlineSub, verbose: *verbose,
		logf: func(format string, args ...any) { fmt.Printf("  "+format+"\n", args...) },
	}
	if *keep {
		// Kept directories must outlive the run's own temporary directory.
		if cfg.workDir, err = os.MkdirTemp("", "crashtest-data-"); err != nil {
			fmt.Fprintf(os.Stderr, "crashtest: %v\n", err)
			return 2
		}
	}

	// Ctrl-C: kill every broker we started before exiting, no orphans.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		s := <-sig
		fmt.Fprintf(os.Stderr, "crashtest: %v: killing brokers\n", s)
		reg.killAll()
		removeAll(workDir)
		os.Exit(130)
	}()
	defer reg.killAll()

	fmt.Printf("crashtest: %d cycles, seed %d, %d publishers, window %d, ≤%d msgs each, rate %d/s (0 = unpaced), kill in [%v, %v), tern %s %v\n",
		*cycles, *seed, *publishers, *window, *maxMsgs, *rate, *killMin, *killMax, bin, extra)
	var tot totals
	start := time.Now()
	for n := 1; n <= *cycles; n++ {
		r, err := runCycle(cfg, reg, n, rng)
		tot.add(r)
		status := "ok"
		if err != nil {
			tot.errors++
			status = "ERROR"
		} else if r.failed() {
			status = "FAIL"
		}
		fmt.Printf("cycle %d/%d %s %v\n", n, *cycles, status, r)
		if err != nil {
			fmt.Printf("  error: %v\n", err)
		}
	}
	fmt.Printf("%v (%v)\n", &tot, time.Since(start).Round(time.Second))
	if tot.failed() {
		return 1
	}
	return 0
}
