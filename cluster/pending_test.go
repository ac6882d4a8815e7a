package cluster

import (
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/ternmq/tern/server"
	"github.com/ternmq/tern/trie"
)

// outcomeAcker records each message's outcome by its Ref.
type outcomeAcker struct{ got map[uint64]error }

func (a *outcomeAcker) Ack(ref uint64, err error) {
	if _, dup := a.got[ref]; dup {
		panic("a message acknowledged twice")
	}
	a.got[ref] = err
}

// TestPendingRing: confirmations out of order, from two nodes, a quota
// refusal, a node gone, expiry of the oldest, and sequence numbers across
// the 32-bit wrap: every message gets exactly one outcome, the right one.
func TestPendingRing(t *testing.T) {
	n := benchNode()
	n.peers["n3"] = &peer{name: "n3", alive: true}
	n.table.Subscribe("both/+", trie.Sub[string]{Subscriber: "n2", QoS: 2})
	n.table.Subscribe("both/+", trie.Sub[string]{Subscriber: "n3", QoS: 2})
	n.fseq = 1<<32 - 300 // the low 32 bits wrap during the test
	a := &outcomeAcker{got: map[uint64]error{}}
	const total = 1000
	seqs := make([]uint64, total)
	for i := range total {
		topic := "bench/x"
		if i%2 == 1 {
			topic = "both/x" // n2 and n3
		}
		m := server.ClusterMessage{Topic: []byte(topic), QoS: 1, Ref: uint64(i + 1)}
		if _, wait := n.Forward(&m, a); !wait {
			t.Fatal("no wait")
		}
		seqs[i] = m.Origin
		if i%300 == 0 {
			drainOut(n)
		}
	}
	// n2 confirms everything from the newest back, except the first 10;
	// message 501 (to both) gets a quota refusal from n2.
	for i := total - 1; i >= 10; i-- {
		code := ackOK
		if i == 501 {
			code = ackQuota
		}
		n.confirm(seqs[i], "n2", code)
	}
	// A confirmation for a sequence never sent, and one from the wrong
	// node, change nothing.
	n.confirm(seqs[total-1]+7, "n2", ackOK)
	n.confirm(seqs[0], "n3", ackOK)
	for i := 10; i < total; i += 2 {
		if err, ok := a.got[uint64(i+1)]; !ok || err != nil {
			t.Fatalf("message %d (n2 only): outcome %v, %v", i, ok, err)
		}
	}
	if len(a.got) != (total-10)/2 {
		t.Fatalf("%d outcomes, want %d", len(a.got), (total-10)/2)
	}
	// n3 confirms the odd ones up to 800 and goes silent.
	for i := 1; i < 800; i += 2 {
		n.confirm(seqs[i], "n3", ackOK)
	}
	if err := a.got[502]; !errors.Is(err, server.ErrQuotaExceeded) {
		t.Errorf("message 501: %v, want the quota refusal", err)
	}
	n.peerGone("n3")
	for i := 801; i < total; i += 2 {
		if err, ok := a.got[uint64(i+1)]; !ok || err != nil {
			t.Fatalf("message %d after n3 went: %v, %v", i, ok, err)
		}
	}
	// The first 10 never confirmed by n2: expired, failed.
	if n.pend.live != 10 {
		t.Fatalf("%d still waiting, want 10", n.pend.live)
	}
	n.expirePending(time.Now().Add(time.Hour))
	for i := range 10 {
		if err := a.got[uint64(i+1)]; err == nil {
			t.Errorf("message %d expired without an error", i)
		}
	}
	if len(a.got) != total || n.pend.live != 0 || n.pend.count != 0 {
		t.Fatalf("%d outcomes of %d; ring live %d count %d", len(a.got), total, n.pend.live, n.pend.count)
	}
	if got := n.stats.confirmTimeouts.Load(); got != 10 {
		t.Errorf("confirm timeouts %d, want 10", got)
	}
}

// TestPurgeClaimsReturnsMemory: the purge that drops a connect storm's
// claims (the map copied smaller) returns memory once; steady churn and a
// second storm within memReturnEvery do not.
func TestPurgeClaimsReturnsMemory(t *testing.T) {
	n := benchNode()
	n.claims, n.votes = map[string]claim{}, map[uint64]*ballot{}
	now := time.Now()
	storm := func(k int, at time.Time) {
		for i := range k {
			n.vote("c"+strconv.Itoa(i)+"-"+strconv.FormatInt(at.UnixNano(), 36), claim{ts: now.UnixNano(), node: "n2"})
		}
	}
	storm(100, now) // churn: too few to copy the map
	n.purgeClaims(now.Add(claimTTL + time.Second))
	if !n.lastReturn.IsZero() {
		t.Fatal("memory returned after a purge of 100 claims")
	}
	storm(5000, now)
	later := now.Add(claimTTL + 2*time.Second)
	n.purgeClaims(later)
	if n.lastReturn != later || len(n.claims) != 0 {
		t.Fatalf("after a storm's claims expired: last return %v (want %v), %d claims left", n.lastReturn, later, len(n.claims))
	}
	storm(5000, now)
	n.purgeClaims(later.Add(time.Second))
	if n.lastReturn != later {
		t.Error("memory returned twice within memReturnEvery")
	}
}
