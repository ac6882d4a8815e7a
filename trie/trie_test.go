package trie

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
)

func subscribers(subs []Sub[int]) []int {
	out := make([]int, 0, len(subs))
	for _, s := range subs {
		out = append(out, s.Subscriber)
	}
	slices.Sort(out)
	return out
}

func TestTrieMatchSpecExamples(t *testing.T) {
	for _, c := range matchCases {
		t.Run(c.name, func(t *testing.T) {
			tr := New[int](nil)
			tr.Subscribe(c.filter, Sub[int]{Subscriber: 1})
			got := len(tr.Match([]byte(c.topic), nil)) == 1
			if got != c.want {
				t.Fatalf("filter %q topic %q: matched=%v, want %v", c.filter, c.topic, got, c.want)
			}
			// A shared subscription matches exactly like its inner filter.
			sh := New[int](nil)
			sh.Subscribe("$share/g/"+c.filter, Sub[int]{Subscriber: 1})
			if got := len(sh.Match([]byte(c.topic), nil)) == 1; got != c.want {
				t.Fatalf("shared filter %q topic %q: matched=%v, want %v", c.filter, c.topic, got, c.want)
			}
		})
	}
}

func TestTrieAllSpecFiltersTogether(t *testing.T) {
	// All filters in one trie: each topic gets exactly the filters that
	// MatchTopic says match.
	tr := New[int](nil)
	var filters []string
	for _, c := range matchCases {
		if !slices.Contains(filters, c.filter) {
			filters = append(filters, c.filter)
		}
	}
	for i, f := range filters {
		tr.Subscribe(f, Sub[int]{Subscriber: i})
	}
	for _, c := range matchCases {
		var want []int
		for i, f := range filters {
			if MatchTopic(f, c.topic) {
				want = append(want, i)
			}
		}
		got := subscribers(tr.Match([]byte(c.topic), nil))
		if !slices.Equal(got, want) {
			t.Errorf("topic %q: got %v, want %v", c.topic, got, want)
		}
	}
}

func TestTrieDollarTopics_MQTT_4_7_2_1(t *testing.T) {
	tr := New[int](nil)
	tr.Subscribe("#", Sub[int]{Subscriber: 1})
	tr.Subscribe("+/broker/uptime", Sub[int]{Subscriber: 2})
	tr.Subscribe("$SYS/#", Sub[int]{Subscriber: 3})
	tr.Subscribe("$SYS/+/uptime", Sub[int]{Subscriber: 4})
	tr.Subscribe("$share/g/#", Sub[int]{Subscriber: 5})
	if got := subscribers(tr.Match([]byte("$SYS/broker/uptime"), nil)); !slices.Equal(got, []int{3, 4}) {
		t.Fatalf("$SYS topic matched %v, want [3 4]", got)
	}
	if got := subscribers(tr.Match([]byte("x/broker/uptime"), nil)); !slices.Equal(got, []int{1, 2, 5}) {
		t.Fatalf("ordinary topic matched %v, want [1 2 5]", got)
	}
}

func TestTrieOverlappingFilters(t *testing.T) {
	tr := New[int](nil)
	for _, f := range []string{"a/b", "a/+", "a/#", "#", "+/b", "+/+"} {
		tr.Subscribe(f, Sub[int]{Subscriber: 7, QoS: 1})
	}
	tr.Subscribe("a/b", Sub[int]{Subscriber: 8})
	got := subscribers(tr.Match([]byte("a/b"), nil))
	if want := []int{7, 7, 7, 7, 7, 7, 8}; !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v (one entry per matching filter)", got, want)
	}
	if tr.Len() != 7 {
		t.Fatalf("Len = %d, want 7", tr.Len())
	}
}

func TestTrieReplaceOnResubscribe(t *testing.T) {
	tr := New[int](nil)
	if tr.Subscribe("a/+", Sub[int]{Subscriber: 1, QoS: 0, ID: 5}) {
		t.Fatal("first subscribe reported a replacement")
	}
	if !tr.Subscribe("a/+", Sub[int]{Subscriber: 1, QoS: 2, Options: 0x04, ID: 9, Group: "ignored"}) {
		t.Fatal("re-subscribe did not report a replacement")
	}
	got := tr.Match([]byte("a/x"), nil)
	want := Sub[int]{Subscriber: 1, QoS: 2, Options: 0x04, ID: 9}
	if len(got) != 1 || got[0] != want {
		t.Fatalf("got %+v, want [%+v]", got, want)
	}
	if tr.Len() != 1 {
		t.Fatalf("Len = %d, want 1", tr.Len())
	}
	// The same subscriber in a shared group on the same filter is a separate
	// subscription; re-subscribing to the group replaces within the group.
	if tr.Subscribe("$share/g/a/+", Sub[int]{Subscriber: 1, QoS: 1}) {
		t.Fatal("shared subscribe replaced the ordinary one")
	}
	if !tr.Subscribe("$share/g/a/+", Sub[int]{Subscriber: 1, QoS: 0}) {
		t.Fatal("shared re-subscribe not reported as replacement")
	}
	if tr.Len() != 2 {
		t.Fatalf("Len = %d, want 2", tr.Len())
	}
}

func TestTrieUnsubscribe(t *testing.T) {
	tr := New[int](nil)
	tr.Subscribe("a/b", Sub[int]{Subscriber: 1})
	tr.Subscribe("$share/g/a/b", Sub[int]{Subscriber: 1})
	for _, c := range []struct {
		name   string
		filter string
		s      int
	}{
		{"unknown filter", "a/c", 1},
		{"prefix of a filter", "a", 1},
		{"longer filter", "a/b/c", 1},
		{"unknown subscriber", "a/b", 2},
		{"unknown group", "$share/h/a/b", 1},
		{"unknown member", "$share/g/a/b", 2},
		{"wildcard never subscribed", "a/+", 1},
		{"empty", "", 1},
		{"share without filter", "$share/g", 1},
	} {
		if tr.Unsubscribe(c.filter, c.s) {
			t.Errorf("%s: Unsubscribe(%q, %d) reported existing", c.name, c.filter, c.s)
		}
	}
	if !tr.Unsubscribe("a/b", 1) || tr.Unsubscribe("a/b", 1) {
		t.Fatal("ordinary unsubscribe: want true then false")
	}
	if got := tr.Match([]byte("a/b"), nil); len(got) != 1 || got[0].Group != "g" {
		t.Fatalf("after ordinary unsubscribe: %+v, want only the shared one", got)
	}
	if !tr.Unsubscribe("$share/g/a/b", 1) || tr.Unsubscribe("$share/g/a/b", 1) {
		t.Fatal("shared unsubscribe: want true then false")
	}
	if tr.Len() != 0 || len(tr.Match([]byte("a/b"), nil)) != 0 {
		t.Fatal("trie not empty")
	}
	assertPruned(t, tr)
}

// assertPruned checks that no node is left behind.
func assertPruned(t *testing.T, tr *Trie[int]) {
	t.Helper()
	for i := range tr.shards {
		if !tr.shards[i].root.empty() {
			t.Fatalf("shard %d root not empty after removing everything", i)
		}
	}
	if !tr.wild.root.empty() {
		t.Fatal("wildcard root not empty after removing everything")
	}
}

func TestTrieSharedRoundRobin_MQTT_4_8_2(t *testing.T) {
	tr := New[int](nil)
	for s := 1; s <= 3; s++ {
		tr.Subscribe("$share/g/sensors/+", Sub[int]{Subscriber: s, QoS: 1})
	}
	tr.Subscribe("sensors/+", Sub[int]{Subscriber: 10})
	counts := map[int]int{}
	var order []int
	for range 9 {
		got := tr.Match([]byte("sensors/t"), nil)
		if len(got) != 2 {
			t.Fatalf("got %d subs, want the ordinary one plus one group member", len(got))
		}
		for _, s := range got {
			if s.Subscriber == 10 {
				if s.Group != "" {
					t.Fatalf("ordinary sub has Group %q", s.Group)
				}
				continue
			}
			if s.Group != "g" {
				t.Fatalf("shared sub has Group %q, want g", s.Group)
			}
			counts[s.Subscriber]++
			order = append(order, s.Subscriber)
		}
	}
	for s := 1; s <= 3; s++ {
		if counts[s] != 3 {
			t.Fatalf("round robin uneven: %v (order %v)", counts, order)
		}
	}
	for i := 3; i < len(order); i++ {
		if order[i] != order[i-3] {
			t.Fatalf("not a rotation: %v", order)
		}
	}
}

func TestTrieSharedTwoGroups(t *testing.T) {
	tr := New[int](nil)
	tr.Subscribe("$share/a/x/#", Sub[int]{Subscriber: 1})
	tr.Subscribe("$share/a/x/#", Sub[int]{Subscriber: 2})
	tr.Subscribe("$share/b/x/#", Sub[int]{Subscriber: 3})
	tr.Subscribe("$share/b/x/+", Sub[int]{Subscriber: 4}) // same group name, other filter: another group
	got := tr.Match([]byte("x/y"), nil)
	groups := map[string]int{}
	for _, s := range got {
		groups[s.Group]++
	}
	if len(got) != 3 || groups["a"] != 1 || groups["b"] != 2 {
		t.Fatalf("got %+v, want one member of a, one of b on x/#, one of b on x/+", got)
	}
	// Removing the last member of a group removes the group.
	tr.Unsubscribe("$share/b/x/#", 3)
	got = tr.Match([]byte("x/y"), nil)
	if len(got) != 2 {
		t.Fatalf("got %+v after removing group b on x/#", got)
	}
}

func TestTrieSharedSkipsUnavailable(t *testing.T) {
	online := map[int]bool{1: false, 2: true, 3: false, 4: true}
	var mu sync.Mutex
	tr := New[int](func(s int) bool { mu.Lock(); defer mu.Unlock(); return online[s] })
	for s := 1; s <= 4; s++ {
		tr.Subscribe("$share/g/t", Sub[int]{Subscriber: s})
	}
	counts := map[int]int{}
	for range 100 {
		got := tr.Match([]byte("t"), nil)
		if len(got) != 1 {
			t.Fatalf("got %d, want exactly one member", len(got))
		}
		counts[got[0].Subscriber]++
	}
	if counts[1] != 0 || counts[3] != 0 || counts[2] != 50 || counts[4] != 50 {
		t.Fatalf("counts %v: want only 2 and 4, evenly", counts)
	}
	// Nobody available: still exactly one, round-robin among all, so an
	// offline persistent member queues it.
	mu.Lock()
	clear(online)
	mu.Unlock()
	clear(counts)
	for range 100 {
		got := tr.Match([]byte("t"), nil)
		if len(got) != 1 {
			t.Fatalf("got %d, want exactly one member", len(got))
		}
		counts[got[0].Subscriber]++
	}
	for s := 1; s <= 4; s++ {
		if counts[s] != 25 {
			t.Fatalf("counts %v: want 25 each when none is available", counts)
		}
	}
}

// TestTrieManySubscribersOneFilter drives the chunked list through growth,
// replacement and swap-removal against a map model.
func TestTrieManySubscribersOneFilter(t *testing.T) {
	for _, shared := range []bool{false, true} {
		t.Run(fmt.Sprintf("shared=%v", shared), func(t *testing.T) {
			filter := "fan/out"
			if shared {
				filter = "$share/g/fan/out"
			}
			tr := New[int](nil)
			model := map[int]byte{}
			rng := rand.New(rand.NewPCG(1, 2))
			// More than two blocks of chunks, so that chunk, block and
			// block-array copies all happen.
			const n = 2*chunkSize*blockSize + 100
			for s := range n {
				tr.Subscribe(filter, Sub[int]{Subscriber: s, QoS: 1})
				model[s] = 1
			}
			for step := range 6000 {
				s := rng.IntN(n)
				if step < 3000 && rng.IntN(3) != 0 || step >= 3000 && rng.IntN(3) == 0 {
					_, had := model[s]
					if tr.Unsubscribe(filter, s) != had {
						t.Fatalf("step %d: Unsubscribe(%d) disagrees with model", step, s)
					}
					delete(model, s)
				} else {
					q := byte(rng.IntN(3))
					_, had := model[s]
					if tr.Subscribe(filter, Sub[int]{Subscriber: s, QoS: q}) != had {
						t.Fatalf("step %d: Subscribe(%d) replaced=%v, model says %v", step, s, !had, had)
					}
					model[s] = q
				}
				if tr.Len() != len(model) {
					t.Fatalf("step %d: Len %d, model %d", step, tr.Len(), len(model))
				}
				if shared || step%251 != 0 {
					continue
				}
				got := tr.Match([]byte("fan/out"), nil)
				if len(got) != len(model) {
					t.Fatalf("step %d: %d matched, model has %d", step, len(got), len(model))
				}
				for _, g := range got {
					if q, ok := model[g.Subscriber]; !ok || q != g.QoS {
						t.Fatalf("step %d: got %+v, model QoS %d present %v", step, g, q, ok)
					}
				}
			}
			if shared {
				// Every member gets picked once in a full rotation.
				seen := map[int]bool{}
				for range len(model) {
					got := tr.Match([]byte("fan/out"), nil)
					seen[got[0].Subscriber] = true
				}
				if len(seen) != len(model) {
					t.Fatalf("rotation covered %d of %d members", len(seen), len(model))
				}
			}
			for s := range model {
				tr.Unsubscribe(filter, s)
			}
			if tr.Len() != 0 {
				t.Fatalf("Len %d after removing all", tr.Len())
			}
			assertPruned(t, tr)
		})
	}
}

// TestTrieManyChildren drives the child tables through growth into hashed
// tables, tombstones and shrinking.
func TestTrieManyChildren(t *testing.T) {
	tr := New[int](nil)
	const n = 5000
	for i := range n {
		tr.Subscribe(fmt.Sprintf("devices/%d/cmd", i), Sub[int]{Subscriber: i})
	}
	check := func(live func(int) bool) {
		t.Helper()
		for i := range n {
			got := tr.Match(fmt.Appendf(nil, "devices/%d/cmd", i), nil)
			if want := live(i); (len(got) == 1 && got[0].Subscriber == i) != want {
				t.Fatalf("device %d: got %+v, want present=%v", i, got, want)
			}
		}
	}
	check(func(int) bool { return true })
	for i := 0; i < n; i += 2 {
		if !tr.Unsubscribe(fmt.Sprintf("devices/%d/cmd", i), i) {
			t.Fatalf("unsubscribe %d failed", i)
		}
	}
	check(func(i int) bool { return i%2 == 1 })
	for i := 0; i < n; i += 2 {
		tr.Subscribe(fmt.Sprintf("devices/%d/cmd", i), Sub[int]{Subscriber: i})
	}
	check(func(int) bool { return true })
	for i := range n {
		if i%10 != 0 {
			tr.Unsubscribe(fmt.Sprintf("devices/%d/cmd", i), i)
		}
	}
	check(func(i int) bool { return i%10 == 0 })
	for i := 0; i < n; i += 10 {
		tr.Unsubscribe(fmt.Sprintf("devices/%d/cmd", i), i)
	}
	assertPruned(t, tr)
}

func TestTrieMatchNoAllocs(t *testing.T) {
	tr := New[int](func(int) bool { return true })
	for i := range 1000 {
		tr.Subscribe(fmt.Sprintf("devices/%d/+/temp", i), Sub[int]{Subscriber: i})
	}
	tr.Subscribe("devices/#", Sub[int]{Subscriber: -1})
	tr.Subscribe("+/7/sensors/temp", Sub[int]{Subscriber: -2})
	tr.Subscribe("$share/g/devices/7/#", Sub[int]{Subscriber: -3})
	topic := []byte("devices/7/sensors/temp")
	dst := make([]Sub[int], 0, 16)
	var got []Sub[int]
	if n := testing.AllocsPerRun(200, func() { got = tr.Match(topic, dst[:0]) }); n != 0 {
		t.Fatalf("Match allocates %v times per call", n)
	}
	if want := []int{-3, -2, -1, 7}; !slices.Equal(subscribers(got), want) {
		t.Fatalf("got %v, want %v", subscribers(got), want)
	}
}

func TestTrieIgnoresMalformedShared(t *testing.T) {
	tr := New[int](nil)
	if tr.Subscribe("$share/g", Sub[int]{Subscriber: 1}) || tr.Subscribe("$share//x", Sub[int]{Subscriber: 1}) || tr.Subscribe("", Sub[int]{Subscriber: 1}) {
		t.Fatal("malformed filter reported a replacement")
	}
	if tr.Len() != 0 {
		t.Fatalf("malformed filters stored: Len %d", tr.Len())
	}
	if got := tr.Match(nil, nil); len(got) != 0 {
		t.Fatal("empty topic matched")
	}
}

// TestTrieConcurrent runs matchers against writers (run it with -race). The
// stable subscriptions must be in every result; every Sub returned must be
// whole (its fields agree with each other); shared groups yield exactly one
// member per match.
func TestTrieConcurrent(t *testing.T) {
	tr := New[int](func(s int) bool { return s%2 == 0 })
	mk := func(s int, g string) Sub[int] {
		return Sub[int]{Subscriber: s, QoS: byte(s % 3), Options: byte(s), ID: uint32(s * 7), Group: g}
	}
	const stable = 50
	for s := range stable {
		tr.Subscribe("load/+/x", mk(s, ""))
	}
	tr.Subscribe("$share/g/load/#", mk(1000, ""))
	var stop atomic.Bool
	var wg, writers sync.WaitGroup
	var fails atomic.Int64
	for w := range 2 {
		writers.Add(1)
		go func() {
			defer writers.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 9))
			filters := []string{"load/+/x", "load/a/x", "load/#", "+/a/x", "#", "$share/g/load/#", "load/a/x/y", "load/" + fmt.Sprint(w)}
			for i := 0; !stop.Load(); i++ {
				f := filters[rng.IntN(len(filters))]
				s := stable + w*100000 + rng.IntN(400)
				if rng.IntN(2) == 0 {
					tr.Subscribe(f, mk(s, ""))
				} else {
					tr.Unsubscribe(f, s)
				}
			}
		}()
	}
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]Sub[int], 0, 64)
			for i := 0; i < 3000; i++ {
				got := tr.Match([]byte("load/a/x"), buf[:0])
				present := 0
				members := 0
				for _, s := range got {
					if s.QoS != byte(s.Subscriber%3) || s.Options != byte(s.Subscriber) || s.ID != uint32(s.Subscriber*7) {
						fails.Add(1)
					}
					if s.Group != "" {
						if s.Group != "g" {
							fails.Add(1)
						}
						members++
						continue
					}
					if s.Subscriber < stable {
						present++
					}
				}
				// The stable ones come only from "load/+/x", where writers also add
				// and remove other subscribers: each of the 50 must be there once.
				if present < stable || members != 1 {
					fails.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	stop.Store(true)
	writers.Wait()
	if fails.Load() != 0 {
		t.Fatalf("%d torn or missing results", fails.Load())
	}
}

// TestTrieConcurrentFanout: one filter whose list spans several blocks of
// chunks is rewritten (swap-removals, appends, replacements) while readers
// match it. Each snapshot must hold every stable subscriber exactly once,
// no subscriber twice, and only whole Subs.
func TestTrieConcurrentFanout(t *testing.T) {
	tr := New[int](nil)
	const stable, churn = 3000, 6000
	mk := func(s int, gen byte) Sub[int] {
		return Sub[int]{Subscriber: s, QoS: gen % 3, Options: gen, ID: uint32(s)*3 + uint32(gen)}
	}
	for s := range stable + churn {
		tr.Subscribe("f", mk(s, 0))
	}
	var stop atomic.Bool
	var writer sync.WaitGroup
	writer.Add(1)
	go func() {
		defer writer.Done()
		rng := rand.New(rand.NewPCG(5, 6))
		for i := 0; !stop.Load(); i++ {
			switch s := rng.IntN(stable + churn); {
			case s < stable:
				tr.Subscribe("f", mk(s, byte(i))) // replace
			case rng.IntN(2) == 0:
				tr.Unsubscribe("f", s)
			default:
				tr.Subscribe("f", mk(s, byte(i)))
			}
		}
	}()
	seen := make([]int, stable+churn)
	buf := make([]Sub[int], 0, stable+churn)
	for round := 1; round <= 300; round++ {
		got := tr.Match([]byte("f"), buf[:0])
		stableSeen := 0
		for _, s := range got {
			if s.ID != uint32(s.Subscriber)*3+uint32(s.Options) || s.QoS != s.Options%3 {
				t.Fatalf("torn Sub %+v", s)
			}
			if seen[s.Subscriber] == round {
				t.Fatalf("subscriber %d twice in one result", s.Subscriber)
			}
			seen[s.Subscriber] = round
			if s.Subscriber < stable {
				stableSeen++
			}
		}
		if stableSeen != stable {
			t.Fatalf("round %d: %d of %d stable subscribers", round, stableSeen, stable)
		}
	}
	stop.Store(true)
	writer.Wait()
}
