package server

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ternmq/tern/codec"
)

// The admin API at fleet scale. A process may hold 20,000 descriptors on
// the benchmark machine, and 19,000 connections cost 19,000 on each side,
// so the broker runs in a child process (this test binary again, running
// TestAdminBenchBrokerProcess) and the benchmark holds the client side.
//
//	go test ./server -run '^$' -bench BenchmarkAdminAPIClients -benchtime 20x
//
// TERN_ADMIN_BENCH_CONNS sets the number of idle subscribed connections
// (default 19,000).

const adminBenchBrokerEnv = "TERN_ADMIN_BENCH_BROKER"

// TestAdminBenchBrokerProcess is the broker side of
// BenchmarkAdminAPIClients: skipped unless the benchmark started it. It
// prints "BROKER <mqtt addr> <admin addr>" and serves until its standard
// input closes.
func TestAdminBenchBrokerProcess(t *testing.T) {
	if os.Getenv(adminBenchBrokerEnv) == "" {
		t.Skip("the broker process of BenchmarkAdminAPIClients")
	}
	srv, addr := startBroker(t, func(o *Options) {
		o.AdminListen = "127.0.0.1:0"
		o.Logger = quietLogger()
	})
	fmt.Printf("BROKER %s %s\n", addr, srv.AdminAddr())
	_, _ = io.Copy(io.Discard, os.Stdin)
}

// startBrokerProcess runs the child broker and returns its addresses.
func startBrokerProcess(b *testing.B) (mqttAddr, adminAddr string) {
	cmd := exec.Command(os.Args[0], "-test.run=^TestAdminBenchBrokerProcess$", "-test.v", "-test.timeout=2h")
	cmd.Env = append(os.Environ(), adminBenchBrokerEnv+"=1", "TMPDIR="+b.TempDir())
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = stdin.Close() // the child closes its broker and exits
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
		}
	})
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 3 && f[0] == "BROKER" {
			go func() { _, _ = io.Copy(io.Discard, out) }()
			return f[1], f[2]
		}
	}
	b.Fatalf("broker process did not start: %v", sc.Err())
	return "", ""
}

// openIdleFleet opens n 3.1.1 connections, each subscribed to its own
// topic, with 8 dialers, and returns them.
func openIdleFleet(b *testing.B, addr string, n int) []net.Conn {
	conns := make([]net.Conn, n)
	var next atomic.Int64
	var failed atomic.Value
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			reply := make([]byte, 9) // CONNACK (4) + SUBACK (5)
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				c, err := net.DialTimeout("tcp", addr, 10*time.Second)
				if err != nil {
					failed.Store(err)
					return
				}
				id := fmt.Sprintf("dev-%06d", i)
				p := codec.Connect{ProtocolName: []byte("MQTT"), ProtocolVersion: 4, CleanStart: true, ClientID: []byte(id)}
				s := codec.Subscribe{PacketID: 1, Subscriptions: []codec.Subscription{{Filter: []byte("devices/" + id + "/cmd"), QoS: 1}}}
				_ = c.SetDeadline(time.Now().Add(30 * time.Second))
				_, err = c.Write(s.Append(p.Append(nil), 4))
				if err == nil {
					_, err = io.ReadFull(c, reply)
				}
				if err != nil {
					failed.Store(fmt.Errorf("%s: %w", id, err))
					c.Close()
					return
				}
				_ = c.SetDeadline(time.Time{})
				conns[i] = c
			}
		}()
	}
	wg.Wait()
	if err := failed.Load(); err != nil {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
		b.Fatal(err)
	}
	return conns
}

// getList makes one GET and returns the body size.
func getList(b *testing.B, hc *http.Client, u string) int {
	resp, err := hc.Get(u)
	if err != nil {
		b.Fatal(err)
	}
	n, _ := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		b.Fatalf("GET %s: %d", u, resp.StatusCode)
	}
	return int(n)
}

// publishRate pushes n QoS 1 PUBLISHes of 64 bytes (64 unacknowledged at
// most) to one QoS 1 subscriber through the broker at addr and returns
// the delivered messages per second.
func publishRate(b *testing.B, addr string, n int, tag string) float64 {
	el, _ := loopbackScenario{version: codec.Version311, qos: 1, window: 64}.run(b, nil, addr, n, tag)
	return float64(n) / el.Seconds()
}

// BenchmarkAdminAPIClients measures GET /api/v1/clients against a broker
// holding TERN_ADMIN_BENCH_CONNS idle subscribed connections: a page of
// 100, a search, the full list; and the QoS 1 publish rate through the
// same broker while nothing is requested, the full list once a second,
// or the page or the full list back to back (rounds interleaved so the
// ratios hold on a noisy machine).
func BenchmarkAdminAPIClients(b *testing.B) {
	n := 19_000
	if v := os.Getenv("TERN_ADMIN_BENCH_CONNS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil {
			b.Fatal(err)
		}
	}
	mqttAddr, adminAddr := startBrokerProcess(b)
	start := time.Now()
	conns := openIdleFleet(b, mqttAddr, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	b.Logf("%d connections open in %v", n, time.Since(start).Round(time.Millisecond))
	api := "http://" + adminAddr + "/api/v1/clients"
	hc := &http.Client{Timeout: time.Minute}
	var page ClientList
	resp, err := hc.Get(api + "?limit=1")
	if err != nil {
		b.Fatal(err)
	}
	if err := json.NewDecoder(resp.Body).Decode(&page); err != nil || page.Total < n {
		b.Fatalf("the broker lists %d clients (%v), want at least %d", page.Total, err, n)
	}
	resp.Body.Close()

	for _, q := range []struct{ name, query string }{
		{"page100", "?limit=100"},
		{"page100_deep", "?limit=100&after=dev-018000"},
		{"search", "?search=dev-01234&limit=100"},
		{"full", "?limit=100000"},
	} {
		b.Run(q.name, func(b *testing.B) {
			size := 0
			b.ResetTimer()
			for range b.N {
				size = getList(b, hc, api+q.query)
			}
			b.ReportMetric(float64(size), "bytes/resp")
		})
	}

	// Publish rate, with and without a concurrent lister.
	const msgs = 300_000
	rates := map[string][]float64{}
	for round := range 3 {
		for _, load := range []struct {
			name, query string
			every       time.Duration // 0: back to back
		}{{"idle", "", 0}, {"full_1hz", "?limit=100000", time.Second}, {"page100_loop", "?limit=100", 0}, {"full_loop", "?limit=100000", 0}} {
			stop := make(chan struct{})
			var lists atomic.Int64
			var wg sync.WaitGroup
			if load.query != "" {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						select {
						case <-stop:
							return
						default:
						}
						t := time.Now()
						getList(b, hc, api+load.query)
						lists.Add(1)
						if d := load.every - time.Since(t); d > 0 {
							select {
							case <-stop:
							case <-time.After(d):
							}
						}
					}
				}()
			}
			t0 := time.Now()
			r := publishRate(b, mqttAddr, msgs, fmt.Sprintf("%s-%d", load.name, round))
			el := time.Since(t0)
			close(stop)
			wg.Wait()
			rates[load.name] = append(rates[load.name], r)
			b.Logf("round %d %-13s %8.0f msg/s delivered, %d list requests done meanwhile (%.1f/s)",
				round, load.name, r, lists.Load(), float64(lists.Load())/el.Seconds())
		}
	}
	for _, name := range []string{"idle", "full_1hz", "page100_loop", "full_loop"} {
		var sum float64
		for _, r := range rates[name] {
			sum += r
		}
		b.Logf("publish %-13s mean %8.0f msg/s (%.0f%% of idle)", name, sum/3, 100*sum/sumOf(rates["idle"]))
	}
}

func sumOf(v []float64) float64 {
	s := 0.0
	for _, x := range v {
		s += x
	}
	return s
}

// BenchmarkClientsRegistry measures Clients alone (no HTTP, no JSON) over
// a registry of 19,000 online sessions without sockets: the walk and the
// page selection the admin API pays per request.
func BenchmarkClientsRegistry(b *testing.B) {
	srv, err := New(Options{Listeners: []string{"127.0.0.1:0"}, Durability: DurabilityNone, Logger: quietLogger()})
	if err != nil {
		b.Fatal(err)
	}
	for i := range 19_000 {
		id := fmt.Sprintf("dev-%06d", i)
		sess := newSession(id, &srv.opts)
		sess.setOnline(true)
		sh := srv.sessions.shard(id)
		sh.m.put(sess)
		srv.sessions.count.Add(1)
	}
	for _, tc := range []struct {
		name string
		f    ClientFilter
	}{
		{"page100", ClientFilter{Limit: 100}},
		{"page100_after", ClientFilter{Limit: 100, After: "dev-018000"}},
		{"search_id", ClientFilter{Limit: 100, Search: "dev-01234", Offline: true}},
		{"full", ClientFilter{}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for range b.N {
				if l := srv.Clients(tc.f); l.Total == 0 {
					b.Fatal("nothing listed")
				}
			}
		})
	}
}
