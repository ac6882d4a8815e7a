package persist

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// Mode is how durable a Commit is when its done callback runs.
type Mode uint8

const (
	// ModeSync (the default): done runs after the WAL holding the batch is
	// fsynced. Nothing acknowledged is lost on SIGKILL or power loss.
	ModeSync Mode = iota
	// ModePeriodic: done runs once the batch is applied (in Pebble's WAL
	// buffer and memtable), before any fsync; a ticker fsyncs the WAL every
	// Options.SyncInterval. Up to one SyncInterval of acknowledged writes
	// (plus the duration of the sync in flight) can be lost on power loss,
	// kernel crash — and also on SIGKILL, because Pebble buffers the WAL
	// tail in process memory until the next sync. Never more: each tick
	// writes and syncs everything applied before it.
	ModePeriodic
	// ModeNone: nothing touches disk (the Memory store). Everything is lost
	// when the process exits; the semantics are otherwise those of ModeSync.
	ModeNone
)

// String returns the name used in configuration: sync, periodic or none.
func (m Mode) String() string {
	switch m {
	case ModeSync:
		return "sync"
	case ModePeriodic:
		return "periodic"
	case ModeNone:
		return "none"
	}
	return fmt.Sprintf("Mode(%d)", uint8(m))
}

// ParseMode parses a configuration value: "sync", "periodic" or "none".
func ParseMode(s string) (Mode, error) {
	switch s {
	case "sync", "":
		return ModeSync, nil
	case "periodic":
		return ModePeriodic, nil
	case "none":
		return ModeNone, nil
	}
	return 0, fmt.Errorf("persist: unknown durability mode %q (want sync, periodic or none)", s)
}

// Defaults applied by EnsureDefaults.
const (
	DefaultSyncInterval          = 100 * time.Millisecond
	DefaultCompressThreshold     = 1024
	DefaultMaxGroupBytes         = 4 << 20
	DefaultMaxPendingBytes       = 64 << 20
	DefaultMaxInFlightGroups     = 64
	DefaultRecoveryProgressEvery = 100000
	DefaultCacheSize             = 8 << 20
	DefaultMemTableSize          = 16 << 20
	// DefaultMaxOpenFiles is well under the broker's default descriptor
	// reserve (256): Pebble's own default (1,000) would let a store with
	// many sstables take descriptors the broker kept for itself.
	DefaultMaxOpenFiles = 128
)

// Options configures a store. The zero value plus Dir is a valid
// configuration once EnsureDefaults has run; Open calls it.
type Options struct {
	// Dir is the Pebble data directory. Required unless Mode is ModeNone.
	Dir string
	// Mode is the durability mode. Default ModeSync.
	Mode Mode
	// SyncInterval is the WAL fsync period in ModePeriodic. Default 100ms.
	SyncInterval time.Duration
	// CompressThreshold: payloads of at least this many bytes are
	// S2-compressed when that makes them smaller. Default 1024; a negative
	// value disables compression.
	CompressThreshold int
	// MaxGroupBytes bounds one group commit: the committer stops merging
	// queued batches once the merged batch reaches this size (a single
	// larger batch is still committed alone). Default 4 MiB.
	MaxGroupBytes int
	// MaxPendingBytes bounds the batches queued for the committer or
	// applied and awaiting their fsync; Commit blocks its caller while they
	// are over this size (Stats.CommitWaits), so a disk slower than the
	// publishers pushes back instead of growing memory. Default 64 MiB.
	MaxPendingBytes int
	// MaxInFlightGroups bounds the groups applied in ModeSync whose fsync
	// has not completed yet: the committer applies the next group while
	// earlier ones sync, and waits (Stats.PipelineWaits) when this many
	// are in flight; batches queue meanwhile and join the next group.
	// Default 64; 1 applies one group per fsync, as without pipelining.
	MaxInFlightGroups int
	// NoWriteAvoidance turns write avoidance off: every operation of a
	// group is written even when a later one in the same group makes it
	// moot (see "Write avoidance" in the package doc). For measurements
	// and for tests that look at what reaches the engine.
	NoWriteAvoidance bool
	// RecoveryProgressEvery is how many records Recover reads between two
	// Visitor.Progress calls (and log lines). Default 100,000.
	RecoveryProgressEvery int
	// CacheSize is Pebble's block cache in bytes. Default 8 MiB.
	CacheSize int64
	// MemTableSize is Pebble's memtable size in bytes. Default 16 MiB.
	MemTableSize uint64
	// MaxOpenFiles bounds the files Pebble keeps open (its table cache);
	// past it, sstables are closed and reopened as reads need them.
	// Default 128.
	MaxOpenFiles int
	// Logger receives recovery progress, skipped records and storage
	// errors. Default slog.Default().
	Logger *slog.Logger
	// FS is the filesystem Pebble uses. Default vfs.Default. Tests wrap it
	// (vfs/errorfs) to inject write and sync failures.
	FS vfs.FS
	// RepairReferences rebuilds every reference count at open by one full
	// scan of message records and outbound entries, as the migration of a
	// schema-1 store does: count records are rewritten, message records
	// that nothing references are deleted (Stats.OrphansDeleted) and
	// entries whose message is missing are counted (Stats.DanglingAtOpen).
	// Opening then takes time proportional to what is stored. For repair
	// after Usage reports orphans or dangling entries; off by default.
	RepairReferences bool
}

// EnsureDefaults fills every zero field with its default and returns o.
func (o *Options) EnsureDefaults() *Options {
	if o.SyncInterval == 0 {
		o.SyncInterval = DefaultSyncInterval
	}
	if o.CompressThreshold == 0 {
		o.CompressThreshold = DefaultCompressThreshold
	}
	if o.MaxGroupBytes == 0 {
		o.MaxGroupBytes = DefaultMaxGroupBytes
	}
	if o.MaxPendingBytes == 0 {
		o.MaxPendingBytes = DefaultMaxPendingBytes
	}
	if o.MaxInFlightGroups == 0 {
		o.MaxInFlightGroups = DefaultMaxInFlightGroups
	}
	if o.RecoveryProgressEvery == 0 {
		o.RecoveryProgressEvery = DefaultRecoveryProgressEvery
	}
	if o.CacheSize == 0 {
		o.CacheSize = DefaultCacheSize
	}
	if o.MemTableSize == 0 {
		o.MemTableSize = DefaultMemTableSize
	}
	if o.MaxOpenFiles == 0 {
		o.MaxOpenFiles = DefaultMaxOpenFiles
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.FS == nil {
		o.FS = vfs.Default
	}
	return o
}

// Validate reports every problem with o at once (joined), or nil. It
// expects EnsureDefaults to have run.
func (o *Options) Validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("persist: "+format, args...))
	}
	if o.Mode > ModeNone {
		bad("unknown Mode %d", o.Mode)
	}
	if o.Mode != ModeNone && o.Dir == "" {
		bad("Dir is required in mode %v", o.Mode)
	}
	if o.SyncInterval < time.Millisecond || o.SyncInterval > time.Minute {
		bad("SyncInterval %v outside [1ms, 1m]", o.SyncInterval)
	}
	if o.MaxOpenFiles < 0 {
		bad("MaxOpenFiles %d is negative", o.MaxOpenFiles)
	}
	if o.MaxGroupBytes < 4<<10 {
		bad("MaxGroupBytes %d below 4 KiB", o.MaxGroupBytes)
	}
	if o.MaxPendingBytes < o.MaxGroupBytes {
		bad("MaxPendingBytes %d below MaxGroupBytes %d", o.MaxPendingBytes, o.MaxGroupBytes)
	}
	if o.MaxInFlightGroups < 1 || o.MaxInFlightGroups > 1024 {
		bad("MaxInFlightGroups %d outside [1, 1024]", o.MaxInFlightGroups)
	}
	if o.RecoveryProgressEvery < 1 {
		bad("RecoveryProgressEvery %d below 1", o.RecoveryProgressEvery)
	}
	if o.CacheSize < 0 {
		bad("CacheSize %d is negative", o.CacheSize)
	}
	if o.MemTableSize < 1<<20 || o.MemTableSize >= 4<<30 {
		bad("MemTableSize %d outside [1 MiB, 4 GiB)", o.MemTableSize)
	}
	return errors.Join(errs...)
}
