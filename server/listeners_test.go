package server

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"
)

// syncBuffer is a log sink safe for the broker's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// freeAddr returns a loopback address that was free a moment ago (for
// listeners whose bound address the broker does not report).
func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// httpGet returns the body of a GET that must succeed.
func httpGet(t testing.TB, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// expectServerCloses asserts that the server closes c within d: reading
// ends with EOF or a reset, not with the read deadline.
func expectServerCloses(t testing.TB, what string, c net.Conn, r io.Reader, d time.Duration) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, r)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("%s: connection still open after %v", what, d)
	}
}

// holdHTTP opens the three kinds of connection an HTTP server must not
// keep for ever: one that sends nothing, one whose headers never end, and
// a keep-alive one left idle after a complete request to path.
func holdHTTP(t testing.TB, addr, path string) (silent, slow, idle net.Conn, idleR io.Reader) {
	t.Helper()
	dial := func() net.Conn {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	silent, slow, idle = dial(), dial(), dial()
	_, _ = slow.Write([]byte("GET " + path + " HTTP/1.1\r\nHost: x\r\n"))
	_, _ = idle.Write([]byte("GET " + path + " HTTP/1.1\r\nHost: x\r\n\r\n"))
	br := bufio.NewReader(idle)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.Close {
		t.Fatal("the server closed after one request: the idle keep-alive case is not tested")
	}
	return silent, slow, idle, br
}

// The admin listener does not keep idle or silent HTTP connections: header
// and idle timeouts close them (tests shorten both to 300 ms).
func TestAdminHTTPTimeouts(t *testing.T) {
	short := defaultAdminHTTP
	short.header, short.read, short.idle = 300*time.Millisecond, 300*time.Millisecond, 300*time.Millisecond
	adminHTTP.Store(&short)
	t.Cleanup(func() { adminHTTP.Store(nil) })
	admin := freeAddr(t)
	startBroker(t, func(o *Options) { o.AdminListen = admin })
	var silent, slow, idle net.Conn
	var idleR io.Reader
	for i := 0; ; i++ { // the admin listener starts in its own goroutine
		if c, err := net.Dial("tcp", admin); err == nil {
			c.Close()
			break
		} else if i == 100 {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	silent, slow, idle, idleR = holdHTTP(t, admin, "/healthz")
	start := time.Now()
	expectServerCloses(t, "silent", silent, silent, 3*time.Second)
	expectServerCloses(t, "slow headers", slow, slow, 3*time.Second)
	expectServerCloses(t, "idle keep-alive", idle, idleR, 3*time.Second)
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("closed after %v, want about 300 ms", d)
	}
}
