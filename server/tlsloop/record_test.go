package tlsloop

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/ternmq/tern/server/stdnet"
)

// echo is a gnet handler that writes back every byte it reads, through
// whatever conn it is given (this package's, for the TLS listeners).
type echo struct{ gnet.BuiltinEventEngine }

func (*echo) OnTraffic(c gnet.Conn) gnet.Action {
	b, _ := c.Peek(-1)
	if len(b) == 0 {
		return gnet.None
	}
	if _, err := c.Write(b); err != nil {
		return gnet.Close
	}
	_, _ = c.Discard(len(b))
	return gnet.None
}

type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
	pem  []byte
}

func newCA(t testing.TB) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "tlsloop test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(400 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue makes a leaf certificate: a server one for 127.0.0.1, or a client
// one named cn.
func (ca *testCA) issue(t testing.TB, cn string, server bool) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(400 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if server {
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

type echoServer struct {
	e    *Engine
	addr string
	ca   *testCA
}

// startEcho runs an echo handler on gnet with one TLS listener on the
// loops; cfg adjusts the listener's tls.Config.
func startEcho(t testing.TB, cfg func(*tls.Config)) *echoServer {
	t.Helper()
	return startEchoWith(t, cfg, Config{})
}

// startEchoWith is startEcho with the engine's Config (its Handler set
// here).
func startEchoWith(t testing.TB, cfg func(*tls.Config), ec Config) *echoServer {
	t.Helper()
	ca := newCA(t)
	sc := &tls.Config{Certificates: []tls.Certificate{ca.issue(t, "server", true)}}
	if cfg != nil {
		cfg(sc)
	}
	ec.Handler = &echo{}
	e, err := Listen(ec, []stdnet.TLSListener{{Addr: "127.0.0.1:0", Config: sc}})
	if err != nil {
		t.Fatal(err)
	}
	ran := make(chan error, 1)
	go func() {
		ran <- gnet.Run(e.Wrap(), "tcp://127.0.0.1:0", append(e.GnetOptions(), gnet.WithMulticore(true), gnet.WithNumEventLoop(2))...)
	}()
	t.Cleanup(func() {
		e.Stop()
		if eng := e.acc.Engine(); eng != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = eng.Stop(ctx)
		}
		<-ran
		e.WaitHandshakes()
	})
	return &echoServer{e: e, addr: e.Addrs()[0].String(), ca: ca}
}

// clientConfig trusts the server. Its session cache makes crypto/tls
// offer psk_dhe_ke, so the server sends a NewSessionTicket under its
// application key before the hand-over (without a cache a Go client
// offers none and gets none; OpenSSL always offers it).
func (s *echoServer) clientConfig() *tls.Config {
	return &tls.Config{RootCAs: s.ca.pool, ServerName: "127.0.0.1", ClientSessionCache: tls.NewLRUClientSessionCache(8)}
}

// waitRecordLayer waits until n handshakes went on with the record layer.
func (s *echoServer) waitRecordLayer(t testing.TB, n uint64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for s.e.Stats().RecordLayer < n {
		if time.Now().After(deadline) {
			t.Fatalf("record layer took over %d connections, want %d (stats %+v)", s.e.Stats().RecordLayer, n, s.e.Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func echoRoundTrip(t testing.TB, c io.ReadWriter, msg []byte) {
	t.Helper()
	errc := make(chan error, 1)
	go func() { _, err := c.Write(msg); errc <- err }()
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("read echo of %d bytes: %v", len(msg), err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatalf("echo of %d bytes differs", len(msg))
	}
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

// A crypto/tls client over TLS 1.3: small and large messages (2 MB, many
// records each way) through the record layer, which counted the server's
// NewSessionTicket (the client reads it before the first echo).
func TestRecordLayerEchoLargeAndSmall(t *testing.T) {
	s := startEcho(t, nil)
	c, err := tls.Dial("tcp", s.addr, s.clientConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s.waitRecordLayer(t, 1)
	if v := c.ConnectionState().Version; v != tls.VersionTLS13 {
		t.Fatalf("version %x", v)
	}
	for _, n := range []int{1, 64, 16384, 16385, 100_000, 2 << 20} {
		echoRoundTrip(t, c, randomBytes(n))
	}
}

// slowConn writes every chunk byte by byte, or holds writes back and
// sends them together.
type slowConn struct {
	net.Conn
	mu     sync.Mutex
	byByte bool
	hold   bool
	held   []byte
}

func (s *slowConn) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.hold:
		s.held = append(s.held, b...)
		return len(b), nil
	case s.byByte:
		for i := range b {
			if _, err := s.Conn.Write(b[i : i+1]); err != nil {
				return i, err
			}
			time.Sleep(200 * time.Microsecond)
		}
		return len(b), nil
	}
	return s.Conn.Write(b)
}

func (s *slowConn) flush() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hold = false
	_, err := s.Conn.Write(s.held)
	s.held = nil
	return err
}

// Records that arrive one byte per read, and many records in one read.
func TestRecordLayerSplitAndCoalescedRecords(t *testing.T) {
	s := startEcho(t, nil)
	raw, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	sc := &slowConn{Conn: raw}
	c := tls.Client(sc, s.clientConfig())
	defer c.Close()
	if err := c.Handshake(); err != nil {
		t.Fatal(err)
	}
	s.waitRecordLayer(t, 1)
	sc.byByte = true
	echoRoundTrip(t, c, []byte("byte by byte, each read a fraction of a record"))
	sc.byByte = false
	sc.hold = true
	var want []byte
	for i := range 50 {
		m := bytes.Repeat([]byte{byte(i)}, 10+i*37)
		want = append(want, m...)
		if _, err := c.Write(m); err != nil { // one record each, held back
			t.Fatal(err)
		}
	}
	if err := sc.flush(); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(want))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("coalesced records echoed wrongly")
	}
}

// exactConn reads at most up to the end of the current record, so a
// crypto/tls client over it leaves what follows its handshake (the
// server's NewSessionTicket) on the socket for the test's own records.
type exactConn struct {
	net.Conn
	cut cutter
}

func (e *exactConn) Read(b []byte) (int, error) {
	need := 1
	if e.cut.hdrN == recordHeaderLen {
		need = e.cut.left
	} else {
		need = recordHeaderLen - e.cut.hdrN
	}
	n, err := e.Conn.Read(b[:min(len(b), need)])
	e.cut.take(b[:n])
	return n, err
}

// keys captures a client's key log.
type keys struct {
	mu             sync.Mutex
	client, server []byte
}

func (k *keys) Write(line []byte) (int, error) {
	f := strings.Fields(string(line))
	if len(f) == 3 {
		s, _ := hex.DecodeString(f[2])
		k.mu.Lock()
		switch f[0] {
		case labelClientTraffic:
			k.client = s
		case labelServerTraffic:
			k.server = s
		}
		k.mu.Unlock()
	}
	return len(line), nil
}

// rawPeer is the client side of a handed-over connection driven by the
// test: crypto/tls did the handshake, the test seals and opens records
// with the client's secrets (the mirror of the server's record layer).
type rawPeer struct {
	t     testing.TB
	nc    net.Conn
	br    *bufio.Reader
	suite uint16
	out   direction // client → server
	in    direction // server → client
}

func dialRaw(t testing.TB, s *echoServer) *rawPeer {
	t.Helper()
	nc, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nc.Close() })
	k := &keys{}
	cfg := s.clientConfig()
	cfg.KeyLogWriter = k
	c := tls.Client(&exactConn{Conn: nc}, cfg)
	if err := c.Handshake(); err != nil {
		t.Fatal(err)
	}
	suite := c.ConnectionState().CipherSuite
	p := &rawPeer{t: t, nc: nc, br: bufio.NewReader(nc), suite: suite}
	if err := p.out.setSecret(suite, k.client); err != nil {
		t.Fatal(err)
	}
	if err := p.in.setSecret(suite, k.server); err != nil {
		t.Fatal(err)
	}
	s.waitRecordLayer(t, 1)
	return p
}

func (p *rawPeer) send(typ byte, content []byte) {
	p.t.Helper()
	if _, err := p.nc.Write(p.out.seal(nil, typ, content)); err != nil {
		p.t.Fatal(err)
	}
}

// recv reads the next record the server sent, skipping its
// NewSessionTicket; io.EOF when the server closed.
func (p *rawPeer) recv() (byte, []byte, error) {
	for {
		_ = p.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		var hdr [recordHeaderLen]byte
		if _, err := io.ReadFull(p.br, hdr[:]); err != nil {
			return 0, nil, err
		}
		rec := make([]byte, recordHeaderLen+int(binary.BigEndian.Uint16(hdr[3:])))
		copy(rec, hdr[:])
		if _, err := io.ReadFull(p.br, rec[recordHeaderLen:]); err != nil {
			return 0, nil, err
		}
		out, typ, n, err := p.in.open(nil, rec)
		if err != nil {
			p.t.Fatalf("the server's record does not open: %v", err)
		}
		if typ == recordHandshake && out[0] == 4 { // NewSessionTicket
			continue
		}
		return typ, out[:n], nil
	}
}

// expectAlert reads the alert the server sent and then the connection's
// end.
func (p *rawPeer) expectAlert(desc byte) {
	p.t.Helper()
	typ, b, err := p.recv()
	if err != nil {
		p.t.Fatalf("want alert %d, got %v", desc, err)
	}
	if typ != recordAlert || len(b) != 2 || b[1] != desc {
		p.t.Fatalf("want alert %d, got record type %d %x", desc, typ, b)
	}
	if _, _, err := p.recv(); !errors.Is(err, io.EOF) && !isReset(err) {
		p.t.Fatalf("want the connection closed after the alert, got %v", err)
	}
}

func isReset(err error) bool {
	return err != nil && strings.Contains(err.Error(), "connection reset")
}

func (p *rawPeer) expectData(want string) {
	p.t.Helper()
	var got []byte
	for len(got) < len(want) {
		typ, b, err := p.recv()
		if err != nil {
			p.t.Fatal(err)
		}
		if typ != recordApplicationData {
			p.t.Fatalf("want application data, got record type %d %x", typ, b)
		}
		got = append(got, b...)
	}
	if string(got) != want {
		p.t.Fatalf("got %q, want %q", got, want)
	}
}

// A client KeyUpdate with update_requested (RFC 8446 §4.6.3): the server
// answers with its own KeyUpdate under the old key, then its data comes
// under the new key, and it reads the client's under the client's new key.
func TestRecordLayerClientKeyUpdate(t *testing.T) {
	s := startEcho(t, nil)
	p := dialRaw(t, s)
	p.send(recordApplicationData, []byte("before"))
	p.expectData("before")
	for _, req := range []byte{updateRequested, updateNotRequest, updateRequested} {
		p.send(recordHandshake, []byte{handshakeKeyUpd, 0, 0, 1, req})
		if err := p.out.update(p.suite); err != nil {
			t.Fatal(err)
		}
		p.send(recordApplicationData, []byte("after"))
		if req == updateRequested {
			typ, b, err := p.recv()
			if err != nil || typ != recordHandshake || !bytes.Equal(b, []byte{handshakeKeyUpd, 0, 0, 1, updateNotRequest}) {
				t.Fatalf("want the server's KeyUpdate, got %d %x %v", typ, b, err)
			}
			if err := p.in.update(p.suite); err != nil {
				t.Fatal(err)
			}
		}
		p.expectData("after")
	}
}

// Bad input after the handshake gets the RFC 8446 alert and a close.
func TestRecordLayerAlerts(t *testing.T) {
	s := startEcho(t, nil)
	t.Run("tampered ciphertext: bad_record_mac", func(t *testing.T) {
		p := dialRaw(t, s)
		rec := p.out.seal(nil, recordApplicationData, []byte("hello"))
		rec[len(rec)-3] ^= 1
		if _, err := p.nc.Write(rec); err != nil {
			t.Fatal(err)
		}
		p.expectAlert(alertBadRecordMAC)
	})
	t.Run("ciphertext over 2^14+256: record_overflow", func(t *testing.T) {
		p := dialRaw(t, s)
		n := maxCiphertextLen + 1
		rec := append([]byte{recordApplicationData, 3, 3, byte(n >> 8), byte(n)}, make([]byte, n)...)
		if _, err := p.nc.Write(rec); err != nil {
			t.Fatal(err)
		}
		p.expectAlert(alertRecordOverflow)
	})
	t.Run("plaintext over 2^14: record_overflow", func(t *testing.T) {
		p := dialRaw(t, s)
		p.send(recordApplicationData, make([]byte, maxPlaintextLen+1))
		p.expectAlert(alertRecordOverflow)
	})
	t.Run("ClientHello after the handshake (renegotiation): unexpected_message", func(t *testing.T) {
		p := dialRaw(t, s)
		p.send(recordHandshake, []byte{1, 0, 0, 4, 3, 3, 0, 0})
		p.expectAlert(alertUnexpectedMessage)
	})
	t.Run("NewSessionTicket from the client: unexpected_message", func(t *testing.T) {
		p := dialRaw(t, s)
		p.send(recordHandshake, []byte{4, 0, 0, 1, 0})
		p.expectAlert(alertUnexpectedMessage)
	})
	t.Run("data after KeyUpdate in its record: unexpected_message", func(t *testing.T) {
		p := dialRaw(t, s)
		p.send(recordHandshake, []byte{handshakeKeyUpd, 0, 0, 1, 0, handshakeKeyUpd, 0, 0, 1, 0})
		p.expectAlert(alertUnexpectedMessage)
	})
	t.Run("bad KeyUpdate request: illegal_parameter", func(t *testing.T) {
		p := dialRaw(t, s)
		p.send(recordHandshake, []byte{handshakeKeyUpd, 0, 0, 1, 7})
		p.expectAlert(alertIllegalParameter)
	})
	t.Run("unprotected change_cipher_spec: unexpected_message", func(t *testing.T) {
		p := dialRaw(t, s)
		if _, err := p.nc.Write([]byte{recordChangeCipherSpec, 3, 3, 0, 1, 1}); err != nil {
			t.Fatal(err)
		}
		p.expectAlert(alertUnexpectedMessage)
	})
	t.Run("record of padding only: unexpected_message", func(t *testing.T) {
		p := dialRaw(t, s)
		rec := p.out.seal(nil, 0, nil) // content type 0: all padding
		if _, err := p.nc.Write(rec); err != nil {
			t.Fatal(err)
		}
		p.expectAlert(alertUnexpectedMessage)
	})
	t.Run("close_notify is answered", func(t *testing.T) {
		p := dialRaw(t, s)
		p.send(recordAlert, []byte{alertLevelWarning, alertCloseNotify})
		p.expectAlert(alertCloseNotify)
	})
	t.Run("padded records and user_canceled are fine", func(t *testing.T) {
		p := dialRaw(t, s)
		p.send(recordAlert, []byte{alertLevelWarning, alertUserCanceled})
		p.send(0, append([]byte("padded\x17"), make([]byte, 99)...)) // type, then 100 bytes of padding
		rec := p.out.seal(nil, recordApplicationData, nil)           // empty record
		if _, err := p.nc.Write(rec); err != nil {
			t.Fatal(err)
		}
		p.expectData("padded")
	})
}

// Client certificates (the server sends its ticket after reading them)
// and resumed sessions go on with the record layer; TLS 1.2 stays on
// crypto/tls and works.
func TestRecordLayerClientCertResumptionAndTLS12(t *testing.T) {
	var s *echoServer
	ca := newCA(t)
	s = startEcho(t, func(c *tls.Config) {
		c.ClientAuth = tls.RequireAndVerifyClientCert
		c.ClientCAs = ca.pool
	})
	cfg := s.clientConfig()
	cfg.Certificates = []tls.Certificate{ca.issue(t, "device-1", false)}
	cfg.ClientSessionCache = tls.NewLRUClientSessionCache(4)
	for i := range 2 {
		c, err := tls.Dial("tcp", s.addr, cfg)
		if err != nil {
			t.Fatal(err)
		}
		echoRoundTrip(t, c, randomBytes(40_000))
		if got := c.ConnectionState().DidResume; got != (i == 1) {
			t.Fatalf("connection %d: DidResume %v", i, got)
		}
		_ = c.Close()
		s.waitRecordLayer(t, uint64(i+1))
	}
	if st := s.e.Stats(); st.Resumed != 1 {
		t.Fatalf("stats %+v: want one resumed", st)
	}
	cfg12 := cfg.Clone()
	cfg12.MaxVersion = tls.VersionTLS12
	c, err := tls.Dial("tcp", s.addr, cfg12)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	echoRoundTrip(t, c, randomBytes(50_000))
	if st := s.e.Stats(); st.RecordLayer != 2 || st.Handshakes != 3 {
		t.Fatalf("stats %+v: the TLS 1.2 connection must stay on crypto/tls", st)
	}
}

// OpenSSL (another TLS implementation) with each TLS 1.3 suite the record
// layer implements, through openssl s_client.
func TestRecordLayerOpenSSLSuites(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl not installed")
	}
	s := startEcho(t, nil)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, s.ca.pem, 0o600); err != nil {
		t.Fatal(err)
	}
	for i, suite := range []string{"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"} {
		t.Run(suite, func(t *testing.T) {
			cmd := exec.Command("openssl", "s_client", "-connect", s.addr, "-tls1_3", "-ciphersuites", suite,
				"-CAfile", ca, "-verify_return_error", "-quiet")
			in, _ := cmd.StdinPipe()
			out, _ := cmd.StdoutPipe()
			cmd.Stderr = io.Discard
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
			msg := strings.Repeat(suite, 2000) + "\n" // 44 KB: several records
			go func() { _, _ = io.WriteString(in, msg) }()
			got := make([]byte, len(msg))
			done := make(chan error, 1)
			go func() { _, err := io.ReadFull(out, got); done <- err }()
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(15 * time.Second):
				t.Fatal("no echo from the broker through openssl")
			}
			if string(got) != msg {
				t.Fatal("echo differs")
			}
			s.waitRecordLayer(t, uint64(i+1))
		})
	}
}

// A HelloRetryRequest (the server wants a key share the client did not
// send) and the client's middlebox change_cipher_spec during the
// handshake: the hand-over still happens, and records flow.
func TestRecordLayerAfterHelloRetryRequest(t *testing.T) {
	s := startEcho(t, func(c *tls.Config) { c.CurvePreferences = []tls.CurveID{tls.CurveP384} })
	cfg := s.clientConfig()
	cfg.CurvePreferences = []tls.CurveID{tls.X25519, tls.CurveP384} // a share for X25519 only
	c, err := tls.Dial("tcp", s.addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := c.ConnectionState().CurveID; got != tls.CurveP384 {
		t.Fatalf("curve %v: no HelloRetryRequest happened", got)
	}
	s.waitRecordLayer(t, 1)
	echoRoundTrip(t, c, randomBytes(30_000))
}

// An idle connection drops its AEADs (IdleKeysAfter) and builds them
// again from its keys when traffic comes, in both directions, also after
// a KeyUpdate.
func TestRecordLayerIdleKeysDroppedAndRebuilt(t *testing.T) {
	s := startEchoWith(t, nil, Config{IdleKeysAfter: 100 * time.Millisecond, FreshKeysAfter: -1})
	p := dialRaw(t, s)
	waitDrops := func(n uint64) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for s.e.Stats().IdleKeyDrops < n {
			if time.Now().After(deadline) {
				t.Fatalf("idle key drops %d, want %d", s.e.Stats().IdleKeyDrops, n)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	p.send(recordApplicationData, []byte("one"))
	p.expectData("one")
	waitDrops(1)
	p.send(recordApplicationData, []byte("two"))
	p.expectData("two")
	waitDrops(2)
	p.send(recordHandshake, []byte{handshakeKeyUpd, 0, 0, 1, updateRequested})
	if err := p.out.update(p.suite); err != nil {
		t.Fatal(err)
	}
	if typ, b, err := p.recv(); err != nil || typ != recordHandshake || b[0] != handshakeKeyUpd {
		t.Fatalf("want the server's KeyUpdate, got %d %x %v", typ, b, err)
	}
	if err := p.in.update(p.suite); err != nil {
		t.Fatal(err)
	}
	waitDrops(3)
	p.send(recordApplicationData, []byte("three"))
	p.expectData("three")
}

// A connection quiet right after its handshake drops its AEADs at its
// second fresh tick (FreshKeysAfter), long before IdleKeysAfter, builds
// them again for its next record, and is not dropped again by the fresh
// ticks (it left their list).
func TestRecordLayerFreshKeysDroppedOnce(t *testing.T) {
	s := startEchoWith(t, nil, Config{IdleKeysAfter: time.Hour, FreshKeysAfter: 50 * time.Millisecond})
	p := dialRaw(t, s)
	p.send(recordApplicationData, []byte("one"))
	p.expectData("one")
	deadline := time.Now().Add(5 * time.Second)
	for s.e.Stats().FreshKeyDrops < 1 {
		if time.Now().After(deadline) {
			t.Fatalf("stats %+v: no fresh key drop", s.e.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
	p.send(recordApplicationData, []byte("two"))
	p.expectData("two")
	time.Sleep(300 * time.Millisecond) // six more ticks
	if st := s.e.Stats(); st.FreshKeyDrops != 1 || st.IdleKeyDrops != 1 {
		t.Fatalf("stats %+v: want exactly one drop", st)
	}
	p.send(recordApplicationData, []byte("three"))
	p.expectData("three")
}

// The fresh tick drops the AEADs of a connection that went on the list
// the tick before and was quiet since, keeps those of one that sealed or
// opened a record since, and forgets both after that tick; a connection
// that closed meanwhile is skipped.
func TestFreshTick(t *testing.T) {
	secret := make([]byte, 32)
	built := func() *conn {
		rl, err := newRecordLayer(tls.TLS_AES_128_GCM_SHA256, secret, secret, nil)
		if err != nil {
			t.Fatal(err)
		}
		if rl.in.build() != nil || rl.out.build() != nil {
			t.Fatal("build")
		}
		return &conn{rl: rl, used: usedAll}
	}
	e := &Engine{}
	l := &idleList{}
	quiet, busy, gone := built(), built(), built()
	for _, c := range []*conn{quiet, busy, gone} {
		l.add(c, true)
	}
	l.freshTick(e) // they settle: usedFresh cleared
	if quiet.rl.in.aead == nil || busy.rl.in.aead == nil {
		t.Fatal("dropped at the first tick")
	}
	busy.used = usedAll // a record
	l.remove(gone)      // closed
	l.freshTick(e)
	if quiet.rl.in.aead != nil || quiet.rl.out.aead != nil {
		t.Error("the quiet connection kept its AEADs")
	}
	if busy.rl.in.aead == nil || gone.rl.in.aead == nil {
		t.Error("a busy or closed connection lost its AEADs")
	}
	if got := e.freshDropped.Load(); got != 1 {
		t.Errorf("fresh drops %d, want 1", got)
	}
	l.freshTick(e)
	if busy.rl.in.aead == nil || len(l.fresh)+len(l.settling) != 0 {
		t.Errorf("a connection stayed on the fresh list (%d, %d) or lost its AEADs later", len(l.fresh), len(l.settling))
	}
	if busy.used&usedSweep == 0 {
		t.Error("the fresh tick cleared the sweep's mark")
	}
}

// A client that offers no PSK modes gets no ticket: the record layer
// starts the server's sequence at 0.
func TestRecordLayerWithoutTickets(t *testing.T) {
	s := startEcho(t, nil)
	cfg := s.clientConfig()
	cfg.ClientSessionCache = nil
	c, err := tls.Dial("tcp", s.addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s.waitRecordLayer(t, 1)
	echoRoundTrip(t, c, randomBytes(20_000))
}
