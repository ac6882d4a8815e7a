//go:build linux && amd64 && !poll_opt

package gnet

import (
	"testing"
	"unsafe"
)

// TestConnSize guards Tern's patches 2–7 (PATCHES.md): every connection
// holds one conn, and its size class is the larger part of what gnet costs
// an idle connection. Upstream v2.10.0's conn was 248 bytes (the 256-byte
// class); with the patches it must fit the 160-byte class.
func TestConnSize(t *testing.T) {
	if got := unsafe.Sizeof(conn{}); got > 160 {
		t.Fatalf("conn is %d bytes, want at most 160 (the 160-byte size class)", got)
	}
}
