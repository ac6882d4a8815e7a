package proxyproto

import (
	"io"
	"net"
	"testing"
	"time"
)

// ReadHeader consumes exactly the header over a real socket: the bytes the
// client sent right behind it (a TLS ClientHello, an HTTP request) are
// still there for the next reader, whatever the header's version, even
// when they arrived in the same segment.
func TestReadHeaderByteExact(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	v2 := append(append([]byte(nil), V2Sig...), 0x21, 0x11, 0, 12, 198, 51, 100, 9, 10, 0, 0, 1, 0x9c, 0x40, 0x22, 0xb3)
	for _, tc := range []struct {
		name, want string
		header     []byte
	}{
		{"v1", "203.0.113.7:51000", []byte("PROXY TCP4 203.0.113.7 10.0.0.1 51000 8883\r\n")},
		{"v2", "198.51.100.9:40000", v2},
		{"v1 unknown", "", []byte("PROXY UNKNOWN\r\n")},
	} {
		cl, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		sv, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		rest := []byte("\x16\x03\x01after the header")
		if _, err := cl.Write(append(append([]byte(nil), tc.header...), rest...)); err != nil {
			t.Fatal(err)
		}
		addr, err := ReadHeader(sv, 5*time.Second)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got := addrString(addr); got != tc.want {
			t.Errorf("%s: address %q, want %q", tc.name, got, tc.want)
		}
		got := make([]byte, len(rest))
		if _, err := io.ReadFull(sv, got); err != nil || string(got) != string(rest) {
			t.Errorf("%s: after the header read %q %v, want %q", tc.name, got, err, rest)
		}
		cl.Close()
		sv.Close()
	}
}

// A peer that sends part of a header and stops is cut off by the timeout;
// one that sends something else is refused.
func TestReadHeaderTimeoutAndInvalid(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	for _, in := range []string{"PROXY TCP4 1.2", "\x10\x20MQTT"} {
		cl, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		sv, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		_, _ = cl.Write([]byte(in))
		start := time.Now()
		if _, err := ReadHeader(sv, 200*time.Millisecond); err == nil {
			t.Errorf("%q: accepted", in)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("%q: took %v", in, d)
		}
		cl.Close()
		sv.Close()
	}
}

func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}
