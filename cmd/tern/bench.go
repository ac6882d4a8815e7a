package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ternmq/tern/bench"
	"github.com/ternmq/tern/codec"
)

const benchUsage = `tern bench — measure any MQTT broker over the wire (open loop, no coordinated omission).

Usage:
  tern bench conn    [flags]   open --conns connections at --connect-rate and hold them
  tern bench pub     [flags]   publishers only (pair with "tern bench sub" elsewhere)
  tern bench sub     [flags]   subscribers only; loss counted from sequence gaps
  tern bench run --scenario p2p|fan-in|fan-out|shared [flags]
                               publishers and subscribers together, delivery checked
  tern bench compare --broker NAME=HOST:PORT [--broker …] [--rounds 3] [--markdown FILE] -- <run|conn> [flags]
                               the same scenario against each broker, interleaved rounds
  tern bench sweep --scenario p2p|fan-in|fan-out|shared --rate R [--factor 1.5] [--max-p99 D] [flags]
                               capacity: step the offered rate (×factor, --duration per step) until
                               loss or a latency knee; prints every step and the last sustainable rate

Examples:
  tern bench run --scenario p2p --broker 127.0.0.1:1883 --pubs 100 --subs 100 --qos 1 --rate 100 --duration 10s --json
  tern bench conn --conns 19000 --connect-rate 5000 --source 127.0.0.2-127.0.0.5 --duration 30s
  tern bench run --pubs 20 --subs 20 --qos 1 --closed-loop --duration 30s      # as fast as the window allows
  tern bench run --pubs 1 --subs 1 --qos 1 --rate 50000 --sub-rate 1000 --series   # a slow consumer
  tern bench compare --broker tern=127.0.0.1:1883 --broker mosquitto=127.0.0.1:1884 -- run --scenario fan-out --subs 1000
  tern bench sweep --scenario p2p --pubs 20 --subs 20 --qos 1 --rate 500 --duration 5s --max-p99 50ms
  tern bench conn --conns 19000 --connect-rate -1 --parallel 256 --tls --cafile ca.pem --tls-resume   # a TLS reconnect storm

Run "tern bench <command> --help" for the flags.
`

// benchCmd runs "tern bench <subcommand> [flags]"; args are the words after
// "bench". It returns the process exit code.
func benchCmd(args []string) int {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, benchUsage)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	switch args[0] {
	case "-h", "--help", "help":
		fmt.Print(benchUsage)
		return 0
	case "conn", "pub", "sub", "run":
		return benchRun(ctx, args[0], args[1:], os.Stdout, os.Stderr)
	case "compare":
		return benchCompare(ctx, args[1:], os.Stdout, os.Stderr)
	case "sweep":
		return benchSweep(ctx, args[1:], os.Stdout, os.Stderr)
	default:
		fmt.Fprintf(os.Stderr, "tern bench: unknown command %q\n\n%s", args[0], benchUsage)
		return 2
	}
}

// benchList is a repeatable, comma-separable string flag.
type benchList []string

func (l *benchList) String() string { return strings.Join(*l, ",") }
func (l *benchList) Set(s string) error {
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			*l = append(*l, p)
		}
	}
	return nil
}

// benchFlags are the flags of one scenario run.
type benchFlags struct {
	cfg        bench.Config
	brokers    benchList
	pubBrokers benchList // --pub-broker: publishers only
	protocol   string
	sources    string
	qos        uint
	jsonOut    bool
	quiet      bool
	failOnLoss bool
	series     bool
	cpuProfile string    // --cpuprofile: a pprof CPU profile of the harness
	curves     benchList // --tls-curves
}

func newBenchFlags(cmd string, errOut io.Writer) (*flag.FlagSet, *benchFlags) {
	f := &benchFlags{}
	fs := flag.NewFlagSet("tern bench "+cmd, flag.ContinueOnError)
	fs.SetOutput(errOut)
	c := &f.cfg
	fs.Var(&f.brokers, "broker", "broker `HOST:PORT` (repeat or comma-separate to spread clients; default 127.0.0.1:1883)")
	if cmd == "run" || cmd == "sweep" {
		fs.StringVar(&c.Scenario, "scenario", "p2p", "p2p | fan-in | fan-out | shared")
		fs.Var(&f.pubBrokers, "pub-broker", "`HOST:PORT` for the publishers only (repeat or comma-separate), subscribers staying on --broker: e.g. two nodes of a cluster")
	}
	fs.StringVar(&f.protocol, "protocol", "3.1.1", "MQTT version: 3.1.1 or 5.0")
	fs.IntVar(&c.Pubs, "pubs", 0, "publishers (default per scenario: p2p 1, fan-in 100, fan-out 1, shared 100)")
	fs.IntVar(&c.Subs, "subs", 0, "subscribers (default per scenario: p2p 1, fan-in 1, fan-out 100, shared 10)")
	fs.IntVar(&c.Conns, "conns", 1000, "connections (conn)")
	fs.BoolVar(&c.Subscribe, "subscribe", false, "conn: every connection subscribes to its own topic")
	fs.Float64Var(&c.ConnectRate, "connect-rate", 2000, "new connections per second (negative: as fast as possible)")
	fs.IntVar(&c.Parallel, "parallel", 0, "at most this many clients in their connect phase (TCP, TLS, CONNACK, SUBACK) at once; with --connect-rate -1 a connect storm (0: no bound)")
	fs.BoolVar(&c.TLS, "tls", false, "connect over TLS")
	fs.StringVar(&c.TLSOptions.CAFile, "cafile", "", "PEM `FILE` of the CAs the broker certificate must chain to (--tls; default: system roots)")
	fs.StringVar(&c.TLSOptions.CertFile, "cert", "", "PEM client certificate `FILE` for mutual TLS (with --key)")
	fs.StringVar(&c.TLSOptions.KeyFile, "key", "", "PEM client key `FILE` for mutual TLS (with --cert)")
	fs.BoolVar(&c.TLSOptions.Insecure, "insecure", false, "--tls without verifying the broker's certificate")
	fs.StringVar(&c.TLSOptions.ServerName, "server-name", "", "TLS server name to verify and send (default: the host of --broker)")
	fs.Var(&f.curves, "tls-curves", "key exchanges to offer, in order (X25519MLKEM768, X25519, P256, P384, P521; comma-separated; default crypto/tls's, post-quantum first)")
	fs.BoolVar(&c.TLSOptions.Resume, "tls-resume", false, "TLS session resumption: one full handshake per broker primes a shared ticket cache, every client then resumes (a fleet reconnecting)")
	fs.Float64Var(&c.Rate, "rate", 10, "messages per second per publisher (open loop)")
	fs.UintVar(&f.qos, "qos", 0, "QoS of publications and subscriptions: 0, 1 or 2")
	fs.IntVar(&c.Size, "size", 64, "payload bytes (at least the 26-byte bench header)")
	fs.StringVar(&c.Topic, "topic", "", "publish topic; %i = publisher index (default bench/<scenario>/%i)")
	fs.StringVar(&c.Filter, "filter", "", "subscription filter; %i = subscriber index (default derived from --topic)")
	fs.StringVar(&c.Group, "group", "bench", "shared-subscription group name (shared)")
	fs.BoolVar(&c.Persistent, "persistent", false, "persistent sessions (clean session 0 / clean start 0 + session expiry) with stable client ids")
	fs.Uint("session-expiry", 300, "5.0 session expiry in seconds for --persistent")
	fs.DurationVar(&c.KeepAlive, "keepalive", 60*time.Second, "MQTT keepalive")
	fs.DurationVar(&c.Duration, "duration", 10*time.Second, "publishing time (conn: hold time)")
	fs.DurationVar(&c.Warmup, "warmup", 0, "first part of --duration left out of rates and latencies")
	fs.DurationVar(&c.Drain, "drain", 5*time.Second, "wait this long for in-flight deliveries before counting losses")
	fs.DurationVar(&c.ConnectTimeout, "connect-timeout", 10*time.Second, "TCP connect + CONNACK (+ SUBACK) timeout")
	fs.StringVar(&c.Username, "username", "", "MQTT username")
	fs.StringVar(&c.Password, "password", "", "MQTT password")
	fs.StringVar(&c.ClientIDPrefix, "client-prefix", "", "client id prefix (default random; tern-bench- with --persistent)")
	fs.StringVar(&f.sources, "source", "", "local source addresses, e.g. 127.0.0.2-127.0.0.9,127.0.1.1 (~28k connections each)")
	fs.IntVar(&c.Loops, "loops", 0, "event loops (default GOMAXPROCS)")
	fs.IntVar(&c.Inflight, "inflight", 64, "unacknowledged QoS 1/2 publications per publisher")
	fs.IntVar(&c.BrokerPID, "broker-pid", 0, "broker process for CPU/RSS (0: find the listener of the first --broker; -1: none)")
	fs.BoolVar(&c.ClosedLoop, "closed-loop", false, "publishers send whenever their window (--inflight) has room; --rate ignored; latency from the actual send")
	fs.Float64Var(&c.SubRate, "sub-rate", 0, "each subscriber processes at most this many messages per second (0: unlimited), reading its socket no faster")
	fs.DurationVar(&c.SubStopAfter, "sub-stop-after", 0, "subscribers stop reading their sockets this long after publishing starts (0: never)")
	fs.BoolVar(&f.series, "series", false, "also print one line per second (sent/s, recv/s, p99 of that second, connections, broker RSS)")
	fs.IntVar(&c.DropEvery, "drop-every", 0, "self-test: skip writing every Nth message while counting it as sent")
	fs.BoolVar(&f.jsonOut, "json", false, "print the report as JSON")
	fs.StringVar(&f.cpuProfile, "cpuprofile", "", "write a CPU profile of the harness (whole run) to `FILE`, for go tool pprof")
	fs.BoolVar(&f.quiet, "quiet", false, "no live progress line")
	fs.BoolVar(&f.failOnLoss, "fail-on-loss", false, "exit 1 if any message was lost or a connection failed")
	fs.Usage = func() {
		fmt.Fprintf(errOut, "Usage: tern bench %s [flags]\n\nFlags:\n", cmd)
		fs.PrintDefaults()
	}
	return fs, f
}

// finish turns parsed flags into a Config.
func (f *benchFlags) finish(fs *flag.FlagSet, cmd string) (bench.Config, error) {
	c := f.cfg
	switch cmd {
	case "conn":
		c.Scenario = bench.ScenarioConn
	case "pub":
		c.Scenario = bench.ScenarioPub
	case "sub":
		c.Scenario = bench.ScenarioSub
	}
	c.Brokers = f.brokers
	c.PubBrokers = f.pubBrokers
	c.TLSOptions.Curves = f.curves
	switch f.protocol {
	case "3.1.1", "311", "4":
		c.Protocol = codec.Version311
	case "5.0", "5":
		c.Protocol = codec.Version5
	default:
		return c, fmt.Errorf("--protocol %q: want 3.1.1 or 5.0", f.protocol)
	}
	if f.qos > 2 {
		return c, fmt.Errorf("--qos %d: want 0, 1 or 2", f.qos)
	}
	c.QoS = byte(f.qos)
	if se := fs.Lookup("session-expiry"); se != nil {
		v, _ := strconv.ParseUint(se.Value.String(), 10, 32)
		c.SessionExpiry = uint32(v)
	}
	if f.sources != "" {
		s, err := bench.ParseSources(f.sources)
		if err != nil {
			return c, err
		}
		c.Sources = s
	}
	c.EnsureDefaults()
	return c, c.Validate()
}

func benchIsTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

func benchRun(ctx context.Context, cmd string, args []string, out, errOut io.Writer) int {
	fs, f := newBenchFlags(cmd, errOut)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(errOut, "tern bench %s: unexpected argument %q\n", cmd, fs.Arg(0))
		return 2
	}
	cfg, err := f.finish(fs, cmd)
	if err != nil {
		fmt.Fprintf(errOut, "tern bench %s: %v\n", cmd, err)
		return 2
	}
	if !f.quiet && benchIsTerminal(os.Stderr) {
		cfg.Progress = os.Stderr
	}
	stopProfile, err := benchStartProfile(f.cpuProfile)
	if err != nil {
		fmt.Fprintf(errOut, "tern bench %s: %v\n", cmd, err)
		return 1
	}
	rep, err := bench.Run(ctx, cfg)
	stopProfile()
	if err != nil {
		fmt.Fprintf(errOut, "tern bench %s: %v\n", cmd, err)
		return 1
	}
	if f.jsonOut {
		if err := rep.WriteJSON(out); err != nil {
			fmt.Fprintf(errOut, "tern bench %s: %v\n", cmd, err)
			return 1
		}
	} else {
		rep.WriteText(out)
		if f.series {
			rep.WriteSeries(out)
		}
	}
	if rep.Connect.Attempted > 0 && rep.Connect.Connected == 0 {
		// Nothing was measured: a report of zeros must not pass for a result.
		fmt.Fprintf(errOut, "tern bench %s: all %d connections failed%s\n", cmd, rep.Connect.Attempted, failureReasons(rep.Connect.Failures))
		return 1
	}
	if f.failOnLoss && (rep.Lost > 0 || rep.Connect.Failed > 0) {
		return 1
	}
	return 0
}

// failureReasons renders a report's connection failures by reason, most
// frequent first: ": connection refused ×3, …".
func failureReasons(by map[string]int) string {
	if len(by) == 0 {
		return ""
	}
	reasons := make([]string, 0, len(by))
	for r := range by {
		reasons = append(reasons, r)
	}
	sort.Slice(reasons, func(i, j int) bool {
		if by[reasons[i]] != by[reasons[j]] {
			return by[reasons[i]] > by[reasons[j]]
		}
		return reasons[i] < reasons[j]
	})
	parts := make([]string, len(reasons))
	for i, r := range reasons {
		parts[i] = fmt.Sprintf("%s ×%d", r, by[r])
	}
	return ": " + strings.Join(parts, ", ")
}

func benchCompare(ctx context.Context, args []string, out, errOut io.Writer) int {
	fs := flag.NewFlagSet("tern bench compare", flag.ContinueOnError)
	fs.SetOutput(errOut)
	var targets, pids benchList
	fs.Var(&targets, "broker", "`NAME=HOST:PORT` of a broker to compare (repeat; ratios are to the first)")
	fs.Var(&pids, "broker-pid", "`NAME=PID` of a broker process (default: found by listening port)")
	rounds := fs.Int("rounds", 3, "interleaved rounds per broker; medians are reported")
	pause := fs.Duration("pause", 500*time.Millisecond, "pause between runs")
	md := fs.String("markdown", "", "also write the markdown table to this `file`")
	jsonOut := fs.Bool("json", false, "print the comparison (all reports) as JSON instead of the table")
	fs.Usage = func() {
		fmt.Fprint(errOut, "Usage: tern bench compare --broker NAME=HOST:PORT … [flags] -- <run|conn|pub> [scenario flags]\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	rest := fs.Args()
	if len(rest) > 0 && rest[0] == "--" {
		rest = rest[1:]
	}
	cmd := "run"
	if len(rest) > 0 && (rest[0] == "run" || rest[0] == "conn" || rest[0] == "pub" || rest[0] == "sub") {
		cmd, rest = rest[0], rest[1:]
	}
	sfs, f := newBenchFlags(cmd, errOut)
	if err := sfs.Parse(rest); err != nil {
		return 2
	}
	if len(f.brokers) == 0 {
		f.brokers = benchList{"127.0.0.1:1"} // replaced per target; keeps Validate quiet
	}
	cfg, err := f.finish(sfs, cmd)
	if err != nil {
		fmt.Fprintf(errOut, "tern bench compare: %v\n", err)
		return 2
	}
	pidOf := map[string]int{}
	for _, p := range pids {
		name, v, ok := strings.Cut(p, "=")
		n, err := strconv.Atoi(v)
		if !ok || err != nil {
			fmt.Fprintf(errOut, "tern bench compare: --broker-pid %q: want NAME=PID\n", p)
			return 2
		}
		pidOf[name] = n
	}
	var ts []bench.Target
	for _, t := range targets {
		name, addr, ok := strings.Cut(t, "=")
		if !ok {
			name, addr = t, t
		}
		ts = append(ts, bench.Target{Name: name, Addr: addr, PID: pidOf[name]})
	}
	cmp, err := bench.Compare(ctx, bench.CompareOptions{Targets: ts, Rounds: *rounds, Pause: *pause, Config: cfg, Log: errOut})
	if err != nil && cmp == nil {
		fmt.Fprintf(errOut, "tern bench compare: %v\n", err)
		return 2
	}
	if e := benchOutput(out, *jsonOut, *md, cmp, cmp.WriteMarkdown); e != nil {
		fmt.Fprintf(errOut, "tern bench compare: %v\n", e)
		return 1
	}
	if err != nil {
		return 1
	}
	// A round that failed, or a broker no connection reached, leaves a
	// table of gaps or zeros: the comparison did not happen.
	failed := false
	for _, row := range cmp.Rows {
		if len(row.Errors) > 0 {
			failed = true
			fmt.Fprintf(errOut, "tern bench compare: %s: %d of %d rounds failed: %s\n", row.Target.Name, len(row.Errors), *rounds, row.Errors[0])
		}
		for _, rep := range row.Reports {
			if rep.Connect.Attempted > 0 && rep.Connect.Connected == 0 {
				failed = true
				fmt.Fprintf(errOut, "tern bench compare: %s: all %d connections failed%s\n", row.Target.Name, rep.Connect.Attempted, failureReasons(rep.Connect.Failures))
				break
			}
		}
	}
	if failed {
		return 1
	}
	return 0
}

// benchStartProfile starts a CPU profile into path (nothing when path is
// empty) and returns the function that stops it and closes the file.
func benchStartProfile(path string) (stop func(), err error) {
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

// benchOutput prints v as JSON (asJSON) or as markdown, and also writes
// the markdown to mdPath when it is set.
func benchOutput(out io.Writer, asJSON bool, mdPath string, v any, markdown func(io.Writer)) error {
	if asJSON {
		if err := benchWriteJSON(out, v); err != nil {
			return err
		}
	} else {
		markdown(out)
	}
	if mdPath == "" {
		return nil
	}
	var sb strings.Builder
	markdown(&sb)
	return os.WriteFile(mdPath, []byte(sb.String()), 0o644)
}

func benchWriteJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// benchSweep runs "tern bench sweep": a capacity sweep of one scenario.
func benchSweep(ctx context.Context, args []string, out, errOut io.Writer) int {
	fs, f := newBenchFlags("sweep", errOut)
	factor := fs.Float64("factor", 1.5, "rate multiplier from one step to the next")
	maxSteps := fs.Int("max-steps", 20, "most steps")
	maxP99 := fs.Duration("max-p99", 0, "a step whose p99 exceeds this is not sustainable (default: --knee × the first step's p99)")
	knee := fs.Float64("knee", 10, "without --max-p99: the knee is this many times the first step's p99")
	minDelivered := fs.Float64("min-delivered", 0.95, "fraction of the expected deliveries per second a sustainable step delivers")
	retries := fs.Int("retries", 1, "re-run a step that failed only on latency or rate this many times before stopping (−1: never)")
	md := fs.String("markdown", "", "also write the markdown table to this `file`")
	fs.Usage = func() {
		fmt.Fprint(errOut, "Usage: tern bench sweep --scenario S --rate FIRST-RATE-PER-PUB --duration STEP [flags]\n\n"+
			"Steps the offered rate up (×--factor, each step a fresh run of --duration) until a step loses a message,\n"+
			"fails a connection, delivers less than --min-delivered of what it should, or its p99 passes the knee.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(errOut, "tern bench sweep: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	cfg, err := f.finish(fs, "run")
	if err != nil {
		fmt.Fprintf(errOut, "tern bench sweep: %v\n", err)
		return 2
	}
	var log io.Writer
	if !f.quiet {
		log = errOut
	}
	sr, err := bench.Sweep(ctx, bench.SweepOptions{Config: cfg, Factor: *factor, MaxSteps: *maxSteps, MaxP99: *maxP99,
		KneeFactor: *knee, MinDelivered: *minDelivered, Retries: *retries, Log: log})
	if err != nil && sr == nil {
		fmt.Fprintf(errOut, "tern bench sweep: %v\n", err)
		return 2
	}
	if e := benchOutput(out, f.jsonOut, *md, sr, sr.WriteMarkdown); e != nil {
		fmt.Fprintf(errOut, "tern bench sweep: %v\n", e)
		return 1
	}
	if err != nil {
		fmt.Fprintf(errOut, "tern bench sweep: %v\n", err)
		return 1
	}
	return 0
}
