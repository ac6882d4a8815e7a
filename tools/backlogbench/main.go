// Command backlogbench measures Tern's disk-backed queues end to end, with
// the broker as a separate process it starts, kills and restarts itself:
//
//  1. start `tern serve` on a fresh data directory;
//  2. create -sessions persistent sessions (clean session 0), each
//     subscribed at QoS 1 to its own topic bl/<i>, and take them offline;
//  3. sample the broker's RSS, publish -per QoS 1 messages of -size bytes
//     to every topic (one publisher per topic by default, each keeping
//     -inflight unacknowledged), wait until every PUBACK arrived, and sample
//     RSS again: the growth divided by the messages queued is the broker's
//     memory per queued message (the queues are on disk; memory should not
//     grow with them);
//  4. SIGKILL the broker and start it again on the same directory: the time
//     from process start to the first accepted TCP connection is the
//     recovery time;
//  5. reconnect every session (clean session 0) and acknowledge what it
//     receives: each must get its -per messages exactly in publish order,
//     none missing — a lost message, a gap or a session without its stored
//     state fails the run (exit status 1). Per-session and aggregate drain
//     rates are reported, with the broker's peak RSS while draining.
//
// Each payload carries the session index and a sequence number (see
// putPayload), which is how order and completeness are checked.
//
//	go run ./tools/backlogbench -tern ./bin/tern -sessions 100 -per 50000
//
// The broker runs with its default configuration apart from -listen and
// -data (and -config FILE when given). Everything runs on loopback; the
// broker process is the only one started and it is stopped at the end.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"
)

// options are the command-line settings.
type options struct {
	tern     string
	addr     string
	data     string
	config   string
	sessions int
	per      int
	size     int
	pubs     int
	inflight int
	timeout  time.Duration
	jsonOut  bool
	keep     bool
}

// result is what one run measured; its JSON form is printed with -json.
type result struct {
	Sessions         int      `json:"sessions"`
	PerSession       int      `json:"per_session"`
	Messages         int64    `json:"messages"`
	PayloadBytes     int      `json:"payload_bytes"`
	Publishers       int      `json:"publishers"`
	Inflight         int      `json:"inflight"`
	PublishSeconds   float64  `json:"publish_s"`
	PublishRate      float64  `json:"publish_rate_per_s"`
	RSSBefore        int64    `json:"rss_before_bytes"`
	RSSAcked         int64    `json:"rss_all_acked_bytes"`
	RSSAckedSettled  int64    `json:"rss_all_acked_after_2s_bytes"`
	RSSPerMessage    float64  `json:"rss_per_queued_message_bytes"`
	RSSPerMsgSettled float64  `json:"rss_per_queued_message_after_2s_bytes"`
	DiskBytes        int64    `json:"data_dir_bytes"`
	StartSeconds     float64  `json:"restart_to_accepting_s"`
	RSSRestarted     int64    `json:"rss_after_restart_bytes"`
	DrainSeconds     float64  `json:"drain_s"`
	DrainRate        float64  `json:"drain_rate_per_s"`
	SessionRateMin   float64  `json:"session_drain_rate_min_per_s"`
	SessionRateMed   float64  `json:"session_drain_rate_median_per_s"`
	SessionRateMax   float64  `json:"session_drain_rate_max_per_s"`
	DrainRSSPeak     int64    `json:"drain_rss_peak_bytes"`
	Received         int64    `json:"received"`
	Lost             int64    `json:"lost"`
	Duplicates       int64    `json:"duplicates"`
	OutOfOrder       int64    `json:"out_of_order"`
	NoSession        int      `json:"sessions_not_present"`
	Errors           []string `json:"errors,omitempty"`
}

func main() {
	var o options
	flag.StringVar(&o.tern, "tern", "./bin/tern", "tern binary")
	flag.StringVar(&o.addr, "addr", "127.0.0.1:18890", "loopback address the broker listens on")
	flag.StringVar(&o.data, "data", "", "data directory (default: a new temporary one, removed afterwards)")
	flag.StringVar(&o.config, "config", "", "optional broker config file (default configuration otherwise)")
	flag.IntVar(&o.sessions, "sessions", 100, "offline persistent sessions")
	flag.IntVar(&o.per, "per", 50000, "messages queued per session")
	flag.IntVar(&o.size, "size", 64, "payload bytes (at least 16)")
	flag.IntVar(&o.pubs, "pubs", 0, "publisher connections (default: one per session)")
	flag.IntVar(&o.inflight, "inflight", 64, "unacknowledged QoS 1 publications per publisher")
	flag.DurationVar(&o.timeout, "timeout", 20*time.Minute, "give up after this long")
	flag.BoolVar(&o.jsonOut, "json", false, "print the result as JSON")
	flag.BoolVar(&o.keep, "keep", false, "keep the data directory")
	flag.Parse()
	if o.pubs <= 0 || o.pubs > o.sessions {
		o.pubs = o.sessions
	}
	o.size = max(o.size, payloadHeader)
	res, err := run(o)
	if res != nil {
		if o.jsonOut {
			enc := json.NewEncoder(os.Stdout)
			enc.SetIndent("", "  ")
			_ = enc.Encode(res)
		} else {
			printText(res)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "backlogbench:", err)
		os.Exit(1)
	}
	if res.Lost > 0 || res.OutOfOrder > 0 || res.NoSession > 0 || len(res.Errors) > 0 {
		fmt.Fprintln(os.Stderr, "backlogbench: FAILED: messages lost, out of order or sessions missing")
		os.Exit(1)
	}
}

// run performs the steps of the package comment.
func run(o options) (*result, error) {
	deadline := time.Now().Add(o.timeout)
	if o.data == "" {
		d, err := os.MkdirTemp("", "backlogbench-")
		if err != nil {
			return nil, err
		}
		o.data = d
		if !o.keep {
			defer os.RemoveAll(d)
		}
	}
	res := &result{Sessions: o.sessions, PerSession: o.per, Messages: int64(o.sessions) * int64(o.per),
		PayloadBytes: o.size, Publishers: o.pubs, Inflight: o.inflight}
	b := &broker{bin: o.tern, addr: o.addr, data: o.data, config: o.config}
	if _, err := b.start(); err != nil {
		return nil, err
	}
	defer b.stop()
	logf("broker pid %d on %s, data %s", b.pid(), o.addr, o.data)

	if err := createSessions(o); err != nil {
		return nil, fmt.Errorf("creating sessions: %w", err)
	}
	time.Sleep(time.Second) // let the session writes and disconnects settle
	res.RSSBefore = b.rss()
	logf("%d offline sessions; broker RSS %s; publishing %d messages", o.sessions, mib(res.RSSBefore), res.Messages)

	t0 := time.Now()
	if err := publishAll(o, deadline); err != nil {
		return res, fmt.Errorf("publishing: %w", err)
	}
	res.PublishSeconds = time.Since(t0).Seconds()
	res.PublishRate = float64(res.Messages) / res.PublishSeconds
	res.RSSAcked = b.rss()
	time.Sleep(2 * time.Second)
	res.RSSAckedSettled = b.rss()
	res.RSSPerMessage = float64(res.RSSAcked-res.RSSBefore) / float64(res.Messages)
	res.RSSPerMsgSettled = float64(res.RSSAckedSettled-res.RSSBefore) / float64(res.Messages)
	res.DiskBytes = dirSize(o.data)
	logf("published in %.1fs (%.0f msg/s); RSS %s → %s (%.1f B/msg), after 2 s %s; data dir %s",
		res.PublishSeconds, res.PublishRate, mib(res.RSSBefore), mib(res.RSSAcked), res.RSSPerMessage,
		mib(res.RSSAckedSettled), mib(res.DiskBytes))

	b.kill()
	startup, err := b.start()
	if err != nil {
		return res, fmt.Errorf("restart: %w", err)
	}
	res.StartSeconds = startup.Seconds()
	res.RSSRestarted = b.rss()
	logf("SIGKILLed and restarted: accepting after %.3fs, RSS %s", res.StartSeconds, mib(res.RSSRestarted))

	dr := drainAll(o, b, deadline)
	res.DrainSeconds = dr.elapsed.Seconds()
	if res.DrainSeconds > 0 {
		res.DrainRate = float64(dr.received) / res.DrainSeconds
	}
	rates := dr.rates
	sort.Float64s(rates)
	if len(rates) > 0 {
		res.SessionRateMin, res.SessionRateMed, res.SessionRateMax = rates[0], rates[len(rates)/2], rates[len(rates)-1]
	}
	res.DrainRSSPeak = dr.rssPeak
	res.Received, res.Lost, res.Duplicates, res.OutOfOrder, res.NoSession = dr.received, dr.lost, dr.dups, dr.ooo, dr.noSession
	res.Errors = dr.errs
	logf("drained %d in %.1fs (%.0f msg/s); lost %d, duplicates %d, out of order %d",
		dr.received, res.DrainSeconds, res.DrainRate, dr.lost, dr.dups, dr.ooo)
	return res, nil
}

// printText writes the human summary.
func printText(r *result) {
	fmt.Printf("sessions %d × %d QoS 1 messages of %d B = %d queued offline (publishers %d, inflight %d)\n",
		r.Sessions, r.PerSession, r.PayloadBytes, r.Messages, r.Publishers, r.Inflight)
	fmt.Printf("publish     %.1f s, %.0f msg/s (every PUBACK received)\n", r.PublishSeconds, r.PublishRate)
	fmt.Printf("broker RSS  before %s, all acknowledged %s (%.1f B per queued message), 2 s later %s (%.1f B); data dir %s\n",
		mib(r.RSSBefore), mib(r.RSSAcked), r.RSSPerMessage, mib(r.RSSAckedSettled), r.RSSPerMsgSettled, mib(r.DiskBytes))
	fmt.Printf("restart     SIGKILL, then process start → accepting connections %.3f s; RSS %s\n", r.StartSeconds, mib(r.RSSRestarted))
	fmt.Printf("drain       %d received in %.1f s: %.0f msg/s aggregate; per session min %.0f, median %.0f, max %.0f msg/s; peak RSS %s\n",
		r.Received, r.DrainSeconds, r.DrainRate, r.SessionRateMin, r.SessionRateMed, r.SessionRateMax, mib(r.DrainRSSPeak))
	fmt.Printf("delivery    lost %d, duplicates %d, out of order %d, sessions not present %d\n",
		r.Lost, r.Duplicates, r.OutOfOrder, r.NoSession)
	for _, e := range r.Errors {
		fmt.Printf("  error: %s\n", e)
	}
}

func logf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, time.Now().Format("15:04:05 ")+format+"\n", a...)
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// dirSize sums the sizes of the regular files under dir.
func dirSize(dir string) int64 {
	var n int64
	_ = filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			n += fi.Size()
		}
		return nil
	})
	return n
}
