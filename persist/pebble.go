package persist

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/cockroachdb/pebble/v2"
)

// Pebble is the on-disk Store (ModeSync and ModePeriodic), on one Pebble
// database in Options.Dir.
type Pebble struct {
	*core
	db *pebble.DB
}

var _ Store = (*Pebble)(nil)

// Open opens the store Options.Mode asks for: a Memory store for ModeNone,
// otherwise a Pebble store in Options.Dir.
func Open(opts Options) (Store, error) {
	if opts.Mode == ModeNone {
		return NewMemory(opts)
	}
	return OpenPebble(opts)
}

// OpenPebble opens (creating if needed) the Pebble store in opts.Dir and
// rebuilds the reference counts and id allocator: it reads every message
// key and outbound entry, so it takes time proportional to their number.
// Message records without a reference are deleted.
func OpenPebble(opts Options) (*Pebble, error) {
	opts.EnsureDefaults()
	if opts.Mode == ModeNone {
		return nil, errors.New("persist: OpenPebble with ModeNone; use NewMemory or Open")
	}
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	eng := &pebbleEngine{}
	c := newCore(opts, eng)
	cache := pebble.NewCache(opts.CacheSize)
	defer cache.Unref()
	popts := &pebble.Options{
		FS:                 opts.FS,
		Cache:              cache,
		MemTableSize:       opts.MemTableSize,
		FormatMajorVersion: pebble.FormatNewest,
		Logger:             pebbleLogger{log: opts.Logger},
		EventListener: &pebble.EventListener{
			BackgroundError: func(err error) {
				opts.Logger.Error("persist: pebble background error", "err", err)
			},
		},
	}
	var db *pebble.DB
	var err error
	func() {
		defer c.catchFatal(&err)
		db, err = pebble.Open(opts.Dir, popts)
	}()
	if err != nil {
		return nil, fmt.Errorf("persist: open %s: %w", opts.Dir, err)
	}
	eng.db = db
	if err := c.load(); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("persist: open %s: %w", opts.Dir, err)
	}
	c.start()
	return &Pebble{core: c, db: db}, nil
}

// Flush flushes the memtable to sstables and compacts the whole key space;
// used by benchmarks and `tern store` to measure bytes on disk.
func (p *Pebble) Flush() error {
	if err := p.db.Flush(); err != nil {
		return err
	}
	return p.db.Compact(context.Background(), []byte{0}, []byte{0xFF}, true)
}

// pebbleLogger routes Pebble's logs to slog. Pebble calls Fatalf when it
// cannot continue (a failed WAL write or sync in the commit pipeline);
// instead of exiting the process, Fatalf panics with a fatalError, which
// the store's goroutines recover to become unavailable. A Fatalf on one of
// Pebble's own background goroutines still ends the process, as Pebble
// intends.
type pebbleLogger struct{ log *slog.Logger }

func (l pebbleLogger) Infof(format string, args ...any) {
	l.log.Debug("pebble: " + fmt.Sprintf(format, args...))
}

func (l pebbleLogger) Errorf(format string, args ...any) {
	l.log.Error("pebble: " + fmt.Sprintf(format, args...))
}

func (l pebbleLogger) Fatalf(format string, args ...any) {
	err := fmt.Errorf(format, args...)
	l.log.Error(err.Error())
	panic(fatalError{err: err})
}

type pebbleEngine struct{ db *pebble.DB }

type pebbleWriter struct{ b *pebble.Batch }

func (e *pebbleEngine) newWriter() writer { return &pebbleWriter{b: e.db.NewBatch()} }

func (w *pebbleWriter) set(k, v []byte)        { _ = w.b.Set(k, v, nil) }
func (w *pebbleWriter) del(k []byte)           { _ = w.b.Delete(k, nil) }
func (w *pebbleWriter) delRange(lo, hi []byte) { _ = w.b.DeleteRange(lo, hi, nil) }
func (w *pebbleWriter) count() int             { return int(w.b.Count()) }
func (w *pebbleWriter) release() {
	if w.b != nil {
		_ = w.b.Close()
		w.b = nil
	}
}

func (e *pebbleEngine) apply(w writer, sync bool) error {
	b := w.(*pebbleWriter).b
	if b.Count() == 0 {
		if sync {
			return e.syncWAL()
		}
		return nil
	}
	opts := pebble.NoSync
	if sync {
		opts = pebble.Sync
	}
	return e.db.Apply(b, opts)
}

func (e *pebbleEngine) syncWAL() error { return e.db.LogData(nil, pebble.Sync) }

func (e *pebbleEngine) newIter(lower, upper []byte) (iterator, error) {
	return e.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
}

func (e *pebbleEngine) diskUsage() diskUsage {
	m := e.db.Metrics()
	return diskUsage{
		total:  int64(m.DiskSpaceUsage()),
		tables: int64(m.Table.Local.LiveSize + m.BlobFiles.Local.LiveSize),
		wal:    int64(m.WAL.PhysicalSize + m.WAL.ObsoletePhysicalSize),
	}
}

func (e *pebbleEngine) close() error { return e.db.Close() }
