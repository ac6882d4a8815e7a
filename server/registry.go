package server

import (
	"hash/maphash"
	"sync"
	"sync/atomic"
)

// registry maps client ids to sessions. It is sharded so that CONNECT storms
// on many loops do not serialise on one lock.
type registry struct {
	seed   maphash.Seed
	shards [regShards]regShard
	count  atomic.Int64
}

const regShards = 64

// regShard is one shard of the registry: its lock and its table.
type regShard struct {
	mu sync.Mutex
	m  sessionTable // guarded by mu
}

func newRegistry() *registry {
	r := &registry{seed: maphash.MakeSeed()}
	for i := range r.shards {
		r.shards[i].m.seed = r.seed
	}
	return r
}

func (r *registry) shard(id string) *regShard {
	return &r.shards[maphash.String(r.seed, id)%regShards]
}

// get returns the session of id, or nil.
func (r *registry) get(id string) *session {
	sh := r.shard(id)
	sh.mu.Lock()
	s := sh.m.get(id)
	sh.mu.Unlock()
	return s
}

// removeIf deletes id's entry if it is still s.
func (r *registry) removeIf(id string, s *session) {
	sh := r.shard(id)
	sh.mu.Lock()
	if sh.m.get(id) == s && sh.m.remove(id) {
		r.count.Add(-1)
	}
	sh.mu.Unlock()
}

// sessionTable is a set of sessions keyed by their id: open addressing
// with linear probing over a power-of-two array of session pointers, the
// key read from the session itself. Every connected client has an entry,
// so its cost is per-connection memory: 8 bytes a slot at a load between
// 3/8 and 3/4 is ~11–21 bytes a session, where a map[string]*session
// spends 24 bytes a slot (key and value) plus control bytes, ~40–55
// measured. A lookup compares ids through the session pointers it probes
// (a miss costs ~2 probes at these loads); that is the CONNECT path, not
// the per-message one. Deletion shifts the following entries back
// (no tombstones), and the array shrinks when it is mostly empty, so a
// storm of sessions that ended leaves no large array behind.
//
// Not safe for concurrent use: the shard's mu guards it.
type sessionTable struct {
	seed  maphash.Seed
	slots []*session
	n     int
}

const sessionTableMin = 8

// home is the slot where id's probe sequence starts. The low bits of the
// hash chose the shard, so the index uses the others.
func (t *sessionTable) home(id string) int {
	return int(maphash.String(t.seed, id)/regShards) & (len(t.slots) - 1)
}

// get returns the session with id, or nil.
func (t *sessionTable) get(id string) *session {
	if t.n == 0 {
		return nil
	}
	mask := len(t.slots) - 1
	for i := t.home(id); ; i = (i + 1) & mask {
		s := t.slots[i]
		if s == nil || s.id == id {
			return s
		}
	}
}

// put records s under s.id, replacing a session with the same id.
func (t *sessionTable) put(s *session) {
	if (t.n+1)*4 > len(t.slots)*3 {
		t.resize(max(sessionTableMin, 2*len(t.slots)))
	}
	mask := len(t.slots) - 1
	for i := t.home(s.id); ; i = (i + 1) & mask {
		switch cur := t.slots[i]; {
		case cur == nil:
			t.slots[i] = s
			t.n++
			return
		case cur.id == s.id:
			t.slots[i] = s
			return
		}
	}
}

// remove deletes the session with id, reporting whether there was one.
func (t *sessionTable) remove(id string) bool {
	if t.n == 0 {
		return false
	}
	mask := len(t.slots) - 1
	i := t.home(id)
	for {
		s := t.slots[i]
		if s == nil {
			return false
		}
		if s.id == id {
			break
		}
		i = (i + 1) & mask
	}
	// Backward shift: move up every following entry of the run whose
	// home is not in the cyclic range (i, j], so no probe sequence meets
	// the hole before its entry.
	for j := (i + 1) & mask; t.slots[j] != nil; j = (j + 1) & mask {
		k := t.home(t.slots[j].id)
		if (j > i && (k <= i || k > j)) || (j < i && k <= i && k > j) {
			t.slots[i] = t.slots[j]
			i = j
		}
	}
	t.slots[i] = nil
	t.n--
	if len(t.slots) > sessionTableMin && t.n*8 < len(t.slots) {
		t.resize(len(t.slots) / 2)
	}
	return true
}

// resize rehashes every entry into an array of size slots.
func (t *sessionTable) resize(size int) {
	old := t.slots
	t.slots = make([]*session, size)
	mask := size - 1
	for _, s := range old {
		if s == nil {
			continue
		}
		i := t.home(s.id)
		for t.slots[i] != nil {
			i = (i + 1) & mask
		}
		t.slots[i] = s
	}
}

// all yields every (id, session) pair, in no particular order. The table
// must not change during the iteration.
func (t *sessionTable) all(yield func(string, *session) bool) {
	for _, s := range t.slots {
		if s != nil && !yield(s.id, s) {
			return
		}
	}
}
