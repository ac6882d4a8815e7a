package auth

import (
	"strings"
	"testing"
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
