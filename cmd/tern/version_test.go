package main

import (
	"runtime"
	"strings"
	"testing"
)

// tern version prints what -ldflags stamped (make build, make dist, the
// Dockerfile): version, commit, build date, then the Go version and
// platform.
func TestVersionStamped(t *testing.T) {
	old := [3]string{version, commit, date}
	defer func() { version, commit, date = old[0], old[1], old[2] }()
	version, commit, date = "v1.2.3", "0123456789abcdef0123456789abcdef01234567", "2026-01-02T03:04:05Z"
	var b strings.Builder
	printVersion(&b)
	want := "tern v1.2.3\ncommit 0123456789abcdef0123456789abcdef01234567"
	if got := b.String(); !strings.HasPrefix(got, want) || !strings.Contains(got, "\nbuilt 2026-01-02T03:04:05Z\n"+runtime.Version()+" "+runtime.GOOS+"/"+runtime.GOARCH+"\n") {
		t.Fatalf("tern version printed\n%s", got)
	}
	// Unstamped (go build, go test): never empty fields.
	version, commit, date = "", "", ""
	bi := buildInfo()
	if bi.Version == "" || bi.Commit == "" || bi.Date == "" {
		t.Fatalf("unstamped build info has empty fields: %+v", bi)
	}
}
