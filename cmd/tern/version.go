package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
)

// Release stamping: `make build`, `make dist` and the Dockerfile set these
// with -ldflags "-X main.version=… -X main.commit=… -X main.date=…". A plain
// `go build` or `go install` leaves them empty and buildInfo falls back to
// what the Go toolchain recorded (module version, VCS revision and time).
var (
	version = "" // e.g. v0.3.0 or a `git describe` string
	commit  = "" // full VCS revision
	date    = "" // build time, RFC 3339 UTC
)

// build describes the running binary.
type build struct {
	Version, Commit, Date, GoVersion, Platform string
	Modified                                   bool // built from a tree with uncommitted changes
}

// buildInfo returns the stamped values, each missing one filled from
// debug.ReadBuildInfo, and "unknown" where neither knows.
func buildInfo() build {
	b := build{Version: version, Commit: commit, Date: date, GoVersion: runtime.Version(),
		Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if b.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			b.Version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				if b.Commit == "" {
					b.Commit = s.Value
				}
			case "vcs.time":
				if b.Date == "" {
					b.Date = s.Value
				}
			case "vcs.modified":
				b.Modified = s.Value == "true"
			}
		}
	}
	for _, p := range []*string{&b.Version, &b.Commit, &b.Date} {
		if *p == "" {
			*p = "unknown"
		}
	}
	if b.Version == "unknown" {
		b.Version = "dev"
	}
	return b
}

// printVersion writes what `tern version` prints: one line a human reads
// and a bug report quotes.
func printVersion(w io.Writer) {
	b := buildInfo()
	dirty := ""
	if b.Modified {
		dirty = " (modified)"
	}
	fmt.Fprintf(w, "tern %s\ncommit %s%s\nbuilt %s\n%s %s\n", b.Version, b.Commit, dirty, b.Date, b.GoVersion, b.Platform)
}
