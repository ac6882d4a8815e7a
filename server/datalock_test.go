package server

import (
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// A second broker on a data directory in use fails with the holder's PID,
// before touching the store; once the first closes, the directory is free.
func TestDataDirInUseByPID(t *testing.T) {
	dir := t.TempDir()
	opts := Options{Listeners: []string{"127.0.0.1:0"}, DataDir: dir, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	serve := func() *Server {
		t.Helper()
		s, err := New(opts)
		if err != nil {
			t.Fatal(err)
		}
		go s.Serve()
		<-s.Ready()
		return s
	}
	first := serve()
	_, err := New(opts)
	var inUse *DataDirInUseError
	if !errors.As(err, &inUse) || inUse.PID != os.Getpid() {
		t.Fatalf("second broker on %s: %v", dir, err)
	}
	if want := "data directory " + dir + " in use by PID " + strconv.Itoa(os.Getpid()); !strings.Contains(err.Error(), want) {
		t.Fatalf("error %q does not say %q", err, want)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	again := serve() // fails the test if the directory is still locked
	if err := again.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, DataDirLockFile))
	if err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(os.Getpid()) {
		t.Fatalf("lock file holds %q (%v), want this PID", b, err)
	}
}

// A lock file left by a process that died (its flock went with it) does
// not block the next broker; an unreadable PID still gives a clear error.
func TestDataDirStaleLockFile(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, DataDirLockFile), []byte("999999\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := LockDataDir(dir)
	if err != nil {
		t.Fatalf("stale lock file refused: %v", err)
	}
	defer l.Release()
	if err := os.WriteFile(filepath.Join(dir, DataDirLockFile), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = LockDataDir(dir)
	if err == nil || !strings.Contains(err.Error(), "in use by another process") {
		t.Fatalf("held lock without PID: %v", err)
	}
}
