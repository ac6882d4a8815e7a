package bench

import (
	"math/bits"
	"sort"
)

// maxWindowBits bounds the per-pair record of seen sequence numbers (512 KiB
// per pair). A pair that runs further ahead slides its window: a message that
// arrives more than ~2M sequence numbers behind the newest of its pair can no
// longer be matched, so it counts as out of order and is not credited as
// received (if it really was new, it shows as lost).
const maxWindowBits = 1 << 22

// Ledger is the delivery accounting of one event loop: for every
// (publisher, receiver) pair it remembers which sequence numbers arrived, so
// that at the end it can say how many were lost, duplicated or delivered out
// of order. A receiver is a subscriber, or a whole shared-subscription group
// when every member reports under the group's id (then a message delivered
// to two members is a duplicate, which is what a shared group promises not to
// do).
//
// Not safe for concurrent use; each loop owns one and Merge combines them
// after the loops stopped.
type Ledger struct {
	pairs map[uint64]*pairState
	// next holds, per (publisher, subscriber connection), one past the
	// highest sequence number that connection received: order is a
	// per-connection property, even inside a shared group.
	next map[uint64]uint64
	ooo  uint64
}

type pairState struct {
	base    uint64   // sequence number of bit 0 of seen
	seen    []uint64 // bitset of sequence numbers received, from base
	evicted uint64   // distinct sequence numbers that slid out of the window
	highest uint64   // largest sequence number received
	any     bool     // at least one received
	dups    uint64
	late    uint64 // arrived behind the window: dedup impossible
}

// NewLedger returns an empty ledger.
func NewLedger() *Ledger {
	return &Ledger{pairs: make(map[uint64]*pairState), next: make(map[uint64]uint64)}
}

func pairKey(pub, rcv uint32) uint64 { return uint64(pub)<<32 | uint64(rcv) }

func (l *Ledger) pair(pub, rcv uint32) *pairState {
	k := pairKey(pub, rcv)
	p := l.pairs[k]
	if p == nil {
		p = &pairState{}
		l.pairs[k] = p
	}
	return p
}

// Receive records the delivery of message seq of publisher pub to receiver
// rcv through subscriber connection member (the same as rcv except in a
// shared group) and reports whether it was a duplicate. A message older than
// one the same connection already got from the same publisher is out of
// order.
func (l *Ledger) Receive(pub, rcv, member uint32, seq uint64) (dup bool) {
	p := l.pair(pub, rcv)
	if seq < p.base {
		p.late++
		l.ooo++
		return false
	}
	if p.receive(seq) {
		return true
	}
	k := pairKey(pub, member)
	if n, ok := l.next[k]; ok && seq < n-1 {
		l.ooo++
	} else {
		l.next[k] = seq + 1
	}
	return false
}

// receive marks seq (≥ base) seen and reports whether it already was.
func (p *pairState) receive(seq uint64) bool {
	if seq-p.base >= maxWindowBits {
		p.slide(seq)
	}
	i := seq - p.base
	w := int(i / 64)
	if w >= len(p.seen) {
		p.seen = append(p.seen, make([]uint64, w+1-len(p.seen))...)
	}
	m := uint64(1) << (i % 64)
	if p.seen[w]&m != 0 {
		p.dups++
		return true
	}
	p.seen[w] |= m
	if !p.any || seq > p.highest {
		p.highest = seq
	}
	p.any = true
	return false
}

// slide moves the window so that seq sits in its upper half.
func (p *pairState) slide(seq uint64) {
	newBase := (seq - maxWindowBits/2) &^ 63
	drop := int((newBase - p.base) / 64)
	if drop > len(p.seen) {
		drop = len(p.seen)
	}
	for _, w := range p.seen[:drop] {
		p.evicted += uint64(bits.OnesCount64(w))
	}
	p.seen = append(p.seen[:0], p.seen[drop:]...)
	p.base = newBase
}

// uniqueBelow counts the distinct sequence numbers < limit received.
func (p *pairState) uniqueBelow(limit uint64) uint64 {
	n := p.evicted
	if limit <= p.base {
		return n
	}
	span := limit - p.base
	for w, word := range p.seen {
		lo := uint64(w) * 64
		if lo >= span {
			break
		}
		if span-lo < 64 {
			word &= (uint64(1) << (span - lo)) - 1
		}
		n += uint64(bits.OnesCount64(word))
	}
	return n
}

// Merge adds o's records to l. Pairs present in both (a shared group whose
// members live on different loops) are united; a sequence number seen in
// both counts as a duplicate.
func (l *Ledger) Merge(o *Ledger) {
	l.ooo += o.ooo
	for k, n := range o.next {
		l.next[k] = max(l.next[k], n)
	}
	for k, op := range o.pairs {
		p := l.pairs[k]
		if p == nil {
			l.pairs[k] = op
			continue
		}
		p.dups += op.dups
		p.late += op.late
		p.evicted += op.evicted
		for w, word := range op.seen {
			for word != 0 {
				b := bits.TrailingZeros64(word)
				word &= word - 1
				if seq := op.base + uint64(w)*64 + uint64(b); seq >= p.base {
					p.receive(seq) // counts a sequence number both saw as a duplicate
				}
			}
		}
	}
}

// Expectation says that receiver Rcv should have received every message
// publisher Pub sent, and how many that was (sequence numbers 0..Sent−1).
type Expectation struct {
	Pub, Rcv uint32
	Sent     uint64
}

// Tally is the accounting outcome, summed over pairs.
type Tally struct {
	Received   uint64 `json:"received_unique"`
	Lost       uint64 `json:"lost"`
	Duplicated uint64 `json:"duplicated"`
	OutOfOrder uint64 `json:"out_of_order"`
	Unexpected uint64 `json:"unexpected"` // deliveries from a pair nobody expected
	Pairs      int    `json:"pairs"`
	// WorstPairs lists up to 10 pairs with the most losses (largest first).
	WorstPairs []PairLoss `json:"worst_pairs,omitempty"`
}

// PairLoss is the loss of one publisher/receiver pair.
type PairLoss struct {
	Pub  uint32 `json:"pub"`
	Rcv  uint32 `json:"rcv"`
	Sent uint64 `json:"sent"`
	Lost uint64 `json:"lost"`
}

// Tally computes losses. With expectations (the scenario knows who should
// get what), lost = Sent − distinct sequence numbers below Sent received, per
// expected pair, and deliveries on other pairs are Unexpected. With nil
// expectations (a standalone subscriber that cannot know what was sent), the
// loss is counted from gaps: highest+1 − distinct received, which cannot see
// messages lost after the last one that arrived.
func (l *Ledger) Tally(expect []Expectation) Tally {
	var t Tally
	var worst []PairLoss
	t.OutOfOrder = l.ooo
	for _, p := range l.pairs {
		t.Duplicated += p.dups
	}
	if expect == nil {
		for k, p := range l.pairs {
			u := p.uniqueBelow(p.highest + 1)
			t.Received += u
			if p.any && p.highest+1 > u {
				lost := p.highest + 1 - u
				t.Lost += lost
				worst = append(worst, PairLoss{Pub: uint32(k >> 32), Rcv: uint32(k), Sent: p.highest + 1, Lost: lost})
			}
		}
		t.Pairs = len(l.pairs)
	} else {
		used := make(map[uint64]bool, len(expect))
		for _, e := range expect {
			k := pairKey(e.Pub, e.Rcv)
			used[k] = true
			var u uint64
			if p := l.pairs[k]; p != nil {
				u = p.uniqueBelow(e.Sent)
			}
			t.Received += u
			if e.Sent > u {
				t.Lost += e.Sent - u
				worst = append(worst, PairLoss{Pub: e.Pub, Rcv: e.Rcv, Sent: e.Sent, Lost: e.Sent - u})
			}
		}
		for k, p := range l.pairs {
			if !used[k] {
				t.Unexpected += p.uniqueBelow(p.highest+1) + p.dups
			}
		}
		t.Pairs = len(expect)
	}
	sort.Slice(worst, func(i, j int) bool {
		if worst[i].Lost != worst[j].Lost {
			return worst[i].Lost > worst[j].Lost
		}
		return pairKey(worst[i].Pub, worst[i].Rcv) < pairKey(worst[j].Pub, worst[j].Rcv)
	})
	if len(worst) > 10 {
		worst = worst[:10]
	}
	t.WorstPairs = worst
	return t
}
