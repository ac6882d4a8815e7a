package trie

import (
	"errors"
	"strings"
	"testing"
)

func TestValidateTopic(t *testing.T) {
	long := strings.Repeat("a", MaxTopicLength)
	cases := []struct {
		name  string
		topic string
		max   int
		want  error
	}{
		{"simple", "sport/tennis/player1", 0, nil},
		{"single level", "sport", 0, nil},
		{"leading slash", "/finance", 0, nil},
		{"only slash", "/", 0, nil},
		{"empty levels", "a//b", 0, nil},
		{"space [MQTT-4.7.3]", "Accounts payable", 0, nil},
		{"dollar", "$SYS/broker/uptime", 0, nil},
		{"max length [MQTT-4.7.3-3]", long, 0, nil},
		{"empty [MQTT-4.7.3-1]", "", 0, ErrEmpty},
		{"too long [MQTT-4.7.3-3]", long + "a", 0, ErrTooLong},
		{"null char [MQTT-4.7.3-2]", "a/\x00/b", 0, ErrNullChar},
		{"plus [MQTT-3.3.2-2]", "sport/+/x", 0, ErrWildcardInTopic},
		{"hash [MQTT-3.3.2-2]", "sport/#", 0, ErrWildcardInTopic},
		{"plus inside level [MQTT-3.3.2-2]", "sp+ort", 0, ErrWildcardInTopic},
		{"levels at limit", "a/b/c", 3, nil},
		{"levels over limit", "a/b/c/d", 3, ErrTooManyLevels},
		{"default level limit", strings.Repeat("a/", DefaultMaxLevels-1) + "a", 0, nil},
		{"default level limit exceeded", strings.Repeat("a/", DefaultMaxLevels), 0, ErrTooManyLevels},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := ValidateTopic([]byte(c.topic), c.max); !errors.Is(got, c.want) {
				t.Fatalf("ValidateTopic(%.40q) = %v, want %v", c.topic, got, c.want)
			}
		})
	}
}

func TestValidateFilter(t *testing.T) {
	long := strings.Repeat("a", MaxTopicLength)
	cases := []struct {
		name   string
		filter string
		max    int
		want   error
	}{
		{"literal", "sport/tennis/player1", 0, nil},
		{"hash alone [MQTT-4.7.1-2]", "#", 0, nil},
		{"hash last [MQTT-4.7.1-2]", "sport/tennis/#", 0, nil},
		{"hash after empty level [MQTT-4.7.1-2]", "/#", 0, nil},
		{"hash glued [MQTT-4.7.1-2]", "sport/tennis#", 0, ErrMultiLevelWildcard},
		{"hash not last [MQTT-4.7.1-2]", "sport/tennis/#/ranking", 0, ErrMultiLevelWildcard},
		{"hash then slash [MQTT-4.7.1-2]", "#/", 0, ErrMultiLevelWildcard},
		{"plus alone [MQTT-4.7.1-3]", "+", 0, nil},
		{"plus and hash [MQTT-4.7.1-3]", "+/tennis/#", 0, nil},
		{"plus middle [MQTT-4.7.1-3]", "sport/+/player1", 0, nil},
		{"plus plus [MQTT-4.7.1-3]", "+/+", 0, nil},
		{"plus after slash [MQTT-4.7.1-3]", "/+", 0, nil},
		{"plus glued [MQTT-4.7.1-3]", "sport+", 0, ErrSingleLevelWildcard},
		{"plus prefix [MQTT-4.7.1-3]", "+sport", 0, ErrSingleLevelWildcard},
		{"plus double [MQTT-4.7.1-3]", "a/++/b", 0, ErrSingleLevelWildcard},
		{"empty [MQTT-4.7.3-1]", "", 0, ErrEmpty},
		{"null [MQTT-4.7.3-2]", "a/\x00", 0, ErrNullChar},
		{"max length [MQTT-4.7.3-3]", long, 0, nil},
		{"too long [MQTT-4.7.3-3]", long + "/", 0, ErrTooLong},
		{"too many levels", "a/b/+/#", 3, ErrTooManyLevels},
		{"levels at limit", "a/+/#", 3, nil},
		{"dollar", "$SYS/#", 0, nil},
		{"share [MQTT-4.8.2-1]", "$share/g1/sport/#", 0, nil},
		{"share plus filter [MQTT-4.8.2-2]", "$share/g1/+", 0, nil},
		{"share empty name [MQTT-4.8.2-1]", "$share//sport", 0, ErrShareNameEmpty},
		{"share nothing [MQTT-4.8.2-1]", "$share/", 0, ErrShareNameEmpty},
		{"share name plus [MQTT-4.8.2-2]", "$share/g+/sport", 0, ErrShareNameInvalid},
		{"share name hash [MQTT-4.8.2-2]", "$share/#/sport", 0, ErrShareNameInvalid},
		{"share no slash [MQTT-4.8.2-2]", "$share/g1", 0, ErrShareNoFilter},
		{"share empty filter [MQTT-4.8.2-2]", "$share/g1/", 0, ErrShareNoFilter},
		{"share bad inner [MQTT-4.7.1-2]", "$share/g1/a#", 0, ErrMultiLevelWildcard},
		{"share levels count inner only", "$share/g/a/b/c", 3, nil},
		{"not share: no slash", "$share", 0, nil},
		{"not share: other prefix", "$shared/g/x", 0, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := ValidateFilter([]byte(c.filter), c.max); !errors.Is(got, c.want) {
				t.Fatalf("ValidateFilter(%.40q) = %v, want %v", c.filter, got, c.want)
			}
		})
	}
}

func TestErrorMessageCarriesRule(t *testing.T) {
	if got := ErrWildcardInTopic.Error(); !strings.Contains(got, "[MQTT-3.3.2-2]") {
		t.Fatalf("%q lacks the rule id", got)
	}
	if got := ErrTooManyLevels.Error(); strings.Contains(got, "[") {
		t.Fatalf("%q: a broker limit has no rule id", got)
	}
}

func TestValidateNoAllocs(t *testing.T) {
	topic := []byte("devices/1234/sensors/temp")
	filter := []byte("$share/g/devices/+/sensors/#")
	if n := testing.AllocsPerRun(100, func() {
		_ = ValidateTopic(topic, 0)
		_ = ValidateFilter(filter, 0)
		_ = ValidateTopic([]byte("a/+"), 0)
	}); n != 0 {
		t.Fatalf("validation allocates %v times", n)
	}
}

func TestSplitShared(t *testing.T) {
	cases := []struct {
		in, group, filter string
		shared            bool
	}{
		{"sport/#", "", "sport/#", false},
		{"$share/g/sport/#", "g", "sport/#", true},
		{"$share/g/+", "g", "+", true},
		{"$share/g", "g", "", true},
		{"$share//x", "", "x", true},
		{"$share", "", "$share", false},
		{"$SYS/#", "", "$SYS/#", false},
	}
	for _, c := range cases {
		g, f, s := SplitShared(c.in)
		if g != c.group || f != c.filter || s != c.shared {
			t.Errorf("SplitShared(%q) = %q, %q, %v; want %q, %q, %v", c.in, g, f, s, c.group, c.filter, c.shared)
		}
	}
}

// matchCases holds every example of §4.7 of the MQTT 5.0 specification
// plus edge cases; both MatchTopic and the Trie are checked against it.
var matchCases = []struct {
	name          string
	filter, topic string
	want          bool
}{
	// §4.7.1.2 multi-level wildcard.
	{"4.7.1.2 hash parent level [MQTT-4.7.1-2]", "sport/tennis/player1/#", "sport/tennis/player1", true},
	{"4.7.1.2 hash one level", "sport/tennis/player1/#", "sport/tennis/player1/ranking", true},
	{"4.7.1.2 hash two levels", "sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", true},
	{"4.7.1.2 sport/# matches sport [MQTT-4.7.1-2]", "sport/#", "sport", true},
	{"4.7.1.2 hash alone", "#", "sport/tennis/player1", true},
	{"4.7.1.2 hash other branch", "sport/tennis/#", "sport/golf", false},
	{"hash parent only one level up", "sport/tennis/#", "sport", false},
	{"hash empty last level", "sport/#", "sport/", true},
	// §4.7.1.3 single-level wildcard.
	{"4.7.1.3 plus player1", "sport/tennis/+", "sport/tennis/player1", true},
	{"4.7.1.3 plus player2", "sport/tennis/+", "sport/tennis/player2", true},
	{"4.7.1.3 plus not two levels", "sport/tennis/+", "sport/tennis/player1/ranking", false},
	{"4.7.1.3 sport/+ not sport", "sport/+", "sport", false},
	{"4.7.1.3 sport/+ matches sport/", "sport/+", "sport/", true},
	{"4.7.1.3 plus middle", "sport/+/player1", "sport/tennis/player1", true},
	{"4.7.1.3 plus then hash", "+/tennis/#", "sport/tennis/player1/ranking", true},
	{"4.7.1.3 /finance matches +/+", "+/+", "/finance", true},
	{"4.7.1.3 /finance matches /+", "/+", "/finance", true},
	{"4.7.1.3 /finance not +", "+", "/finance", false},
	// §4.7.2 topics beginning with $ [MQTT-4.7.2-1].
	{"4.7.2 hash not $SYS [MQTT-4.7.2-1]", "#", "$SYS/monitor/Clients", false},
	{"4.7.2 plus not $SYS [MQTT-4.7.2-1]", "+/monitor/Clients", "$SYS/monitor/Clients", false},
	{"4.7.2 $SYS/# [MQTT-4.7.2-1]", "$SYS/#", "$SYS/monitor/Clients", true},
	{"4.7.2 $SYS/monitor/+ [MQTT-4.7.2-1]", "$SYS/monitor/+", "$SYS/monitor/Clients", true},
	{"4.7.2 plus alone not $ [MQTT-4.7.2-1]", "+", "$SYS", false},
	{"4.7.2 dollar later level is ordinary", "a/+", "a/$x", true},
	{"4.7.2 dollar later level hash", "a/#", "a/$x/y", true},
	// §4.7.3 topic semantics.
	{"4.7.3 case sensitive", "ACCOUNTS", "Accounts", false},
	{"4.7.3 space", "Accounts payable", "Accounts payable", true},
	{"4.7.3 slash alone", "/", "/", true},
	{"4.7.3 slash vs plus/plus", "+/+", "/", true},
	{"4.7.3 slash vs plus", "+", "/", false},
	{"4.7.3 leading slash distinct", "/finance", "finance", false},
	{"exact", "a/b/c", "a/b/c", true},
	{"prefix is not a match", "a/b", "a/b/c", false},
	{"longer filter", "a/b/c/d", "a/b/c", false},
	{"empty level", "a//c", "a//c", true},
	{"plus matches empty level", "a/+/c", "a//c", true},
	{"hash matches everything", "#", "/", true},
}

func TestMatchTopic(t *testing.T) {
	for _, c := range matchCases {
		t.Run(c.name, func(t *testing.T) {
			if got := MatchTopic(c.filter, c.topic); got != c.want {
				t.Fatalf("MatchTopic(%q, %q) = %v, want %v", c.filter, c.topic, got, c.want)
			}
			if got := splitMatch(c.filter, c.topic); got != c.want {
				t.Fatalf("splitMatch(%q, %q) = %v, want %v", c.filter, c.topic, got, c.want)
			}
		})
	}
}

// splitMatch is an even plainer matcher than MatchTopic, used to check it.
func splitMatch(filter, topic string) bool {
	if filter == "" || topic == "" {
		return false
	}
	if topic[0] == '$' && (filter[0] == '+' || filter[0] == '#') {
		return false
	}
	f, tl := strings.Split(filter, "/"), strings.Split(topic, "/")
	for i, lv := range f {
		if lv == "#" {
			return i == len(f)-1
		}
		if i >= len(tl) || (lv != "+" && lv != tl[i]) {
			return false
		}
	}
	return len(f) == len(tl)
}
