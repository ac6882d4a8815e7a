package persist

import (
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
