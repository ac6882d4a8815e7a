// Command connstorm measures how fast a broker running in another process
// takes a connect storm: -n plain-TCP MQTT 3.1.1 clients, -parallel at a
// time, each dialing, sending CONNECT (optionally with a user name and
// password, optionally clean session 0 with a stable client id) and
// optionally a SUBSCRIBE to its own topic, then staying connected. It
// reports connects/s, the CONNACK latency (from the dial and from the
// CONNECT's write) and, with -pid, the broker's CPU per connect. -rounds 2
// closes every client after the first storm and connects them all again:
// a fleet reconnecting after an outage (persistent sessions are resumed,
// verified passwords may be remembered).
//
//	connstorm -addr 127.0.0.1:1883 -n 19000 -parallel 256 -pid 1234
//
// Any broker: it speaks only MQTT. The client runs on the same machine, so
// the rates are those of the pair; compare brokers in the same run.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ternmq/tern/codec"
)

type config struct {
	addr, user, pass, prefix, source string
	n, parallel, rounds, pid         int
	persistent, subscribe            bool
	timeout                          time.Duration
}

func main() {
	var c config
	flag.StringVar(&c.addr, "addr", "127.0.0.1:1883", "broker `HOST:PORT`")
	flag.IntVar(&c.n, "n", 19000, "clients")
	flag.IntVar(&c.parallel, "parallel", 256, "connects in flight at a time")
	flag.IntVar(&c.rounds, "rounds", 1, "storms: 2 = connect all, close all, connect all again")
	flag.IntVar(&c.pid, "pid", 0, "broker `PID` for its CPU time (0: not measured)")
	flag.StringVar(&c.user, "username", "", "MQTT user name; %i is replaced by the client's index")
	flag.StringVar(&c.pass, "password", "", "MQTT password; %i is replaced by the client's index")
	flag.StringVar(&c.prefix, "prefix", "storm", "client id prefix (ids are PREFIX-INDEX)")
	flag.StringVar(&c.source, "source", "", "local source addresses, comma-separated, used in turn (e.g. 127.0.0.2,127.0.0.3)")
	flag.BoolVar(&c.persistent, "persistent", false, "clean session 0: a persistent session per client, resumed in round 2")
	flag.BoolVar(&c.subscribe, "subscribe", false, "SUBSCRIBE (QoS 1) to PREFIX/INDEX after CONNACK, before counting the client as connected")
	flag.DurationVar(&c.timeout, "timeout", 30*time.Second, "per-client dial + CONNACK (+ SUBACK) timeout")
	flag.Parse()
	if err := run(c); err != nil {
		fmt.Fprintln(os.Stderr, "connstorm:", err)
		os.Exit(1)
	}
}

func run(c config) error {
	var sources []*net.TCPAddr
	for _, s := range strings.Split(c.source, ",") {
		if s = strings.TrimSpace(s); s != "" {
			ip := net.ParseIP(s)
			if ip == nil {
				return fmt.Errorf("bad -source address %q", s)
			}
			sources = append(sources, &net.TCPAddr{IP: ip})
		}
	}
	conns := make([]net.Conn, c.n)
	for round := 1; round <= c.rounds; round++ {
		cpu0 := procCPU(c.pid)
		lat := make([]time.Duration, c.n)  // dial → CONNACK
		alat := make([]time.Duration, c.n) // CONNECT written → CONNACK
		var next, failed atomic.Int64
		var firstErr atomic.Value
		var wg sync.WaitGroup
		start := time.Now()
		for range c.parallel {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					i := int(next.Add(1) - 1)
					if i >= c.n {
						return
					}
					var d net.Dialer
					d.Timeout = c.timeout
					if len(sources) > 0 {
						d.LocalAddr = sources[i%len(sources)]
					}
					t0 := time.Now()
					conn, t1, err := connect(&d, c, i)
					if err != nil {
						failed.Add(1)
						firstErr.CompareAndSwap(nil, err)
						continue
					}
					now := time.Now()
					lat[i], alat[i] = now.Sub(t0), now.Sub(t1)
					conns[i] = conn
				}
			}()
		}
		wg.Wait()
		elapsed := time.Since(start)
		cpu1 := procCPU(c.pid)
		ok := c.n - int(failed.Load())
		fmt.Printf("round %d: %d/%d connected in %.2fs: %.0f connects/s; CONNACK from dial p50 %s p99 %s max %s; from CONNECT p50 %s p99 %s",
			round, ok, c.n, elapsed.Seconds(), float64(ok)/elapsed.Seconds(),
			pct(lat, 50), pct(lat, 99), pct(lat, 100), pct(alat, 50), pct(alat, 99))
		if c.pid > 0 && ok > 0 {
			fmt.Printf("; broker CPU %.0f µs/connect", float64(cpu1-cpu0)/1e3/float64(ok))
		}
		fmt.Println()
		if err, _ := firstErr.Load().(error); err != nil {
			fmt.Printf("  first failure: %v\n", err)
		}
		if round < c.rounds {
			for i, conn := range conns {
				if conn != nil {
					_, _ = conn.Write([]byte{0xE0, 0}) // DISCONNECT: no will, session kept if persistent
					_ = conn.Close()
					conns[i] = nil
				}
			}
			time.Sleep(time.Second) // let the broker process the closes
		}
	}
	for _, conn := range conns {
		if conn != nil {
			_ = conn.Close()
		}
	}
	return nil
}

// connect dials, sends CONNECT (and SUBSCRIBE) and waits for CONNACK (and
// SUBACK). It returns the connection and when the CONNECT was written.
func connect(d *net.Dialer, c config, i int) (net.Conn, time.Time, error) {
	conn, err := d.Dial("tcp", c.addr)
	if err != nil {
		return nil, time.Time{}, err
	}
	_ = conn.SetDeadline(time.Now().Add(c.timeout))
	p := codec.Connect{ProtocolName: []byte("MQTT"), ProtocolVersion: codec.Version311, CleanStart: !c.persistent,
		KeepAlive: 600, ClientID: []byte(c.prefix + "-" + strconv.Itoa(i))}
	idx := strconv.Itoa(i)
	if c.user != "" {
		p.Username, p.UsernameFlag = []byte(strings.ReplaceAll(c.user, "%i", idx)), true
	}
	if c.pass != "" {
		p.Password, p.PasswordFlag = []byte(strings.ReplaceAll(c.pass, "%i", idx)), true
	}
	t1 := time.Now()
	if _, err := conn.Write(p.Append(nil)); err != nil {
		conn.Close()
		return nil, t1, err
	}
	var ack [4]byte
	if _, err := io.ReadFull(conn, ack[:]); err != nil {
		conn.Close()
		return nil, t1, fmt.Errorf("waiting for CONNACK: %w", err)
	}
	if ack[0] != 0x20 || ack[3] != 0 {
		conn.Close()
		return nil, t1, fmt.Errorf("CONNACK % x: refused", ack)
	}
	if c.subscribe {
		s := codec.Subscribe{PacketID: 1, Subscriptions: []codec.Subscription{{Filter: []byte(c.prefix + "/" + strconv.Itoa(i)), QoS: 1}}}
		if _, err := conn.Write(s.Append(nil, codec.Version311)); err != nil {
			conn.Close()
			return nil, t1, err
		}
		var sack [5]byte
		if _, err := io.ReadFull(conn, sack[:]); err != nil || sack[0] != 0x90 || sack[4] > 2 {
			conn.Close()
			return nil, t1, errors.Join(errors.New("SUBACK missing or refused"), err)
		}
	}
	_ = conn.SetDeadline(time.Time{})
	return conn, t1, nil
}

func pct(d []time.Duration, p int) time.Duration {
	s := slices.Clone(d)
	s = slices.DeleteFunc(s, func(x time.Duration) bool { return x == 0 })
	if len(s) == 0 {
		return 0
	}
	slices.Sort(s)
	i := min(len(s)-1, len(s)*p/100)
	return s[i].Round(10 * time.Microsecond)
}

// procCPU returns the user+system CPU time of process pid in ns (0 if
// unknown), from /proc/PID/stat (Linux; clock ticks of 10 ms).
func procCPU(pid int) int64 {
	if pid <= 0 {
		return 0
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	k, _ := strconv.ParseInt(f[12], 10, 64)
	return (u + k) * 1e7
}
