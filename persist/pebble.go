package persist

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
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

// OpenPebble opens (creating if needed) the Pebble store in opts.Dir. It
// reads the meta records and the reference counts of shared messages, and
// seeks to the highest message id: the time it takes grows with the number
// of shared messages, not with the number of queued ones. A store written
// by a build without reference-count records (schema 1) is migrated once,
// by one full scan; so is any store when Options.RepairReferences is set.
func OpenPebble(opts Options) (*Pebble, error) {
	opts.EnsureDefaults()
	if opts.Mode == ModeNone {
		return nil, errors.New("persist: OpenPebble with ModeNone; use NewMemory or Open")
	}
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	eng := &pebbleEngine{fs: opts.FS, dir: opts.Dir}
	c := newCore(opts, eng)
	cache := pebble.NewCache(opts.CacheSize)
	defer cache.Unref()
	popts := &pebble.Options{
		FS:                 opts.FS,
		Cache:              cache,
		MemTableSize:       opts.MemTableSize,
		MaxOpenFiles:       opts.MaxOpenFiles,
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
	eng.fsyncs = db.Metrics().LogWriter.FsyncLatency
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

type pebbleEngine struct {
	db  *pebble.DB
	fs  vfs.FS
	dir string
	// fsyncs is Pebble's WAL fsync-latency histogram (the same one for
	// every WAL file of the open database).
	fsyncs prometheus.Histogram
}

type pebbleWriter struct{ b *pebble.Batch }

func (e *pebbleEngine) newWriter() writer { return &pebbleWriter{b: e.db.NewBatch()} }

func (w *pebbleWriter) set(k, v []byte)        { _ = w.b.Set(k, v, nil) }
func (w *pebbleWriter) del(k []byte)           { _ = w.b.Delete(k, nil) }
func (w *pebbleWriter) delRange(lo, hi []byte) { _ = w.b.DeleteRange(lo, hi, nil) }
func (w *pebbleWriter) count() int             { return int(w.b.Count()) }
func (w *pebbleWriter) syncWait() error        { return w.b.SyncWait() }
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

// applyNoSyncWait uses Pebble's ApplyNoSyncWait: the batch is written to
// the WAL buffer and the memtable, and joins the WAL writer's queue of
// sync requests; Batch.SyncWait returns once an fsync covered it. Pebble's
// flush loop syncs, after each fsync, everything queued meanwhile, so the
// fsyncs are as large as the disk's latency makes them. A group with
// nothing left to write (its batches were applied by earlier flushes, or
// held only skipped operations) still needs that fsync: it carries an
// empty LogData record, as syncWAL does.
func (e *pebbleEngine) applyNoSyncWait(w writer) error {
	b := w.(*pebbleWriter).b
	if b.Empty() {
		_ = b.LogData(nil, nil)
	}
	return e.db.ApplyNoSyncWait(b, pebble.Sync)
}

func (e *pebbleEngine) syncWAL() error { return e.db.LogData(nil, pebble.Sync) }

// walSyncs reads Pebble's WAL fsync-latency histogram: its sample count is
// the number of fsyncs, its sum their duration in nanoseconds.
func (e *pebbleEngine) walSyncs() (uint64, time.Duration, bool) {
	if e.fsyncs == nil {
		return 0, 0, false
	}
	var m dto.Metric
	if err := e.fsyncs.Write(&m); err != nil || m.Histogram == nil {
		return 0, 0, false
	}
	return m.Histogram.GetSampleCount(), time.Duration(m.Histogram.GetSampleSum()), true
}

func (e *pebbleEngine) newIter(lower, upper []byte) (iterator, error) {
	return e.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
}

func (e *pebbleEngine) has(k []byte) (bool, error) {
	_, closer, err := e.db.Get(k)
	if errors.Is(err, pebble.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return true, closer.Close()
}

// newView returns a root iterator over the whole key space; every
// iterator of the view is a clone of it, so all read the same state.
func (e *pebbleEngine) newView() (view, error) {
	root, err := e.db.NewIter(nil)
	if err != nil {
		return nil, err
	}
	return &pebbleView{root: root}, nil
}

// pebbleView reads one state of the database: the root iterator serves
// point reads (SeekGE; Pebble turns increasing seeks into Next steps) and
// is the source of the clones iter hands out.
type pebbleView struct {
	root *pebble.Iterator
}

func (v *pebbleView) iter(lower, upper []byte) (iterator, error) {
	return v.root.Clone(pebble.CloneOptions{IterOptions: &pebble.IterOptions{LowerBound: lower, UpperBound: upper}})
}

func (v *pebbleView) get(k []byte) ([]byte, bool, error) {
	if !v.root.SeekGE(k) {
		return nil, false, v.root.Error()
	}
	if !bytes.Equal(v.root.Key(), k) {
		return nil, false, nil
	}
	val, err := v.root.ValueAndErr()
	return val, err == nil, err
}

func (v *pebbleView) close() error { return v.root.Close() }

// pebbleDiskSpace is Metrics.DiskSpaceUsage corrected for the current WAL,
// whose physical size Pebble records only when the file is opened: the
// live WAL bytes (Metrics.WAL.Size) count when they are more.
func pebbleDiskSpace(m *pebble.Metrics) (total, wal uint64) {
	wal = m.WAL.PhysicalSize
	total = m.DiskSpaceUsage()
	if m.WAL.Size > wal {
		total += m.WAL.Size - wal
		wal = m.WAL.Size
	}
	return total, wal + m.WAL.ObsoletePhysicalSize
}

func (e *pebbleEngine) space() (used, free uint64, err error) {
	used, _ = pebbleDiskSpace(e.db.Metrics())
	du, err := e.fs.GetDiskUsage(e.dir)
	if err != nil {
		return used, 0, err
	}
	return used, du.AvailBytes, nil
}

func (e *pebbleEngine) diskUsage() diskUsage {
	m := e.db.Metrics()
	total, wal := pebbleDiskSpace(m)
	return diskUsage{
		total:  int64(total),
		tables: int64(m.Table.Local.LiveSize + m.BlobFiles.Local.LiveSize),
		wal:    int64(wal),
	}
}

func (e *pebbleEngine) close() error { return e.db.Close() }
