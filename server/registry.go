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
	shards [64]struct {
		mu sync.Mutex
		m  map[string]*session
	}
	count atomic.Int64
}

func newRegistry() *registry {
	r := &registry{seed: maphash.MakeSeed()}
	for i := range r.shards {
		r.shards[i].m = make(map[string]*session)
	}
	return r
}

func (r *registry) shard(id string) *struct {
	mu sync.Mutex
	m  map[string]*session
} {
	return &r.shards[maphash.String(r.seed, id)%uint64(len(r.shards))]
}

// get returns the session of id, or nil.
func (r *registry) get(id string) *session {
	sh := r.shard(id)
	sh.mu.Lock()
	s := sh.m[id]
	sh.mu.Unlock()
	return s
}

// removeIf deletes id's entry if it is still s.
func (r *registry) removeIf(id string, s *session) {
	sh := r.shard(id)
	sh.mu.Lock()
	if sh.m[id] == s {
		delete(sh.m, id)
		r.count.Add(-1)
	}
	sh.mu.Unlock()
}
