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

// Peers that send a ClientHello and reset the connection at once: the
// worker's direct write of the server flight then often fails (or the
// loop's OnClose comes first). Every such handshake ends counted as
// failed, nothing is left handshaking, and a normal client still gets
// through afterwards.
func TestHandshakeResetPeers(t *testing.T) {
	s := startEcho(t, nil)
	hello := rawClientHello(s)
	if len(hello) < recordHeaderLen || hello[0] != recordHandshake || len(hello) != recordHeaderLen+int(hello[3])<<8|int(hello[4]) {
		t.Fatalf("not one ClientHello record: %x", hello)
	}
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
}

// rawClientHello captures a Go client's first flight to s.
func rawClientHello(s *echoServer) []byte {
	h := &firstWrite{}
	_ = tls.Client(h, s.clientConfig()).Handshake()
	return h.b
}

// firstWrite keeps the first Write and fails every Write.
type firstWrite struct {
	net.Conn // nil: only Write is called
	b        []byte
}

func (f *firstWrite) Write(b []byte) (int, error) {
	if f.b == nil {
		f.b = append([]byte(nil), b...)
	}
	return 0, io.ErrClosedPipe
}

// A peer that connects and sends nothing costs no handshake worker; its
// close still ends the handshake, counted as failed.
func TestSilentPeerNoWorker(t *testing.T) {
	s := startEcho(t, nil)
	nc, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for s.e.Stats().Handshaking != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("stats %+v: the connection never opened", s.e.Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	if n := s.e.workersStarted.Load(); n != 0 {
		t.Fatalf("%d workers started for a peer that sent nothing", n)
	}
	_ = nc.Close()
	for st := s.e.Stats(); st.Handshaking != 0 || st.TLSHandshakeFailures != 1; st = s.e.Stats() {
		if time.Now().After(deadline) {
			t.Fatalf("stats %+v after the close, want 0 handshaking and 1 failure", st)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
