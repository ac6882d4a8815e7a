// Command tlsidle measures what idle MQTT-over-TLS connections cost a
// broker running in another process: it opens -n connections (-parallel
// at a time; every one a full handshake, no session resumption), each
// CONNECT + SUBSCRIBE to its own topic, and reports the connect rate, the
// broker's CPU per connection and its RSS growth per connection once they
// idle. Any broker: give its PID with -pid. -tls12 caps the handshakes at
// TLS 1.2; -ws PATH speaks MQTT over WebSocket (wss://, or ws:// with
// -plain, which also measures plain MQTT without -ws).
//
//	tlsidle -addr 127.0.0.1:8883 -cafile ca.crt -pid 1234 -n 15000
//	tlsidle -addr 127.0.0.1:8884 -cafile ca.crt -pid 1234 -n 15000 -ws /mqtt
package main

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ternmq/tern/codec"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8883", "broker TLS `HOST:PORT`")
	n := flag.Int("n", 15000, "connections")
	parallel := flag.Int("parallel", 64, "connections opened at a time")
	caFile := flag.String("cafile", "", "PEM `FILE` of the CA that signed the broker's certificate")
	insecure := flag.Bool("insecure", false, "do not verify the broker's certificate")
	pid := flag.Int("pid", 0, "broker `PID` (for RSS and CPU); 0: not measured")
	settle := flag.Duration("settle", 3*time.Second, "wait after the last connect before reading RSS")
	tls12 := flag.Bool("tls12", false, "offer TLS 1.2 only")
	flag.StringVar(&wsPath, "ws", "", "MQTT over WebSocket: the upgrade request's `PATH` (e.g. /mqtt)")
	flag.BoolVar(&plain, "plain", false, "no TLS (plain MQTT, or ws:// with -ws)")
	flag.Parse()
	if *tls12 {
		maxVersion = tls.VersionTLS12
	}
	if err := run(*addr, *n, *parallel, *caFile, *insecure, *pid, *settle); err != nil {
		fmt.Fprintln(os.Stderr, "tlsidle:", err)
		os.Exit(1)
	}
}

func run(addr string, n, parallel int, caFile string, insecure bool, pid int, settle time.Duration) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	cfg := &tls.Config{ServerName: host, InsecureSkipVerify: insecure, MaxVersion: maxVersion} //nolint:gosec // -insecure is the user's choice
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return errors.New("no certificate in " + caFile)
		}
		cfg.RootCAs = pool
	}
	rss0, cpu0 := procStats(pid)
	conns := make([]net.Conn, n)
	var next, failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	start := time.Now()
	for range parallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				c, err := open(addr, cfg, i)
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
					continue
				}
				conns[i] = c
			}
		}()
	}
	wg.Wait()
	took := time.Since(start)
	rss1, cpu1 := procStats(pid)
	ok := n - int(failed.Load())
	// Printed before the settle, so that a script can look at the broker
	// while the connections are open and idle.
	fmt.Printf("connections: %d ok, %d failed in %v: %.0f connects/s (TLS handshake + CONNECT + SUBSCRIBE)\n",
		ok, failed.Load(), took.Round(time.Millisecond), float64(ok)/took.Seconds())
	if err, _ := firstErr.Load().(error); err != nil {
		fmt.Printf("first error: %v\n", err)
	}
	time.Sleep(settle)
	rss2, _ := procStats(pid)
	if pid > 0 && ok > 0 {
		fmt.Printf("broker CPU: %.0f µs per connection\n", float64(cpu1-cpu0)/float64(ok)*1e6)
		fmt.Printf("broker RSS: %.1f MiB before, %.1f MiB with %d idle connections: %.0f B per connection (%.0f B right after connecting)\n",
			float64(rss0)/(1<<20), float64(rss2)/(1<<20), ok, float64(rss2-rss0)/float64(ok), float64(rss1-rss0)/float64(ok))
	}
	for _, c := range conns {
		if c != nil {
			_ = c.Close()
		}
	}
	if ok == 0 {
		return errors.New("no connection succeeded")
	}
	return nil
}

// Set by flags: the transport of every connection.
var (
	maxVersion uint16 // 0: crypto/tls's default (TLS 1.3)
	wsPath     string // "": MQTT straight over the connection
	plain      bool   // no TLS
)

// open makes connection i: handshake, CONNECT, SUBSCRIBE idle/i.
func open(addr string, cfg *tls.Config, i int) (net.Conn, error) {
	d := net.Dialer{Timeout: 30 * time.Second}
	var c net.Conn
	var err error
	if plain {
		c, err = d.Dial("tcp", addr)
	} else {
		c, err = tls.DialWithDialer(&d, "tcp", addr, cfg)
	}
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	id := "idle-" + strconv.Itoa(i)
	p := codec.Connect{ProtocolVersion: codec.Version311, ClientID: []byte(id), CleanStart: true, KeepAlive: 0}
	out := p.Append(nil)
	s := codec.Subscribe{PacketID: 1, Subscriptions: []codec.Subscription{{Filter: []byte("idle/" + strconv.Itoa(i)), QoS: 1}}}
	out = s.Append(out, codec.Version311)
	var src io.Reader = c
	if wsPath != "" {
		br, err := upgrade(c, addr)
		if err != nil {
			c.Close()
			return nil, err
		}
		out = maskedFrame(out)
		src = &frameReader{r: br}
	}
	if _, err := c.Write(out); err != nil {
		c.Close()
		return nil, err
	}
	r := bufio.NewReaderSize(src, 64)
	for _, want := range []byte{0x20, 0x90} { // CONNACK, SUBACK
		h, err := r.ReadByte()
		if err != nil {
			c.Close()
			return nil, err
		}
		l, err := r.ReadByte()
		if err != nil || h != want || l > 127 {
			c.Close()
			return nil, fmt.Errorf("unexpected packet %#x (%v)", h, err)
		}
		if _, err := r.Discard(int(l)); err != nil {
			c.Close()
			return nil, err
		}
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}

// procStats returns pid's RSS in bytes and CPU time (user+system) in
// seconds; zeros when pid is 0.
func procStats(pid int) (rss int64, cpu float64) {
	if pid == 0 {
		return 0, 0
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err == nil {
		for _, line := range strings.Split(string(status), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				rss = kb << 10
			}
		}
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err == nil {
		s := string(stat)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		if len(f) > 12 {
			u, _ := strconv.ParseFloat(f[11], 64)
			k, _ := strconv.ParseFloat(f[12], 64)
			cpu = (u + k) / 100 // USER_HZ
		}
	}
	return rss, cpu
}

// upgrade sends the WebSocket upgrade request (RFC 6455 §4.1, subprotocol
// "mqtt" [MQTT-6.0.0-3]) and reads the 101 response; the reader it
// returns holds what followed the response.
func upgrade(c net.Conn, addr string) (*bufio.Reader, error) {
	req := "GET " + wsPath + " HTTP/1.1\r\nHost: " + addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n"
	if _, err := io.WriteString(c, req); err != nil {
		return nil, err
	}
	br := bufio.NewReaderSize(c, 512)
	status, err := br.ReadString('\n')
	if err != nil {
		return nil, err
	}
	if !strings.Contains(status, " 101 ") {
		return nil, fmt.Errorf("upgrade refused: %q", strings.TrimSpace(status))
	}
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return nil, err
		}
		if line == "\r\n" {
			return br, nil
		}
	}
}

// maskedFrame is p as one masked binary frame (a client masks, §5.1); the
// mask is zero, which leaves the payload as it is.
func maskedFrame(p []byte) []byte {
	h := []byte{0x82}
	switch n := len(p); {
	case n < 126:
		h = append(h, 0x80|byte(n))
	default:
		h = append(h, 0x80|126, byte(n>>8), byte(n))
	}
	return append(append(h, 0, 0, 0, 0), p...)
}

// frameReader reads the payloads of the server's (unmasked) frames.
type frameReader struct {
	r    *bufio.Reader
	left int // payload bytes left in the current frame
}

func (f *frameReader) Read(p []byte) (int, error) {
	for f.left == 0 {
		var h [2]byte
		if _, err := io.ReadFull(f.r, h[:]); err != nil {
			return 0, err
		}
		n := int(h[1] & 0x7F)
		switch n {
		case 126:
			var l [2]byte
			if _, err := io.ReadFull(f.r, l[:]); err != nil {
				return 0, err
			}
			n = int(l[0])<<8 | int(l[1])
		case 127:
			return 0, errors.New("unexpectedly long frame")
		}
		if h[0]&0x0F == 0x8 {
			return 0, io.EOF // close frame
		}
		f.left = n
	}
	m, err := f.r.Read(p[:min(len(p), f.left)])
	f.left -= m
	return m, err
}
