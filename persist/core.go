package persist

import (
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"
)

// core is what the Pebble and Memory stores share, above their engine:
// this file holds its state, its failure handling (unavailability, engine
// panics) and its lifecycle after open (Stats, Close). Opening is in
// open.go, committing in commit.go, reference counts in refs.go, reading
// everything back in recover.go.

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
//
// Concurrency: fields under mu are shared by every committing goroutine,
// the committer and (ModeSync) the completer; the counters are atomics
// read by Stats; the
// reference counts (shared, dirtyRefs, scratch, live) and ceiling belong to
// the committer goroutine, and load fills them before it starts; orphans
// and danglingAtOpen are written by load and only read afterwards.
type core struct {
	opts Options
	log  *slog.Logger
	eng  engine

	nextID atomic.Uint64 // next message id PutMessage hands out

	pool sync.Pool // *Batch

	mu struct {
		sync.Mutex
		work   sync.Cond // committer waits for queued batches
		space  sync.Cond // Commit waits for queue space
		queue  []*Batch
		bytes  int
		closed bool
	}

	// Committer-goroutine state: reference counts (refs.go).
	shared      map[uint64]uint32 // count of every message with two or more references
	dirtyRefs   []uint64          // ids whose count record must be rewritten at the next apply
	scratch     refScratch
	elide       elider // write avoidance for the group being committed (elide.go)
	group       groupWriter
	live        int64 // live message records as of the batches resolved so far
	liveWritten int64 // the value of metaLive on disk

	unavailable atomic.Pointer[error]
	dirty       atomic.Bool // ModePeriodic: applied since the last sync

	// Committer-goroutine state.
	ceiling uint64 // persisted bound above every allocated id

	batches, failed, groups, syncs, ops, bytesIn, maxGroup atomic.Uint64
	refErrors, unreferenced, rewritten                     atomic.Uint64
	danglingRead, corruptRead                              atomic.Uint64
	opsAvoided, msgsAvoided                                atomic.Uint64
	sharedN, liveN                                         atomic.Int64 // mirrors for Stats
	orphans, danglingAtOpen                                int
	migrated                                               bool

	// The ModeSync pipeline (commit.go): applied groups travel from the
	// committer to the completer through pipe, in commit order; slots
	// holds one token per group between the committer cutting it and the
	// completer finishing it (Options.MaxInFlightGroups). All three nil
	// in the other modes.
	pipe  chan pending
	slots chan struct{}
	spare chan []*Batch // group slices the completer is done with, for reuse

	inFlight                                atomic.Int64 // groups applied, not yet completed
	maxInFlight, pipelineWaits, commitWaits atomic.Uint64

	committerDone chan struct{}
	completerDone chan struct{}
	syncStop      chan struct{}
	syncDone      chan struct{}
}

// newCore returns the core of a store over eng; load, then start, make it
// usable.
func newCore(opts Options, eng engine) *core {
	c := &core{opts: opts, log: opts.Logger, eng: eng}
	c.mu.work.L = &c.mu.Mutex
	c.mu.space.L = &c.mu.Mutex
	c.shared = make(map[uint64]uint32)
	c.group.c = c
	c.nextID.Store(1)
	c.pool.New = func() any { return &Batch{c: c} }
	return c
}

// start launches the committer (and, in ModeSync, the completer; in
// ModePeriodic, the syncer).
func (c *core) start() {
	c.committerDone = make(chan struct{})
	if c.opts.Mode == ModeSync {
		c.pipe = make(chan pending, c.opts.MaxInFlightGroups)
		c.slots = make(chan struct{}, c.opts.MaxInFlightGroups)
		c.spare = make(chan []*Batch, c.opts.MaxInFlightGroups)
		c.completerDone = make(chan struct{})
		go c.completer()
	}
	go c.committer()
	if c.opts.Mode == ModePeriodic {
		c.syncStop = make(chan struct{})
		c.syncDone = make(chan struct{})
		go c.syncer()
	}
}

// Mode returns the durability mode.
func (c *core) Mode() Mode { return c.opts.Mode }

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

// Stats returns the committer counters.
func (c *core) Stats() Stats {
	s := Stats{
		LiveMessages:    int(c.liveN.Load()),
		SharedMessages:  int(c.sharedN.Load()),
		RefErrors:       c.refErrors.Load(),
		Unreferenced:    c.unreferenced.Load(),
		Rewritten:       c.rewritten.Load(),
		WritesAvoided:   c.opsAvoided.Load(),
		MessagesAvoided: c.msgsAvoided.Load(),
		DanglingRead:    c.danglingRead.Load(),
		CorruptRead:     c.corruptRead.Load(),
		Migrated:        c.migrated,
	}
	s.Batches = c.batches.Load()
	s.FailedBatches = c.failed.Load()
	s.Groups = c.groups.Load()
	s.Syncs = c.syncs.Load()
	if n, total, ok := c.eng.walSyncs(); ok {
		s.Syncs, s.SyncTime = n, total
	}
	s.MaxInFlight = c.maxInFlight.Load()
	s.PipelineWaits = c.pipelineWaits.Load()
	s.CommitWaits = c.commitWaits.Load()
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
	<-c.committerDone // it drains the queue, then closes the pipe
	if c.completerDone != nil {
		<-c.completerDone // every group in flight has its done called
	}
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
