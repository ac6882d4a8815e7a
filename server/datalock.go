package server

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// DataDirLockFile is the file in a data directory that a broker (or
// `tern store inspect`) holds an exclusive flock on while it uses the
// directory; it contains the holder's PID. Pebble's own LOCK file would
// refuse a second opener too, but with "resource temporarily unavailable"
// and no hint of who holds it.
const DataDirLockFile = "tern.lock"

// DataDirInUseError is returned when another process holds a data
// directory's lock.
type DataDirInUseError struct {
	Dir string
	PID int // 0 when the holder's PID could not be read
}

func (e *DataDirInUseError) Error() string {
	if e.PID > 0 {
		return fmt.Sprintf("data directory %s in use by PID %d (stop that broker, or give this one another data_dir)", e.Dir, e.PID)
	}
	return fmt.Sprintf("data directory %s in use by another process (stop it, or give this broker another data_dir)", e.Dir)
}

// DataDirLock is a held data directory lock. The kernel releases a flock
// when its holder exits, however it exits, so a crashed broker never leaves
// a stale lock behind (the file and its old PID stay; only the flock counts).
type DataDirLock struct {
	f *os.File
}

// LockDataDir takes dir's lock without waiting, creating the directory and
// the lock file as needed, and writes this process's PID into it. It fails
// with a *DataDirInUseError when another process holds the lock.
func LockDataDir(dir string) (*DataDirLock, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	path := filepath.Join(dir, DataDirLockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("data directory lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		_ = f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, &DataDirInUseError{Dir: dir, PID: readLockPID(path)}
		}
		return nil, fmt.Errorf("data directory lock %s: %w", path, err)
	}
	// Held: record who holds it, for the next process's error message.
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &DataDirLock{f: f}, nil
}

// readLockPID returns the PID written in a lock file, 0 if there is none
// (the holder may be between taking the lock and writing it).
func readLockPID(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0
	}
	return pid
}

// Release gives the lock up. The file stays: removing it would let a
// process that opened it just before lock a file no longer in the
// directory while a third one creates and locks a new one. Nil-safe and
// idempotent.
func (l *DataDirLock) Release() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Close() // closing the last descriptor drops the flock
	l.f = nil
	return err
}
