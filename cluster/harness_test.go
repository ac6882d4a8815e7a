package cluster_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// The cluster tests run real `tern serve` processes: the binary is built
// once in TestMain, each test starts three nodes on free loopback ports with
// their data on disk, and drives them with paho clients.

var ternBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "tern-cluster-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ternBin = filepath.Join(dir, "tern")
	args := []string{"build", "-o", ternBin}
	if os.Getenv("TERN_CLUSTER_RACE") != "" {
		args = append(args, "-race") // the nodes run with the race detector; a race makes them exit 66
	}
	build := exec.Command("go", append(args, "../cmd/tern")...)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building tern:", err)
		os.Exit(1)
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// node is one tern serve process of a test cluster.
type node struct {
	name                 string
	mqtt, cluster, admin string
	peers                []string
	dir                  string
	extra                []string
	cmd                  *exec.Cmd
	log                  *lockedBuf
}

// lockedBuf collects a process's log.
type lockedBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// freeAddr returns a loopback address with a port free right now, for a
// node to listen on later. A port the kernel picks (":0") comes from the
// ephemeral range, where any outgoing connection (a test client, a NATS
// route) may take it as its source port between this call and the node's
// bind: the "address already in use" flake of the cluster tests. So ports
// come from below the ephemeral range instead, which the kernel never
// hands out by itself, each probed by binding it and never handed out
// twice by this process; the start depends on the process id, so test
// binaries running side by side rarely probe the same ones.
func freeAddr(t testing.TB) string {
	t.Helper()
	lo, hi := listenPortRange()
	if lo == 0 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		return ln.Addr().String()
	}
	span := hi - lo
	for range 1000 {
		n := portCursor.Add(1)
		port := lo + (os.Getpid()*131+int(n))%span
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			continue
		}
		addr := ln.Addr().String()
		_ = ln.Close()
		return addr
	}
	t.Fatalf("no free port in [%d, %d)", lo, hi)
	return ""
}

// portCursor counts the ports freeAddr has tried.
var portCursor atomic.Int64

// listenPortRange returns the ports freeAddr may use: from 10,000 up to
// the start of the kernel's ephemeral range, or 0, 0 if that leaves too
// few (freeAddr then lets the kernel pick).
func listenPortRange() (lo, hi int) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0, 0
	}
	f := strings.Fields(string(b))
	if len(f) < 1 {
		return 0, 0
	}
	start, err := strconv.Atoi(f[0])
	if err != nil || start < 12000 {
		return 0, 0
	}
	return 10000, start
}

// startCluster starts n nodes (extra flags for every node) and waits until
// each hears all the others.
func startCluster(t *testing.T, n int, extra ...string) []*node {
	t.Helper()
	nodes := make([]*node, n)
	for i := range nodes {
		nodes[i] = &node{name: fmt.Sprintf("n%d", i+1), mqtt: freeAddr(t), cluster: freeAddr(t), admin: freeAddr(t),
			dir: filepath.Join(t.TempDir(), "data"), extra: extra}
	}
	for i, nd := range nodes {
		for j, o := range nodes {
			if i != j {
				nd.peers = append(nd.peers, o.cluster)
			}
		}
	}
	for _, nd := range nodes {
		nd.start(t)
	}
	t.Cleanup(func() {
		for _, nd := range nodes {
			nd.stop(syscall.SIGKILL)
			if strings.Contains(nd.log.String(), "WARNING: DATA RACE") {
				t.Errorf("%s reported a data race (TERN_CLUSTER_RACE)", nd.name)
			}
		}
		if t.Failed() {
			for _, nd := range nodes {
				t.Logf("--- log of %s:\n%s", nd.name, tail(nd.log.String(), 400))
			}
		}
	})
	for _, nd := range nodes {
		nd.waitMetric(t, "tern_cluster_peers", func(v float64) bool { return v == float64(n-1) })
	}
	return nodes
}

func tail(s string, lines int) string {
	parts := strings.Split(s, "\n")
	if len(parts) > lines {
		parts = parts[len(parts)-lines:]
	}
	return strings.Join(parts, "\n")
}

// start runs the node's process and waits for its MQTT listener.
func (nd *node) start(t *testing.T) {
	t.Helper()
	args := append([]string{"serve", "--listen", nd.mqtt, "--data", nd.dir, "--node", nd.name,
		"--cluster-listen", nd.cluster, "--cluster-peers", strings.Join(nd.peers, ","),
		"--admin", nd.admin, "--log-level", "info"}, nd.extra...)
	nd.cmd = exec.Command(ternBin, args...)
	if nd.log == nil {
		nd.log = &lockedBuf{}
	}
	nd.cmd.Stdout, nd.cmd.Stderr = nd.log, nd.log
	if err := nd.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.Dial("tcp", nd.mqtt)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not listen on %s:\n%s", nd.name, nd.mqtt, nd.log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop signals the process and waits for it.
func (nd *node) stop(sig syscall.Signal) {
	if nd.cmd == nil || nd.cmd.Process == nil {
		return
	}
	_ = nd.cmd.Process.Signal(sig)
	_ = nd.cmd.Wait()
	nd.cmd = nil
}

// metric reads one unlabelled sample from the node's /metrics.
func (nd *node) metric(name string) (float64, error) {
	resp, err := http.Get("http://" + nd.admin + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 1<<20))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			return strconv.ParseFloat(v, 64)
		}
	}
	return 0, fmt.Errorf("no metric %s", name)
}

// waitMetric waits until ok(value of name) holds.
func (nd *node) waitMetric(t *testing.T, name string, ok func(float64) bool) float64 {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		v, err := nd.metric(name)
		if err == nil && ok(v) {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s = %v (err %v), condition not met", nd.name, name, v, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitInterest waits until every node of nodes other than nd has at least
// want of the others' filters in its table.
func waitInterest(t *testing.T, nodes []*node, want float64) {
	t.Helper()
	for _, nd := range nodes {
		nd.waitMetric(t, "tern_cluster_remote_interest_entries", func(v float64) bool { return v >= want })
	}
}

// msg is one received message.
type msg struct {
	topic   string
	payload string
	qos     byte
	retain  bool
}

// inbox collects a client's messages.
type inbox struct {
	mu   sync.Mutex
	msgs []msg
}

func (in *inbox) handler(_ mqtt.Client, m mqtt.Message) {
	in.mu.Lock()
	in.msgs = append(in.msgs, msg{m.Topic(), string(m.Payload()), m.Qos(), m.Retained()})
	in.mu.Unlock()
}

func (in *inbox) snapshot() []msg {
	in.mu.Lock()
	defer in.mu.Unlock()
	return append([]msg(nil), in.msgs...)
}

// waitN waits until at least n messages arrived and returns them.
func (in *inbox) waitN(t *testing.T, n int, d time.Duration) []msg {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		got := in.snapshot()
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("got %d messages, want %d: %v", len(got), n, got)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type opt func(*mqtt.ClientOptions)

// connect connects a paho 3.1.1 client to addr.
func connect(t *testing.T, addr, id string, opts ...opt) mqtt.Client {
	t.Helper()
	c, err := tryConnect(addr, id, opts...)
	if err != nil {
		t.Fatalf("connect %s to %s: %v", id, addr, err)
	}
	t.Cleanup(func() {
		if c.IsConnected() {
			c.Disconnect(50)
		}
	})
	return c
}

func tryConnect(addr, id string, opts ...opt) (mqtt.Client, error) {
	o := mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).
		SetAutoReconnect(false).SetConnectRetry(false).SetProtocolVersion(4).
		SetConnectTimeout(5 * time.Second).SetWriteTimeout(5 * time.Second).SetOrderMatters(false)
	for _, f := range opts {
		f(o)
	}
	c := mqtt.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(8 * time.Second) {
		return nil, fmt.Errorf("timed out")
	}
	return c, tok.Error()
}

func wait(t *testing.T, tok mqtt.Token, what string) {
	t.Helper()
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("%s: %v", what, tok.Error())
	}
}
