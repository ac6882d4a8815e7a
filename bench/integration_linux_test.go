//go:build linux

package bench

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// startMosquitto runs /usr/sbin/mosquitto on a free loopback port with a
// temporary config and returns its address and pid. The test is skipped
// (with a message saying what to install) when the binary is absent.
func startMosquitto(t *testing.T) (string, int) {
	t.Helper()
	return startMosquittoWith(t, t.TempDir(), "")
}

// startMosquittoWith is startMosquitto with its config file in dir and
// extra lines (e.g. cafile, certfile, keyfile) after the listener's.
func startMosquittoWith(t *testing.T, dir, extra string) (string, int) {
	t.Helper()
	bin := "/usr/sbin/mosquitto"
	if _, err := os.Stat(bin); err != nil {
		if p, err := exec.LookPath("mosquitto"); err == nil {
			bin = p
		} else {
			t.Skip("mosquitto not installed (apt-get install mosquitto): skipping the loopback integration test")
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	conf := filepath.Join(dir, "mosquitto.conf")
	body := fmt.Sprintf("listener %d 127.0.0.1\nallow_anonymous true\nmax_connections -1\npersistence false\nlog_dest none\n", port) + extra
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-c", conf)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return addr, cmd.Process.Pid
		}
	}
	t.Fatalf("mosquitto did not start listening on %s", addr)
	return "", 0
}

func TestRunP2PAgainstMosquitto(t *testing.T) {
	addr, pid := startMosquitto(t)
	for _, qos := range []byte{0, 1, 2} {
		t.Run(fmt.Sprintf("qos%d", qos), func(t *testing.T) {
			rep, err := Run(context.Background(), Config{
				Scenario: ScenarioP2P, Brokers: []string{addr}, Pubs: 5, Subs: 5, QoS: qos,
				Rate: 200, Duration: 700 * time.Millisecond, Warmup: 100 * time.Millisecond,
				Drain: 10 * time.Second, BrokerPID: pid, // drain ends as soon as all arrived
			})
			if err != nil {
				t.Fatal(err)
			}
			if testing.Verbose() {
				rep.WriteText(os.Stderr)
			}
			if rep.Connect.Connected != 10 || rep.Connect.Failed != 0 {
				t.Fatalf("connections: %+v", rep.Connect)
			}
			if rep.Sent < 100 || rep.Lost != 0 || rep.Delivery.Duplicated != 0 || rep.Received != rep.Sent {
				t.Fatalf("sent %d received %d lost %d dup %d", rep.Sent, rep.Received, rep.Lost, rep.Delivery.Duplicated)
			}
			if rep.Latency.Count == 0 || rep.Latency.P99Us <= 0 {
				t.Fatalf("no latency measured: %+v", rep.Latency)
			}
			if rep.Broker == nil || rep.Broker.PID != pid {
				t.Fatalf("broker not sampled: %+v", rep.Broker)
			}
		})
	}
}

// TestRunReportsDeliberateLoss skips the write of every 10th message of every
// publisher (while counting it as sent): the report must call exactly those
// messages lost, for every pair, whatever the scenario's pairing.
func TestRunReportsDeliberateLoss(t *testing.T) {
	addr, _ := startMosquitto(t)
	cases := []struct {
		scenario   string
		pubs, subs int
		receivers  int // receivers per publisher
	}{
		{ScenarioP2P, 3, 3, 1},
		{ScenarioFanOut, 1, 4, 4},
		{ScenarioFanIn, 4, 1, 1},
		{ScenarioShared, 4, 3, 1}, // the group is one receiver
	}
	for _, tc := range cases {
		t.Run(tc.scenario, func(t *testing.T) {
			rep, err := Run(context.Background(), Config{
				Scenario: tc.scenario, Brokers: []string{addr}, Pubs: tc.pubs, Subs: tc.subs, QoS: 1,
				Rate: 100, Duration: 500 * time.Millisecond, Drain: 10 * time.Second, DropEvery: 10, BrokerPID: -1,
			})
			if err != nil {
				t.Fatal(err)
			}
			d := rep.Delivery
			if d.Pairs != tc.pubs*tc.receivers || len(d.WorstPairs) != d.Pairs {
				t.Fatalf("pairs %d, with losses %d: want %d", d.Pairs, len(d.WorstPairs), tc.pubs*tc.receivers)
			}
			var want uint64
			for _, p := range d.WorstPairs {
				// Sequence numbers 9, 19, 29… below Sent were skipped.
				if p.Sent < 10 || p.Lost != p.Sent/10 {
					t.Errorf("pub %d → rcv %d: lost %d of %d, want %d", p.Pub, p.Rcv, p.Lost, p.Sent, p.Sent/10)
				}
				want += p.Lost
			}
			if rep.Lost != want || d.Duplicated != 0 || d.Unexpected != 0 || d.OutOfOrder != 0 {
				t.Fatalf("delivery %+v", d)
			}
			if rep.Received+rep.Lost != rep.Sent*uint64(tc.receivers) {
				t.Fatalf("received %d + lost %d != sent %d × %d receivers", rep.Received, rep.Lost, rep.Sent, tc.receivers)
			}
		})
	}
}

// TestRunLateSubscriberGapsCounted runs a standalone subscriber ("sub"
// scenario) that only sees messages from sequence 0 of a publisher that
// skipped some: loss is counted from the gaps, since it cannot know the total.
func TestRunSubScenarioCountsGaps(t *testing.T) {
	addr, _ := startMosquitto(t)
	type result struct {
		rep *Report
		err error
	}
	subDone := make(chan result, 1)
	go func() {
		rep, err := Run(context.Background(), Config{Scenario: ScenarioSub, Brokers: []string{addr}, Subs: 1,
			Topic: "gap/%i", Duration: 1500 * time.Millisecond, BrokerPID: -1})
		subDone <- result{rep, err}
	}()
	time.Sleep(300 * time.Millisecond) // let the subscriber subscribe
	pubRep, err := Run(context.Background(), Config{Scenario: ScenarioPub, Brokers: []string{addr}, Pubs: 2,
		Topic: "gap/%i", Rate: 100, Duration: 500 * time.Millisecond, DropEvery: 5, BrokerPID: -1})
	if err != nil {
		t.Fatal(err)
	}
	res := <-subDone
	if res.err != nil {
		t.Fatal(res.err)
	}
	got := res.rep
	if got.Received == 0 || got.Latency.Count == 0 {
		t.Fatalf("subscriber got nothing: %+v", got)
	}
	// Gaps: every 5th message, except any skipped after the last delivery.
	if got.Received+got.Lost > pubRep.Sent || got.Lost < pubRep.Sent/5-2 {
		t.Fatalf("sub received %d lost %d; pub sent %d", got.Received, got.Lost, pubRep.Sent)
	}
}

// TestRunClosedLoop runs publishers as fast as their window allows: every
// message arrives, none is stamped before it was sent (send lag 0), and
// the window bounds what is outstanding, so latency stays far below the
// run length.
func TestRunClosedLoop(t *testing.T) {
	addr, pid := startMosquitto(t)
	for _, qos := range []byte{1, 2} {
		t.Run(fmt.Sprintf("qos%d", qos), func(t *testing.T) {
			rep, err := Run(context.Background(), Config{
				Scenario: ScenarioP2P, Brokers: []string{addr}, Pubs: 2, Subs: 2, QoS: qos, ClosedLoop: true,
				Inflight: 8, Duration: 800 * time.Millisecond, Warmup: 100 * time.Millisecond,
				Drain: 10 * time.Second, BrokerPID: pid,
			})
			if err != nil {
				t.Fatal(err)
			}
			if rep.Sent < 100 || rep.Lost != 0 || rep.Delivery.Duplicated != 0 || rep.Received != rep.Sent {
				t.Fatalf("sent %d received %d lost %d dup %d", rep.Sent, rep.Received, rep.Lost, rep.Delivery.Duplicated)
			}
			if rep.SendLag.MaxUs != 0 {
				t.Fatalf("closed loop stamps the actual send time, send lag %+v", rep.SendLag)
			}
			if rep.Latency.Count == 0 || rep.Latency.P99Us > 500_000 {
				t.Fatalf("latency %+v: a window of 8 cannot hold messages this long", rep.Latency)
			}
			if !rep.ClosedLoop || len(rep.Series) == 0 {
				t.Fatalf("closed_loop %v, %d series entries", rep.ClosedLoop, len(rep.Series))
			}
			// The per-message path allocates nothing; what is counted is
			// the per-second bookkeeping (series, posted closures).
			if rep.HarnessAllocsPerMsg > 0.1 || rep.HarnessCPUPerMsgUs <= 0 || rep.BrokerCPUPerMsgUs < 0 {
				t.Fatalf("harness %.3f allocations and %.2f µs CPU per message", rep.HarnessAllocsPerMsg, rep.HarnessCPUPerMsgUs)
			}
		})
	}
}

// TestRunSubRate throttles the subscriber to 200 msg/s while its publisher
// offers 400 msg/s at QoS 1: the subscriber processes no faster than its
// limit during the window, and still gets everything once the drain lets
// it catch up (mosquitto queues up to 1,000 per client, more than sent).
func TestRunSubRate(t *testing.T) {
	addr, _ := startMosquitto(t)
	rep, err := Run(context.Background(), Config{
		Scenario: ScenarioP2P, Brokers: []string{addr}, Pubs: 1, Subs: 1, QoS: 1, Rate: 400, SubRate: 200,
		Duration: time.Second, Drain: 10 * time.Second, BrokerPID: -1,
	})
	if err != nil {
		t.Fatal(err)
	}
	var inWindow int64
	for _, s := range rep.Series {
		if s.T <= 1.05 {
			inWindow += s.Received
		}
	}
	if inWindow > 200+10+20 { // the rate, its 10 ms burst, a little timing slack
		t.Fatalf("received %d in the first second at --sub-rate 200 (series %+v)", inWindow, rep.Series)
	}
	if rep.Sent < 300 || rep.Lost != 0 || rep.Received != rep.Sent {
		t.Fatalf("sent %d received %d lost %d", rep.Sent, rep.Received, rep.Lost)
	}
	if rep.SubRate != 200 {
		t.Fatalf("report sub rate %g", rep.SubRate)
	}
}

// TestRunSubStopAfter stops the subscriber reading 200 ms into the run: it
// gets roughly what arrived before (plus what it had already read), the
// rest is reported lost, and its connection stays up (mosquitto has no
// slow-consumer timeout).
func TestRunSubStopAfter(t *testing.T) {
	addr, _ := startMosquitto(t)
	rep, err := Run(context.Background(), Config{
		Scenario: ScenarioP2P, Brokers: []string{addr}, Pubs: 1, Subs: 1, QoS: 1, Rate: 200,
		SubStopAfter: 200 * time.Millisecond, Duration: time.Second, Drain: time.Second, BrokerPID: -1,
	})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Received == 0 || rep.Received > 100 || rep.Lost != rep.Sent-rep.Received {
		t.Fatalf("sent %d received %d lost %d: want about 40 received, the rest lost", rep.Sent, rep.Received, rep.Lost)
	}
	if rep.Connect.Dropped != 0 {
		t.Fatalf("dropped %d connections", rep.Connect.Dropped)
	}
}

// TestSweepFindsSlowSubscriber sweeps mosquitto with subscribers that
// read at most 300 msg/s: 100 and 200 msg/s are sustainable, 400 msg/s is
// not (fewer deliveries per second than offered, on the retry too), so the
// capacity found is the 200 msg/s step's.
func TestSweepFindsSlowSubscriber(t *testing.T) {
	addr, _ := startMosquitto(t)
	sr, err := Sweep(context.Background(), SweepOptions{Config: Config{Scenario: ScenarioP2P, Brokers: []string{addr},
		Pubs: 1, Subs: 1, QoS: 1, Rate: 100, SubRate: 300, Duration: 700 * time.Millisecond, Warmup: 100 * time.Millisecond,
		Drain: 2 * time.Second, BrokerPID: -1}, Factor: 2, MaxP99: 5 * time.Second, MaxSteps: 5})
	if err != nil {
		t.Fatal(err)
	}
	if testing.Verbose() {
		sr.WriteMarkdown(os.Stderr)
	}
	// Steps may repeat (Retries) when the shared machine stalls one.
	last := sr.Steps[len(sr.Steps)-1]
	if last.RatePerPub != 400 || last.Sustainable || !strings.Contains(last.Reason, "delivered") ||
		sr.LastSustainable < 1 || sr.Steps[sr.LastSustainable].RatePerPub != 200 {
		t.Fatalf("sweep %+v", sr)
	}
	if c := sr.Capacity; c < 180 || c > 220 {
		t.Fatalf("capacity %.0f msg/s, want about 200", c)
	}
}

// TestRunIgnoresOtherRuns runs two harnesses at once on the same topics:
// each gets the other's messages too, counts them as foreign, and its own
// accounting stays exact (no phantom deliveries, duplicates or losses).
func TestRunIgnoresOtherRuns(t *testing.T) {
	addr, _ := startMosquitto(t)
	cfg := Config{Scenario: ScenarioP2P, Brokers: []string{addr}, Pubs: 2, Subs: 2, QoS: 1, Rate: 200,
		Duration: 800 * time.Millisecond, Drain: 10 * time.Second, BrokerPID: -1}
	reps := make(chan *Report, 2)
	errs := make(chan error, 2)
	for i := 0; i < 2; i++ {
		go func() {
			rep, err := Run(context.Background(), cfg)
			reps <- rep
			errs <- err
		}()
	}
	for i := 0; i < 2; i++ {
		rep, err := <-reps, <-errs
		if err != nil {
			t.Fatal(err)
		}
		d := rep.Delivery
		if rep.Foreign == 0 || rep.Lost != 0 || d.Duplicated != 0 || d.Unexpected != 0 || rep.Received != rep.Sent {
			t.Fatalf("sent %d received %d foreign %d delivery %+v", rep.Sent, rep.Received, rep.Foreign, d)
		}
	}
}
