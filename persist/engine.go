package persist

// engine is the key-value layer under core: Pebble on disk, or maps in
// memory. Only the committer goroutine writes; readers may run concurrently.
type engine interface {
	newWriter() writer
	// apply writes w atomically; with sync, the WAL is fsynced before it
	// returns (which also makes every earlier apply durable).
	apply(w writer, sync bool) error
	// syncWAL makes every applied write durable.
	syncWAL() error
	// newIter returns an iterator over [lower, upper); nil bounds are open.
	// It reads a consistent snapshot.
	newIter(lower, upper []byte) (iterator, error)
	// diskUsage reports the space taken on disk (zero in memory).
	diskUsage() diskUsage
	close() error
}

// writer accumulates one atomic write. The key and value slices passed in
// are copied before the call returns.
type writer interface {
	set(k, v []byte)
	del(k []byte)
	delRange(lo, hi []byte)
	count() int
	release()
}

// iterator has the method set of *pebble.Iterator that core uses.
type iterator interface {
	First() bool
	Next() bool
	SeekGE(key []byte) bool
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
