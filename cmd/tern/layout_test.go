package main

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// module is the import-path prefix of Tern's own packages.
const module = "github.com/ternmq/tern/"

// layoutRule says which of Tern's packages one group of packages may depend
// on. A pattern is either a package path relative to the module ("codec") or
// a subtree ending in "/" ("internal/"), which matches every package strictly
// below that directory but not the directory itself — so "server/" is the
// server's leaf packages and never the server.
type layoutRule struct {
	pkg        string   // pattern the rule applies to; an exact path beats a subtree
	allow      []string // patterns of Tern packages pkg may depend on; "*" allows any
	stdlibOnly bool     // pkg may depend on nothing outside the standard library either
	deny       []string // import-path prefixes outside the module pkg must not depend on
	why        string
}

// layout is the import direction of the module, enforced on the transitive
// (non-test) dependencies of every package, so a rule cannot be bypassed
// through a package that is itself allowed. Every package of the module must
// match a rule: a new directory gets one here on purpose, not by default.
var layout = []layoutRule{
	{pkg: "codec", stdlibOnly: true,
		why: "the wire format is a leaf that anything, a client or a test tool, can use"},
	{pkg: "trie", stdlibOnly: true,
		why: "topic matching is a leaf that the server and its auth package share"},
	{pkg: "persist",
		why: "the store knows records and keys, not sessions or packets, so it can be tested and inspected alone"},
	{pkg: "qos", allow: []string{"codec"}, stdlibOnly: true,
		why: "the delivery state machines do no I/O; at most they speak the codec's types"},
	{pkg: "internal/", allow: []string{"internal/"},
		why: "internal helpers are leaves shared by the server, bench and tools"},
	{pkg: "internal/mqtttest", allow: []string{"codec", "internal/"},
		why: "a raw MQTT test client sends and reads the codec's packet structs; it still never sees the broker"},
	{pkg: "bench", allow: []string{"codec", "internal/"},
		why: "bench measures any broker over the wire, so it never calls into Tern's server"},
	{pkg: "server", allow: []string{"codec", "trie", "qos", "persist", "internal/", "server/"}, deny: []string{natsModules},
		why: "the broker composes the leaves; it knows the cluster only as server.Cluster, so a single broker carries no NATS"},
	{pkg: "server/", allow: []string{"codec", "trie", "qos", "persist", "internal/", "server/"}, deny: []string{natsModules},
		why: "a server leaf (auth, a transport) is used by the server, so importing it back would be a cycle in disguise"},
	{pkg: "cluster", allow: []string{"server", "codec", "trie", "qos", "persist", "internal/", "server/"},
		why: "the cluster backplane drives the broker from outside; the broker knows it only as server.Cluster"},
	{pkg: "cmd/", allow: []string{"*"}, why: "commands wire everything together"},
	{pkg: "tools/", allow: []string{"*"}, why: "tools are programs, like commands"},
	{pkg: "examples/", allow: []string{"*"}, why: "examples are programs that embed the broker, like commands"},
}

// natsModules is the prefix of the NATS modules, which only the cluster
// package (and the commands wiring it) may import.
const natsModules = "github.com/nats-io/"

// matches reports whether the module-relative package path rel matches
// pattern (see layoutRule).
func matches(pattern, rel string) bool {
	if pattern == "*" {
		return true
	}
	if sub, ok := strings.CutSuffix(pattern, "/"); ok {
		return strings.HasPrefix(rel, sub+"/")
	}
	return rel == pattern
}

// ruleFor returns the rule for rel: an exact pattern if one matches, else the
// longest matching subtree.
func ruleFor(rel string) (layoutRule, bool) {
	var best layoutRule
	found := false
	for _, r := range layout {
		if !matches(r.pkg, rel) {
			continue
		}
		if r.pkg == rel {
			return r, true
		}
		if !found || len(r.pkg) > len(best.pkg) {
			best, found = r, true
		}
	}
	return best, found
}

// layoutViolations checks one package (module-relative path) and its
// transitive dependencies (full import paths) against the layout.
func layoutViolations(rel string, deps []string) []string {
	r, ok := ruleFor(rel)
	if !ok {
		return []string{rel + ": no layout rule covers this package; add one to layout"}
	}
	var bad []string
	for _, dep := range deps {
		depRel, ours := strings.CutPrefix(dep, module)
		if !ours {
			if first, _, _ := strings.Cut(dep, "/"); r.stdlibOnly && strings.Contains(first, ".") {
				bad = append(bad, rel+" depends on "+dep+": only the standard library is allowed ("+r.why+")")
			}
			for _, d := range r.deny {
				if strings.HasPrefix(dep, d) {
					bad = append(bad, rel+" depends on "+dep+": not allowed ("+r.why+")")
				}
			}
			continue
		}
		if !slices.ContainsFunc(r.allow, func(p string) bool { return matches(p, depRel) }) {
			bad = append(bad, rel+" depends on "+depRel+": not allowed ("+r.why+")")
		}
	}
	return bad
}

// TestImportDirection enforces the module's import direction on every
// package at once (the table is layout).
func TestImportDirection(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("go tool not on PATH")
	}
	cmd := exec.Command("go", "list", "-f", "{{.ImportPath}}{{range .Deps}} {{.}}{{end}}", "./...")
	cmd.Dir = "../.."
	out, err := cmd.Output()
	if err != nil {
		msg := ""
		if ee, ok := err.(*exec.ExitError); ok {
			msg = string(ee.Stderr)
		}
		t.Fatalf("go list: %v\n%s", err, msg)
	}
	n := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		rel, ok := strings.CutPrefix(fields[0], module)
		if !ok {
			t.Fatalf("go list printed %q outside the module", fields[0])
		}
		n++
		for _, v := range layoutViolations(rel, fields[1:]) {
			t.Error(v)
		}
	}
	if n < 8 {
		t.Fatalf("go list found %d packages; the module has more, so the check did not run", n)
	}
}

// TestImportDirectionRules checks that the table can fail: each case is a
// dependency the layout must refuse or accept.
func TestImportDirectionRules(t *testing.T) {
	cases := []struct {
		pkg  string
		dep  string
		want bool // allowed
	}{
		{"codec", module + "trie", false},
		{"codec", "github.com/panjf2000/gnet/v2", false},
		{"trie", module + "internal/timer", false},
		{"persist", module + "codec", false},
		{"persist", "github.com/cockroachdb/pebble/v2", true},
		{"qos", module + "codec", true},
		{"qos", module + "trie", false},
		{"internal/timer", module + "codec", false},
		{"internal/timer", module + "internal/other", true},
		{"internal/mqtttest", module + "codec", true},
		{"internal/mqtttest", module + "server", false},
		{"bench", module + "codec", true},
		{"bench", module + "internal/timer", true},
		{"bench", module + "server", false},
		{"bench", module + "qos", false},
		{"server", module + "server/auth", true},
		{"server", module + "bench", false},
		{"server/auth", module + "server", false},
		{"server/auth", module + "trie", true},
		{"server/auth/authtest", module + "server", false},
		{"server/stdnet", module + "server/auth", true},
		{"cmd/tern", module + "server", true},
		{"server", "github.com/nats-io/nats.go", false},
		{"server/auth", "github.com/nats-io/nats-server/v2/server", false},
		{"cluster", "github.com/nats-io/nats.go", true},
		{"cluster", module + "server", true},
		{"cluster", module + "bench", false},
		{"cmd/tern", module + "cluster", true},
		{"tools/crashtest", module + "bench", true},
		{"newpkg", "fmt", false}, // no rule: refused until someone writes one
	}
	for _, c := range cases {
		got := len(layoutViolations(c.pkg, []string{c.dep})) == 0
		if got != c.want {
			t.Errorf("%s → %s: allowed %v, want %v", c.pkg, c.dep, got, c.want)
		}
	}
}
