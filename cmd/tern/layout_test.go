package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestImportDirection enforces DESIGN §3: codec, trie and persist import
// nothing of ours; qos at most codec; bench only codec (it must measure any
// broker over the wire, so it never calls into the server).
func TestImportDirection(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("go tool not on PATH")
	}
	const mod = "github.com/ternmq/tern/"
	allowed := map[string][]string{
		"codec":   nil,
		"trie":    nil,
		"persist": nil,
		"qos":     {"codec"},
		"bench":   {"codec"},
	}
	for pkg, ok := range allowed {
		out, err := exec.Command("go", "list", "-deps", "./../../"+pkg+"/...").CombinedOutput()
		if err != nil {
			if strings.Contains(string(out), "matched no packages") {
				continue
			}
			t.Fatalf("go list %s: %v\n%s", pkg, err, out)
		}
		for _, dep := range strings.Fields(string(out)) {
			if !strings.HasPrefix(dep, mod) {
				continue
			}
			rel := strings.TrimPrefix(dep, mod)
			top, _, _ := strings.Cut(rel, "/")
			if top == pkg {
				continue
			}
			allowedDep := false
			for _, a := range ok {
				if top == a {
					allowedDep = true
				}
			}
			if !allowedDep {
				t.Errorf("%s imports %s: not allowed by DESIGN §3", pkg, dep)
			}
		}
	}
}
