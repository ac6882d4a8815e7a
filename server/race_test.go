//go:build race

package server

// raceEnabled is true under the race detector, whose instrumentation
// allocates: allocation counts are meaningless there.
const raceEnabled = true
