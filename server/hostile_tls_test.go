package server

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/ternmq/tern/internal/mqtttest"
)

// The hostile-input tests over TLS, on both TLS engines: what a client
// sends inside a TLS session must meet exactly the checks it meets over
// plain TCP (the MQTT layer sees the same bytes, only decrypted), and a
// client that misbehaves at the TLS layer (silent, trickling its
// ClientHello, trickling its CONNECT after the handshake) is closed by the
// connect timeout like a plain-TCP slowloris.

// startTLSBroker starts a broker with one TLS listener on engine; it
// returns the server, its plain-TCP address, its TLS address and a pool
// trusting the listener's certificate.
func startTLSBroker(t *testing.T, engine string, tweak func(*Options)) (*Server, string, string, *x509.CertPool) {
	t.Helper()
	cfg, pool := selfSigned(t)
	srv, addr := startBroker(t, func(o *Options) {
		o.TLSEngine = engine
		o.TLSListeners = []TLSListener{{Addr: "127.0.0.1:0", Config: cfg}}
		if tweak != nil {
			tweak(o)
		}
	})
	return srv, addr, srv.TLSAddrs()[0].String(), pool
}

// dialTLS opens an MQTT connection over TLS (handshake done) as a rawConn.
func dialTLS(t *testing.T, tlsAddr string, pool *x509.CertPool) *rawConn {
	t.Helper()
	d := &net.Dialer{Timeout: mqtttest.DefaultTimeout}
	tc, err := tls.DialWithDialer(d, "tcp", tlsAddr, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	return rawOver(t, tc)
}

func TestHostileInputOverTLS(t *testing.T) {
	forEachTLSEngine(t, func(t *testing.T, engine string) {
		_, _, tlsAddr, pool := startTLSBroker(t, engine, func(o *Options) { o.MaxPacketSize = 64 << 10 })
		overTLS := func(o *mqtt.ClientOptions) {
			o.Servers = nil
			o.AddBroker("ssl://" + tlsAddr)
			o.SetTLSConfig(&tls.Config{RootCAs: pool})
		}
		healthyRecv := newReceived()
		healthy := pahoClient(t, tlsAddr, "healthy", overTLS)
		subscribe(t, healthy, "healthy/#", 1, healthyRecv)
		healthyPub := pahoClient(t, tlsAddr, "healthy-pub", overTLS)
		runHostileInput(t, func(t *testing.T) *rawConn { return dialTLS(t, tlsAddr, pool) }, healthyPub, healthyRecv)
	})
}

func TestV5HostileInputOverTLS(t *testing.T) {
	forEachTLSEngine(t, func(t *testing.T, engine string) {
		_, addr, tlsAddr, pool := startTLSBroker(t, engine, nil)
		runV5HostileInput(t, addr, func(t *testing.T) *rawConn { return dialTLS(t, tlsAddr, pool) })
	})
}

// The broker-wide cap on bytes of incomplete packets counts what arrives
// over TLS too (decrypted), so TLS is no way around it.
func TestPartialBytesCappedOverTLS(t *testing.T) {
	forEachTLSEngine(t, func(t *testing.T, engine string) {
		s, _, tlsAddr, pool := startTLSBroker(t, engine, func(o *Options) { o.Limits.MaxPartialBytes = 100 << 10 })
		runPartialBytesCapped(t, s, func(t *testing.T) *rawConn { return dialTLS(t, tlsAddr, pool) })
	})
}

// Slowloris over TLS: sockets that say nothing, that trickle their
// ClientHello a byte at a time, and that finish the handshake and then
// trickle their CONNECT, are all closed by the connect timeout; the broker
// holds no connection (and, on the loops engine, no handshake goroutine)
// afterwards.
func TestSlowlorisOverTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("300 TLS sockets")
	}
	forEachTLSEngine(t, func(t *testing.T, engine string) {
		s, _, tlsAddr, pool := startTLSBroker(t, engine, func(o *Options) { o.ConnectTimeout = 2 * time.Second })
		hello := clientHello(t, tlsAddr, pool)
		head := connectHeader(60<<10, 4)
		const perKind = 100
		var wg sync.WaitGroup
		var open atomic.Int32
		var worst atomic.Int64
		// trickle writes next(k) a byte a time until the broker closes w,
		// reading from r to notice the close; it records how long it took.
		trickle := func(w, r net.Conn, dialed time.Time, next func(k int) []byte) {
			defer wg.Done()
			defer w.Close()
			buf := make([]byte, 256)
			for k := 0; ; k++ {
				if b := next(k); b != nil {
					_, _ = w.Write(b)
				}
				_ = r.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
				_, err := r.Read(buf)
				if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
					d := int64(time.Since(dialed))
					for old := worst.Load(); d > old && !worst.CompareAndSwap(old, d); old = worst.Load() {
					}
					open.Add(-1)
					return
				}
				if time.Since(dialed) > 15*time.Second {
					return
				}
			}
		}
		for i := range 3 * perKind {
			nc, err := net.Dial("tcp", tlsAddr)
			if err != nil {
				t.Fatal(err)
			}
			dialed := time.Now()
			open.Add(1)
			wg.Add(1)
			switch i % 3 {
			case 0: // silent after the TCP handshake
				go trickle(nc, nc, dialed, func(int) []byte { return nil })
			case 1: // the ClientHello, one byte per read timeout
				go trickle(nc, nc, dialed, func(k int) []byte {
					if k < len(hello)-1 {
						return hello[k : k+1]
					}
					return nil
				})
			case 2: // a completed handshake, then a 60 KiB CONNECT trickled
				tc := tls.Client(nc, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
				go func() {
					if err := tc.Handshake(); err != nil {
						open.Add(-1) // closed during the handshake: also fine
						wg.Done()
						_ = nc.Close()
						return
					}
					trickle(tc, tc, dialed, func(k int) []byte {
						if k < len(head) {
							return head[k : k+1]
						}
						return []byte{0}
					})
				}()
			}
		}
		wg.Wait()
		if o := open.Load(); o != 0 {
			t.Fatalf("%d of %d slowloris TLS sockets still open after 15 s", o, 3*perKind)
		}
		if w := time.Duration(worst.Load()); w > 6*time.Second {
			t.Errorf("a slowloris TLS socket was closed %v after it connected, want about the 2 s connect timeout", w)
		}
		eventually(t, "connections and partial bytes released", func() bool {
			return s.conns.Load() == 0 && s.partialBytes.Load() == 0
		})
		if engine == TLSEngineLoops {
			eventually(t, "handshake goroutines gone", func() bool { return handshakeGoroutines() == 0 })
		}
	})
}
