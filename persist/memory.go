package persist

import (
	"bytes"
	"errors"
	"math"
	"slices"
	"strings"
	"sync"
	"time"
)

// Memory is the in-memory Store (ModeNone): the same batches, reference
// counting, group committer and recovery walk as Pebble, over maps. Used by
// tests and by `--durability none`. Recover on a Memory store visits what
// it holds; nothing survives the process.
type Memory struct {
	*core
}

var _ Store = (*Memory)(nil)

// NewMemory returns an empty in-memory store. opts.Mode is forced to
// ModeNone and opts.Dir is ignored.
func NewMemory(opts Options) (*Memory, error) {
	opts.Mode = ModeNone
	opts.EnsureDefaults()
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	eng := &memEngine{clients: map[string]map[string][]byte{}, other: map[string][]byte{}}
	c := newCore(opts, eng)
	if err := c.load(); err != nil {
		return nil, err
	}
	c.start()
	return &Memory{core: c}, nil
}

// memEngine keeps one map per client range, so a session delete drops one
// map and a client scan sorts only that client's keys; every other key
// (messages, retained, meta) lives in other.
type memEngine struct {
	mu      sync.RWMutex
	clients map[string]map[string][]byte // client prefix -> key -> value
	other   map[string][]byte
	bytes   int64 // key plus value bytes held, for space
	closed  bool
}

type memOp struct {
	kind byte
	k, v []byte
	hi   []byte // opDeleteRange
}

const opDeleteRange byte = 4

type memWriter struct{ ops []memOp }

func (e *memEngine) newWriter() writer { return &memWriter{} }

// The writer copies keys and values: the batch buffers they come from are
// recycled once the group is done.
func (w *memWriter) set(k, v []byte) {
	w.ops = append(w.ops, memOp{kind: opSet, k: bytes.Clone(k), v: append(make([]byte, 0, len(v)), v...)})
}
func (w *memWriter) del(k []byte) { w.ops = append(w.ops, memOp{kind: opDelete, k: bytes.Clone(k)}) }
func (w *memWriter) delRange(lo, hi []byte) {
	w.ops = append(w.ops, memOp{kind: opDeleteRange, k: bytes.Clone(lo), hi: bytes.Clone(hi)})
}
func (w *memWriter) count() int      { return len(w.ops) }
func (w *memWriter) syncWait() error { return nil } // nothing to sync
func (w *memWriter) release()        { w.ops = nil }

// clientPrefixOf returns the client prefix (0x03 | len | id) k starts with.
func clientPrefixOf(k []byte) (string, bool) {
	if len(k) < 3 || k[0] != prefixClient {
		return "", false
	}
	n := 3 + int(k[1])<<8 | int(k[2])
	if len(k) < n {
		return "", false
	}
	return string(k[:n]), true
}

func (e *memEngine) apply(w writer, _ bool) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return ErrClosed
	}
	for _, op := range w.(*memWriter).ops {
		switch op.kind {
		case opSet:
			m := e.other
			if p, ok := clientPrefixOf(op.k); ok {
				m = e.clients[p]
				if m == nil {
					m = map[string][]byte{}
					e.clients[p] = m
				}
			}
			if old, ok := m[string(op.k)]; ok {
				e.bytes -= int64(len(op.k) + len(old))
			}
			m[string(op.k)] = op.v
			e.bytes += int64(len(op.k) + len(op.v))
		case opDelete:
			e.deleteLocked(op.k)
		case opDeleteRange:
			if p, ok := clientPrefixOf(op.k); ok && len(p) == len(op.k) && len(op.hi) == len(p)+1 &&
				string(op.hi[:len(p)]) == p && op.hi[len(p)] == kindEnd {
				for k, v := range e.clients[p] {
					e.bytes -= int64(len(k) + len(v))
				}
				delete(e.clients, p)
				continue
			}
			for _, kv := range e.collectLocked(op.k, op.hi) {
				e.deleteLocked(kv.k)
			}
		}
	}
	return nil
}

// deleteLocked deletes k if present. e.mu must be held for writing.
func (e *memEngine) deleteLocked(k []byte) {
	m := e.other
	p, isClient := clientPrefixOf(k)
	if isClient {
		if m = e.clients[p]; m == nil {
			return
		}
	}
	if old, ok := m[string(k)]; ok {
		e.bytes -= int64(len(k) + len(old))
		delete(m, string(k))
	}
	if isClient && len(m) == 0 {
		delete(e.clients, p)
	}
}

// getLocked returns the value of k. e.mu must be held.
func (e *memEngine) getLocked(k []byte) ([]byte, bool) {
	m := e.other
	if p, ok := clientPrefixOf(k); ok {
		m = e.clients[p]
	}
	v, ok := m[string(k)]
	return v, ok
}

func (e *memEngine) has(k []byte) (bool, error) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	if e.closed {
		return false, ErrClosed
	}
	_, ok := e.getLocked(k)
	return ok, nil
}

// newView holds the read lock until the view is closed: apply waits, so
// everything read through the view is one state.
func (e *memEngine) newView() (view, error) {
	e.mu.RLock()
	if e.closed {
		e.mu.RUnlock()
		return nil, ErrClosed
	}
	return &memView{e: e}, nil
}

// memView is a read-locked memEngine.
type memView struct {
	e      *memEngine
	closed bool
}

func (v *memView) iter(lower, upper []byte) (iterator, error) {
	return &memIter{kvs: v.e.collectLocked(lower, upper), pos: -1}, nil
}

func (v *memView) get(k []byte) ([]byte, bool, error) {
	val, ok := v.e.getLocked(k)
	return val, ok, nil
}

func (v *memView) close() error {
	if !v.closed {
		v.closed = true
		v.e.mu.RUnlock()
	}
	return nil
}

func (e *memEngine) space() (used, free uint64, err error) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return uint64(e.bytes), math.MaxUint64, nil
}

func (e *memEngine) syncWAL() error { return nil }

func (e *memEngine) applyNoSyncWait(w writer) error { return e.apply(w, true) }

func (e *memEngine) walSyncs() (uint64, time.Duration, bool) { return 0, 0, false }

type memKV struct{ k, v []byte }

func inRange(k string, lower, upper []byte) bool {
	return (lower == nil || k >= string(lower)) && (upper == nil || k < string(upper))
}

// collectLocked returns the sorted pairs in [lower, upper). Stored values
// are never mutated (apply replaces them), so the snapshot may share them.
func (e *memEngine) collectLocked(lower, upper []byte) []memKV {
	var out []memKV
	add := func(m map[string][]byte) {
		for k, v := range m {
			if inRange(k, lower, upper) {
				out = append(out, memKV{k: []byte(k), v: v})
			}
		}
	}
	// A range inside one client needs only that client's map.
	if p, ok := clientPrefixOf(lower); ok && upper != nil && strings.HasPrefix(string(upper), p) {
		add(e.clients[p])
	} else {
		add(e.other)
		for _, m := range e.clients {
			add(m)
		}
	}
	slices.SortFunc(out, func(a, b memKV) int { return bytes.Compare(a.k, b.k) })
	return out
}

func (e *memEngine) newIter(lower, upper []byte) (iterator, error) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	if e.closed {
		return nil, ErrClosed
	}
	return &memIter{kvs: e.collectLocked(lower, upper), pos: -1}, nil
}

func (e *memEngine) diskUsage() diskUsage { return diskUsage{} }

func (e *memEngine) close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return errors.New("persist: memory engine closed twice")
	}
	e.closed = true
	e.clients, e.other = nil, nil
	return nil
}

// memIter iterates a sorted snapshot.
type memIter struct {
	kvs []memKV
	pos int
}

func (it *memIter) First() bool { it.pos = 0; return it.Valid() }
func (it *memIter) Last() bool  { it.pos = len(it.kvs) - 1; return it.Valid() }
func (it *memIter) Next() bool  { it.pos++; return it.Valid() }
func (it *memIter) Prev() bool  { it.pos--; return it.Valid() }
func (it *memIter) SeekGE(key []byte) bool {
	it.pos, _ = slices.BinarySearchFunc(it.kvs, key, func(kv memKV, k []byte) int { return bytes.Compare(kv.k, k) })
	return it.Valid()
}
func (it *memIter) SeekLT(key []byte) bool {
	i, _ := slices.BinarySearchFunc(it.kvs, key, func(kv memKV, k []byte) int { return bytes.Compare(kv.k, k) })
	it.pos = i - 1
	return it.Valid()
}
func (it *memIter) Valid() bool                  { return it.pos >= 0 && it.pos < len(it.kvs) }
func (it *memIter) Key() []byte                  { return it.kvs[it.pos].k }
func (it *memIter) ValueAndErr() ([]byte, error) { return it.kvs[it.pos].v, nil }
func (it *memIter) Error() error                 { return nil }
func (it *memIter) Close() error                 { it.kvs = nil; return nil }
