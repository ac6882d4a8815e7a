package bench

import (
	"context"
	"strings"
	"testing"
)

func TestCompareInterleavesAndTakesMedians(t *testing.T) {
	var order []string
	fake := func(_ context.Context, c Config) (*Report, error) {
		order = append(order, c.Brokers[0])
		n := float64(len(order))
		r := &Report{Scenario: c.Scenario, RecvRate: 1000 * n}
		if c.Brokers[0] == "b:2" {
			r.RecvRate *= 2
		}
		r.Latency.P99Us = 100 * n
		return r, nil
	}
	cmp, err := Compare(context.Background(), CompareOptions{
		Targets: []Target{{Name: "a", Addr: "a:1"}, {Name: "b", Addr: "b:2"}},
		Rounds:  3, Pause: 1, Config: Config{Scenario: ScenarioP2P}, RunFunc: fake,
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(order, " "); got != "a:1 b:2 a:1 b:2 a:1 b:2" {
		t.Fatalf("run order %q, want interleaved rounds", got)
	}
	// a ran 1st, 3rd, 5th: rates 1000, 3000, 5000 → median 3000.
	if m := cmp.Rows[0].Median.RecvRate; m != 3000 {
		t.Fatalf("median a = %v", m)
	}
	if m := cmp.Rows[1].Median.RecvRate; m != 8000 {
		t.Fatalf("median b = %v", m)
	}
	var sb strings.Builder
	cmp.WriteMarkdown(&sb)
	if !strings.Contains(sb.String(), "| b | 8000 |") || !strings.Contains(sb.String(), "2.67×") {
		t.Fatalf("markdown:\n%s", sb.String())
	}
}

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		want float64
	}{{nil, 0}, {[]float64{3}, 3}, {[]float64{5, 1, 3}, 3}, {[]float64{4, 1, 3, 2}, 2.5}} {
		if got := median(tc.in); got != tc.want {
			t.Errorf("median(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestConfigValidateReportsEverything(t *testing.T) {
	c := Config{Scenario: "nope", QoS: 3, Brokers: []string{"nohostport"}, Topic: "a/+"}
	c.EnsureDefaults()
	err := c.Validate()
	if err == nil {
		t.Fatal("invalid config accepted")
	}
	for _, want := range []string{"scenario", "qos", "broker", "wildcards"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
	ok := Config{Scenario: ScenarioShared}
	ok.EnsureDefaults()
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	if f := ok.filterFor(3); f != "$share/bench/bench/shared/+" {
		t.Fatalf("shared filter %q", f)
	}
	p := Config{Scenario: ScenarioP2P}
	p.EnsureDefaults()
	if f := p.filterFor(3); f != "bench/p2p/3" {
		t.Fatalf("p2p filter %q", f)
	}
}

func TestParseSources(t *testing.T) {
	got, err := ParseSources("127.0.0.2-127.0.0.4, 10.0.0.1")
	if err != nil || strings.Join(got, ",") != "127.0.0.2,127.0.0.3,127.0.0.4,10.0.0.1" {
		t.Fatalf("%v %v", got, err)
	}
	if _, err := ParseSources("127.0.0.9-127.0.0.1"); err == nil {
		t.Fatal("reversed range accepted")
	}
}

func TestPayloadHeaderRoundTrip(t *testing.T) {
	p := make([]byte, 64)
	PutHeader(p, 0xdeadbeef, 7, 1<<40, -5)
	run, pub, seq, at, ok := ParseHeader(p)
	if !ok || run != 0xdeadbeef || pub != 7 || seq != 1<<40 || at != -5 {
		t.Fatalf("%x %d %d %d %v", run, pub, seq, at, ok)
	}
	if _, _, _, _, ok := ParseHeader([]byte("hello, this is not a bench payload")); ok {
		t.Fatal("foreign payload accepted")
	}
}
