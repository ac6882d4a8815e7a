package tlsloop

import (
	"testing"
	"unsafe"
)

// What an idle handed-over connection holds of this package is its conn
// and its record layer (BenchmarkTLSIdleConnHeap in ./server has the whole
// connection): a field added to either must be worth its bytes on every
// idle connection. The bounds are the allocator's size classes the
// structs fit now.
func TestIdleConnStructSizes(t *testing.T) {
	if got := unsafe.Sizeof(recordLayer{}); got > 208 {
		t.Errorf("recordLayer is %d bytes, over the 208-byte size class", got)
	}
	if got := unsafe.Sizeof(conn{}); got > 224 {
		t.Errorf("conn is %d bytes, over the 224-byte size class", got)
	}
	t.Logf("recordLayer %d B, conn %d B, pipe %d B", unsafe.Sizeof(recordLayer{}), unsafe.Sizeof(conn{}), unsafe.Sizeof(pipe{}))
}
