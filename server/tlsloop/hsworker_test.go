package tlsloop

import (
	"bytes"
	"crypto/tls"
	"runtime"
	"testing"
	"time"
)

// Handshakes one after the other run on one worker, whose grown stack
// they share; an idle worker ends after workerIdle, and at once when the
// engine stops.
func TestHandshakeWorkersReused(t *testing.T) {
	s := startEcho(t, nil)
	for i := range 5 {
		c, err := tls.Dial("tcp", s.addr, s.clientConfig())
		if err != nil {
			t.Fatal(err)
		}
		s.waitRecordLayer(t, uint64(i+1))
		echoRoundTrip(t, c, []byte("ping"))
		_ = c.Close()
	}
	if n := s.e.workersStarted.Load(); n != 1 {
		t.Fatalf("%d workers started for 5 handshakes in a row, want 1", n)
	}
	deadline := time.Now().Add(workerIdle + 3*time.Second)
	for idleWorkers() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d idle workers %v after the last handshake", idleWorkers(), workerIdle+3*time.Second)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// idleWorkers counts the goroutines of idle handshake workers.
func idleWorkers() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	return bytes.Count(buf, []byte("tlsloop.(*Engine).nextHandshake"))
}
