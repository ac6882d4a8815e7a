package cluster_test

import (
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// TestClusterTakeoverSoak moves many persistent sessions from one node to
// another while QoS 1 messages flow to them, and counts what was
// acknowledged to the publisher but never delivered. Long: it runs only
// with TERN_CLUSTER_SOAK=1 (make test-cluster-soak); TERN_SOAK_SESSIONS
// sets the number of sessions (default 1000).
func TestClusterTakeoverSoak(t *testing.T) {
	if os.Getenv("TERN_CLUSTER_SOAK") == "" {
		t.Skip("set TERN_CLUSTER_SOAK=1 (make test-cluster-soak)")
	}
	sessions := 1000
	if v, err := strconv.Atoi(os.Getenv("TERN_SOAK_SESSIONS")); err == nil && v > 0 {
		sessions = v
	}
	nodes := startCluster(t, 3)
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]

	var mu sync.Mutex
	got := make(map[string]bool) // "session/seq"
	var dups atomic.Int64
	handler := func(_ mqtt.Client, m mqtt.Message) {
		mu.Lock()
		if got[string(m.Payload())] {
			dups.Add(1)
		}
		got[string(m.Payload())] = true
		mu.Unlock()
	}
	persistent := func(o *mqtt.ClientOptions) {
		o.SetCleanSession(false).SetDefaultPublishHandler(handler).SetKeepAlive(60 * time.Second)
	}
	id := func(i int) string { return fmt.Sprintf("soak-%d", i) }
	for i := range sessions {
		c := connect(t, n1.mqtt, id(i), persistent)
		wait(t, c.Subscribe(fmt.Sprintf("soak/%d", i), 1, nil), "subscribe")
	}
	n3.waitMetric(t, "tern_cluster_remote_interest_entries", func(v float64) bool { return v >= float64(sessions) })

	// Publishers on n3: QoS 1 to every session in turn, recording what
	// was acknowledged.
	var acked sync.Map
	var nAcked atomic.Int64
	stop := make(chan struct{})
	var pwg sync.WaitGroup
	for p := range 4 {
		pub := connect(t, n3.mqtt, fmt.Sprintf("soak-pub-%d", p), func(o *mqtt.ClientOptions) { o.SetAutoReconnect(true) })
		pwg.Add(1)
		go func() {
			defer pwg.Done()
			for seq := 0; ; seq++ {
				select {
				case <-stop:
					return
				default:
				}
				i := (seq*4 + p) % sessions
				payload := fmt.Sprintf("%d/%d/%d", i, p, seq)
				tok := pub.Publish(fmt.Sprintf("soak/%d", i), 1, false, payload)
				if tok.WaitTimeout(10*time.Second) && tok.Error() == nil {
					acked.Store(payload, true)
					nAcked.Add(1)
				}
			}
		}()
	}
	time.Sleep(2 * time.Second)
	// Every session moves to n2 while the publishers go on.
	start := time.Now()
	var moved atomic.Int64
	var mwg sync.WaitGroup
	sem := make(chan struct{}, 50)
	for i := range sessions {
		mwg.Add(1)
		sem <- struct{}{}
		go func() {
			defer mwg.Done()
			defer func() { <-sem }()
			c, err := tryConnect(n2.mqtt, id(i), persistent)
			if err != nil {
				t.Errorf("reconnect %s to n2: %v", id(i), err)
				return
			}
			moved.Add(1)
			t.Cleanup(func() { c.Disconnect(10) })
		}()
	}
	mwg.Wait()
	took := time.Since(start)
	time.Sleep(2 * time.Second)
	close(stop)
	pwg.Wait()
	time.Sleep(5 * time.Second) // the last deliveries
	lost := 0
	acked.Range(func(k, _ any) bool {
		mu.Lock()
		ok := got[k.(string)]
		mu.Unlock()
		if !ok {
			lost++
		}
		return true
	})
	mv, _ := n2.metric("tern_cluster_sessions_moved_total")
	t.Logf("sessions %d, moved %d (n2 counted %v) in %v; acknowledged %d, lost %d, duplicates %d",
		sessions, moved.Load(), mv, took.Round(time.Millisecond), nAcked.Load(), lost, dups.Load())
	if lost > 0 {
		t.Errorf("%d acknowledged messages were never delivered", lost)
	}
}
