package persist

import "time"

// engine is the key-value layer under core: Pebble on disk, or maps in
// memory. Only the committer goroutine writes; readers may run concurrently.
type engine interface {
	newWriter() writer
	// apply writes w atomically; with sync, the WAL is fsynced before it
	// returns (which also makes every earlier apply durable).
	apply(w writer, sync bool) error
	// applyNoSyncWait writes w atomically, makes it readable and requests
	// the WAL fsync that makes it durable, without waiting for it:
	// w.syncWait waits. Writes applied later are synced by the same fsync
	// or a later one, never an earlier one (the WAL is sequential), so
	// waiting in apply order completes in apply order.
	applyNoSyncWait(w writer) error
	// syncWAL makes every applied write durable.
	syncWAL() error
	// walSyncs returns the WAL fsyncs performed since open and the time
	// they took; ok is false when the engine has no WAL.
	walSyncs() (n uint64, total time.Duration, ok bool)
	// newIter returns an iterator over [lower, upper); nil bounds are open.
	// It reads a consistent snapshot.
	newIter(lower, upper []byte) (iterator, error)
	// newView returns a consistent snapshot for several iterators and
	// point reads (ReadOutbound reads entries and their messages from one
	// view, so a message deleted after the view was taken is still seen).
	// Close it promptly: the memory engine holds its read lock meanwhile.
	newView() (view, error)
	// has reports whether k exists in what is applied; the committer uses
	// it between applies.
	has(k []byte) (bool, error)
	// diskUsage reports the space taken on disk (zero in memory).
	diskUsage() diskUsage
	// space returns the bytes the store takes and the bytes free for it:
	// cheap enough to call every second.
	space() (used, free uint64, err error)
	close() error
}

// view is a consistent read-only snapshot of an engine.
type view interface {
	// iter returns an iterator over [lower, upper) of the snapshot; close
	// it before closing the view.
	iter(lower, upper []byte) (iterator, error)
	// get returns the value of k, or ok false; the value is valid until
	// the next get or close. Increasing keys are cheapest.
	get(k []byte) (v []byte, ok bool, err error)
	close() error
}

// writer accumulates one atomic write. The key and value slices passed in
// are copied before the call returns.
type writer interface {
	set(k, v []byte)
	del(k []byte)
	delRange(lo, hi []byte)
	count() int
	// syncWait waits for the fsync applyNoSyncWait requested for this
	// write. Call it once, before release.
	syncWait() error
	release()
}

// iterator has the method set of *pebble.Iterator that core uses.
type iterator interface {
	First() bool
	Last() bool
	Next() bool
	Prev() bool
	SeekGE(key []byte) bool
	SeekLT(key []byte) bool
	Valid() bool
	Key() []byte
	ValueAndErr() ([]byte, error)
	Error() error
	Close() error
}

// diskUsage splits the bytes on disk by file kind.
type diskUsage struct {
	total, tables, wal int64
}
