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
// another while messages flow to them, and counts what was acknowledged to
// the publishers but never delivered, and what was delivered twice. Long:
// it runs only with TERN_CLUSTER_SOAK=1 (make test-cluster-soak);
// TERN_SOAK_SESSIONS sets the number of sessions (default 1000),
// TERN_SOAK_QOS the QoS (default 2).
func TestClusterTakeoverSoak(t *testing.T) {
	if os.Getenv("TERN_CLUSTER_SOAK") == "" {
		t.Skip("set TERN_CLUSTER_SOAK=1 (make test-cluster-soak)")
	}
	sessions := 1000
	if v, err := strconv.Atoi(os.Getenv("TERN_SOAK_SESSIONS")); err == nil && v > 0 {
		sessions = v
	}
	qos := byte(2)
	if v, err := strconv.Atoi(os.Getenv("TERN_SOAK_QOS")); err == nil && v >= 1 && v <= 2 {
		qos = byte(v)
	}
	r := moveWhilePublishing(t, startCluster(t, 3), sessions, qos)
	if r.lost > 0 {
		t.Errorf("%d acknowledged messages were never delivered", r.lost)
	}
	if qos == 2 && r.dups > 0 {
		t.Errorf("%d QoS 2 messages delivered twice [MQTT-4.3.3-2]", r.dups)
	}
}

// moveResult is what moveWhilePublishing counted.
type moveResult struct {
	acked, lost, dups, resent int
}

// moveWhilePublishing subscribes sessions persistent clients on the first
// node, has one publisher on each node send to them in turn at qos, moves
// every session to the second node meanwhile (50 at a time), and counts:
// lost (acknowledged to its publisher, never delivered), dups (a message
// delivered again as a new delivery: what exactly-once forbids) and resent
// (delivered again as the protocol's re-send of an unacknowledged delivery:
// DUP set, the same packet id, after the connection changed — a receiver
// keeping QoS 2 packet ids until PUBREL, as [MQTT-4.3.3] describes, passes
// it on once; paho.mqtt.golang passes it on again).
func moveWhilePublishing(t *testing.T, nodes []*node, sessions int, qos byte) moveResult {
	t.Helper()
	n1, n2 := nodes[0], nodes[1]
	type seen struct {
		id  uint16
		gen int32
	}
	var mu sync.Mutex
	got := make(map[string]seen) // payload → the delivery that brought it
	var dups, resent atomic.Int64
	id := func(i int) string { return fmt.Sprintf("move-%d", i) }
	// gen numbers a session's connections (0 on the first node, 1 after the move).
	persistent := func(gen int32) opt {
		return func(o *mqtt.ClientOptions) {
			o.SetCleanSession(false).SetKeepAlive(60 * time.Second).
				SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) {
					mu.Lock()
					defer mu.Unlock()
					p := string(m.Payload())
					prev, ok := got[p]
					switch {
					case !ok:
						got[p] = seen{m.MessageID(), gen}
					case m.Duplicate() && prev.id == m.MessageID() && prev.gen != gen:
						resent.Add(1)
					default:
						dups.Add(1)
						t.Logf("delivered again: %q packet id %d DUP %v on connection %d (first: packet id %d on connection %d)",
							p, m.MessageID(), m.Duplicate(), gen, prev.id, prev.gen)
					}
				})
		}
	}
	for i := range sessions {
		c := connect(t, n1.mqtt, id(i), persistent(0))
		wait(t, c.Subscribe(fmt.Sprintf("move/%d", i), qos, nil), "subscribe")
	}
	waitInterest(t, nodes[1:], float64(sessions))

	// One publisher on each node: origins of every kind (the old node's
	// own, the new node's own, a third node's).
	var acked sync.Map
	var nAcked atomic.Int64
	stop := make(chan struct{})
	var pwg sync.WaitGroup
	for p, nd := range nodes {
		pub := connect(t, nd.mqtt, fmt.Sprintf("move-pub-%d", p))
		pwg.Add(1)
		go func() {
			defer pwg.Done()
			for seq := 0; ; seq++ {
				select {
				case <-stop:
					return
				default:
				}
				i := (seq*len(nodes) + p) % sessions
				payload := fmt.Sprintf("%d/%d/%d", i, p, seq)
				tok := pub.Publish(fmt.Sprintf("move/%d", i), qos, false, payload)
				if tok.WaitTimeout(10*time.Second) && tok.Error() == nil {
					acked.Store(payload, true)
					nAcked.Add(1)
				}
			}
		}()
	}
	time.Sleep(time.Second)
	start := time.Now()
	var mwg sync.WaitGroup
	sem := make(chan struct{}, 50)
	for i := range sessions {
		mwg.Add(1)
		sem <- struct{}{}
		go func() {
			defer mwg.Done()
			defer func() { <-sem }()
			c, err := tryConnect(n2.mqtt, id(i), persistent(1))
			if err != nil {
				t.Errorf("reconnect %s to n2: %v", id(i), err)
				return
			}
			t.Cleanup(func() { c.Disconnect(10) })
		}()
	}
	mwg.Wait()
	took := time.Since(start)
	time.Sleep(time.Second)
	close(stop)
	pwg.Wait()
	// The last deliveries: wait until every acknowledged one came (or 10 s).
	var r moveResult
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		r.lost = 0
		acked.Range(func(k, _ any) bool {
			mu.Lock()
			_, ok := got[k.(string)]
			mu.Unlock()
			if !ok {
				r.lost++
			}
			return true
		})
		if r.lost == 0 || time.Now().After(deadline) {
			break
		}
	}
	shown := 0
	acked.Range(func(k, _ any) bool {
		mu.Lock()
		_, ok := got[k.(string)]
		mu.Unlock()
		if !ok && shown < 10 {
			shown++
			t.Logf("acknowledged, never delivered: %q", k)
		}
		return true
	})
	for range 0 {
	}
	time.Sleep(500 * time.Millisecond) // a duplicate would come now
	r.acked, r.dups, r.resent = int(nAcked.Load()), int(dups.Load()), int(resent.Load())
	mv, _ := n2.metric("tern_cluster_sessions_moved_total")
	cp, _ := n2.metric("tern_cluster_move_copies_dropped_total")
	ft, _ := n1.metric("tern_cluster_fence_timeouts_total")
	t.Logf("QoS %d: %d sessions moved (n2 counted %v) in %v; acknowledged %d, lost %d, duplicates %d, protocol re-sends %d; copies dropped on n2 %v, fence timeouts on n1 %v",
		qos, sessions, mv, took.Round(time.Millisecond), r.acked, r.lost, r.dups, r.resent, cp, ft)
	return r
}
