package persist

import (
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Store is the durable store of the broker. It is implemented by *Pebble
// (ModeSync, ModePeriodic) and *Memory (ModeNone); both pass the same
// conformance tests.
//
// Concurrency: NewBatch and Commit may be called from any goroutine (each
// event loop builds and commits its own batches). Recover, ExpireSessions,
// Usage and Inspect read a consistent snapshot and may run concurrently with
// commits, but Recover is meant to run once after opening, before the
// first Commit. Close must not race with Commit.
type Store interface {
	// NewBatch returns an empty batch bound to this store.
	NewBatch() *Batch
	// Commit applies b atomically and durably according to the mode, then
	// calls done exactly once. done runs on the store's committer goroutine
	// after the group holding b is synced (ModeSync) or applied
	// (ModePeriodic, ModeNone); or synchronously, before Commit returns,
	// when the store is closed or unavailable or b is invalid. done must not
	// block: hand the result to your event loop and return. Commit blocks
	// only while more than Options.MaxPendingBytes are queued.
	Commit(b *Batch, done func(error))
	// CommitWait is Commit followed by waiting for done; for startup,
	// tools and tests, never for an event loop.
	CommitWait(b *Batch) error
	// Recover visits everything stored, in key order: messages by id, then
	// per client its session, inbound markers and outbound entries by
	// sequence, then retained messages. Records that fail to decode are
	// logged, counted and skipped (Visitor.Corrupt); an error returned by
	// a visitor function stops the walk and is returned.
	Recover(v Visitor) (RecoveryStats, error)
	// ExpireSessions deletes every session disconnected for longer than its
	// expiry interval at now, with all its data and message references,
	// and returns how many it deleted. Sessions with DisconnectedAt 0 are
	// kept. Call it after opening, before Recover, to drop sessions that
	// expired while the broker was down.
	ExpireSessions(now time.Time) (int, error)
	// Stats returns the committer counters; cheap.
	Stats() Stats
	// Usage scans the whole store and returns counts and bytes per entity.
	Usage() (Usage, error)
	// Inspect scans one client's range.
	Inspect(clientID string) (ClientInfo, error)
	// Mode returns the durability mode.
	Mode() Mode
	// Close commits what is queued, syncs, and closes the store.
	Close() error
}

// Visitor receives what Recover finds. Nil functions are skipped. Values
// passed are freshly allocated and may be retained. Reference counts are
// already rebuilt when Recover runs: do not AddRef recovered entries. Per
// client, continue outbound sequences after the highest one visited.
type Visitor struct {
	Message  func(id uint64, m *Message) error
	Session  func(clientID string, s *Session) error
	Inbound  func(clientID string, packetID uint16, in Inbound) error
	Outbound func(clientID string, seq uint64, o Outbound) error
	Retained func(m *Message) error
	// Corrupt is told about each skipped record (key is a copy).
	Corrupt func(key []byte, err error)
	// Progress is called every Options.RecoveryProgressEvery records.
	Progress func(RecoveryStats)
}

// RecoveryStats counts what Recover visited.
type RecoveryStats struct {
	Records  int64 // records read, all kinds
	Bytes    int64 // key and value bytes read
	Messages int64
	Sessions int64
	Inbound  int64
	Outbound int64
	Retained int64
	// Corrupt counts records skipped because they did not decode
	// (including outbound entries whose message is missing or corrupt).
	Corrupt  int64
	Duration time.Duration
}

// Stats are the store's counters since open.
type Stats struct {
	Batches        uint64 // batches committed successfully
	FailedBatches  uint64 // batches whose done got an error
	Groups         uint64 // merged commits (one engine write each)
	Syncs          uint64 // WAL fsyncs (group commits in ModeSync, ticks in ModePeriodic)
	Ops            uint64 // operations committed
	BytesCommitted uint64 // encoded batch bytes committed
	MaxGroup       uint64 // most batches merged into one group
	LiveMessages   int    // message records with references
	// RefErrors counts AddRef/Release calls on a message that had no
	// reference: a caller bug, ignored so one bad batch does not fail the rest.
	RefErrors uint64
	// Unreferenced counts messages put without any AddRef (deleted at once).
	Unreferenced uint64
	// Rewritten counts AddRefOrPut calls that found the message deleted
	// and wrote it again.
	Rewritten uint64
	// OrphansDeleted counts message records without any reference found and
	// deleted when the store opened.
	OrphansDeleted int
	// DanglingAtOpen counts outbound entries pointing at a missing message
	// found when the store opened (Recover skips them).
	DanglingAtOpen int
	// Unavailable is the failure that made the store unavailable, or nil.
	Unavailable error
}

// closeAbandonAfter bounds how long Close waits for a failed engine.
var closeAbandonAfter = time.Second

// idReserve is how far beyond the highest allocated id the persisted id
// ceiling is moved; it is rewritten once per idReserve messages.
const idReserve = 1 << 16

// fatalError carries an unrecoverable storage failure reported by Pebble's
// Logger.Fatalf; core recovers it on its own goroutines.
type fatalError struct{ err error }

// core is the engine-independent part of a store: batches, reference
// counts, the group committer and recovery.
type core struct {
	opts Options
	log  *slog.Logger
	eng  engine

	nextID atomic.Uint64 // next message id PutMessage hands out

	pool sync.Pool // *Batch

	mu struct {
		sync.Mutex
		work  sync.Cond // committer waits for queued batches
		space sync.Cond // Commit waits for queue space
		queue []*Batch
		bytes int
		// refs counts references per live message id; a message put and
		// not yet referenced has 0 until its batch is submitted.
		refs         map[uint64]uint32
		closed       bool
		refErrors    uint64
		unreferenced uint64
		rewritten    uint64
	}

	unavailable atomic.Pointer[error]
	dirty       atomic.Bool // ModePeriodic: applied since the last sync

	// Committer-goroutine state.
	ceiling uint64 // persisted bound above every allocated id

	batches, failed, groups, syncs, ops, bytesIn, maxGroup atomic.Uint64
	orphans, danglingAtOpen                                int

	committerDone chan struct{}
	syncStop      chan struct{}
	syncDone      chan struct{}
}

func newCore(opts Options, eng engine) *core {
	c := &core{opts: opts, log: opts.Logger, eng: eng}
	c.mu.work.L = &c.mu.Mutex
	c.mu.space.L = &c.mu.Mutex
	c.mu.refs = make(map[uint64]uint32)
	c.nextID.Store(1)
	c.pool.New = func() any { return &Batch{c: c} }
	return c
}

// start launches the committer (and the periodic syncer).
func (c *core) start() {
	c.committerDone = make(chan struct{})
	go c.committer()
	if c.opts.Mode == ModePeriodic {
		c.syncStop = make(chan struct{})
		c.syncDone = make(chan struct{})
		go c.syncer()
	}
}

// Mode returns the durability mode.
func (c *core) Mode() Mode { return c.opts.Mode }

// NewBatch returns an empty batch bound to this store.
func (c *core) NewBatch() *Batch {
	b := c.pool.Get().(*Batch)
	b.c = c
	return b
}

func (c *core) recycle(b *Batch) {
	// Do not keep huge buffers alive in the pool.
	if cap(b.buf) > 1<<20 {
		return
	}
	b.reset()
	c.pool.Put(b)
}

// errUnavailable returns the wrapped unavailability error, or nil.
func (c *core) errUnavailable() error {
	if p := c.unavailable.Load(); p != nil {
		return *p
	}
	return nil
}

// degrade makes the store unavailable with cause; the first cause wins.
func (c *core) degrade(cause error) {
	err := fmt.Errorf("%w: %w", ErrStoreUnavailable, cause)
	if c.unavailable.CompareAndSwap(nil, &err) {
		c.log.Error("persist: store is unavailable until restart; QoS 1/2 publishes will be refused", "err", cause)
	}
}

// Commit applies b atomically and durably according to the mode, then
// calls done exactly once; see Store.
func (c *core) Commit(b *Batch, done func(error)) {
	if b.c != c {
		done(fmt.Errorf("%w: batch belongs to another store", ErrInvalid))
		return
	}
	if b.err != nil {
		err := b.err
		c.recycle(b)
		done(err)
		return
	}
	if err := c.errUnavailable(); err != nil {
		c.failed.Add(1)
		c.recycle(b)
		done(err)
		return
	}
	c.mu.Lock()
	for c.mu.bytes > 0 && c.mu.bytes+len(b.buf) > c.opts.MaxPendingBytes && !c.mu.closed {
		c.mu.space.Wait()
	}
	if c.mu.closed {
		c.mu.Unlock()
		c.recycle(b)
		done(ErrClosed)
		return
	}
	// Reference counts change here, under the same lock that orders the
	// queue, so the order of count changes is the order batches are
	// applied in: the batch that takes a count to zero deletes the message,
	// after every batch that referenced it.
	c.applyRefsLocked(b)
	b.done = done
	c.mu.queue = append(c.mu.queue, b)
	c.mu.bytes += len(b.buf)
	c.mu.work.Signal()
	c.mu.Unlock()
}

// CommitWait commits b and waits for the result.
func (c *core) CommitWait(b *Batch) error {
	ch := make(chan error, 1)
	c.Commit(b, func(err error) { ch <- err })
	return <-ch
}

func (c *core) applyRefsLocked(b *Batch) {
	refs := c.mu.refs
	for _, id := range b.puts {
		refs[id] = 0
	}
	// Conditional puts first: a Release of the same id in this batch must
	// see the reference they add, or its delete would follow the rewrite.
	for _, cp := range b.conds {
		if _, ok := refs[cp.id]; ok {
			refs[cp.id]++
			b.buf[cp.off] = opSkip
		} else {
			refs[cp.id] = 1
			b.buf[cp.off] = opSet
			c.mu.rewritten++
		}
	}
	for _, r := range b.refs {
		if r.add {
			if _, ok := refs[r.id]; !ok {
				c.mu.refErrors++
				continue
			}
			refs[r.id]++
		} else if c.releaseLocked(r.id) {
			b.deleteKey(opDelete, func(dst []byte) []byte { return appendMessageKey(dst, r.id) })
		}
	}
	for _, id := range b.puts {
		if n, ok := refs[id]; ok && n == 0 {
			delete(refs, id)
			c.mu.unreferenced++
			b.deleteKey(opDelete, func(dst []byte) []byte { return appendMessageKey(dst, id) })
		}
	}
}

// releaseLocked drops one reference and reports whether it was the last.
func (c *core) releaseLocked(id uint64) bool {
	n, ok := c.mu.refs[id]
	if !ok || n == 0 {
		c.mu.refErrors++
		return false
	}
	if n == 1 {
		delete(c.mu.refs, id)
		return true
	}
	c.mu.refs[id] = n - 1
	return false
}

// committer is the single goroutine that merges queued batches into one
// engine write (one fsync in ModeSync) and runs their done callbacks.
func (c *core) committer() {
	defer close(c.committerDone)
	var group []*Batch
	for {
		c.mu.Lock()
		for len(c.mu.queue) == 0 && !c.mu.closed {
			c.mu.work.Wait()
		}
		if len(c.mu.queue) == 0 {
			c.mu.Unlock()
			return
		}
		n, size := 0, 0
		for n < len(c.mu.queue) && (n == 0 || size+len(c.mu.queue[n].buf) <= c.opts.MaxGroupBytes) {
			size += len(c.mu.queue[n].buf)
			n++
		}
		group = append(group[:0], c.mu.queue[:n]...)
		rest := copy(c.mu.queue, c.mu.queue[n:])
		clear(c.mu.queue[rest:])
		c.mu.queue = c.mu.queue[:rest]
		c.mu.bytes -= size
		c.mu.space.Broadcast()
		c.mu.Unlock()

		err := c.commitGroup(group)
		if err != nil {
			c.failed.Add(uint64(len(group)))
		} else {
			c.batches.Add(uint64(len(group)))
			if g := uint64(len(group)); g > c.maxGroup.Load() {
				c.maxGroup.Store(g)
			}
		}
		for i, b := range group {
			done := b.done
			c.recycle(b)
			group[i] = nil
			done(err)
		}
	}
}

// catchFatal turns a panic in the storage engine into *err: a fatalError
// from Pebble's Logger.Fatalf, or a plain panic (Pebble panics when asked to
// write after an earlier WAL failure). The store then becomes unavailable
// instead of taking the broker down; the stack is logged.
func (c *core) catchFatal(err *error) {
	if r := recover(); r != nil {
		if f, ok := r.(fatalError); ok {
			*err = f.err
			return
		}
		*err = fmt.Errorf("persist: panic in storage engine: %v", r)
		c.log.Error("persist: panic in storage engine", "panic", r, "stack", string(debug.Stack()))
	}
}

// commitGroup writes the group as one engine batch.
func (c *core) commitGroup(group []*Batch) (err error) {
	if err := c.errUnavailable(); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			c.degrade(err)
			err = c.errUnavailable()
		}
	}()
	defer c.catchFatal(&err)
	w := c.eng.newWriter()
	defer func() { w.release() }()
	var ops, size int
	for _, b := range group {
		ops += b.ops
		size += len(b.buf)
		for rest := b.buf; len(rest) > 0; {
			var kind byte
			var k, v []byte
			kind, k, v, rest = nextOp(rest)
			switch kind {
			case opSet:
				w.set(k, v)
			case opDelete:
				w.del(k)
			case opSkip:
			case opDeleteClient:
				// The client's entries must be read as of everything before
				// this op: apply what is merged so far (the final write's
				// sync covers it), then read.
				if w.count() > 0 {
					if err := c.eng.apply(w, false); err != nil {
						return err
					}
					w.release()
					w = c.eng.newWriter()
				}
				if err := c.deleteClient(w, k); err != nil {
					return err
				}
			}
		}
	}
	if maxID := c.nextID.Load() - 1; maxID >= c.ceiling {
		c.ceiling = maxID + idReserve
		w.set(metaIDCeiling, appendMetaU64(nil, c.ceiling))
	}
	sync := c.opts.Mode == ModeSync
	if err := c.eng.apply(w, sync); err != nil {
		return err
	}
	c.groups.Add(1)
	c.ops.Add(uint64(ops))
	c.bytesIn.Add(uint64(size))
	if sync {
		c.syncs.Add(1)
	} else {
		c.dirty.Store(true)
	}
	return nil
}

// deleteClient adds to w the deletion of a client's range and of every
// message whose last reference was one of the client's outbound entries.
func (c *core) deleteClient(w writer, prefix []byte) error {
	lo := append(append([]byte(nil), prefix...), kindOutbound)
	hi := append(append([]byte(nil), prefix...), kindOutbound+1)
	var ids []uint64
	err := c.scan(lo, hi, func(_, v []byte) error {
		if o, err := decodeOutbound(v); err == nil && o.MessageID != 0 {
			ids = append(ids, o.MessageID)
		}
		return nil
	})
	if err != nil {
		return err
	}
	w.delRange(prefix, append(lo[:len(prefix):len(prefix)], kindEnd))
	c.mu.Lock()
	for _, id := range ids {
		if c.releaseLocked(id) {
			w.del(appendMessageKey(nil, id))
		}
	}
	c.mu.Unlock()
	return nil
}

// scan calls fn for every key in [lo, hi), in order.
func (c *core) scan(lo, hi []byte, fn func(k, v []byte) error) (err error) {
	defer c.catchFatal(&err)
	it, err := c.eng.newIter(lo, hi)
	if err != nil {
		return err
	}
	for ok := it.First(); ok; ok = it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			_ = it.Close()
			return err
		}
		if err := fn(it.Key(), v); err != nil {
			_ = it.Close()
			return err
		}
	}
	return it.Close()
}

// syncer fsyncs the WAL every SyncInterval in ModePeriodic.
func (c *core) syncer() {
	defer close(c.syncDone)
	t := time.NewTicker(c.opts.SyncInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			c.syncIfDirty()
		case <-c.syncStop:
			c.syncIfDirty()
			return
		}
	}
}

func (c *core) syncIfDirty() {
	if !c.dirty.Swap(false) || c.errUnavailable() != nil {
		return
	}
	var err error
	func() {
		defer c.catchFatal(&err)
		err = c.eng.syncWAL()
	}()
	if err != nil {
		c.degrade(err)
		return
	}
	c.syncs.Add(1)
}

// Stats returns the committer counters.
func (c *core) Stats() Stats {
	c.mu.Lock()
	s := Stats{
		LiveMessages: len(c.mu.refs),
		RefErrors:    c.mu.refErrors,
		Unreferenced: c.mu.unreferenced,
		Rewritten:    c.mu.rewritten,
	}
	c.mu.Unlock()
	s.Batches = c.batches.Load()
	s.FailedBatches = c.failed.Load()
	s.Groups = c.groups.Load()
	s.Syncs = c.syncs.Load()
	s.Ops = c.ops.Load()
	s.BytesCommitted = c.bytesIn.Load()
	s.MaxGroup = c.maxGroup.Load()
	s.OrphansDeleted = c.orphans
	s.DanglingAtOpen = c.danglingAtOpen
	s.Unavailable = c.errUnavailable()
	return s
}

// Close commits what is queued, syncs, and closes the engine.
func (c *core) Close() error {
	c.mu.Lock()
	if c.mu.closed {
		c.mu.Unlock()
		return ErrClosed
	}
	c.mu.closed = true
	c.mu.work.Broadcast()
	c.mu.space.Broadcast()
	c.mu.Unlock()
	<-c.committerDone
	if c.syncStop != nil {
		close(c.syncStop)
	}
	if cause := c.errUnavailable(); cause != nil {
		// After a failed write Pebble's commit pipeline may be wedged with
		// its locks held (a sync in flight never returns; closing could
		// hang). Give it a moment, then leave it to the process exit: the
		// restart recovers from what is on disk.
		ch := make(chan struct{})
		go func() {
			defer close(ch)
			if c.syncDone != nil {
				<-c.syncDone
			}
			var err error
			defer c.catchFatal(&err)
			_ = c.eng.close()
		}()
		select {
		case <-ch:
		case <-time.After(closeAbandonAfter):
			c.log.Warn("persist: storage engine did not close after the failure; abandoning it")
		}
		return cause
	}
	if c.syncDone != nil {
		<-c.syncDone
	}
	var err error
	func() {
		defer c.catchFatal(&err)
		err = c.eng.close()
	}()
	if cause := c.errUnavailable(); cause != nil { // the final periodic sync failed
		return errors.Join(cause, err)
	}
	return err
}

// load rebuilds the in-memory state from the engine at open: the schema
// check, the id allocator and the reference counts. Message records left
// without a reference are deleted.
func (c *core) load() (err error) {
	defer c.catchFatal(&err)
	var schema, ceiling uint64
	var haveSchema bool
	err = c.scan([]byte{prefixMeta}, []byte{prefixMeta + 1}, func(k, v []byte) error {
		switch string(k) {
		case string(metaSchema):
			n, err := decodeMetaU64(v)
			if err != nil {
				return fmt.Errorf("persist: schema record: %w", err)
			}
			schema, haveSchema = n, true
		case string(metaIDCeiling):
			n, err := decodeMetaU64(v)
			if err != nil {
				// Only a bound: the message keys below still bound the ids.
				c.log.Warn("persist: id ceiling record unreadable; using message keys", "err", err)
				return nil
			}
			ceiling = n
		}
		return nil
	})
	if err != nil {
		return err
	}
	if haveSchema && schema != schemaVersion {
		return fmt.Errorf("persist: store schema version %d, this build reads %d: %w", schema, schemaVersion, ErrUnknownVersion)
	}
	refs := c.mu.refs
	var maxID uint64
	err = c.scan([]byte{prefixMessage}, []byte{prefixMessage + 1}, func(k, _ []byte) error {
		id, err := parseMessageKey(k)
		if err != nil {
			return nil // Recover reports it
		}
		refs[id] = 0
		maxID = max(maxID, id)
		return nil
	})
	if err != nil {
		return err
	}
	err = c.scan([]byte{prefixClient}, []byte{prefixClient + 1}, func(k, v []byte) error {
		ck, err := parseClientKey(k)
		if err != nil || ck.kind != kindOutbound {
			return nil
		}
		o, err := decodeOutbound(v)
		if err != nil || o.MessageID == 0 {
			return nil
		}
		if _, ok := refs[o.MessageID]; ok {
			refs[o.MessageID]++
		} else {
			c.danglingAtOpen++
		}
		return nil
	})
	if err != nil {
		return err
	}
	var orphans []uint64
	for id, n := range refs {
		if n == 0 {
			orphans = append(orphans, id)
			delete(refs, id)
		}
	}
	slices.Sort(orphans)
	c.orphans = len(orphans)
	c.nextID.Store(max(ceiling, maxID+1, 1))
	c.ceiling = ceiling
	if len(orphans) > 0 || !haveSchema {
		w := c.eng.newWriter()
		defer w.release()
		for _, id := range orphans {
			w.del(appendMessageKey(nil, id))
		}
		w.set(metaSchema, appendMetaU64(nil, schemaVersion))
		if err := c.eng.apply(w, c.opts.Mode != ModeNone); err != nil {
			return err
		}
	}
	if len(orphans) > 0 {
		c.log.Warn("persist: deleted unreferenced message records", "count", len(orphans))
	}
	if c.danglingAtOpen > 0 {
		c.log.Warn("persist: outbound entries reference missing messages; recovery skips them", "count", c.danglingAtOpen)
	}
	return nil
}

// Recover visits everything stored; see Store.
func (c *core) Recover(v Visitor) (RecoveryStats, error) {
	start := time.Now()
	var st RecoveryStats
	every := int64(c.opts.RecoveryProgressEvery)
	// Messages that failed to decode: entries pointing at them are skipped too.
	badMsgs := map[uint64]bool{}
	var lastClient string
	clientString := func(b []byte) string {
		// Consecutive records share the client id: allocate it once.
		if string(b) != lastClient {
			lastClient = string(b)
		}
		return lastClient
	}
	corrupt := func(k []byte, err error) {
		st.Corrupt++
		c.log.Warn("persist: skipping record that does not decode", "key", fmt.Sprintf("%x", k), "err", err)
		if v.Corrupt != nil {
			v.Corrupt(append([]byte(nil), k...), err)
		}
	}
	visit := func(k, val []byte) error {
		st.Records++
		st.Bytes += int64(len(k) + len(val))
		if st.Records%every == 0 {
			st.Duration = time.Since(start)
			c.log.Info("persist: recovering", "records", st.Records, "bytes", st.Bytes, "elapsed", st.Duration)
			if v.Progress != nil {
				v.Progress(st)
			}
		}
		switch k[0] {
		case prefixMeta:
			return nil
		case prefixMessage:
			id, err := parseMessageKey(k)
			if err != nil {
				corrupt(k, err)
				return nil
			}
			m, err := decodeMessage(val, MaxPayloadLen)
			if err != nil {
				badMsgs[id] = true
				corrupt(k, err)
				return nil
			}
			st.Messages++
			if v.Message != nil {
				return v.Message(id, m)
			}
		case prefixClient:
			ck, err := parseClientKey(k)
			if err != nil {
				corrupt(k, err)
				return nil
			}
			switch ck.kind {
			case kindSession:
				s, err := decodeSession(val)
				if err != nil {
					corrupt(k, err)
					return nil
				}
				st.Sessions++
				if v.Session != nil {
					return v.Session(clientString(ck.clientID), s)
				}
			case kindInbound:
				in, err := decodeInbound(val)
				if err == nil && ck.packetID == 0 {
					err = fmt.Errorf("%w: inbound marker for packet id 0", ErrCorrupt)
				}
				if err != nil {
					corrupt(k, err)
					return nil
				}
				st.Inbound++
				if v.Inbound != nil {
					return v.Inbound(clientString(ck.clientID), ck.packetID, in)
				}
			case kindOutbound:
				o, err := decodeOutbound(val)
				if err == nil && o.MessageID != 0 && (badMsgs[o.MessageID] || !c.hasMessage(o.MessageID)) {
					err = fmt.Errorf("%w: message %d", ErrDanglingReference, o.MessageID)
				}
				if err != nil {
					corrupt(k, err)
					return nil
				}
				st.Outbound++
				if v.Outbound != nil {
					return v.Outbound(clientString(ck.clientID), ck.seq, o)
				}
			}
		case prefixRetained:
			m, err := decodeMessage(val, MaxPayloadLen)
			if err == nil && m.Topic != string(k[1:]) {
				err = fmt.Errorf("%w: retained record topic %q under key topic %q", ErrCorrupt, m.Topic, k[1:])
			}
			if err != nil {
				corrupt(k, err)
				return nil
			}
			st.Retained++
			if v.Retained != nil {
				return v.Retained(m)
			}
		default:
			corrupt(k, fmt.Errorf("%w: unknown key prefix 0x%02x", ErrCorrupt, k[0]))
		}
		return nil
	}
	err := c.scan(nil, nil, func(k, val []byte) error {
		if len(k) == 0 {
			corrupt(k, fmt.Errorf("%w: empty key", ErrCorrupt))
			return nil
		}
		return visit(k, val)
	})
	st.Duration = time.Since(start)
	if err == nil {
		c.log.Info("persist: recovered", "records", st.Records, "sessions", st.Sessions, "messages", st.Messages,
			"outbound", st.Outbound, "inbound", st.Inbound, "retained", st.Retained, "corrupt", st.Corrupt, "elapsed", st.Duration)
	}
	return st, err
}

func (c *core) hasMessage(id uint64) bool {
	c.mu.Lock()
	_, ok := c.mu.refs[id]
	c.mu.Unlock()
	return ok
}

// ExpireSessions deletes sessions whose expiry passed; see Store.
func (c *core) ExpireSessions(now time.Time) (int, error) {
	nowMs := now.UnixMilli()
	var expired []string
	err := c.eachClient(func(ck clientKey, v []byte) error {
		if ck.kind != kindSession {
			return nil
		}
		s, err := decodeSession(v)
		if err != nil || s.DisconnectedAt == 0 || s.ExpiryInterval == NoExpiry {
			return nil
		}
		if s.DisconnectedAt+int64(s.ExpiryInterval)*1000 <= nowMs {
			expired = append(expired, string(ck.clientID))
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	for chunk := range slices.Chunk(expired, 1000) {
		b := c.NewBatch()
		for _, id := range chunk {
			b.DeleteSession(id)
		}
		if err := c.CommitWait(b); err != nil {
			return 0, err
		}
	}
	return len(expired), nil
}

// eachClient calls fn with the first record of every client range (the
// session record when there is one), seeking past the rest of the range.
func (c *core) eachClient(fn func(ck clientKey, v []byte) error) (err error) {
	defer c.catchFatal(&err)
	it, err := c.eng.newIter([]byte{prefixClient}, []byte{prefixClient + 1})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, it.Close()) }()
	var seek []byte
	for ok := it.First(); ok; {
		k := it.Key()
		ck, perr := parseClientKey(k)
		if perr != nil && ck.prefixLen == 0 {
			ok = it.Next()
			continue
		}
		v, err := it.ValueAndErr()
		if err != nil {
			return err
		}
		if perr == nil {
			if err := fn(ck, v); err != nil {
				return err
			}
		}
		seek = append(append(seek[:0], k[:ck.prefixLen]...), kindEnd)
		ok = it.SeekGE(seek)
	}
	return it.Error()
}
