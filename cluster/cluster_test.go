package cluster_test

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// TestClusterRoutingAcrossNodes: a message published on one node reaches
// the matching subscribers on the others at the granted QoS (the lower of
// the publish and the subscription [MQTT-3.8.4-8]), with wildcards, the
// '$' rule [MQTT-4.7.2-1] and topics of any bytes intact; a node with no
// matching filter receives nothing (interest, not broadcast).
func TestClusterRoutingAcrossNodes(t *testing.T) {
	nodes := startCluster(t, 3)
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]

	var wild, dollar, all inbox
	s2 := connect(t, n2.mqtt, "sub-n2")
	wait(t, s2.Subscribe("a/+/c", 2, wild.handler), "subscribe")
	wait(t, s2.Subscribe("w/#", 1, wild.handler), "subscribe")
	wait(t, s2.Subscribe("$d/#", 2, dollar.handler), "subscribe")
	wait(t, s2.Subscribe("odd/+/end", 2, wild.handler), "subscribe")
	s3 := connect(t, n3.mqtt, "sub-n3")
	wait(t, s3.Subscribe("#", 0, all.handler), "subscribe")
	waitInterest(t, []*node{n1}, 5)

	p := connect(t, n1.mqtt, "pub-n1")
	pubs := []struct {
		topic string
		qos   byte
	}{
		{"a/b/c", 0}, {"a/x/c", 1}, {"a/y/c", 2},
		{"w", 2},                           // "#" matches the parent level [MQTT-4.7.1-2]
		{"w/1/2/3", 2},                     // delivered at the subscription's QoS 1
		{"$d/x", 1},                        // only "$d/#", never "#" [MQTT-4.7.2-1]
		{"odd/ .*>~2E\u00e9/end", 2},       // a level of NATS-special bytes
		{"odd//end", 1},                    // an empty level
		{"not/matching/anything/on/n2", 1}, // n3's "#" only
	}
	for i, pb := range pubs {
		wait(t, p.Publish(pb.topic, pb.qos, false, fmt.Sprintf("m%d", i)), "publish "+pb.topic)
	}
	got := wild.waitN(t, 6, 5*time.Second)
	want := map[string]byte{"a/b/c": 0, "a/x/c": 1, "a/y/c": 2, "w": 1, "w/1/2/3": 1, "odd/ .*>~2E\u00e9/end": 2, "odd//end": 1}
	if len(got) < len(want) {
		got = wild.waitN(t, len(want), 5*time.Second)
	}
	for _, m := range got {
		q, ok := want[m.topic]
		if !ok {
			t.Errorf("unexpected %q on n2", m.topic)
			continue
		}
		if m.qos != q {
			t.Errorf("%q delivered at QoS %d, want %d", m.topic, m.qos, q)
		}
		delete(want, m.topic)
	}
	if len(want) > 0 {
		t.Errorf("not delivered on n2: %v", want)
	}
	if d := dollar.waitN(t, 1, 5*time.Second); d[0].topic != "$d/x" {
		t.Errorf("$d/# got %v", d)
	}
	allGot := all.waitN(t, len(pubs)-1, 5*time.Second)
	time.Sleep(300 * time.Millisecond)
	for _, m := range all.snapshot() {
		if m.topic[0] == '$' {
			t.Errorf("\"#\" on n3 got $-topic %q [MQTT-4.7.2-1]", m.topic)
		}
		if m.qos != 0 {
			t.Errorf("%q at QoS %d on a QoS 0 subscription", m.topic, m.qos)
		}
	}
	if len(all.snapshot()) != len(pubs)-1 {
		t.Errorf("n3 got %d messages, want %d (one copy each): %v", len(all.snapshot()), len(pubs)-1, allGot)
	}

	// Interest: a topic only n2 wants never reaches n3.
	before, _ := n3.metric("tern_cluster_received_total")
	s3.Unsubscribe("#").Wait()
	n1.waitMetric(t, "tern_cluster_remote_interest_entries", func(v float64) bool { return v == 4 })
	for i := range 20 {
		wait(t, p.Publish("a/b/c", 1, false, fmt.Sprint(i)), "publish")
	}
	wild.waitN(t, len(got)+20, 5*time.Second)
	if after, _ := n3.metric("tern_cluster_received_total"); after != before {
		t.Errorf("n3, with no matching filter, received %v forwarded messages", after-before)
	}
}

// TestClusterQoS2ExactlyOnceAcrossNodes: QoS 2 messages from a publisher on
// one node reach a subscriber on another exactly once and in order
// [MQTT-4.3.3] [MQTT-4.6.0-2]; overlapping subscriptions of one session
// give one copy [MQTT-3.3.5-1].
func TestClusterQoS2ExactlyOnceAcrossNodes(t *testing.T) {
	nodes := startCluster(t, 3)
	var in inbox
	// One handler for both filters: paho calls each matching route's handler.
	s := connect(t, nodes[2].mqtt, "q2-sub", func(o *mqtt.ClientOptions) {
		o.SetDefaultPublishHandler(in.handler).SetOrderMatters(true) // handlers in arrival order
	})
	wait(t, s.Subscribe("q/#", 2, nil), "subscribe")
	wait(t, s.Subscribe("q/+", 2, nil), "subscribe")
	waitInterest(t, nodes[:1], 2)
	p := connect(t, nodes[0].mqtt, "q2-pub")
	const n = 200
	for i := range n {
		wait(t, p.Publish("q/t", 2, false, fmt.Sprint(i)), "publish")
	}
	in.waitN(t, n, 10*time.Second)
	time.Sleep(300 * time.Millisecond) // anything extra (a duplicate) would arrive now
	got := in.snapshot()
	if len(got) != n {
		t.Fatalf("got %d, want exactly %d", len(got), n)
	}
	for i, m := range got {
		if m.payload != fmt.Sprint(i) {
			t.Fatalf("message %d is %q: out of order", i, m.payload)
		}
	}
}

// TestClusterRetainedAcrossNodes: a retained message set on one node is
// delivered on subscribe on any node [MQTT-3.3.1-6], cleared everywhere by
// an empty retained message [MQTT-3.3.1-10], and a node killed meanwhile
// catches up when it comes back.
func TestClusterRetainedAcrossNodes(t *testing.T) {
	nodes := startCluster(t, 3)
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	p := connect(t, n1.mqtt, "ret-pub")
	wait(t, p.Publish("r/1", 1, true, "one"), "retain")
	wait(t, p.Publish("r/2", 1, true, "two"), "retain")
	time.Sleep(300 * time.Millisecond)

	retainedOn := func(nd *node, filter string) []msg {
		var in inbox
		c := connect(t, nd.mqtt, fmt.Sprintf("ret-sub-%s-%d", nd.name, time.Now().UnixNano()))
		wait(t, c.Subscribe(filter, 1, in.handler), "subscribe")
		time.Sleep(300 * time.Millisecond)
		c.Disconnect(10)
		got := in.snapshot()
		sort.Slice(got, func(i, j int) bool { return got[i].topic < got[j].topic })
		return got
	}
	for _, nd := range []*node{n2, n3} {
		got := retainedOn(nd, "r/#")
		if len(got) != 2 || got[0].payload != "one" || got[1].payload != "two" || !got[0].retain {
			t.Fatalf("%s retained: %v", nd.name, got)
		}
	}
	// Clear on n2: gone on n1 and n3.
	c2 := connect(t, n2.mqtt, "ret-clear")
	wait(t, c2.Publish("r/1", 1, true, ""), "clear")
	time.Sleep(300 * time.Millisecond)
	for _, nd := range []*node{n1, n3} {
		if got := retainedOn(nd, "r/#"); len(got) != 1 || got[0].topic != "r/2" {
			t.Fatalf("%s after clear: %v", nd.name, got)
		}
	}

	// n3 dies; while it is down r/2 is cleared and r/3 set; it comes back
	// with its old store and catches up.
	n3.stop(syscall.SIGKILL)
	wait(t, p.Publish("r/2", 1, true, ""), "clear")
	wait(t, p.Publish("r/3", 1, true, "three"), "retain")
	n3.start(t)
	n3.waitMetric(t, "tern_cluster_peers", func(v float64) bool { return v == 2 })
	n3.waitMetric(t, "tern_cluster_retained_received_total", func(v float64) bool { return v >= 2 })
	if got := retainedOn(n3, "r/#"); len(got) != 1 || got[0].topic != "r/3" || got[0].payload != "three" {
		t.Fatalf("restarted n3 retained: %v, want only r/3", got)
	}
}

// TestClusterTakeoverAcrossNodes: a client id is connected on at most one
// node. Connecting on another node closes the first connection and
// publishes its will [MQTT-3.1.4-3]; two simultaneous CONNECTs on two nodes
// leave exactly one connected.
func TestClusterTakeoverAcrossNodes(t *testing.T) {
	nodes := startCluster(t, 3)
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	var wills inbox
	w := connect(t, n3.mqtt, "will-watch")
	wait(t, w.Subscribe("will/#", 1, wills.handler), "subscribe")
	waitInterest(t, nodes[:2], 1)

	lost := make(chan struct{}, 1)
	first := connect(t, n1.mqtt, "dup", func(o *mqtt.ClientOptions) {
		o.SetWill("will/dup", "gone", 1, false)
		o.SetConnectionLostHandler(func(mqtt.Client, error) { lost <- struct{}{} })
	})
	_ = first
	second := connect(t, n2.mqtt, "dup")
	select {
	case <-lost:
	case <-time.After(5 * time.Second):
		t.Fatal("the connection on n1 was not closed by the takeover on n2")
	}
	if got := wills.waitN(t, 1, 5*time.Second); got[0].payload != "gone" {
		t.Fatalf("will: %v", got)
	}
	if !second.IsConnected() {
		t.Fatal("the new connection on n2 did not stay")
	}
	if v, _ := n1.metric("tern_cluster_takeovers_total"); v != 1 {
		t.Errorf("n1 takeovers = %v, want 1", v)
	}

	// Simultaneous CONNECTs with one id on the three nodes, several rounds:
	// after each, exactly one is connected.
	for round := range 5 {
		id := fmt.Sprintf("race-%d", round)
		clients := make([]mqtt.Client, 3)
		var wg sync.WaitGroup
		for i, nd := range nodes {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, err := tryConnect(nd.mqtt, id)
				if err == nil {
					clients[i] = c
				}
			}()
		}
		wg.Wait()
		time.Sleep(time.Second)
		connected := 0
		for _, c := range clients {
			if c != nil && c.IsConnected() {
				connected++
				c.Disconnect(10)
			}
		}
		if connected != 1 {
			t.Fatalf("round %d: %d connections of one client id remain, want exactly 1", round, connected)
		}
	}
}

// TestClusterSharedAcrossNodes: a $share group with members on two nodes
// gets each message once, cluster-wide [MQTT-4.8.2], and both members
// serve.
func TestClusterSharedAcrossNodes(t *testing.T) {
	nodes := startCluster(t, 3)
	var a, b inbox
	ca := connect(t, nodes[1].mqtt, "share-a")
	wait(t, ca.Subscribe("$share/g/s/#", 1, a.handler), "subscribe")
	cb := connect(t, nodes[2].mqtt, "share-b")
	wait(t, cb.Subscribe("$share/g/s/#", 1, b.handler), "subscribe")
	waitInterest(t, nodes[:1], 2)
	p := connect(t, nodes[0].mqtt, "share-pub")
	const n = 100
	for i := range n {
		wait(t, p.Publish("s/x", 1, false, fmt.Sprint(i)), "publish")
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(a.snapshot())+len(b.snapshot()) < n && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	seen := map[string]int{}
	for _, m := range append(a.snapshot(), b.snapshot()...) {
		seen[m.payload]++
	}
	if len(seen) != n {
		t.Fatalf("%d distinct messages, want %d", len(seen), n)
	}
	for k, c := range seen {
		if c != 1 {
			t.Fatalf("message %s delivered %d times in the group", k, c)
		}
	}
	if len(a.snapshot()) == 0 || len(b.snapshot()) == 0 {
		t.Errorf("one member got everything: a=%d b=%d", len(a.snapshot()), len(b.snapshot()))
	}
}

// TestClusterNodeKilledAndRestarted: when a node dies (SIGKILL) clients on
// the others keep working, its clients reconnect elsewhere at once (clean
// sessions), and the node rejoins by itself when restarted.
func TestClusterNodeKilledAndRestarted(t *testing.T) {
	nodes := startCluster(t, 3)
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	var in inbox
	s := connect(t, n3.mqtt, "kr-sub")
	wait(t, s.Subscribe("k/#", 1, in.handler), "subscribe")
	waitInterest(t, []*node{n1, n2}, 1)
	onN2 := connect(t, n2.mqtt, "kr-moving")

	n2.stop(syscall.SIGKILL)
	_ = onN2
	p := connect(t, n1.mqtt, "kr-pub")
	for i := range 10 {
		wait(t, p.Publish("k/a", 1, false, fmt.Sprint(i)), "publish with n2 dead")
	}
	in.waitN(t, 10, 10*time.Second)
	// The client of the dead node reconnects to a survivor (2 of 3 is a majority).
	connect(t, n1.mqtt, "kr-moving")

	n2.start(t)
	for _, nd := range nodes {
		nd.waitMetric(t, "tern_cluster_peers", func(v float64) bool { return v == 2 })
	}
	var in2 inbox
	s2 := connect(t, n2.mqtt, "kr-sub2")
	wait(t, s2.Subscribe("k/#", 1, in2.handler), "subscribe")
	n1.waitMetric(t, "tern_cluster_remote_interest_entries", func(v float64) bool { return v >= 2 })
	wait(t, p.Publish("k/b", 1, false, "after"), "publish")
	if got := in2.waitN(t, 1, 5*time.Second); got[0].payload != "after" {
		t.Fatalf("restarted n2 got %v", got)
	}
}

// TestClusterDurabilityAcrossNodes: with durability sync, a QoS 1 message
// is acknowledged only once stored on the node holding the matching
// persistent session: SIGKILL of that node right after the PUBACK loses
// nothing, the messages are delivered after its restart [MQTT-4.3.2].
func TestClusterDurabilityAcrossNodes(t *testing.T) {
	nodes := startCluster(t, 3)
	n1, n2 := nodes[0], nodes[1]
	clean := func(o *mqtt.ClientOptions) { o.SetCleanSession(false) }
	s := connect(t, n2.mqtt, "durable-sub", clean)
	wait(t, s.Subscribe("dur/#", 1, func(mqtt.Client, mqtt.Message) {}), "subscribe")
	s.Disconnect(50) // offline: what comes is stored for it on n2
	waitInterest(t, []*node{n1}, 1)

	p := connect(t, n1.mqtt, "durable-pub")
	const n = 50
	for i := range n {
		wait(t, p.Publish("dur/x", 1, false, fmt.Sprint(i)), "publish") // PUBACK received
	}
	n2.stop(syscall.SIGKILL)
	n2.start(t)
	n2.waitMetric(t, "tern_cluster_peers", func(v float64) bool { return v == 2 })

	var in inbox
	var got atomic.Int32
	connect(t, n2.mqtt, "durable-sub", clean, func(o *mqtt.ClientOptions) {
		o.SetDefaultPublishHandler(func(c mqtt.Client, m mqtt.Message) { in.handler(c, m); got.Add(1) })
	})
	msgs := in.waitN(t, n, 10*time.Second)
	seen := map[string]bool{}
	for _, m := range msgs {
		seen[m.payload] = true
	}
	if len(seen) != n {
		t.Fatalf("after SIGKILL and restart of the subscriber's node: %d of %d acknowledged messages", len(seen), n)
	}
}

// TestClusterPersistentSessionMoves: a persistent session follows its
// client to another node with its subscriptions and the messages queued
// for it (Session Present 1 [MQTT-3.2.2-2]); the old node keeps no copy. A
// clean-start CONNECT elsewhere discards it [MQTT-3.1.2-4].
func TestClusterPersistentSessionMoves(t *testing.T) {
	nodes := startCluster(t, 3)
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	persistent := func(o *mqtt.ClientOptions) { o.SetCleanSession(false) }
	s := connect(t, n1.mqtt, "mover", persistent)
	wait(t, s.Subscribe("mv/#", 1, func(mqtt.Client, mqtt.Message) {}), "subscribe")
	s.Disconnect(50)
	waitInterest(t, []*node{n3}, 1)
	p := connect(t, n3.mqtt, "mv-pub")
	for i := range 20 {
		wait(t, p.Publish("mv/a", 1, false, fmt.Sprint(i)), "publish")
	}

	var in inbox
	handler := func(o *mqtt.ClientOptions) { o.SetDefaultPublishHandler(in.handler).SetOrderMatters(true) }
	c, err := tryConnect(n2.mqtt, "mover", persistent, handler)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Disconnect(10)
	got := in.waitN(t, 20, 10*time.Second)
	for i, m := range got[:20] {
		if m.payload != fmt.Sprint(i) {
			t.Fatalf("moved message %d is %q", i, m.payload)
		}
	}
	// Its subscription lives on n2 now: new messages arrive there.
	n3.waitMetric(t, "tern_cluster_remote_interest_entries", func(v float64) bool { return v >= 1 })
	wait(t, p.Publish("mv/a", 1, false, "after"), "publish")
	if got := in.waitN(t, 21, 5*time.Second); got[20].payload != "after" {
		t.Fatalf("after the move: %v", got[20:])
	}
	if v, _ := n1.metric("tern_sessions"); v != 0 {
		t.Errorf("n1 still holds %v sessions after the move", v)
	}
	if v, _ := n2.metric("tern_cluster_sessions_moved_total"); v != 1 {
		t.Errorf("n2 sessions moved = %v, want 1", v)
	}

	// Clean start on n1: the session on n2 ends.
	c.Disconnect(50)
	time.Sleep(200 * time.Millisecond)
	connect(t, n1.mqtt, "mover").Disconnect(50)
	n2.waitMetric(t, "tern_sessions", func(v float64) bool { return v == 0 })
}

// TestClusterMinorityRefusesConnects: a node that cannot reach a majority
// of the configured nodes (here: the other two are dead, as seen from a
// partition's minority side) refuses new CONNECTs with Server unavailable
// (3.1.1 return code 3 [MQTT-3.2.2-6]) and closes the connections it has
// (their client ids may be taken on the majority side), so no client id
// stays connected on both sides of a partition; the will of a closed
// connection is published [MQTT-3.1.2-8]. Once a majority is back it admits
// CONNECTs again.
func TestClusterMinorityRefusesConnects(t *testing.T) {
	nodes := startCluster(t, 3)
	n1 := nodes[0]
	lost := make(chan struct{}, 1)
	var wills inbox
	w := connect(t, n1.mqtt, "minority-will-watch", func(o *mqtt.ClientOptions) { o.SetDefaultPublishHandler(wills.handler) })
	wait(t, w.Subscribe("minority/will", 1, nil), "subscribe")
	connect(t, n1.mqtt, "minority-kept", func(o *mqtt.ClientOptions) {
		o.SetWill("minority/will", "gone", 1, false)
		o.SetConnectionLostHandler(func(mqtt.Client, error) { lost <- struct{}{} })
	})
	nodes[1].stop(syscall.SIGKILL)
	nodes[2].stop(syscall.SIGKILL)
	n1.waitMetric(t, "tern_cluster_peers", func(v float64) bool { return v == 0 })
	select {
	case <-lost:
	case <-time.After(5 * time.Second):
		t.Fatal("a connection on the node without a majority stayed open")
	}
	n1.waitMetric(t, "tern_cluster_majority", func(v float64) bool { return v == 0 })
	if v, _ := n1.metric("tern_cluster_minority_closed_total"); v < 2 {
		t.Errorf("minority closed = %v, want 2", v)
	}
	_, err := tryConnect(n1.mqtt, "minority-new")
	if err == nil || err.Error() != "server Unavailable" {
		t.Fatalf("CONNECT on a node without a majority: err %v, want server unavailable", err)
	}
	if v, _ := n1.metric("tern_cluster_claims_refused_total"); v < 1 {
		t.Errorf("claims refused = %v", v)
	}

	nodes[1].start(t)
	n1.waitMetric(t, "tern_cluster_majority", func(v float64) bool { return v == 1 })
	connect(t, n1.mqtt, "minority-after")
}

// TestClusterSecret: with cluster.secret set, nodes that share it form the
// cluster and a node with another secret cannot join it.
func TestClusterSecret(t *testing.T) {
	dir := t.TempDir()
	good, bad := dir+"/good.yaml", dir+"/bad.yaml"
	if err := os.WriteFile(good, []byte("cluster:\n  secret: s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, []byte("cluster:\n  secret: wrong\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	nodes := startCluster(t, 3, "--config", good) // waits until each hears the other two
	intruder := &node{name: "n4", mqtt: freeAddr(t), cluster: freeAddr(t), admin: freeAddr(t),
		dir: filepath.Join(t.TempDir(), "data"), peers: []string{nodes[0].cluster}, extra: []string{"--config", bad}}
	intruder.start(t)
	t.Cleanup(func() { intruder.stop(syscall.SIGKILL) })
	time.Sleep(3 * time.Second)
	if v, err := intruder.metric("tern_cluster_peers"); err != nil || v != 0 {
		t.Fatalf("a node with the wrong secret hears %v nodes (err %v)", v, err)
	}
	if v, _ := nodes[0].metric("tern_cluster_peers"); v != 2 {
		t.Fatalf("n1 hears %v nodes, want 2", v)
	}
}

// TestClusterQoS2ExactlyOnceWhileSessionsMove: persistent QoS 2 sessions
// move from one node to another while publishers on all three nodes send
// to them: nothing acknowledged is lost and nothing is delivered twice
// [MQTT-4.3.3-2] — a message that reached a session on both nodes during
// its move is kept once (origin dedupe), and none reaches the old node
// alone after it let go (the fence).
func TestClusterQoS2ExactlyOnceWhileSessionsMove(t *testing.T) {
	r := moveWhilePublishing(t, startCluster(t, 3), 150, 2)
	if r.acked < 300 {
		t.Errorf("only %d messages acknowledged: the test did not exercise the move", r.acked)
	}
	if r.lost > 0 {
		t.Errorf("%d acknowledged messages were never delivered", r.lost)
	}
	if r.dups > 0 {
		t.Errorf("%d messages delivered twice", r.dups)
	}
}

// TestClusterSysPerNode: each node publishes its $SYS values also under
// $SYS/nodes/<node>/..., and those reach subscribers on every node; the
// plain $SYS/broker/... topics stay each node's own. $ topics are matched
// only by filters naming them [MQTT-4.7.2-1].
func TestClusterSysPerNode(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "sys.yaml")
	if err := os.WriteFile(cfg, []byte("sys_interval: 1s\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	nodes := startCluster(t, 3, "--config", cfg)
	var per, own inbox
	c := connect(t, nodes[1].mqtt, "sys-watch")
	wait(t, c.Subscribe("$SYS/nodes/+/broker/uptime", 0, per.handler), "subscribe")
	wait(t, c.Subscribe("$SYS/broker/uptime", 0, own.handler), "subscribe")
	waitInterest(t, []*node{nodes[0], nodes[2]}, 2)
	deadline := time.Now().Add(10 * time.Second)
	for {
		seen := map[string]bool{}
		for _, m := range per.snapshot() {
			seen[m.topic] = true
		}
		if len(seen) == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("per-node uptime topics seen on n2: %v, want n1, n2 and n3", seen)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, m := range own.snapshot() {
		if m.topic != "$SYS/broker/uptime" {
			t.Errorf("$SYS/broker/uptime subscription got %q", m.topic)
		}
	}
	if n := len(own.snapshot()); n == 0 || n > len(per.snapshot()) {
		t.Errorf("n2's own uptime arrived %d times (per-node topics %d): another node's $SYS/broker leaked in?", n, len(per.snapshot()))
	}
}
