//go:build !fanouttrace

package server

// Without -tags fanouttrace the fan-out stage trace (fanouttrace.go) is
// empty functions the compiler removes.

func traceRouteStart(*loop, *message) {}
func traceRouted(*message)            {}
func traceRemote(*loop, bool)         {}
func traceSent(*loop, *message)       {}
func traceDrain(*loop, int64, int64)  {}
func traceWcall(int64)                {}
func traceNow() int64                 { return 0 }
