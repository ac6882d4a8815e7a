package bench

import "testing"

func TestLedgerLossDupOrder(t *testing.T) {
	l := NewLedger()
	// Publisher 1 → receiver 7: 0..9 sent; 3 and 9 lost, 5 duplicated,
	// 8 arrives before 6 and 7.
	for _, s := range []uint64{0, 1, 2, 4, 5, 5, 8, 6, 7} {
		l.Receive(1, 7, 7, s)
	}
	tl := l.Tally([]Expectation{{Pub: 1, Rcv: 7, Sent: 10}})
	if tl.Lost != 2 || tl.Duplicated != 1 || tl.OutOfOrder != 2 || tl.Received != 8 || tl.Unexpected != 0 {
		t.Fatalf("tally %+v", tl)
	}
	if len(tl.WorstPairs) != 1 || tl.WorstPairs[0].Lost != 2 {
		t.Fatalf("worst pairs %+v", tl.WorstPairs)
	}
}

func TestLedgerExpectedPairNeverHeardFrom(t *testing.T) {
	l := NewLedger()
	l.Receive(2, 2, 2, 0) // nobody expected pair (2,2)
	tl := l.Tally([]Expectation{{Pub: 1, Rcv: 1, Sent: 5}})
	if tl.Lost != 5 || tl.Unexpected != 1 {
		t.Fatalf("tally %+v", tl)
	}
}

func TestLedgerGapLossWithoutExpectations(t *testing.T) {
	l := NewLedger()
	for _, s := range []uint64{0, 1, 4} {
		l.Receive(3, 0, 0, s)
	}
	if tl := l.Tally(nil); tl.Lost != 2 || tl.Received != 3 {
		t.Fatalf("tally %+v", tl)
	}
}

func TestLedgerMergeSharedGroupDuplicates(t *testing.T) {
	// Two members of one shared group on different loops: a message that
	// reached both is a duplicate for the group.
	a, b := NewLedger(), NewLedger()
	a.Receive(0, 100, 1, 0)
	a.Receive(0, 100, 1, 2)
	b.Receive(0, 100, 2, 1)
	b.Receive(0, 100, 2, 2)
	a.Merge(b)
	tl := a.Tally([]Expectation{{Pub: 0, Rcv: 100, Sent: 4}})
	if tl.Lost != 1 || tl.Duplicated != 1 || tl.Received != 3 || tl.OutOfOrder != 0 {
		t.Fatalf("tally %+v", tl)
	}
}

func TestLedgerOrderIsPerConnection(t *testing.T) {
	// Members 1 and 2 of group 100 each see increasing sequence numbers;
	// interleaved across members is not out of order. Member 1 going
	// backwards is.
	l := NewLedger()
	l.Receive(0, 100, 1, 0)
	l.Receive(0, 100, 2, 2)
	l.Receive(0, 100, 1, 1)
	l.Receive(0, 100, 1, 4)
	l.Receive(0, 100, 1, 3)
	if tl := l.Tally([]Expectation{{Pub: 0, Rcv: 100, Sent: 5}}); tl.OutOfOrder != 1 || tl.Lost != 0 {
		t.Fatalf("tally %+v", tl)
	}
}

func TestLedgerWindowSlides(t *testing.T) {
	l := NewLedger()
	n := uint64(maxWindowBits + 1000)
	for s := uint64(0); s < n; s++ {
		if s == 10 {
			continue // lost long before the window slid
		}
		l.Receive(0, 0, 0, s)
	}
	l.Receive(0, 0, 0, 5) // behind the window: late, not checkable
	p := l.pairs[pairKey(0, 0)]
	if p.base == 0 || len(p.seen) > maxWindowBits/64+1 {
		t.Fatalf("window did not slide: base %d words %d", p.base, len(p.seen))
	}
	tl := l.Tally([]Expectation{{Pub: 0, Rcv: 0, Sent: n}})
	// The late copy of 5 cannot be matched any more: out of order, not
	// credited; the loss of 10 survives the slide in the evicted count.
	if tl.Lost != 1 || tl.OutOfOrder != 1 {
		t.Fatalf("tally %+v", tl)
	}
}

func BenchmarkLedgerReceive(b *testing.B) {
	l := NewLedger()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		l.Receive(uint32(i&63), uint32(i&63), uint32(i&63), uint64(i>>6))
	}
}
