package tlsloop

import (
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"runtime"
	"testing"
	"time"
)

// Handshakes one after the other run on one worker, whose grown stack
// they share; idle workers end after two trims, leaving no goroutine.
func TestHandshakeWorkersReusedAndTrimmed(t *testing.T) {
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
	if n := s.e.workers.started.Load(); n != 1 {
		t.Fatalf("%d workers started for 5 handshakes in a row, want 1", n)
	}
	if workerGoroutines() != 1 {
		t.Fatalf("%d idle workers, want 1", workerGoroutines())
	}
	s.e.workers.trim() // the worker was used since the last trim: kept
	if workerGoroutines() != 1 {
		t.Fatal("a trim ended a worker used since the previous trim")
	}
	s.e.workers.trim()
	if n := workerGoroutines(); n != 0 {
		t.Fatalf("%d workers left after two trims, want 0", n)
	}
}

// workerGoroutines counts the goroutines of idle handshake workers.
func workerGoroutines() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	return bytes.Count(buf, []byte("tlsloop.(*hsWorker).idle"))
}

// Peers that send a ClientHello and reset the connection at once: the
// server's first flight then often fails to write, and gnet closes the
// connection from inside the handshake's coroutine (OnClose while it
// runs). Every such handshake must end, counted as failed, with no
// worker stuck and nothing left handshaking; a normal client still gets
// through afterwards.
func TestHandshakeClosedFromInside(t *testing.T) {
	s := startEcho(t, nil)
	hello := rawClientHello(t, s)
	const n = 200
	for range n {
		nc, err := net.Dial("tcp", s.addr)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = nc.Write(hello)
		_ = nc.(*net.TCPConn).SetLinger(0) // close sends a reset
		_ = nc.Close()
	}
	deadline := time.Now().Add(10 * time.Second)
	for st := s.e.Stats(); st.Handshaking != 0 || st.TLSHandshakeFailures+st.Handshakes < n; st = s.e.Stats() {
		if time.Now().After(deadline) {
			t.Fatalf("stats %+v: handshakes still in progress or not counted", st)
		}
		time.Sleep(10 * time.Millisecond)
	}
	c, err := tls.Dial("tcp", s.addr, s.clientConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	echoRoundTrip(t, c, []byte("after the resets"))
	if w := s.e.workers.started.Load(); w > n {
		t.Fatalf("%d workers started for %d handshakes", w, n+1)
	}
}

// rawClientHello captures a Go client's first flight to s.
func rawClientHello(t *testing.T, s *echoServer) []byte {
	t.Helper()
	a, b := net.Pipe()
	go func() { _ = tls.Client(a, s.clientConfig()).Handshake() }()
	hdr := make([]byte, recordHeaderLen)
	if _, err := io.ReadFull(b, hdr); err != nil {
		t.Fatal(err)
	}
	body := make([]byte, int(hdr[3])<<8|int(hdr[4]))
	if _, err := io.ReadFull(b, body); err != nil {
		t.Fatal(err)
	}
	_ = a.Close()
	_ = b.Close()
	return append(hdr, body...)
}
