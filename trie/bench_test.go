package trie

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
)

// benchSub stands in for the server's *session: a pointer-sized subscriber.
type benchSub struct{ id int }

const million = 1_000_000

// deviceFilter is the filter shape of the large benchmarks.
func deviceFilter(i int) string { return "devices/" + strconv.Itoa(i) + "/+/temp" }

// buildMillion subscribes one subscriber to each of 1M distinct filters plus
// a few wildcard filters that every device topic also matches.
func buildMillion() *Trie[*benchSub] {
	tr := New[*benchSub](nil)
	for i := range million {
		tr.Subscribe(deviceFilter(i), Sub[*benchSub]{Subscriber: &benchSub{i}, QoS: 1})
	}
	for i, f := range []string{"devices/+/sensors/temp", "devices/#", "+/+/+/temp", "$share/g/devices/+/sensors/+"} {
		tr.Subscribe(f, Sub[*benchSub]{Subscriber: &benchSub{-1 - i}})
	}
	return tr
}

var (
	millionOnce sync.Once
	millionTrie *Trie[*benchSub]
)

func BenchmarkMatch1M(b *testing.B) {
	millionOnce.Do(func() { millionTrie = buildMillion() })
	tr := millionTrie
	topics := make([][]byte, 4096)
	rng := rand.New(rand.NewPCG(1, 1))
	for i := range topics {
		topics[i] = fmt.Appendf(nil, "devices/%d/sensors/temp", rng.IntN(million))
	}
	dst := make([]Sub[*benchSub], 0, 64)
	b.ReportAllocs()
	b.ResetTimer()
	matched := 0
	for i := 0; b.Loop(); i++ {
		dst = tr.Match(topics[i&4095], dst[:0])
		matched += len(dst)
	}
	// 1 device filter + 3 wildcard filters + 1 shared group member.
	b.ReportMetric(float64(matched)/float64(b.N), "subs/op")
}

func BenchmarkMatchFanout100k(b *testing.B) {
	const n = 100_000
	tr := New[*benchSub](nil)
	for i := range n {
		tr.Subscribe("fan/out", Sub[*benchSub]{Subscriber: &benchSub{i}})
	}
	topic := []byte("fan/out")
	dst := make([]Sub[*benchSub], 0, n)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		dst = tr.Match(topic, dst[:0])
	}
	if len(dst) != n {
		b.Fatalf("matched %d", len(dst))
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/n, "ns/sub")
}

// BenchmarkSubscribeParallel subscribes new distinct filters from all
// goroutines: "spread" puts each goroutine's filters under its own first
// level (different shards), "oneshard" puts them all under "devices/".
func BenchmarkSubscribeParallel(b *testing.B) {
	for _, mode := range []string{"spread", "oneshard"} {
		b.Run(mode, func(b *testing.B) {
			tr := New[*benchSub](nil)
			var g atomic.Int64
			s := &benchSub{}
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				id := g.Add(1)
				prefix := "devices/" + strconv.FormatInt(id, 10) + "-"
				if mode == "spread" {
					prefix = "tenant" + strconv.FormatInt(id, 10) + "/"
				}
				for i := 0; pb.Next(); i++ {
					tr.Subscribe(prefix+strconv.Itoa(i)+"/cmd", Sub[*benchSub]{Subscriber: s})
				}
			})
		})
	}
}

func BenchmarkUnsubscribeParallel(b *testing.B) {
	for _, mode := range []string{"spread", "oneshard"} {
		b.Run(mode, func(b *testing.B) {
			tr := New[*benchSub](nil)
			s := &benchSub{}
			filters := make([]string, b.N)
			for i := range filters {
				if mode == "spread" {
					filters[i] = "tenant" + strconv.Itoa(i%64) + "/" + strconv.Itoa(i) + "/cmd"
				} else {
					filters[i] = "devices/" + strconv.Itoa(i) + "/cmd"
				}
				tr.Subscribe(filters[i], Sub[*benchSub]{Subscriber: s})
			}
			var next atomic.Int64
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					i := next.Add(1) - 1
					if !tr.Unsubscribe(filters[i], s) {
						b.Error("missing subscription")
					}
				}
			})
		})
	}
}

// BenchmarkSubscribe100kOneFilter: one op = unsubscribe a random member of
// a 100k-subscriber filter and subscribe it again (a swap-removal plus an
// append on the chunked list), so the list stays at 100k.
func BenchmarkSubscribe100kOneFilter(b *testing.B) {
	const n = 100_000
	tr := New[*benchSub](nil)
	subs := make([]*benchSub, n)
	for i := range subs {
		subs[i] = &benchSub{i}
		tr.Subscribe("fan/out", Sub[*benchSub]{Subscriber: subs[i]})
	}
	rng := rand.New(rand.NewPCG(3, 4))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		s := subs[rng.IntN(n)]
		tr.Unsubscribe("fan/out", s)
		tr.Subscribe("fan/out", Sub[*benchSub]{Subscriber: s, QoS: 1})
	}
}

// BenchmarkSubscribe100kFill measures subscribing 100k subscribers, one
// after another, to a single filter (ns/op is per subscribe).
func BenchmarkSubscribe100kFill(b *testing.B) {
	const n = 100_000
	subs := make([]*benchSub, n)
	for i := range subs {
		subs[i] = &benchSub{i}
	}
	b.ReportAllocs()
	var tr *Trie[*benchSub]
	for i := 0; b.Loop(); i++ {
		if i%n == 0 {
			tr = New[*benchSub](nil)
		}
		tr.Subscribe("fan/out", Sub[*benchSub]{Subscriber: subs[i%n]})
	}
}

// BenchmarkMemoryPerSubscription reports heap bytes per subscription for
// 1M distinct "devices/<n>/+/temp" filters, one subscriber each. The
// subscriber objects are allocated before the first measurement; the filter
// strings (which the trie keeps as node names) are counted. Run with
// -benchtime=1x: ns/op is the time to subscribe all 1M.
func BenchmarkMemoryPerSubscription(b *testing.B) {
	subs := make([]*benchSub, million)
	for i := range subs {
		subs[i] = &benchSub{i}
	}
	var perSub float64
	for b.Loop() {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		tr := New[*benchSub](nil)
		for i := range million {
			tr.Subscribe(deviceFilter(i), Sub[*benchSub]{Subscriber: subs[i], QoS: 1})
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		perSub = float64(after.HeapAlloc-before.HeapAlloc) / million
		runtime.KeepAlive(tr)
	}
	b.ReportMetric(perSub, "bytes/sub")
}

// BenchmarkMemoryFleet is BenchmarkMemoryPerSubscription for the filter
// shapes of a device fleet, one subscriber per filter: "cmd" is
// "devices/<n>/cmd", "config" is "devices/<n>/+/config". Run with
// -benchtime=1x.
func BenchmarkMemoryFleet(b *testing.B) {
	shapes := []struct {
		name   string
		filter func(int) string
	}{
		{"cmd", func(i int) string { return "devices/" + strconv.Itoa(i) + "/cmd" }},
		{"config", func(i int) string { return "devices/" + strconv.Itoa(i) + "/+/config" }},
	}
	subs := make([]*benchSub, million)
	for i := range subs {
		subs[i] = &benchSub{i}
	}
	for _, sh := range shapes {
		b.Run(sh.name, func(b *testing.B) {
			var perSub float64
			for b.Loop() {
				runtime.GC()
				var before, after runtime.MemStats
				runtime.ReadMemStats(&before)
				tr := New[*benchSub](nil)
				for i := range million {
					tr.Subscribe(sh.filter(i), Sub[*benchSub]{Subscriber: subs[i], QoS: 1})
				}
				runtime.GC()
				runtime.ReadMemStats(&after)
				perSub = float64(after.HeapAlloc-before.HeapAlloc) / million
				runtime.KeepAlive(tr)
			}
			b.ReportMetric(perSub, "bytes/sub")
		})
	}
}

func BenchmarkRetainedMatch(b *testing.B) {
	r := NewRetained[int]()
	for i := range 100_000 {
		r.Set("devices/"+strconv.Itoa(i)+"/state", i)
	}
	for _, f := range []string{"devices/4242/state", "devices/4242/#", "devices/+/state"} {
		b.Run(f, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				r.Match(f, func(string, int) bool { return true })
			}
		})
	}
}

func BenchmarkValidateTopic(b *testing.B) {
	topic := []byte("devices/1234/sensors/temperature")
	b.ReportAllocs()
	for b.Loop() {
		_ = ValidateTopic(topic, 0)
	}
}
