package trie

import (
	"bytes"
	"slices"
	"strings"
	"testing"
)

// FuzzMatch subscribes a set of filters ('\n'-separated; invalid ones are
// skipped) and checks that Trie.Match and Retained.Match agree with the
// MatchTopic reference for the topic, before and after unsubscribing every
// other filter.
func FuzzMatch(f *testing.F) {
	f.Add("sport/#\nsport/tennis/+\n+/+\n#\n$share/g/sport/+", "sport/tennis")
	f.Add("+\n/+\n+/+\n#", "/finance")
	f.Add("$SYS/#\n#\n+/monitor/Clients", "$SYS/monitor/Clients")
	f.Add("a//c\na/+/c\na/#\n+/#", "a//c")
	f.Add("sport/+\nsport/#", "sport")
	f.Fuzz(func(t *testing.T, filterList, topic string) {
		if ValidateTopic([]byte(topic), 0) != nil {
			return
		}
		var filters []string
		for _, fl := range strings.Split(filterList, "\n") {
			if ValidateFilter([]byte(fl), 0) == nil && !slices.Contains(filters, fl) {
				filters = append(filters, fl)
			}
		}
		tr := New[int](nil)
		for i, fl := range filters {
			tr.Subscribe(fl, Sub[int]{Subscriber: i})
		}
		check := func(live func(int) bool) {
			t.Helper()
			var want []int
			for i, fl := range filters {
				_, inner, _ := SplitShared(fl)
				if live(i) && MatchTopic(inner, topic) {
					want = append(want, i)
				}
				if MatchTopic(inner, topic) != splitMatch(inner, topic) {
					t.Fatalf("MatchTopic(%q, %q) disagrees with splitMatch", inner, topic)
				}
			}
			if got := subscribers(tr.Match([]byte(topic), nil)); !slices.Equal(got, want) {
				t.Fatalf("topic %q filters %q: Match %v, reference %v", topic, filters, got, want)
			}
		}
		check(func(int) bool { return true })
		for i := 0; i < len(filters); i += 2 {
			if !tr.Unsubscribe(filters[i], i) {
				t.Fatalf("Unsubscribe(%q) found nothing", filters[i])
			}
		}
		check(func(i int) bool { return i%2 == 1 })

		r := NewRetained[int]()
		r.Set(topic, 1)
		for _, fl := range filters {
			_, inner, shared := SplitShared(fl)
			if shared {
				continue
			}
			n := 0
			r.Match(inner, func(string, int) bool { n++; return true })
			if (n == 1) != MatchTopic(inner, topic) || n > 1 {
				t.Fatalf("Retained.Match(%q) on %q: %d results, MatchTopic %v", inner, topic, n, MatchTopic(inner, topic))
			}
		}
	})
}

// FuzzValidate checks the validators against a plain level-by-level
// restatement of the rules, and that they never panic.
func FuzzValidate(f *testing.F) {
	for _, s := range []string{"a/b", "#", "+/+", "a/#/b", "a+", "$share/g/a", "$share//a", "$share/g", "a\x00", "/", ""} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		terr := ValidateTopic(in, 8)
		ferr := ValidateFilter(in, 8)
		if want := refValidTopic(string(in), 8); (terr == nil) != want {
			t.Fatalf("ValidateTopic(%q) = %v, reference says valid=%v", in, terr, want)
		}
		if want := refValidFilter(string(in), 8); (ferr == nil) != want {
			t.Fatalf("ValidateFilter(%q) = %v, reference says valid=%v", in, ferr, want)
		}
		if terr == nil && !bytes.HasPrefix(in, []byte(sharePrefix)) {
			if ferr != nil {
				t.Fatalf("valid topic %q is not a valid filter: %v", in, ferr)
			}
			if !MatchTopic(string(in), string(in)) {
				t.Fatalf("topic %q does not match itself as a filter", in)
			}
		}
	})
}

func refValidTopic(s string, maxLevels int) bool {
	return s != "" && len(s) <= MaxTopicLength && !strings.ContainsAny(s, "+#\x00") &&
		len(strings.Split(s, "/")) <= maxLevels
}

func refValidFilter(s string, maxLevels int) bool {
	if s == "" || len(s) > MaxTopicLength || strings.ContainsRune(s, 0) {
		return false
	}
	if strings.HasPrefix(s, "$share/") {
		parts := strings.SplitN(s, "/", 3)
		if len(parts) < 3 || parts[1] == "" || strings.ContainsAny(parts[1], "+#") || parts[2] == "" {
			return false
		}
		s = parts[2]
	}
	levels := strings.Split(s, "/")
	if len(levels) > maxLevels {
		return false
	}
	for i, l := range levels {
		switch {
		case l == "+":
		case l == "#":
			if i != len(levels)-1 {
				return false
			}
		case strings.ContainsAny(l, "+#"):
			return false
		}
	}
	return true
}
