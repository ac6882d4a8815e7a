package auth

import (
	"strings"
	"testing"

	"github.com/ternmq/tern/trie"
)

const testACL = `
# anonymous
topic read public/#
user alice
topic readwrite sensors/#
topic write alerts/alice
topic read $SYS/#
pattern readwrite devices/%c/#
pattern read users/%u/inbox
`

func TestACLRules(t *testing.T) {
	a, err := ParseACL(strings.NewReader(testACL))
	if err != nil {
		t.Fatal(err)
	}
	pub := []struct {
		client, user, topic string
		ok                  bool
	}{
		{"c1", "alice", "sensors/a/temp", true},
		{"c1", "alice", "alerts/alice", true},
		{"c1", "alice", "alerts/bob", false},
		{"c1", "bob", "sensors/a", false},
		{"d1", "bob", "devices/d1/state", true},
		{"d1", "bob", "devices/d2/state", false},
		{"d+", "bob", "devices/d+/x", false}, // id with topic syntax gets no pattern
		{"c9", "", "public/x", false},        // anonymous: read only
		{"c1", "alice", "users/alice/inbox", false},
	}
	for _, tc := range pub {
		if got := a.CanPublish(tc.client, tc.user, tc.topic); got != tc.ok {
			t.Errorf("publish %s/%s %s: %v, want %v", tc.client, tc.user, tc.topic, got, tc.ok)
		}
	}
	sub := []struct {
		client, user, filter string
		ok                   bool
	}{
		{"c1", "alice", "sensors/#", true},
		{"c1", "alice", "sensors/+/temp", true},
		{"c1", "alice", "#", false},
		{"c1", "alice", "+/a", false},
		{"c1", "alice", "alerts/alice", false}, // write only
		{"c1", "alice", "$SYS/broker/uptime", true},
		{"c1", "bob", "users/bob/inbox", true},
		{"c1", "bob", "users/+/inbox", false},
		{"d1", "bob", "devices/d1/#", true},
		{"d1", "bob", "$share/g/devices/d1/cmd", true},
		{"c9", "", "public/news", true},
		{"c9", "", "public", true},
	}
	for _, tc := range sub {
		if got := a.CanSubscribe(tc.client, tc.user, tc.filter); got != tc.ok {
			t.Errorf("subscribe %s/%s %s: %v, want %v", tc.client, tc.user, tc.filter, got, tc.ok)
		}
	}
	if _, err := ParseACL(strings.NewReader("topic read a/#/b\nfoo bar\nuser\n")); err == nil ||
		!strings.Contains(err.Error(), "line 1") || !strings.Contains(err.Error(), "line 2") || !strings.Contains(err.Error(), "line 3") {
		t.Errorf("bad lines not all reported: %v", err)
	}
}

// Finding: "topic deny" lines were parsed and ignored, so "readwrite #"
// with "deny secret/#" still read and wrote secret/#. A matching deny now
// refuses whatever grants say, and a SUBSCRIBE filter that overlaps a
// denied subtree is refused.
func TestACLDenyWinsOverGrant(t *testing.T) {
	a, err := ParseACL(strings.NewReader(`
topic readwrite #
topic deny secret/#
user mallory
topic deny secret/#
topic readwrite #
user eve
topic readwrite #
topic deny +/private
pattern deny devices/%c/admin/#
pattern readwrite devices/%c/#
pattern deny users/%u/locked
`))
	if err != nil {
		t.Fatal(err)
	}
	for _, user := range []string{"", "mallory"} { // the deny before and after the grant
		for _, tc := range []struct {
			topic string
			ok    bool
		}{
			{"secret", false}, {"secret/x", false}, {"secret/x/y", false},
			{"public/x", true}, {"secretive/x", true},
		} {
			if got := a.CanPublish("c1", user, tc.topic); got != tc.ok {
				t.Errorf("user %q publish %s: %v, want %v", user, tc.topic, got, tc.ok)
			}
		}
		for _, tc := range []struct {
			filter string
			ok     bool
		}{
			{"secret/#", false}, {"secret", false}, {"secret/+", false}, {"secret/a/b", false},
			{"#", false}, {"+", false}, {"+/x", false}, {"+/+/+", false}, {"$share/g/secret/#", false},
			{"$share/g/#", false},
			{"public/#", true}, {"public/+/x", true}, {"secretive/#", true}, {"a/+", true},
		} {
			if got := a.CanSubscribe("c1", user, tc.filter); got != tc.ok {
				t.Errorf("user %q subscribe %s: %v, want %v", user, tc.filter, got, tc.ok)
			}
		}
	}
	if a.CanPublish("c1", "eve", "home/private") || a.CanSubscribe("c1", "eve", "home/#") ||
		!a.CanPublish("c1", "eve", "home/public") || !a.CanSubscribe("c1", "eve", "home/public/#") {
		t.Error("deny +/private ignored, or applied beyond its topics")
	}
	// Deny patterns: substituted per client; a client id that would widen
	// the rule (topic syntax) makes the deny refuse everything to it,
	// rather than escape it.
	if a.CanPublish("d1", "bob", "devices/d1/admin/reboot") || !a.CanPublish("d1", "bob", "devices/d1/state") {
		t.Errorf("deny pattern with %%c not applied")
	}
	if a.CanSubscribe("d1", "bob", "devices/d1/#") || !a.CanSubscribe("d1", "bob", "devices/d1/state/#") {
		t.Error("subscription overlapping a deny pattern allowed, or a disjoint one refused")
	}
	if a.CanPublish("d1", "bob", "users/bob/locked") || !a.CanPublish("d1", "bob", "devices/d1/x") {
		t.Errorf("deny pattern with %%u not applied")
	}
	for _, id := range []string{"x/y", "+", "#"} {
		if a.CanPublish(id, "bob", "anything") || a.CanSubscribe(id, "bob", "anything") {
			t.Errorf("client id %q escaped a deny pattern", id)
		}
	}
}

// Finding: a '#' or '+/…' grant covered $SYS/#. As in subscription matching
// [MQTT-4.7.2-1], a wildcard (or substituted) first level never reaches a
// '$' topic; only an explicit "$…" rule grants one, and $SYS is never
// publishable by clients.
func TestACLDollarTopicsNeedExplicitGrant_MQTT_4_7_2_1(t *testing.T) {
	a, err := ParseACL(strings.NewReader(`
topic readwrite #
topic readwrite +/#
pattern readwrite %c/#
user ops
topic readwrite $SYS/#
topic write $devices/x
topic read $share-less/#
`))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"$SYS/#", "$SYS/broker/uptime", "$SYS", "$share/g/$SYS/#", "$devices/x"} {
		if a.CanSubscribe("c1", "", f) {
			t.Errorf("wildcard grant covers %s", f)
		}
	}
	if a.CanSubscribe("$SYS", "", "$SYS/#") || a.CanPublish("$SYS", "", "$SYS/x") {
		t.Errorf("a client id of $SYS made a %%c pattern reach $SYS")
	}
	if !a.CanSubscribe("c1", "", "#") || !a.CanSubscribe("c1", "", "+/broker/#") {
		t.Error("wildcard filters (which never match $ topics) refused")
	}
	for _, topic := range []string{"$SYS/broker/uptime", "$devices/x"} {
		if a.CanPublish("c1", "", topic) {
			t.Errorf("wildcard grant lets anonymous publish %s", topic)
		}
	}
	if !a.CanSubscribe("c1", "ops", "$SYS/broker/#") || !a.CanSubscribe("c1", "ops", "$share/g/$SYS/broker/load") {
		t.Error("explicit $SYS grant refused")
	}
	if a.CanPublish("c1", "ops", "$SYS/broker/uptime") || a.CanPublish("c1", "ops", "$SYS") {
		t.Error("$SYS publishable through an explicit rule")
	}
	if !a.CanPublish("c1", "ops", "$devices/x") {
		t.Error("explicit write $devices/x refused")
	}
}

// The matchers against brute force over a small universe of topics:
// matchTopic is trie.MatchTopic, overlaps is exact (a deny must never miss
// a filter that can reach it), covers is sound (never grants a filter that
// can match a topic outside the rule).
func TestACLMatchersAgainstBruteForce(t *testing.T) {
	lv := []string{"a", "b", "$s"}
	var topics []string
	var grow func(prefix string, depth int)
	grow = func(prefix string, depth int) {
		for _, l := range append(lv, "") {
			tp := l
			if depth > 0 {
				tp = prefix + "/" + l
			}
			if tp != "" {
				topics = append(topics, tp)
			}
			if depth < 3 {
				grow(tp, depth+1)
			}
		}
	}
	grow("", 0)
	var filters []string
	var growF func(prefix string, depth int)
	growF = func(prefix string, depth int) {
		for _, l := range append(lv, "+", "#") {
			f := l
			if depth > 0 {
				f = prefix + "/" + l
			}
			filters = append(filters, f)
			if depth < 2 && l != "#" {
				growF(f, depth+1)
			}
		}
	}
	growF("", 0)
	w := newWho("c", "u")
	for _, rf := range filters {
		r := aclRule{levels: strings.Split(rf, "/")}
		for _, tp := range topics {
			if got, want := r.matchTopic(tp, &w), trie.MatchTopic(rf, tp); got != want {
				t.Fatalf("matchTopic(%q, %q) = %v, want %v", rf, tp, got, want)
			}
		}
		for _, f := range filters {
			overlap, covered := false, true
			for _, tp := range topics {
				inF := trie.MatchTopic(f, tp)
				overlap = overlap || (inF && trie.MatchTopic(rf, tp))
				covered = covered && (!inF || trie.MatchTopic(rf, tp))
			}
			if got := r.overlaps(f, &w); got != overlap {
				t.Fatalf("overlaps(rule %q, filter %q) = %v, want %v", rf, f, got, overlap)
			}
			if r.covers(f, &w) && !covered {
				t.Fatalf("covers(rule %q, filter %q) but a topic of the filter is outside the rule", rf, f)
			}
		}
	}
}

// A decision is on the PUBLISH and SUBSCRIBE path: it must not allocate.
func TestACLDecisionAllocs(t *testing.T) {
	a, err := ParseACL(strings.NewReader(testACL + "topic deny sensors/secret/#\npattern deny devices/%c/admin\n"))
	if err != nil {
		t.Fatal(err)
	}
	n := testing.AllocsPerRun(200, func() {
		a.CanPublish("d1", "alice", "devices/d1/state")
		a.CanPublish("c1", "alice", "sensors/a/temp")
		a.CanSubscribe("d1", "alice", "devices/d1/#")
		a.CanSubscribe("c1", "bob", "users/bob/inbox")
	})
	if n != 0 {
		t.Errorf("%v allocations per decision set, want 0", n)
	}
}

// Substitutions inside a level, next to literal text and a literal '%'.
func TestACLPatternSubstitutionInLevel(t *testing.T) {
	a, err := ParseACL(strings.NewReader("pattern readwrite site/dev-%c.%u/#\npattern read 100%/%c\n"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		topic string
		ok    bool
	}{
		{"site/dev-7.bob/x", true}, {"site/dev-7.bob", true}, {"site/dev-7.bo/x", false},
		{"site/dev-7.bobx/x", false}, {"site/dev-77.bob/x", false}, {"site/dev-.bob/x", false},
	} {
		if got := a.CanPublish("7", "bob", tc.topic); got != tc.ok {
			t.Errorf("publish %s: %v, want %v", tc.topic, got, tc.ok)
		}
	}
	if !a.CanSubscribe("7", "bob", "100%/7") || a.CanSubscribe("7", "bob", "100%/8") || a.CanSubscribe("7", "bob", "100x/7") {
		t.Error("literal '%' level mismatched")
	}
}
