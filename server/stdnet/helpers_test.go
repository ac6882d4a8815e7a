package stdnet

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"log/slog"
	"math/big"
	"net"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/panjf2000/gnet/v2"
)

// testCert returns a server config for 127.0.0.1 valid until notAfter and
// a pool trusting it.
func testCert(t testing.TB, notAfter time.Time) (*tls.Config, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "stdnet test"},
		NotBefore: notAfter.Add(-400 * 24 * time.Hour), NotAfter: notAfter,
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}, pool
}

// logBuf is a goroutine-safe log sink.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func testLogger(buf *logBuf) *slog.Logger {
	if buf == nil {
		level := slog.LevelWarn
		if os.Getenv("TERN_TEST_LOG") != "" {
			level = slog.LevelDebug
		}
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	}
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// echo is a gnet.EventHandler for tests: it echoes what it reads, except
// for commands: "CLOSE\n" closes the connection from OnTraffic, "KICK\n"
// through EventLoop.Close from an Execute task (as the broker does),
// "BYE\n" with Close from another goroutine; "ASYNC\n" answers with
// AsyncWrite and its callback; "FLOOD\n" starts writing 64 KiB blocks
// (see flood).
type echo struct {
	gnet.BuiltinEventEngine
	mu       sync.Mutex
	opened   int
	closed   int
	errs     []error
	conns    []gnet.Conn
	loops    map[gnet.EventLoop]bool
	floodCap int // close a flooding conn once OutboundBuffered exceeds this (0: never)
}

type echoState struct{ flooding bool }

func newEcho() *echo { return &echo{loops: map[gnet.EventLoop]bool{}} }

func (e *echo) OnOpen(c gnet.Conn) ([]byte, gnet.Action) {
	if c.LocalAddr() == nil || c.RemoteAddr() == nil || c.InboundBuffered() != 0 {
		panic("addresses")
	}
	c.SetContext(&echoState{})
	e.mu.Lock()
	e.opened++
	e.conns = append(e.conns, c)
	e.loops[c.EventLoop()] = true
	e.mu.Unlock()
	return []byte("HELLO\n"), gnet.None
}

func (e *echo) OnTraffic(c gnet.Conn) gnet.Action {
	st := c.Context().(*echoState)
	buf, _ := c.Peek(-1)
	switch string(buf) {
	case "CLOSE\n":
		return gnet.Close
	case "KICK\n":
		_, _ = c.Discard(len(buf))
		_ = c.EventLoop().Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
			return c.EventLoop().Close(c)
		}))
		return gnet.None
	case "ASYNC\n": // AsyncWrite from another goroutine, callback on the loop
		_, _ = c.Discard(len(buf))
		go func() {
			_ = c.AsyncWrite([]byte("ASYNC OK\n"), func(c gnet.Conn, err error) error {
				_, _ = c.Write([]byte("CALLBACK\n"))
				return nil
			})
		}()
		return gnet.None
	case "BYE\n": // Close from another goroutine
		_, _ = c.Discard(len(buf))
		go func() { _ = c.Close() }()
		return gnet.None
	case "FLOOD\n":
		_, _ = c.Discard(len(buf))
		st.flooding = true
		go e.flood(c)
		return gnet.None
	}
	out := append([]byte(nil), buf...)
	n, _ := c.Discard(len(buf))
	if n != len(out) {
		panic("discard")
	}
	_, _ = c.Write(out)
	return gnet.None
}

func (e *echo) OnClose(c gnet.Conn, err error) gnet.Action {
	e.mu.Lock()
	e.closed++
	e.errs = append(e.errs, err)
	e.mu.Unlock()
	return gnet.None
}

func (e *echo) counts() (opened, closed int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.opened, e.closed
}

// flood writes 64 KiB blocks to c from a task on its loop, as the broker's
// deliveries do, until the connection closes or (floodCap) the handler
// gives up on it as a slow consumer.
func (e *echo) flood(c gnet.Conn) {
	block := bytes.Repeat([]byte("x"), 64<<10)
	for {
		done := make(chan bool, 1)
		err := c.EventLoop().Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
			if _, err := c.Write(block); err != nil {
				done <- true
				return nil
			}
			if e.floodCap > 0 && c.OutboundBuffered() > e.floodCap {
				_ = c.EventLoop().Close(c)
				done <- true
				return nil
			}
			done <- false
			return nil
		}))
		if err != nil || <-done {
			return
		}
		time.Sleep(time.Millisecond)
	}
}

// startTransport runs a transport for the test's lifetime.
func startTransport(t testing.TB, cfg Config, tl []TLSListener, wl []WebSocketListener) *Transport {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = testLogger(nil)
	}
	tr, err := Start(cfg, tl, wl)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tr.Stop)
	return tr
}

// openFDs counts the process's open file descriptors.
func openFDs(t testing.TB) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd")
	}
	return len(ents)
}

// eventually polls cond every 20 ms until it holds or d passes.
func eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// settledGoroutines waits for the goroutine count to stop changing and returns it.
func settledGoroutines() int {
	n := runtime.NumGoroutine()
	for i := 0; i < 50; i++ {
		time.Sleep(20 * time.Millisecond)
		m := runtime.NumGoroutine()
		if m == n {
			return n
		}
		n = m
	}
	return n
}
