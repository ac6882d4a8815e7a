package timer

import "testing"

// BenchmarkHeapPushPop is the cost of one deadline through a heap of 10,000.
func BenchmarkHeapPushPop(b *testing.B) {
	var h Heap[*tracked]
	v := &tracked{}
	for i := 0; i < 10000; i++ {
		h.Push(int64(i*7919%10000), v)
	}
	at := int64(10000)
	b.ReportAllocs()
	for b.Loop() {
		h.Pop()
		h.Push(at, v)
		at++
	}
}

// BenchmarkHeapIndexedRemovePush is bench's pattern: remove a value by its
// index, then queue it again with its next deadline.
func BenchmarkHeapIndexedRemovePush(b *testing.B) {
	h := trackedHeap()
	vs := make([]*tracked, 10000)
	for i := range vs {
		vs[i] = &tracked{id: i}
		h.Push(int64(i*7919%10000), vs[i])
	}
	at := int64(10000)
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		v := vs[i%len(vs)]
		h.Remove(v.idx)
		h.Push(at, v)
		at++
		i++
	}
}

// BenchmarkWheelAdvance is the broker's pattern: 100,000 connections with a
// 60-tick keepalive, each re-filed when its slot comes due; one op is one
// tick, so it handles about 1/60 of them.
func BenchmarkWheelAdvance(b *testing.B) {
	const conns, period = 100000, 60
	w := NewWheel[*tracked](0, 1, 512)
	for i := 0; i < conns; i++ {
		w.Add(int64(i%period)+1, &tracked{id: i})
	}
	keep := func(v *tracked, now int64) int64 { return now + period }
	now := int64(0)
	for ; now < 2*period; now++ {
		w.Advance(now, keep)
	}
	b.ReportAllocs()
	for b.Loop() {
		w.Advance(now, keep)
		now++
	}
}
