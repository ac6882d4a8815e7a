package server

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/ternmq/tern/codec"
)

// startLoopsTLS starts a broker serving one TLS listener on the event
// loops (tls_engine: loops) and returns it with the listener's address.
func startLoopsTLS(t *testing.T, tweak func(*Options)) (*Server, string, *x509.CertPool) {
	t.Helper()
	cfg, pool := selfSigned(t)
	srv, _ := startBroker(t, func(o *Options) {
		o.TLSEngine = TLSEngineLoops
		o.TLSListeners = []TLSListener{{Addr: "127.0.0.1:0", Config: cfg}}
		if tweak != nil {
			tweak(o)
		}
	})
	return srv, srv.TLSAddrs()[0].String(), pool
}

// chunkedConn hands the broker what the TLS client writes in pieces of
// its own choosing, each its own TCP segment (Nagle off, a pause between
// pieces): records split across reads, several records in one read.
type chunkedConn struct {
	net.Conn
	mu    sync.Mutex
	sizes func() int
}

func (c *chunkedConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for n < len(b) {
		k := min(c.sizes(), len(b)-n)
		m, err := c.Conn.Write(b[n : n+k])
		n += m
		if err != nil {
			return n, err
		}
		time.Sleep(200 * time.Microsecond)
	}
	return n, nil
}

// dialChunked opens a TLS connection whose ciphertext reaches the broker
// in pieces sized by sizes.
func dialChunked(t *testing.T, addr string, pool *x509.CertPool, sizes func() int) *rawConn {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	_ = nc.(*net.TCPConn).SetNoDelay(true)
	// X25519 alone keeps the ClientHello small (no 1.2 KB ML-KEM share):
	// the one-byte case sends it a byte per segment.
	tc := tls.Client(&chunkedConn{Conn: nc, sizes: sizes}, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1",
		CurvePreferences: []tls.CurveID{tls.X25519}})
	_ = tc.SetDeadline(time.Now().Add(60 * time.Second))
	if err := tc.Handshake(); err != nil {
		t.Fatalf("handshake: %v", err)
	}
	_ = tc.SetDeadline(time.Time{})
	return rawOver(t, tc)
}

// Records split across reads: the handshake and every record arrive one
// byte at a time (TLS record headers split, bodies split), and in random
// pieces that split some records and merge others; the broker assembles
// them on the loop and answers each packet.
func TestTLSLoopsRecordsSplitAcrossReads(t *testing.T) {
	_, addr, pool := startLoopsTLS(t, nil)
	for _, tc := range []struct {
		name     string
		sizes    func() int
		messages int
	}{
		{"one byte", func() int { return 1 }, 3}, // a byte per segment is slow: a few messages
		{"random pieces", func() int { return 1 + rand.IntN(700) }, 20},
	} {
		name, sizes := tc.name, tc.sizes
		t.Run(name, func(t *testing.T) {
			c := dialChunked(t, addr, pool, sizes)
			c.connect(codec.Connect{ClientID: []byte("split-" + strings.ReplaceAll(name, " ", "-")), CleanStart: true, KeepAlive: 30}, 0)
			if codes := c.subscribe(1, "split/#", 1); codes[0] != 1 {
				t.Fatalf("SUBACK %#x", codes[0])
			}
			for i := range tc.messages {
				payload := bytes.Repeat([]byte{byte('a' + i)}, 1+i*97)
				c.publish(codec.Publish{QoS: 1, PacketID: uint16(10 + i), Topic: []byte("split/x"), Payload: payload})
				var got codec.Publish
				acked := false
				for !acked || got.Topic == nil {
					h, body := c.read(5 * time.Second)
					switch h.Type {
					case codec.PUBACK:
						acked = true
					case codec.PUBLISH:
						if err := got.Decode(h, body, c.vers); err != nil {
							t.Fatal(err)
						}
						got.Payload = bytes.Clone(got.Payload)
						ack := codec.Ack{Type: codec.PUBACK, PacketID: got.PacketID}
						c.send(ack.Append(nil, c.vers))
					}
				}
				if !bytes.Equal(got.Payload, payload) {
					t.Fatalf("message %d: got %d bytes, want %d", i, len(got.Payload), len(payload))
				}
			}
		})
	}
}

// Large messages: a 900 KiB payload (some 56 records each way) crosses
// the loop engine intact in both directions, next to small ones.
func TestTLSLoopsLargeMessages(t *testing.T) {
	_, addr, pool := startLoopsTLS(t, func(o *Options) { o.MaxPacketSize = 1 << 20 })
	sub := dialChunked(t, addr, pool, func() int { return 64 << 10 })
	sub.connect(codec.Connect{ClientID: []byte("big-sub"), CleanStart: true, KeepAlive: 30}, 0)
	sub.subscribe(1, "big/#", 0)
	pub := dialChunked(t, addr, pool, func() int { return 1 + rand.IntN(40<<10) })
	pub.connect(codec.Connect{ClientID: []byte("big-pub"), CleanStart: true, KeepAlive: 30}, 0)
	big := make([]byte, 900<<10)
	for i := range big {
		big[i] = byte(i * 7)
	}
	for i, p := range [][]byte{big, []byte("small"), big[:300<<10]} {
		pub.publish(codec.Publish{QoS: 1, PacketID: uint16(i + 1), Topic: []byte("big/x"), Payload: p})
		pub.readAck(10*time.Second, codec.PUBACK)
		got := sub.readPublish(10 * time.Second)
		if !bytes.Equal(got.Payload, p) {
			t.Fatalf("message %d: %d bytes arrived, want %d (equal prefix: %v)", i, len(got.Payload), len(p),
				bytes.HasPrefix(p, got.Payload[:min(len(got.Payload), 64)]))
		}
	}
}

// A TLS 1.2 client asking to renegotiate (openssl s_client's "R") is
// refused: crypto/tls servers never renegotiate, the broker's connection
// answers with a fatal alert and closes, and nothing else is disturbed.
func TestTLSLoopsRenegotiationRefused(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl not installed")
	}
	srv, addr, pool := startLoopsTLS(t, nil)
	cmd := exec.Command("openssl", "s_client", "-connect", addr, "-tls1_2")
	stdin, _ := cmd.StdinPipe()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	deadline := time.Now().Add(5 * time.Second)
	for srv.tlsOpen() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("openssl never completed the handshake:\n%s", out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	_, _ = io.WriteString(stdin, "R\n")
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatalf("the connection stayed open after a renegotiation request:\n%s", out.String())
	}
	// crypto/tls answers a ClientHello after the handshake with a fatal
	// unexpected_message alert (number 10).
	if o := out.String(); !strings.Contains(o, "RENEGOTIATING") || !strings.Contains(o, "alert unexpected message") {
		t.Fatalf("openssl did not report the refusal:\n%s", out.String())
	}
	deadline = time.Now().Add(5 * time.Second)
	for srv.tlsOpen() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("broker still counts %d TLS connections", srv.tlsOpen())
		}
		time.Sleep(10 * time.Millisecond)
	}
	mc, _ := dialTLSRaw(t, addr, pool)
	if _, err := mc.Connect(codec.Connect{ClientID: []byte("after-reneg"), CleanStart: true}); err != nil {
		t.Fatalf("a client after the refused renegotiation: %v", err)
	}
}

// Closing during a handshake: peers that send half a ClientHello and
// close, or send one and go silent, cost nothing afterwards; the silent
// one is closed by the connect timeout; the broker shuts down with
// handshakes still waiting on their peers.
func TestTLSLoopsCloseDuringHandshake(t *testing.T) {
	srv, addr, pool := startLoopsTLS(t, func(o *Options) { o.ConnectTimeout = time.Second })
	hello := clientHello(t, addr, pool)
	for range 10 {
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = nc.Write(hello[:len(hello)/2])
		_ = nc.Close()
	}
	silent, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	_, _ = silent.Write(hello) // the broker answers and waits for the client's Finished
	deadline := time.Now().Add(5 * time.Second)
	for srv.tlsL.Stats().Handshaking != 0 || handshakeGoroutines() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d handshakes still running, %d handshake goroutines", srv.tlsL.Stats().Handshaking, handshakeGoroutines())
		}
		time.Sleep(50 * time.Millisecond)
	}
	_ = silent.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.Copy(io.Discard, silent); err != nil {
		t.Fatalf("the silent peer was not closed by the connect timeout: %v", err)
	}
	// The silent peer's failure is counted as its handshake goroutine
	// returns, which may be just after the client sees the close.
	deadline = time.Now().Add(5 * time.Second)
	for f := srv.tlsHandshakeFailures(); f < 11; f = srv.tlsHandshakeFailures() {
		if time.Now().After(deadline) {
			t.Fatalf("%d handshake failures counted, want 11", f)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Shutdown with a handshake waiting on its peer.
	waiting, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer waiting.Close()
	_, _ = waiting.Write(hello)
	for srv.tlsL.Stats().Handshaking == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	closed := make(chan error, 1)
	go func() { closed <- srv.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close hung on a handshake in progress")
	}
}

// handshakeGoroutines counts the goroutines running a tlsloop handshake.
func handshakeGoroutines() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	return bytes.Count(buf, []byte("tlsloop.(*Engine).startHandshake"))
}

// clientHello captures the first flight of a Go TLS client to addr.
func clientHello(t *testing.T, addr string, pool *x509.CertPool) []byte {
	t.Helper()
	a, b := net.Pipe()
	go func() {
		_ = tls.Client(a, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}).Handshake()
	}()
	r := bufio.NewReader(b)
	hdr := make([]byte, 5)
	if _, err := io.ReadFull(r, hdr); err != nil {
		t.Fatal(err)
	}
	body := make([]byte, int(hdr[3])<<8|int(hdr[4]))
	if _, err := io.ReadFull(r, body); err != nil {
		t.Fatal(err)
	}
	_ = a.Close()
	_ = b.Close()
	return append(hdr, body...)
}

// Session tickets survive a restart: the key lives in the data directory,
// so a client that reconnects after the broker restarted resumes (an
// abbreviated handshake) instead of paying for a full one.
func TestTLSTicketsResumeAcrossRestart(t *testing.T) {
	forEachTLSEngine(t, testTLSTicketsResumeAcrossRestart)
}

func testTLSTicketsResumeAcrossRestart(t *testing.T, engine string) {
	cfg, pool := selfSigned(t)
	dir := t.TempDir()
	start := func() (*Server, string) {
		srv, _ := startBroker(t, func(o *Options) {
			o.TLSEngine = engine
			o.DataDir = dir
			o.TLSListeners = []TLSListener{{Addr: "127.0.0.1:0", Config: cfg}}
		})
		return srv, srv.TLSAddrs()[0].String()
	}
	cache := tls.NewLRUClientSessionCache(4)
	connect := func(addr, id string) bool {
		t.Helper()
		tc, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", ClientSessionCache: cache})
		if err != nil {
			t.Fatal(err)
		}
		defer tc.Close()
		c := rawOver(t, tc)
		c.connect(codec.Connect{ClientID: []byte(id), CleanStart: true, KeepAlive: 30}, 0) // reads the ticket too
		return tc.ConnectionState().DidResume
	}
	srv, addr := start()
	if connect(addr, "t1") {
		t.Fatal("first connection resumed")
	}
	if !connect(addr, "t2") {
		t.Fatal("second connection did not resume")
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	_, addr = start()
	if !connect(addr, "t3") {
		t.Fatal("after a restart the ticket was not accepted: keys not persisted")
	}
}

// OpenSSL clients (mosquitto_pub, mosquitto_sub over --cafile) and paho
// over tls:// with 1.2 MB payloads, each way: every connection is TLS 1.3
// and goes on with tlsloop's record layer after crypto/tls's handshake.
func TestTLSLoopsRecordLayerMosquittoAndPahoLargePayloads(t *testing.T) {
	subBin, err1 := exec.LookPath("mosquitto_sub")
	pubBin, err2 := exec.LookPath("mosquitto_pub")
	if err1 != nil || err2 != nil {
		t.Skip("mosquitto clients not installed")
	}
	srv, addr, pool := startLoopsTLS(t, func(o *Options) { o.MaxPacketSize = 2 << 20 })
	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.pem")
	cert := srv.opts.TLSListeners[0].Config.Certificates[0].Certificate[0]
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert}), 0o600); err != nil {
		t.Fatal(err)
	}
	host, port, _ := net.SplitHostPort(addr)
	payload := make([]byte, 1200<<10)
	for i := range payload {
		payload[i] = 'a' + byte(i%26)
	}
	overTLS := func(o *mqtt.ClientOptions) {
		o.Servers = nil
		o.AddBroker("ssl://" + addr)
		o.SetTLSConfig(&tls.Config{RootCAs: pool})
	}

	// paho → mosquitto_sub (OpenSSL reads the broker's records).
	var out bytes.Buffer
	sub := exec.Command(subBin, "-h", host, "-p", port, "--cafile", caFile, "-t", "big/sub", "-C", "1", "-N", "-W", "30")
	sub.Stdout = &out
	if err := sub.Start(); err != nil {
		t.Fatal(err)
	}
	pub := pahoClient(t, addr, "paho-pub", overTLS)
	deadline := time.Now().Add(10 * time.Second)
	for srv.tlsL.Stats().Open < 2 && time.Now().Before(deadline) { // mosquitto_sub subscribed (nearly)
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // its SUBSCRIBE follows its CONNECT
	wait(t, pub.Publish("big/sub", 1, false, payload), "paho publish over TLS")
	if err := sub.Wait(); err != nil {
		t.Fatalf("mosquitto_sub: %v", err)
	}
	if !bytes.Equal(out.Bytes(), payload) {
		t.Fatalf("mosquitto_sub got %d bytes, want the %d published", out.Len(), len(payload))
	}

	// mosquitto_pub → paho (the broker reads OpenSSL's records).
	r := newReceived()
	pahoSub := pahoClient(t, addr, "paho-sub", overTLS)
	subscribe(t, pahoSub, "big/pub", 1, r)
	file := filepath.Join(dir, "payload")
	if err := os.WriteFile(file, payload, 0o600); err != nil {
		t.Fatal(err)
	}
	if b, err := exec.Command(pubBin, "-h", host, "-p", port, "--cafile", caFile, "-t", "big/pub", "-q", "1", "-f", file).CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_pub: %v %s", err, b)
	}
	if got := r.waitN(t, 1, 10*time.Second)[0].Payload(); !bytes.Equal(got, payload) {
		t.Fatalf("paho got %d bytes, want %d", len(got), len(payload))
	}
	if st := srv.tlsL.Stats(); st.RecordLayer < 4 || st.RecordLayer != st.Handshakes {
		t.Fatalf("stats %+v: every TLS 1.3 connection should be on the record layer", st)
	}
}
