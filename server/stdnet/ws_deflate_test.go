package stdnet

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/klauspost/compress/flate"
)

// deflateDialer offers permessage-deflate, as browsers do.
func deflateDialer() *websocket.Dialer { return &websocket.Dialer{EnableCompression: true} }

// The close handshake, text frames, the read limit and shutdown behave
// on a permessage-deflate connection (framed by ws_deflate.go) as on
// gorilla's: same close codes [MQTT-6.0.0-1], same OnClose error for the
// client's close; messages in both directions are compressed from 256
// bytes and arrive whole (RFC 7692 §7.2); pings are answered (RFC 6455
// §5.5.2) between the fragments of a message.
func TestWebSocketDeflateFraming(t *testing.T) {
	h := newEcho()
	tr := startTransport(t, Config{Handler: h}, nil, []WebSocketListener{{Addr: "127.0.0.1:0", Compression: true}})
	url := "ws://" + tr.WebSocketAddrs()[0].String() + "/mqtt"

	ws, resp, err := dialWS(t, url, nil, deflateDialer())
	if err != nil {
		t.Fatal(err)
	}
	if ext := resp.Header.Get("Sec-WebSocket-Extensions"); !strings.Contains(ext, "client_no_context_takeover") || !strings.Contains(ext, "server_no_context_takeover") {
		t.Fatalf("negotiated %q", ext)
	}
	// Echo of a compressed message, then a small (uncompressed) one.
	big := bytes.Repeat([]byte("temperature=21.5;"), 4000)
	for _, msg := range [][]byte{big, []byte("small")} {
		_ = ws.WriteMessage(websocket.BinaryMessage, msg)
		var got []byte
		for len(got) < len(msg) {
			_, m, err := ws.ReadMessage()
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, m...)
		}
		if !bytes.Equal(got, msg) {
			t.Fatalf("echo of %d bytes came back as %d", len(msg), len(got))
		}
	}
	// A ping is answered with its payload.
	pong := make(chan string, 1)
	ws.SetPongHandler(func(s string) error { pong <- s; return nil })
	_ = ws.WriteControl(websocket.PingMessage, []byte("p1"), time.Now().Add(time.Second))
	_ = ws.WriteMessage(websocket.BinaryMessage, []byte("x"))
	if _, _, err := ws.ReadMessage(); err != nil { // runs the pong handler
		t.Fatal(err)
	}
	select {
	case p := <-pong:
		if p != "p1" {
			t.Fatalf("pong %q", p)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no pong")
	}
	// The handler closes: 1000.
	_ = ws.WriteMessage(websocket.BinaryMessage, []byte("CLOSE\n"))
	if ce := readClose(t, ws); ce.Code != websocket.CloseNormalClosure {
		t.Fatalf("close code %d, want 1000", ce.Code)
	}

	// The client closes: answered, and OnClose sees the client's close.
	ws2, _, err := dialWS(t, url, nil, deflateDialer())
	if err != nil {
		t.Fatal(err)
	}
	_ = ws2.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "bye"), time.Now().Add(time.Second))
	if ce := readClose(t, ws2); ce.Code != websocket.CloseNormalClosure {
		t.Fatalf("answer to the client's close: %d", ce.Code)
	}
	eventually(t, 5*time.Second, "two OnClose", func() bool { _, n := h.counts(); return n == 2 })
	h.mu.Lock()
	var ce *websocket.CloseError
	if !errors.As(h.errs[1], &ce) || ce.Code != websocket.CloseNormalClosure || ce.Text != "bye" {
		t.Fatalf("OnClose error %v, want the client's close frame", h.errs[1])
	}
	h.mu.Unlock()

	for _, tc := range []struct {
		name string
		send func(*websocket.Conn)
		want int
	}{
		{"text frame", func(c *websocket.Conn) { _ = c.WriteMessage(websocket.TextMessage, []byte("hello")) }, websocket.CloseUnsupportedData},
		{"oversized message", func(c *websocket.Conn) {
			_ = c.WriteMessage(websocket.BinaryMessage, make([]byte, DefaultMaxPacketSize+100)) // compresses to ~1 KiB
		}, websocket.CloseMessageTooBig},
	} {
		c, _, err := dialWS(t, url, nil, deflateDialer())
		if err != nil {
			t.Fatal(err)
		}
		tc.send(c)
		if ce := readClose(t, c); ce.Code != tc.want {
			t.Fatalf("%s: close %d, want %d", tc.name, ce.Code, tc.want)
		}
	}

	// Shutdown: 1001.
	ws5, _, err := dialWS(t, url, nil, deflateDialer())
	if err != nil {
		t.Fatal(err)
	}
	go tr.Stop()
	if ce := readClose(t, ws5); ce.Code != websocket.CloseGoingAway {
		t.Fatalf("shutdown: close %d, want 1001", ce.Code)
	}
}

// rawFrame is a client frame: masked, with the given first byte.
func rawFrame(b0 byte, payload []byte, masked bool) []byte {
	f := []byte{b0}
	switch n := len(payload); {
	case n < 126:
		f = append(f, byte(n))
	default:
		f = append(f, 126, byte(n>>8), byte(n))
	}
	if !masked {
		return append(f, payload...)
	}
	f[1] |= WSBitMask
	mask := [4]byte{1, 2, 3, 4}
	f = append(f, mask[:]...)
	for i, c := range payload {
		f = append(f, c^mask[i&3])
	}
	return f
}

// deflated is p compressed as a permessage-deflate message body.
func deflated(t *testing.T, p []byte) []byte {
	var b bytes.Buffer
	if err := flate.StatelessDeflate(&b, p, false, nil); err != nil {
		t.Fatal(err)
	}
	return bytes.TrimSuffix(b.Bytes(), deflateTail[:4])
}

// Hand-built frames: a compressed message split over two frames with a
// ping between them is reassembled; protocol violations get the close
// code RFC 6455 §7.4.1 and RFC 7692 assign.
func TestWebSocketDeflateRawFrames(t *testing.T) {
	h := newEcho()
	tr := startTransport(t, Config{Handler: h}, nil, []WebSocketListener{{Addr: "127.0.0.1:0", Compression: true}})
	addr := tr.WebSocketAddrs()[0].String()
	// dial upgrades a raw TCP connection offering permessage-deflate and
	// returns it past the handshake and the echo handler's greeting.
	dial := func() (net.Conn, *bytes.Buffer) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		_, _ = c.Write([]byte("GET /mqtt HTTP/1.1\r\nHost: " + addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
			"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n" +
			"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n"))
		var in bytes.Buffer
		buf := make([]byte, 4096)
		for !bytes.Contains(in.Bytes(), []byte("\r\n\r\n")) {
			n, err := c.Read(buf)
			if err != nil {
				t.Fatal(err)
			}
			in.Write(buf[:n])
		}
		head, rest, _ := bytes.Cut(in.Bytes(), []byte("\r\n\r\n"))
		if !bytes.Contains(head, []byte("101")) || !bytes.Contains(head, []byte("permessage-deflate")) {
			t.Fatalf("handshake: %s", head)
		}
		return c, bytes.NewBuffer(append([]byte(nil), rest...))
	}
	// frames reads server frames until one with opcode op; returns its payload.
	frames := func(c net.Conn, in *bytes.Buffer, op byte) []byte {
		buf := make([]byte, 4096)
		for {
			b := in.Bytes()
			if len(b) >= 2 {
				n, hl := int(b[1]&0x7F), 2
				if n == 126 && len(b) >= 4 {
					n, hl = int(binary.BigEndian.Uint16(b[2:])), 4
				}
				if n < 126 && len(b) >= hl+n {
					got, payload := b[0]&0x0F, append([]byte(nil), b[hl:hl+n]...)
					in.Next(hl + n)
					if got == op {
						return payload
					}
					continue
				}
			}
			k, err := c.Read(buf)
			if err != nil {
				t.Fatalf("waiting for opcode %d: %v", op, err)
			}
			in.Write(buf[:k])
		}
	}

	c, in := dial()
	frames(c, in, WSOpBinary) // HELLO
	body := deflated(t, []byte("fragmented and compressed\n"))
	_, _ = c.Write(rawFrame(WSOpBinary|WSBitRSV1, body[:5], true)) // first fragment, RSV1
	_, _ = c.Write(rawFrame(WSBitFin|WSOpPing, []byte("mid"), true))
	_, _ = c.Write(rawFrame(WSBitFin|WSOpContinuation, body[5:], true))
	if p := frames(c, in, WSOpPong); string(p) != "mid" {
		t.Fatalf("pong %q", p)
	}
	if p := frames(c, in, WSOpBinary); string(p) != "fragmented and compressed\n" {
		t.Fatalf("echo %q", p)
	}

	for _, tc := range []struct {
		name  string
		frame []byte
		want  int
	}{
		{"unmasked frame", rawFrame(WSBitFin|WSOpBinary, []byte("x"), false), websocket.CloseProtocolError},
		{"RSV2", rawFrame(WSBitFin|0x20|WSOpBinary, []byte("x"), true), websocket.CloseProtocolError},
		{"continuation first", rawFrame(WSBitFin|WSOpContinuation, []byte("x"), true), websocket.CloseProtocolError},
		{"corrupt deflate", rawFrame(WSBitFin|WSBitRSV1|WSOpBinary, []byte{0xff, 0xff, 0xff, 0xff}, true), websocket.CloseInvalidFramePayloadData},
		{"fragmented ping", rawFrame(WSOpPing, nil, true), websocket.CloseProtocolError},
	} {
		c, in := dial()
		frames(c, in, WSOpBinary) // HELLO
		_, _ = c.Write(tc.frame)
		p := frames(c, in, WSOpClose)
		if len(p) < 2 || int(binary.BigEndian.Uint16(p)) != tc.want {
			t.Errorf("%s: close payload %q, want code %d", tc.name, p, tc.want)
		}
	}
}

// discardConn is a net.Conn whose writes go nowhere (benchmarks).
type discardConn struct{ net.Conn }

func (discardConn) Write(p []byte) (int, error)      { return len(p), nil }
func (discardConn) SetWriteDeadline(time.Time) error { return nil }

// BenchmarkWebSocketDeflateWrite: one outgoing MQTT packet as a
// compressed message (stateless deflate, reused frame buffers), and as a
// small uncompressed one.
func BenchmarkWebSocketDeflateWrite(b *testing.B) {
	for _, size := range []int{64, 4096} {
		b.Run(strconv.Itoa(size), func(b *testing.B) {
			s := newDeflateStream(discardConn{}, 1<<20)
			p := bytes.Repeat([]byte(`{"t":21.5,"u":"C"}`), size/18+1)[:size]
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := s.Write(p); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// bytesConn reads from a fixed input and discards writes (fuzzing).
type bytesConn struct {
	discardConn
	r *bytes.Reader
}

func (c bytesConn) Read(p []byte) (int, error)    { return c.r.Read(p) }
func (bytesConn) SetReadDeadline(time.Time) error { return nil }

// FuzzWebSocketDeflateRead: whatever a client sends after the handshake,
// the deflate framing returns data or an error, never panics, and never
// returns more of one message than the read limit.
func FuzzWebSocketDeflateRead(f *testing.F) {
	body := func(p []byte) []byte {
		var b bytes.Buffer
		_ = flate.StatelessDeflate(&b, p, false, nil)
		return bytes.TrimSuffix(b.Bytes(), deflateTail[:4])
	}
	f.Add(rawFrame(WSBitFin|WSBitRSV1|WSOpBinary, body([]byte("hello")), true))
	f.Add(append(rawFrame(WSOpBinary|WSBitRSV1, body(bytes.Repeat([]byte("ab"), 200))[:3], true),
		rawFrame(WSBitFin|WSOpContinuation, body(bytes.Repeat([]byte("ab"), 200))[3:], true)...))
	f.Add(rawFrame(WSBitFin|WSOpPing, []byte("p"), true))
	f.Add(rawFrame(WSBitFin|WSOpClose, []byte{0x03, 0xe8}, true))
	f.Add(rawFrame(WSBitFin|WSBitRSV1|WSOpBinary, []byte{0xff, 0x00}, true))
	f.Add([]byte{WSBitFin | WSOpBinary, 0xFF, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 1, 2, 3, 4})
	f.Fuzz(func(t *testing.T, in []byte) {
		const limit = 4096
		s := newDeflateStream(bytesConn{r: bytes.NewReader(in)}, limit)
		buf := make([]byte, 512)
		var msg int64
		for range 10000 {
			n, err := s.Read(buf)
			msg += int64(n)
			if s.msg == nil {
				msg = 0
			}
			if msg > limit+int64(len(buf)) {
				t.Fatalf("%d bytes of one message past the %d limit", msg, limit)
			}
			if err != nil {
				return
			}
		}
	})
}
