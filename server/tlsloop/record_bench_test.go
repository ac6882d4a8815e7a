package tlsloop

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"testing"
)

// The record layer allocates nothing per record: sealing into a buffer
// with room and opening into one with room.
func TestRecordLayerNoAllocsPerRecord(t *testing.T) {
	secret := bytes.Repeat([]byte{7}, 32)
	var w, r direction
	if err := w.setSecret(tls.TLS_AES_128_GCM_SHA256, secret); err != nil {
		t.Fatal(err)
	}
	if err := r.setSecret(tls.TLS_AES_128_GCM_SHA256, secret); err != nil {
		t.Fatal(err)
	}
	msg := make([]byte, 1000)
	sealed := make([]byte, 0, maxSealedRecord)
	plain := make([]byte, 0, maxCiphertextLen)
	allocs := testing.AllocsPerRun(100, func() {
		sealed = w.seal(sealed[:0], recordApplicationData, msg)
		out, typ, n, err := r.open(plain[:0], sealed)
		if err != nil || typ != recordApplicationData || n != len(msg) || &out[0] != &plain[:1][0] {
			t.Fatalf("open: %v type %d n %d", err, typ, n)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per record, want 0", allocs)
	}
}

// BenchmarkRecordLayer seals and opens one message per op: this
// package's record layer against crypto/tls's (a tls.Conn pair over an
// in-memory connection, after a real handshake).
//
//	go test ./server/tlsloop -run '^$' -bench BenchmarkRecordLayer -benchmem
func BenchmarkRecordLayer(b *testing.B) {
	for _, size := range []int{64, 1024, 16384} {
		msg := make([]byte, size)
		b.Run(fmt.Sprintf("tlsloop/%dB", size), func(b *testing.B) {
			secret := bytes.Repeat([]byte{7}, 32)
			var w, r direction
			_ = w.setSecret(tls.TLS_AES_128_GCM_SHA256, secret)
			_ = r.setSecret(tls.TLS_AES_128_GCM_SHA256, secret)
			sealed := make([]byte, 0, maxSealedRecord)
			plain := make([]byte, 0, maxCiphertextLen)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				sealed = w.seal(sealed[:0], recordApplicationData, msg)
				if _, _, _, err := r.open(plain[:0], sealed); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("crypto-tls/%dB", size), func(b *testing.B) {
			cli, srv := tlsPair(b)
			got := make([]byte, size)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := cli.Write(msg); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(srv, got); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// memConn is one end of a connection that runs over net.Pipe for the
// handshake (both ends need a goroutine) and then over a shared buffer,
// so a benchmark drives both ends from one goroutine.
type memConn struct {
	net.Conn
	in, out *bytes.Buffer
	direct  *bool
}

func (m *memConn) Read(b []byte) (int, error) {
	if *m.direct {
		return m.in.Read(b)
	}
	return m.Conn.Read(b)
}

func (m *memConn) Write(b []byte) (int, error) {
	if *m.direct {
		return m.out.Write(b)
	}
	return m.Conn.Write(b)
}

func tlsPair(b *testing.B) (*tls.Conn, *tls.Conn) {
	b.Helper()
	ca := newCA(b)
	p1, p2 := net.Pipe()
	var c2s, s2c bytes.Buffer
	direct := false
	cli := tls.Client(&memConn{Conn: p1, in: &s2c, out: &c2s, direct: &direct},
		&tls.Config{RootCAs: ca.pool, ServerName: "127.0.0.1", SessionTicketsDisabled: true})
	srv := tls.Server(&memConn{Conn: p2, in: &c2s, out: &s2c, direct: &direct},
		&tls.Config{Certificates: []tls.Certificate{ca.issue(b, "server", true)}, SessionTicketsDisabled: true})
	errc := make(chan error, 1)
	go func() { errc <- srv.Handshake() }()
	if err := cli.Handshake(); err != nil {
		b.Fatal(err)
	}
	if err := <-errc; err != nil {
		b.Fatal(err)
	}
	direct = true
	return cli, srv
}
