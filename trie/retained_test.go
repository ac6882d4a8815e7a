package trie

import (
	"fmt"
	"slices"
	"sync"
	"testing"
)

func retainedTopics(r *Retained[int], filter string) []string {
	var out []string
	r.Match(filter, func(topic string, v int) bool {
		out = append(out, topic)
		return true
	})
	slices.Sort(out)
	return out
}

func TestRetainedSetGetDelete(t *testing.T) {
	r := NewRetained[int]()
	r.Set("a/b", 1)
	r.Set("a/b", 2) // replaces
	r.Set("a", 3)
	if v, ok := r.Get("a/b"); !ok || v != 2 {
		t.Fatalf("Get(a/b) = %v, %v; want 2, true", v, ok)
	}
	if r.Len() != 2 {
		t.Fatalf("Len = %d, want 2", r.Len())
	}
	for _, missing := range []string{"", "a/b/c", "a/", "b", "/"} {
		if _, ok := r.Get(missing); ok {
			t.Fatalf("Get(%q) found a value", missing)
		}
		if r.Delete(missing) {
			t.Fatalf("Delete(%q) reported existing", missing)
		}
	}
	if !r.Delete("a/b") || r.Delete("a/b") {
		t.Fatal("Delete: want true then false")
	}
	if v, ok := r.Get("a"); !ok || v != 3 {
		t.Fatal("deleting a/b lost a")
	}
	r.Delete("a")
	if r.Len() != 0 || !r.root.empty() {
		t.Fatal("index not empty and pruned after deleting everything")
	}
}

func TestRetainedMatchSpecExamples(t *testing.T) {
	for _, c := range matchCases {
		t.Run(c.name, func(t *testing.T) {
			r := NewRetained[int]()
			r.Set(c.topic, 1)
			if got := len(retainedTopics(r, c.filter)) == 1; got != c.want {
				t.Fatalf("filter %q topic %q: matched=%v, want %v", c.filter, c.topic, got, c.want)
			}
		})
	}
}

func TestRetainedMatchAgainstReference(t *testing.T) {
	topics := []string{
		"sport", "sport/", "sport/tennis", "sport/tennis/player1", "sport/tennis/player1/ranking",
		"sport/golf", "/", "/finance", "finance", "$SYS/broker/uptime", "$SYS", "a//c", "a/$x",
	}
	filters := []string{
		"#", "+", "+/+", "/+", "sport/#", "sport/+", "sport/tennis/#", "sport/+/player1",
		"$SYS/#", "+/broker/uptime", "a/+/c", "a/#", "sport/tennis/player1", "+/#", "nothing/#",
	}
	r := NewRetained[int]()
	for i, tp := range topics {
		r.Set(tp, i)
	}
	for _, f := range filters {
		var want []string
		for _, tp := range topics {
			if MatchTopic(f, tp) {
				want = append(want, tp)
			}
		}
		slices.Sort(want)
		if got := retainedTopics(r, f); !slices.Equal(got, want) {
			t.Errorf("filter %q: got %q, want %q", f, got, want)
		}
	}
}

func TestRetainedMatchStops(t *testing.T) {
	r := NewRetained[int]()
	for i := range 100 {
		r.Set(fmt.Sprintf("s/%d", i), i)
	}
	for _, f := range []string{"#", "s/+", "s/#"} {
		n := 0
		r.Match(f, func(string, int) bool { n++; return n < 3 })
		if n != 3 {
			t.Fatalf("filter %q: fn called %d times after returning false at 3", f, n)
		}
	}
}

func TestRetainedManyTopics(t *testing.T) {
	r := NewRetained[int]()
	const n = 3000
	for i := range n {
		r.Set(fmt.Sprintf("dev/%d/state", i), i)
	}
	if got := len(retainedTopics(r, "dev/+/state")); got != n {
		t.Fatalf("dev/+/state matched %d, want %d", got, n)
	}
	if got := retainedTopics(r, "dev/42/#"); !slices.Equal(got, []string{"dev/42/state"}) {
		t.Fatalf("dev/42/# matched %q", got)
	}
	for i := range n {
		if i%3 != 0 {
			r.Delete(fmt.Sprintf("dev/%d/state", i))
		}
	}
	if got := len(retainedTopics(r, "dev/#")); got != n/3 {
		t.Fatalf("after deletes dev/# matched %d, want %d", got, n/3)
	}
}

// TestRetainedConcurrent: Match and Get run while Set and Delete change
// other topics; fn may itself call Set (no lock is held).
func TestRetainedConcurrent(t *testing.T) {
	r := NewRetained[int]()
	for i := range 100 {
		r.Set(fmt.Sprintf("keep/%d", i), i)
	}
	var wg sync.WaitGroup
	done := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-done:
				return
			default:
			}
			tp := fmt.Sprintf("churn/%d/x", i%500)
			if i%3 == 0 {
				r.Delete(tp)
			} else {
				r.Set(tp, i)
			}
		}
	}()
	for range 300 {
		n := 0
		r.Match("keep/+", func(topic string, v int) bool {
			if topic != fmt.Sprintf("keep/%d", v) {
				t.Errorf("torn entry %q=%d", topic, v)
			}
			n++
			return true
		})
		if n != 100 {
			t.Fatalf("keep/+ matched %d, want 100", n)
		}
		r.Match("churn/#", func(topic string, v int) bool { return true })
		r.Match("#", func(topic string, v int) bool {
			if topic == "keep/0" {
				r.Set("keep/0", 0) // re-entrant write from fn
			}
			return true
		})
	}
	close(done)
	wg.Wait()
}
