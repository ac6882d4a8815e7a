package stdnet

import (
	"bufio"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

func dialTLS(t testing.TB, addr string, cfg *tls.Config) (*tls.Conn, *bufio.Reader) {
	t.Helper()
	c, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	if line, err := r.ReadString('\n'); err != nil || line != "HELLO\n" {
		t.Fatalf("greeting %q, %v", line, err)
	}
	return c, r
}

// The adapter behaves as a gnet connection for the handler: OnOpen's reply
// is sent, OnTraffic sees the bytes (Peek/Discard), Write reaches the peer,
// gnet.Close from OnTraffic and EventLoop.Close from a task run OnClose
// once, and connections are spread over Config.Loops task loops.
func TestTLSConnAdapter(t *testing.T) {
	cfg, pool := testCert(t, time.Now().Add(365*24*time.Hour))
	h := newEcho()
	tr := startTransport(t, Config{Handler: h, Loops: 3}, []TLSListener{{Addr: "127.0.0.1:0", Config: cfg}}, nil)
	addr := tr.TLSAddrs()[0].String()
	client := &tls.Config{RootCAs: pool}

	var conns []*tls.Conn
	for i := 0; i < 6; i++ {
		c, r := dialTLS(t, addr, client)
		conns = append(conns, c)
		msg := strings.Repeat("m", 1+i*7000) + "\n"
		if _, err := c.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(io.LimitReader(r, int64(len(msg))))
		if err != nil || string(got) != msg {
			t.Fatalf("echo of %d bytes: got %d, %v", len(msg), len(got), err)
		}
	}
	h.mu.Lock()
	loops := len(h.loops)
	h.mu.Unlock()
	if loops != 3 {
		t.Fatalf("6 connections used %d task loops, want all 3", loops)
	}
	if st := tr.Stats(); st.Open != 6 || st.Accepted != 6 {
		t.Fatalf("stats %+v, want 6 open and accepted", st)
	}

	// gnet.Close from OnTraffic.
	_, _ = conns[0].Write([]byte("CLOSE\n"))
	if _, err := conns[0].Read(make([]byte, 1)); err == nil {
		t.Fatal("connection closed by the handler still readable")
	}
	// EventLoop.Close from a task.
	_, _ = conns[1].Write([]byte("KICK\n"))
	if _, err := conns[1].Read(make([]byte, 1)); err == nil {
		t.Fatal("connection kicked by the handler still readable")
	}
	// Close from another goroutine.
	_, _ = conns[2].Write([]byte("BYE\n"))
	if _, err := conns[2].Read(make([]byte, 1)); err == nil {
		t.Fatal("connection closed from another goroutine still readable")
	}
	// AsyncWrite and its callback.
	_, _ = conns[3].Write([]byte("ASYNC\n"))
	r := bufio.NewReader(conns[3])
	for _, want := range []string{"ASYNC OK\n", "CALLBACK\n"} {
		if line, err := r.ReadString('\n'); err != nil || line != want {
			t.Fatalf("got %q, %v; want %q", line, err, want)
		}
	}
	// The peer closes.
	conns[4].Close()
	eventually(t, 5*time.Second, "4 OnClose calls", func() bool { _, c := h.counts(); return c == 4 })
	if st := tr.Stats(); st.Open != 2 {
		t.Fatalf("open %d after 4 closes, want 2", st.Open)
	}
}

// A peer that stopped reading cannot hold goroutines or descriptors: the
// handler closes it as a slow consumer and the writer, blocked in Write,
// is unblocked by closing the socket within the linger. TLS and WebSocket.
func TestStalledPeersReleasedAfterClose(t *testing.T) {
	cfg, pool := testCert(t, time.Now().Add(365*24*time.Hour))
	for _, kind := range []string{"tls", "ws"} {
		t.Run(kind, func(t *testing.T) {
			h := newEcho()
			h.floodCap = 1 << 20
			tr := startTransport(t, Config{Handler: h, Loops: 2},
				[]TLSListener{{Addr: "127.0.0.1:0", Config: cfg}}, []WebSocketListener{{Addr: "127.0.0.1:0"}})
			baseG, baseFD := settledGoroutines(), openFDs(t)
			const n = 20
			var peers []io.Closer
			for i := 0; i < n; i++ {
				if kind == "tls" {
					c, _ := dialTLS(t, tr.TLSAddrs()[0].String(), &tls.Config{RootCAs: pool})
					if _, err := c.Write([]byte("FLOOD\n")); err != nil {
						t.Fatal(err)
					}
					peers = append(peers, c) // never read again
				} else {
					ws, _, err := dialWS(t, "ws://"+tr.WebSocketAddrs()[0].String()+"/mqtt", nil, nil)
					if err != nil {
						t.Fatal(err)
					}
					if err := ws.WriteMessage(websocket.BinaryMessage, []byte("FLOOD\n")); err != nil {
						t.Fatal(err)
					}
					peers = append(peers, ws)
				}
			}
			eventually(t, 20*time.Second, "every flooded peer closed as a slow consumer", func() bool {
				_, c := h.counts()
				return c == n
			})
			start := time.Now()
			// The peers' sockets are still open (this side never closes them),
			// so descriptors count against the baseline plus the peers'.
			eventually(t, 5*time.Second, "goroutines and descriptors back to baseline", func() bool {
				return runtime.NumGoroutine() <= baseG && openFDs(t) <= baseFD+n
			})
			t.Logf("released %v after the last close", time.Since(start).Round(time.Millisecond))
			for _, c := range peers {
				c.Close()
			}
			eventually(t, 5*time.Second, "descriptors back to baseline", func() bool { return openFDs(t) <= baseFD })
		})
	}
}

// A peer that stops reading while the handler keeps writing little is
// closed by the write deadline; OnClose gets the timeout.
func TestWriteTimeoutClosesStalledPeer(t *testing.T) {
	cfg, pool := testCert(t, time.Now().Add(365*24*time.Hour))
	h := newEcho() // no floodCap: only the write deadline can end it
	tr := startTransport(t, Config{Handler: h, Loops: 1},
		[]TLSListener{{Addr: "127.0.0.1:0", Config: cfg, WriteTimeout: 300 * time.Millisecond}}, nil)
	c, _ := dialTLS(t, tr.TLSAddrs()[0].String(), &tls.Config{RootCAs: pool})
	if _, err := c.Write([]byte("FLOOD\n")); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "write timeout closes the connection", func() bool { _, n := h.counts(); return n == 1 })
	h.mu.Lock()
	err := h.errs[0]
	h.mu.Unlock()
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("OnClose error %v, want a timeout", err)
	}
	if st := tr.Stats(); st.WriteTimeouts != 1 {
		t.Fatalf("write timeouts %d, want 1", st.WriteTimeouts)
	}
}

// A peer that connects and sends nothing costs a handshake goroutine until
// HandshakeTimeout, then is closed and counted; garbage is refused too.
func TestSilentPeerHandshakeDeadline(t *testing.T) {
	cfg, _ := testCert(t, time.Now().Add(365*24*time.Hour))
	logs := &logBuf{}
	tr := startTransport(t, Config{Handler: newEcho(), HandshakeTimeout: 300 * time.Millisecond, Logger: testLogger(logs)},
		[]TLSListener{{Addr: "127.0.0.1:0", Config: cfg}}, nil)
	addr := tr.TLSAddrs()[0].String()
	baseG := settledGoroutines()
	var silent []net.Conn
	for i := 0; i < 10; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		silent = append(silent, c)
	}
	g, _ := net.Dial("tcp", addr)
	_, _ = g.Write([]byte("GET / HTTP/1.1\r\n\r\n"))
	defer g.Close()
	for _, c := range append(silent, g) {
		_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
		if _, err := c.Read(make([]byte, 64)); err == nil {
			// The garbage peer may get an alert first; read to EOF.
			_, err = io.Copy(io.Discard, c)
			if err != nil {
				t.Fatalf("server did not close: %v", err)
			}
		} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatal("a silent peer outlived the handshake timeout")
		}
	}
	eventually(t, 2*time.Second, "handshake goroutines gone", func() bool { return runtime.NumGoroutine() <= baseG })
	if st := tr.Stats(); st.TLSHandshakeFailures != 11 || st.Accepted != 0 {
		t.Fatalf("stats %+v, want 11 handshake failures and nothing accepted", st)
	}
	if strings.Count(logs.String(), "TLS handshake failed") != 1 {
		t.Fatalf("want one rate-limited handshake log line, got:\n%s", logs)
	}
}

// TLS 1.2 offers only ECDHE AEAD suites: a client limited to CBC-SHA1
// suites is refused; MinVersion "1.3" refuses TLS 1.2 clients.
func TestTLSVersionsAndSuites(t *testing.T) {
	cfg, pool := testCert(t, time.Now().Add(365*24*time.Hour))
	tr := startTransport(t, Config{Handler: newEcho()}, []TLSListener{
		{Addr: "127.0.0.1:0", Config: cfg},
		{Addr: "127.0.0.1:0", Config: cfg, MinVersion: "1.3"},
	}, nil)
	a12, a13 := tr.TLSAddrs()[0].String(), tr.TLSAddrs()[1].String()
	cbc := &tls.Config{RootCAs: pool, MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{
		tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA,
		tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA}}
	if c, err := tls.Dial("tcp", a12, cbc); err == nil {
		c.Close()
		t.Fatal("a CBC-SHA1-only TLS 1.2 client was accepted")
	}
	gcm12 := &tls.Config{RootCAs: pool, MaxVersion: tls.VersionTLS12}
	c, _ := dialTLS(t, a12, gcm12)
	if st := c.ConnectionState(); st.Version != tls.VersionTLS12 {
		t.Fatalf("version %x", st.Version)
	}
	if c, err := tls.Dial("tcp", a13, gcm12); err == nil {
		c.Close()
		t.Fatal("a TLS 1.2 client was accepted by a 1.3-only listener")
	}
	dialTLS(t, a13, &tls.Config{RootCAs: pool})
	if _, err := Start(Config{Handler: newEcho()}, []TLSListener{{Addr: "127.0.0.1:0", Config: cfg, MinVersion: "1.1"}}, nil); err == nil {
		t.Fatal("MinVersion 1.1 accepted")
	}
}

// An expired certificate, or one about to expire, is logged at start; the
// listener still starts.
func TestCertificateExpiryWarning(t *testing.T) {
	expired, _ := testCert(t, time.Now().Add(-time.Hour))
	soon, _ := testCert(t, time.Now().Add(5*24*time.Hour))
	fine, _ := testCert(t, time.Now().Add(300*24*time.Hour))
	logs := &logBuf{}
	tr := startTransport(t, Config{Handler: newEcho(), Logger: testLogger(logs)}, []TLSListener{
		{Addr: "127.0.0.1:0", Config: expired},
		{Addr: "127.0.0.1:0", Config: fine},
	}, []WebSocketListener{{Addr: "127.0.0.1:0", Config: soon}})
	if len(tr.TLSAddrs()) != 2 || len(tr.WebSocketAddrs()) != 1 {
		t.Fatal("listeners did not start")
	}
	out := logs.String()
	if strings.Count(out, "TLS certificate expired") != 1 || strings.Count(out, "TLS certificate expires soon") != 1 {
		t.Fatalf("want one expired and one expiring warning, got:\n%s", out)
	}
	if !strings.Contains(out, tr.TLSAddrs()[0].String()) {
		t.Fatalf("warning does not name the listener:\n%s", out)
	}
}
