package server

import (
	"fmt"
	"hash/maphash"
	"math/rand/v2"
	"testing"
)

// TestSessionTableAgainstMap drives the registry's open-addressing table
// and a map with the same random puts, replacements and removals (ids
// drawn from a small space, so probe runs collide, wrap around the array
// and shift back on removal), and checks after every step that both hold
// the same entries; the array grows and shrinks on the way.
func TestSessionTableAgainstMap(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	tab := sessionTable{seed: maphash.MakeSeed()}
	ref := map[string]*session{}
	grew, shrank := 0, 0
	for step := range 20000 {
		id := fmt.Sprintf("c%d", rng.IntN(300))
		size := len(tab.slots)
		if rng.IntN(3) < 2 {
			s := &session{id: id}
			tab.put(s)
			ref[id] = s
		} else {
			_, had := ref[id]
			if got := tab.remove(id); got != had {
				t.Fatalf("step %d: remove(%q) = %v, map had it: %v", step, id, got, had)
			}
			delete(ref, id)
		}
		if len(tab.slots) > size {
			grew++
		} else if len(tab.slots) < size {
			shrank++
		}
		if tab.n != len(ref) {
			t.Fatalf("step %d: table holds %d, map %d", step, tab.n, len(ref))
		}
		if step%97 == 0 || len(ref) < 20 {
			for k, v := range ref {
				if tab.get(k) != v {
					t.Fatalf("step %d: get(%q) lost its session", step, k)
				}
			}
			seen := 0
			for k, v := range tab.all {
				if ref[k] != v {
					t.Fatalf("step %d: all yielded %q not in the map", step, k)
				}
				seen++
			}
			if seen != len(ref) {
				t.Fatalf("step %d: all yielded %d, map holds %d", step, seen, len(ref))
			}
		}
		// Drain now and then so the array shrinks as well as grows.
		if step%5000 == 4999 {
			before := len(tab.slots)
			for k := range ref {
				tab.remove(k)
				delete(ref, k)
			}
			if len(tab.slots) < before {
				shrank++
			}
		}
	}
	if grew == 0 || shrank == 0 {
		t.Fatalf("the table never resized both ways (grew %d, shrank %d)", grew, shrank)
	}
	if tab.get("absent") != nil || tab.remove("absent") {
		t.Fatal("an absent id was found")
	}
}
