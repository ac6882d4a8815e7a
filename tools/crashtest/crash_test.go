package main

import (
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// The tern binary is built once per test binary, on first use, so tests that
// need no broker (TestCheck…) cost nothing. CRASHTEST_TERN=/path/to/tern
// uses that binary instead.
var (
	ternOnce sync.Once
	ternDir  string
	ternPath string
	ternErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if ternDir != "" {
		_ = os.RemoveAll(ternDir)
	}
	os.Exit(code)
}

func ternBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs tern as a subprocess; skipped with -short")
	}
	ternOnce.Do(func() {
		if ternPath = os.Getenv("CRASHTEST_TERN"); ternPath != "" {
			return // a prebuilt binary, e.g. to test the harness while the tree is mid-change
		}
		if ternDir, ternErr = os.MkdirTemp("", "crashtest-bin-"); ternErr == nil {
			ternPath, ternErr = buildTern(ternDir)
		}
	})
	if ternErr != nil {
		t.Fatal(ternErr)
	}
	return ternPath
}

// shortConfig is a cycle small enough for `make test`: a short traffic
// phase and a short quiet period, a few seconds per cycle.
func shortConfig(t *testing.T, bin string, extra []string) *config {
	return &config{
		tern:       bin,
		workDir:    t.TempDir(),
		extraArgs:  extra,
		publishers: 4,
		window:     16,
		maxMsgs:    1000,
		rate:       2500, // 1000 msgs last 400ms = killMax: the kill lands mid-stream
		killMin:    150 * time.Millisecond,
		killMax:    400 * time.Millisecond,
		quiet:      3 * time.Second, // only waited out when something is missing
		grace:      500 * time.Millisecond,
		collectMax: 15 * time.Second,
		verbose:    true,
		logf:       t.Logf,
	}
}

func runCycles(t *testing.T, cfg *config, cycles int) {
	t.Helper()
	reg := &registry{}
	t.Cleanup(reg.killAll) // no orphan brokers, whatever happens
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	var tot totals
	for n := 1; n <= cycles; n++ {
		r, err := runCycle(cfg, reg, n, rng)
		tot.add(r)
		t.Logf("cycle %d: %v", n, r)
		if err != nil {
			t.Fatalf("cycle %d: %v", n, err)
		}
	}
	t.Log(&tot)
	if tot.acked == 0 {
		t.Fatal("no message was acknowledged: the traffic phase did nothing")
	}
	if tot.failed() {
		t.Errorf("durability broken: %v", &tot)
	}
}

// TestCrashDurability is `make test`'s short version of `make test-crash`:
// SIGKILL mid-traffic, restart, nothing acknowledged lost [MQTT-4.3.2-2],
// no QoS 2 message twice [MQTT-4.3.3-2], order kept [MQTT-4.6.0-6],
// retained kept [MQTT-3.3.1-5].
func TestCrashDurability(t *testing.T) {
	bin := ternBinary(t)
	durable, err := advertisesDurability(bin)
	if err != nil {
		t.Fatal(err)
	}
	if !durable {
		t.Skip("tern serve --help has no --durability flag: the broker keeps state in memory only, so a crash test would just report every message lost; enable once durable storage lands")
	}
	runCycles(t, shortConfig(t, bin, []string{"--durability", "sync"}), 3)
}

// TestCrashDurabilityOverTLS is TestCrashDurability with every client on
// a TLS listener served by the event loops (tls_engine: loops): what was
// acknowledged over TLS survives SIGKILL the same way.
func TestCrashDurabilityOverTLS(t *testing.T) {
	bin := ternBinary(t)
	cfg := shortConfig(t, bin, []string{"--durability", "sync"})
	setup, err := newTLSSetup(cfg.workDir, "loops")
	if err != nil {
		t.Fatal(err)
	}
	cfg.tls = setup
	runCycles(t, cfg, 2)
}

// TestHarnessControl runs one cycle in control mode (the publishers'
// connections die instead of the broker) against whatever broker the tree
// builds, durable or not: it proves the harness reports no false losses or
// duplicates, and exercises the reconnecting QoS 2 publisher's PUBREL/DUP
// resend against a live session [MQTT-4.4.0-1].
func TestHarnessControl(t *testing.T) {
	cfg := shortConfig(t, ternBinary(t), nil)
	cfg.control = true
	runCycles(t, cfg, 1)
}

func TestCheck(t *testing.T) {
	mark := func(n int, seqs ...int) []bool {
		s := make([]bool, n+1)
		for _, q := range seqs {
			s[q] = true
		}
		return s
	}
	all := func(n int) []bool {
		s := make([]bool, n+1)
		for i := 1; i <= n; i++ {
			s[i] = true
		}
		return s
	}
	cases := []struct {
		name        string
		acked, sent []bool
		arrivals    []int
		exactlyOnce bool
		want        verdict
	}{
		{"all delivered", all(3), all(3), []int{1, 2, 3}, true, verdict{acked: 3}},
		{"unacked may arrive", mark(4, 1, 2), all(4), []int{1, 2, 3, 4}, true, verdict{acked: 2}},
		{"unacked may be missing", mark(4, 1, 2), all(4), []int{1, 2}, true, verdict{acked: 2}},
		{"[MQTT-4.3.2-2] acked missing is lost", all(4), all(4), []int{1, 3}, false, verdict{acked: 4, lost: 2}},
		{"[MQTT-4.3.3-2] qos2 twice is duplicated", all(3), all(3), []int{1, 2, 2, 3}, true, verdict{acked: 3, duplicated: 1}},
		{"[MQTT-4.3.2-2] qos1 twice is allowed", all(3), all(3), []int{1, 2, 3, 2, 3}, false, verdict{acked: 3, redelivered: 2}},
		{"[MQTT-4.6.0-6] reordered first deliveries", all(4), all(4), []int{1, 3, 2, 4}, true, verdict{acked: 4, outOfOrder: 1}},
		{"never sent is phantom", mark(3, 1), mark(3, 1), []int{1, 2, 9, 0}, true, verdict{acked: 1, phantom: 3}},
		{"nothing arrived", all(2), all(2), nil, true, verdict{acked: 2, lost: 2}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := check(c.acked, c.sent, c.arrivals, c.exactlyOnce); got != c.want {
				t.Errorf("got %+v, want %+v", got, c.want)
			}
		})
	}
}

func TestParsePayload(t *testing.T) {
	for in, want := range map[string]delivery{"p0:1": {"p0", 1}, "a:b:42": {"a:b", 42}} {
		if got, ok := parsePayload([]byte(in)); !ok || got != want {
			t.Errorf("parsePayload(%q) = %v, %v; want %v", in, got, ok, want)
		}
	}
	for _, bad := range []string{"", "p0", ":1", "p0:", "p0:x", "p0:0", "p0:-3"} {
		if _, ok := parsePayload([]byte(bad)); ok {
			t.Errorf("parsePayload(%q) accepted", bad)
		}
	}
}

func TestResultFailed(t *testing.T) {
	for _, r := range []result{{lost: 1}, {duplicated: 1}, {outOfOrder: 1}, {phantom: 1}, {qos2Incomplete: 1}, {retainedMissing: 1}} {
		if !r.failed() {
			t.Errorf("%v not failed", r)
		}
	}
	ok := result{acked: 10, redelivered: 3, sessionsLost: 0, stillSending: 2}
	if ok.failed() {
		t.Errorf("%v failed", ok)
	}
	if s := ok.String(); !strings.Contains(s, "retained=ok") {
		t.Errorf("String() = %q", s)
	}
}
