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
// ReadOutbound, Usage and Inspect read a consistent snapshot and may run
// concurrently with commits, but Recover is meant to run once after
// opening, before the first Commit. Stats and DiskUsage are cheap and safe
// from any goroutine. Close must not race with Commit.
type Store interface {
	// NewBatch returns an empty batch bound to this store.
	NewBatch() *Batch
	// Commit applies b atomically and durably according to the mode, then
	// calls done exactly once. done runs on one of the store's goroutines
	// (the completer in ModeSync, the committer otherwise), in commit
	// order, after the group holding b is synced (ModeSync) or applied
	// (ModePeriodic, ModeNone); or synchronously, before Commit returns,
	// when the store is closed or unavailable or b is invalid. done must not
	// block: hand the result to your event loop and return. Commit blocks
	// only while more than Options.MaxPendingBytes are queued or awaiting
	// their sync (Stats.CommitWaits counts it).
	Commit(b *Batch, done func(error))
	// CommitWait is Commit followed by waiting for done; for startup,
	// tools and tests, never for an event loop.
	CommitWait(b *Batch) error
	// Recover visits what is stored, in key order: messages by id, then
	// per client its session, inbound markers and outbound entries by
	// sequence, then retained messages. With Visitor.Backlog set it reads
	// neither messages nor outbound entries and reports each client's
	// sequence bounds instead. Records that fail to decode are logged,
	// counted and skipped (Visitor.Corrupt); an error returned by a
	// visitor function stops the walk and is returned.
	Recover(v Visitor) (RecoveryStats, error)
	// ReadOutbound reads clientID's outbound entries with sequence >=
	// fromSeq, in sequence order, and calls fn for each of the first max
	// of them, with its message for the states that need one (Queued,
	// AwaitingPuback, AwaitingPubrec; m is nil for AwaitingPubcomp). m is
	// freshly allocated and may be retained. An entry that does not
	// decode, or whose message is missing or does not decode, is passed
	// too, with bad saying why and m nil; o is zero when the entry itself
	// is unreadable, else it is the entry, whose MessageID still holds a
	// reference. Such entries are counted (Stats.CorruptRead,
	// Stats.DanglingRead) and can never be delivered: the caller decides
	// what becomes of them (the server deletes one and releases its
	// reference: a tombstone), but it must learn their sequence, or it
	// could not tell the hole from a batch not yet applied.
	//
	// It returns next, the sequence to read from next time (one past the
	// last entry read), and n, the entries passed to fn: n < max means no
	// committed entry is left at or after next. If fn returns an error,
	// reading stops and the error is returned with next at that entry's
	// sequence, so a retry reads it again.
	//
	// It reads what is committed — batches applied by the committer —
	// from one snapshot taken when it is called; batches still queued in
	// the committer are not visible (after CommitWait or a done callback,
	// they are). fn is called after the snapshot is released, so it may
	// call any store method. Cost: two seeks plus O(max) entries and
	// message reads.
	ReadOutbound(clientID string, fromSeq uint64, max int, fn func(seq uint64, o Outbound, m *Message, bad error) error) (next uint64, n int, err error)
	// ExpireSessions deletes every session disconnected for longer than its
	// expiry interval at now, with all its data and message references,
	// and returns how many it deleted. Sessions with DisconnectedAt 0 are
	// kept, and so are those for which keep (if not nil) returns true: the
	// caller expires them itself after Recover (the server does, for
	// $share members whose stored messages go to another member). Call it
	// after opening, before Recover, to drop sessions that expired while
	// the broker was down.
	ExpireSessions(now time.Time, keep func(clientID string, s *Session) bool) (int, error)
	// Stats returns the committer counters; cheap.
	Stats() Stats
	// DiskUsage returns the bytes the store takes (Pebble: every file it
	// holds, from its metrics; Memory: key and value bytes) and the bytes
	// free on its filesystem (Memory: math.MaxUint64). Cheap enough to
	// call every second, for quotas.
	DiskUsage() (storeBytes, freeBytes uint64, err error)
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
	Ops            uint64 // operations committed
	BytesCommitted uint64 // encoded batch bytes committed
	MaxGroup       uint64 // most batches merged into one group
	// Syncs counts the WAL fsyncs the engine performed (Pebble's own
	// count: in ModeSync one fsync covers every group applied while the
	// previous one ran, so Syncs <= Groups; in ModePeriodic about one per
	// tick that found writes). SyncTime is the time they took in total.
	Syncs    uint64
	SyncTime time.Duration
	// MaxInFlight is the most groups applied and awaiting their fsync at
	// once (ModeSync; at most Options.MaxInFlightGroups).
	MaxInFlight uint64
	// PipelineWaits counts the times the committer had a group to apply
	// but all Options.MaxInFlightGroups slots were taken (ModeSync).
	PipelineWaits uint64
	// CommitWaits counts Commit calls that blocked their caller because
	// Options.MaxPendingBytes were queued or in flight: back-pressure from
	// a disk slower than the publishers.
	CommitWaits uint64
	// LiveMessages is the number of message records with references, as
	// committed (kept in a meta record, so it needs no scan at open).
	LiveMessages int
	// SharedMessages is the number of messages with two or more
	// references: the only ones whose count is kept, in memory and on disk.
	SharedMessages int
	// RefErrors counts AddRef calls on a message that is gone and Release
	// calls on a message put without a reference: caller bugs, ignored so
	// one bad batch does not fail the rest.
	RefErrors uint64
	// Unreferenced counts messages put without any AddRef (deleted at once).
	Unreferenced uint64
	// Rewritten counts AddRefOrPut calls that found the message deleted
	// and wrote it again.
	Rewritten uint64
	// WritesAvoided counts engine operations not written because a later
	// operation of the same group made them moot: a set overwritten or
	// deleted, a deletion of what the group itself created (write
	// avoidance, package doc). MessagesAvoided counts the message records
	// among them: messages put and released within one group, never
	// written.
	WritesAvoided   uint64
	MessagesAvoided uint64
	// OrphansDeleted counts message records without any reference found and
	// deleted when the store opened; only a migration or
	// Options.RepairReferences looks for them (Usage reports them).
	OrphansDeleted int
	// DanglingAtOpen counts outbound entries pointing at a missing message
	// found when the store opened, by the same full scan.
	DanglingAtOpen int
	// Migrated reports that this open rebuilt the reference counts by a
	// full scan (a schema-1 store, or Options.RepairReferences).
	Migrated bool
	// DanglingRead counts entries ReadOutbound reported as bad because
	// their message is missing or does not decode.
	DanglingRead uint64
	// CorruptRead counts entries ReadOutbound reported as bad because they
	// do not decode.
	CorruptRead uint64
	// Unavailable is the failure that made the store unavailable, or nil.
	Unavailable error
}
