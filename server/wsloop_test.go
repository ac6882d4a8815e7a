package server

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/klauspost/compress/flate"

	"github.com/ternmq/tern/codec"
	"github.com/ternmq/tern/internal/mqtttest"
)

// rawWS is a hand-framed WebSocket client over a plain (or TLS) socket:
// no goroutine, every frame byte under the test's control. As a net.Conn
// (for mqtttest) each Write is one masked binary frame and Read returns
// the payload of the broker's binary frames; a close frame from the broker
// ends reads with a *wsClosed.
type rawWS struct {
	net.Conn
	br      *bufio.Reader
	pending []byte // payload of the current binary frame not yet read
}

// wsClosed is the broker's close frame.
type wsClosed struct{ code int }

func (e *wsClosed) Error() string { return fmt.Sprintf("websocket closed by the broker: %d", e.code) }

// wsUpgradeRequest is a valid MQTT WebSocket upgrade request for path.
func wsUpgradeRequest(path, extra string) string {
	return "GET " + path + " HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: mqtt\r\n" + extra + "\r\n"
}

// dialRawWS connects and upgrades; the response headers are returned.
func dialRawWS(t testing.TB, addr string, tc *tls.Config, extra string) (*rawWS, http.Header) {
	t.Helper()
	var nc net.Conn
	var err error
	if tc != nil {
		nc, err = tls.Dial("tcp", addr, tc)
	} else {
		nc, err = net.Dial("tcp", addr)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	if _, err := nc.Write([]byte(wsUpgradeRequest("/mqtt", extra))); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReaderSize(nc, 512)
	_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = nc.SetReadDeadline(time.Time{})
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: status %d", resp.StatusCode)
	}
	// RFC 6455 §1.3's example key and answer.
	if got := resp.Header.Get("Sec-WebSocket-Accept"); got != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" {
		t.Fatalf("Sec-WebSocket-Accept %q", got)
	}
	if got := resp.Header.Get("Sec-WebSocket-Protocol"); got != "mqtt" { // [MQTT-6.0.0-4]
		t.Fatalf("subprotocol %q, want mqtt", got)
	}
	return &rawWS{Conn: nc, br: br}, resp.Header
}

// frame builds one client frame: masked unless unmasked is set.
func wsFrame(op byte, fin, rsv1, unmasked bool, payload []byte) []byte {
	b0 := op
	if fin {
		b0 |= 0x80
	}
	if rsv1 {
		b0 |= 0x40
	}
	out := []byte{b0}
	mbit := byte(0x80)
	if unmasked {
		mbit = 0
	}
	switch n := len(payload); {
	case n < 126:
		out = append(out, mbit|byte(n))
	case n <= 0xFFFF:
		out = append(out, mbit|126, byte(n>>8), byte(n))
	default:
		out = append(out, mbit|127)
		out = binary.BigEndian.AppendUint64(out, uint64(n))
	}
	if unmasked {
		return append(out, payload...)
	}
	var key [4]byte
	_, _ = rand.Read(key[:])
	out = append(out, key[:]...)
	for i, c := range payload {
		out = append(out, c^key[i&3])
	}
	return out
}

func (w *rawWS) Write(p []byte) (int, error) {
	if _, err := w.Conn.Write(wsFrame(0x2, true, false, false, p)); err != nil {
		return 0, err
	}
	return len(p), nil
}

// readFrame reads one broker frame (never masked).
func (w *rawWS) readFrame() (op byte, fin, rsv1 bool, payload []byte, err error) {
	var h [2]byte
	if _, err = io.ReadFull(w.br, h[:]); err != nil {
		return
	}
	if h[1]&0x80 != 0 {
		err = errors.New("the broker masked a frame")
		return
	}
	n := uint64(h[1] & 0x7F)
	switch n {
	case 126:
		var b [2]byte
		if _, err = io.ReadFull(w.br, b[:]); err != nil {
			return
		}
		n = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		if _, err = io.ReadFull(w.br, b[:]); err != nil {
			return
		}
		n = binary.BigEndian.Uint64(b[:])
	}
	payload = make([]byte, n)
	_, err = io.ReadFull(w.br, payload)
	return h[0] & 0x0F, h[0]&0x80 != 0, h[0]&0x40 != 0, payload, err
}

func (w *rawWS) Read(p []byte) (int, error) {
	for len(w.pending) == 0 {
		op, _, _, payload, err := w.readFrame()
		if err != nil {
			return 0, err
		}
		switch op {
		case 0x8:
			code := 1005
			if len(payload) >= 2 {
				code = int(binary.BigEndian.Uint16(payload))
			}
			return 0, &wsClosed{code}
		case 0x2, 0x0:
			w.pending = payload
		}
	}
	n := copy(p, w.pending)
	w.pending = w.pending[n:]
	return n, nil
}

// expectClose reads until the broker's close frame: its code, then the
// socket must end.
func (w *rawWS) expectClose(t testing.TB, want int) {
	t.Helper()
	_ = w.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		op, _, _, payload, err := w.readFrame()
		if err != nil {
			t.Fatalf("no close frame (want %d): %v", want, err)
		}
		if op != 0x8 {
			continue
		}
		code := 1005
		if len(payload) >= 2 {
			code = int(binary.BigEndian.Uint16(payload))
		}
		if code != want {
			t.Fatalf("close %d (%q), want %d", code, payload[min(2, len(payload)):], want)
		}
		break
	}
	if _, err := w.br.ReadByte(); err == nil {
		t.Fatal("the broker sent more after its close frame")
	}
}

func wsLoopBroker(t testing.TB, tweak func(*Options)) (*Server, string) {
	t.Helper()
	srv, _ := startBroker(t, func(o *Options) {
		o.WebSocketEngine = WebSocketEngineLoops
		o.WebSocketListeners = []WebSocketListener{{Addr: "127.0.0.1:0", Compression: true}}
		if tweak != nil {
			tweak(o)
		}
	})
	return srv, srv.WebSocketAddrs()[0].String()
}

func wsConnectPacket(id string) []byte {
	return (&codec.Connect{ProtocolName: []byte("MQTT"), ProtocolVersion: codec.Version311, ClientID: []byte(id), CleanStart: true, KeepAlive: 60}).Append(nil)
}

// paho.mqtt.golang over ws:// and wss:// on the event loops exchanges
// QoS 0, 1 and 2 messages, small and large (several frames' worth of
// TCP segments), with a plain TCP client.
func TestWSLoopPahoOverWSAndWSS(t *testing.T) {
	cfg, pool := selfSigned(t)
	srv, addr := startBroker(t, func(o *Options) {
		o.WebSocketEngine = WebSocketEngineLoops
		o.WebSocketListeners = []WebSocketListener{{Addr: "127.0.0.1:0"}, {Addr: "127.0.0.1:0", Config: cfg}}
	})
	for i, scheme := range []string{"ws", "wss"} {
		t.Run(scheme, func(t *testing.T) {
			url := scheme + "://" + srv.WebSocketAddrs()[i].String() + "/mqtt"
			over := func(o *mqtt.ClientOptions) {
				o.Servers = nil
				o.AddBroker(url)
				o.SetTLSConfig(&tls.Config{RootCAs: pool})
			}
			r := newReceived()
			sub := pahoClient(t, addr, scheme+"-sub", over)
			subscribe(t, sub, scheme+"/#", 2, r)
			pub := pahoClient(t, addr, scheme+"-pub", over)
			for j := range 20 {
				wait(t, pub.Publish(scheme+"/x", byte(j%3), false, strings.Repeat("p", 1+j*9000)), "publish")
			}
			got := r.waitN(t, 20, 10*time.Second)
			if n := len(got[19].Payload()); n != 1+19*9000 {
				t.Fatalf("payload of %d bytes arrived as %d", 1+19*9000, n)
			}
			if n := srv.wsOpen(); n < 2 {
				t.Fatalf("%d WebSocket connections open on the loops, want at least 2", n)
			}
		})
	}
}

// [MQTT-6.0.0-2]: an MQTT packet may span frames (and fragments of one
// message) and a frame may hold several packets; frames may arrive a
// byte at a time. The broker reassembles the stream however it is cut.
func TestWSLoopFramingSplitAnywhere_MQTT_6_0_0_2(t *testing.T) {
	_, wsAddr := wsLoopBroker(t, nil)

	// CONNECT in a fragmented message: binary (not final), two continuations.
	w, _ := dialRawWS(t, wsAddr, nil, "")
	cp := wsConnectPacket("frag")
	var b []byte
	b = append(b, wsFrame(0x2, false, false, false, cp[:3])...)
	b = append(b, wsFrame(0x0, false, false, false, cp[3:7])...)
	b = append(b, wsFrame(0x9, true, false, false, []byte("hi"))...) // a ping between fragments (§5.4)
	b = append(b, wsFrame(0x0, true, false, false, cp[7:])...)
	if _, err := w.Conn.Write(b); err != nil {
		t.Fatal(err)
	}
	op, _, _, p, err := w.readFrame()
	if err != nil || op != 0xA || string(p) != "hi" {
		t.Fatalf("pong: op %#x %q %v", op, p, err)
	}
	mc := mqtttest.New(w)
	if pkt, err := mc.Next(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	} else if ack, ok := pkt.(*codec.Connack); !ok || ack.ReasonCode != 0 {
		t.Fatalf("CONNACK: %#v", pkt)
	}

	// SUBSCRIBE + PINGREQ in one frame, then a PUBLISH cut across three
	// frames, each frame written one byte at a time.
	w2, _ := dialRawWS(t, wsAddr, nil, "")
	var stream []byte
	stream = append(stream, wsConnectPacket("bytes")...)
	stream = append(stream, (&codec.Subscribe{PacketID: 1, Subscriptions: []codec.Subscription{{Filter: []byte("split/#"), QoS: 0}}}).Append(nil, codec.Version311)...)
	stream = append(stream, 0xC0, 0x00) // PINGREQ
	pub := (&codec.Publish{Topic: []byte("split/t"), Payload: bytes.Repeat([]byte("z"), 300)}).Append(nil, codec.Version311)
	cut := len(stream)
	stream = append(stream, pub...)
	var frames []byte
	frames = append(frames, wsFrame(0x2, true, false, false, stream[:cut])...)
	frames = append(frames, wsFrame(0x2, true, false, false, stream[cut:cut+2])...)
	frames = append(frames, wsFrame(0x2, true, false, false, stream[cut+2:cut+100])...)
	frames = append(frames, wsFrame(0x2, true, false, false, stream[cut+100:])...)
	for i := range frames {
		if _, err := w2.Conn.Write(frames[i : i+1]); err != nil {
			t.Fatal(err)
		}
		if i%16 == 0 {
			time.Sleep(time.Millisecond) // separate reads on the broker
		}
	}
	mc2 := mqtttest.New(w2)
	var seen []string
	for len(seen) < 4 {
		pkt, err := mc2.Next(time.Now().Add(5 * time.Second))
		if err != nil {
			t.Fatalf("after %v: %v", seen, err)
		}
		seen = append(seen, fmt.Sprintf("%T", pkt))
		if p, ok := pkt.(*codec.Publish); ok && len(p.Payload) != 300 {
			t.Fatalf("PUBLISH of %d bytes, want 300", len(p.Payload))
		}
	}
	if got := strings.Join(seen, " "); got != "*codec.Connack *codec.Suback *codec.Pingresp *codec.Publish" {
		t.Fatalf("packets %s", got)
	}
}

// RFC 6455 rules on the loops: an unmasked client frame gets 1002
// (§5.1), a text frame 1003 [MQTT-6.0.0-1], a frame over MaxPacketSize
// 1009 before its payload is read (counted), a fragmented control frame
// 1002; the client's close is answered with a close and the socket ends
// (§5.5.1); DISCONNECT ends with 1000.
func TestWSLoopFrameErrorsAndClose(t *testing.T) {
	srv, wsAddr := wsLoopBroker(t, func(o *Options) { o.MaxPacketSize = 4 << 10 })
	connected := func(id string) *rawWS {
		t.Helper()
		w, _ := dialRawWS(t, wsAddr, nil, "")
		if _, err := mqtttest.New(w).Connect(codec.Connect{ClientID: []byte(id), CleanStart: true}); err != nil {
			t.Fatal(err)
		}
		return w
	}
	for _, tc := range []struct {
		name  string
		frame []byte
		want  int
	}{
		{"unmasked", wsFrame(0x2, true, false, true, []byte{0xC0, 0}), 1002},
		{"text [MQTT-6.0.0-1]", wsFrame(0x1, true, false, false, []byte{0xC0, 0}), 1003},
		{"oversized", wsFrame(0x2, true, false, false, make([]byte, 8<<10)), 1009},
		{"fragmented ping", wsFrame(0x9, false, false, false, nil), 1002},
		{"reserved opcode", wsFrame(0x3, true, false, false, nil), 1002},
		{"continuation first", wsFrame(0x0, true, false, false, []byte{0xC0, 0}), 1002},
		{"client close", wsFrame(0x8, true, false, false, []byte{0x03, 0xE8}), 1000},
	} {
		w := connected("err-" + strings.ReplaceAll(tc.name, " ", "-"))
		if _, err := w.Conn.Write(tc.frame); err != nil {
			t.Fatal(err)
		}
		w.expectClose(t, tc.want)
	}
	// After DISCONNECT the broker starts the closing handshake (§7.1.2):
	// its close frame, then the socket stays until the client answers,
	// and closes as soon as it does.
	w := connected("bye")
	_ = mqtttest.New(w).Send(&codec.Disconnect{})
	_ = w.SetReadDeadline(time.Now().Add(5 * time.Second))
	if op, _, _, p, err := w.readFrame(); err != nil || op != 0x8 || binary.BigEndian.Uint16(p) != 1000 {
		t.Fatalf("after DISCONNECT: op %#x %x %v, want close 1000", op, p, err)
	}
	answered := time.Now()
	_, _ = w.Conn.Write(wsFrame(0x8, true, false, false, []byte{0x03, 0xE8}))
	if _, err := w.br.ReadByte(); err == nil {
		t.Fatal("the broker sent more after its close frame")
	}
	if d := time.Since(answered); d > time.Second {
		t.Fatalf("socket closed %v after the client's close frame, want at once", d)
	}
	if n := srv.Refused()["websocket_message_size"]; n != 1 {
		t.Fatalf("websocket_message_size refusals %d, want 1", n)
	}
	if st := srv.wsL.Stats(); st.ProtocolErrors != 5 || st.TooBig != 1 {
		t.Fatalf("stats %+v: want 5 protocol errors, 1 too big", st)
	}
}

// A deflate bomb — a few KiB that inflate to 64 MiB — meets MaxPacketSize
// while inflating: close 1009, counted, and the broker held at most the
// limit for it. A well-formed compressed PUBLISH still goes through and a
// large delivery comes back compressed.
func TestWSLoopDeflateBombRefused(t *testing.T) {
	srv, wsAddr := wsLoopBroker(t, func(o *Options) { o.MaxPacketSize = 64 << 10 })
	ext := "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
	deflate := func(p []byte) []byte {
		var buf bytes.Buffer
		fw, _ := flate.NewWriter(&buf, flate.BestCompression)
		_, _ = fw.Write(p)
		_ = fw.Flush()
		return bytes.TrimSuffix(buf.Bytes(), []byte{0, 0, 0xff, 0xff})
	}

	w, hdr := dialRawWS(t, wsAddr, nil, ext)
	if got := hdr.Get("Sec-WebSocket-Extensions"); !strings.Contains(got, "server_no_context_takeover") || !strings.Contains(got, "client_no_context_takeover") {
		t.Fatalf("extension answer %q", got)
	}
	var s []byte
	s = append(s, wsConnectPacket("deflate")...)
	s = append(s, (&codec.Subscribe{PacketID: 1, Subscriptions: []codec.Subscription{{Filter: []byte("z"), QoS: 0}}}).Append(nil, codec.Version311)...)
	s = append(s, (&codec.Publish{Topic: []byte("z"), Payload: bytes.Repeat([]byte("json "), 2000)}).Append(nil, codec.Version311)...)
	if _, err := w.Conn.Write(wsFrame(0x2, true, true, false, deflate(s))); err != nil {
		t.Fatal(err)
	}
	_ = w.SetReadDeadline(time.Now().Add(5 * time.Second))
	var compressed bool
	var stream []byte
	for len(stream) < 4+5+10000 {
		op, _, rsv1, p, err := w.readFrame()
		if err != nil {
			t.Fatal(err)
		}
		if op != 0x2 {
			t.Fatalf("opcode %#x", op)
		}
		if rsv1 {
			compressed = true
			p, err = io.ReadAll(flate.NewReader(io.MultiReader(bytes.NewReader(p), bytes.NewReader([]byte{0, 0, 0xff, 0xff, 1, 0, 0, 0xff, 0xff}))))
			if err != nil {
				t.Fatal(err)
			}
		}
		stream = append(stream, p...)
	}
	if !compressed {
		t.Fatal("the 10 KB delivery was not compressed")
	}

	bomb := deflate(make([]byte, 64<<20))
	if len(bomb) > 128<<10 {
		t.Fatalf("bomb of %d bytes", len(bomb))
	}
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	_, _ = w.Conn.Write(wsFrame(0x2, true, true, false, bomb))
	w.expectClose(t, 1009)
	runtime.ReadMemStats(&ms1)
	if grown := ms1.TotalAlloc - ms0.TotalAlloc; grown > 16<<20 {
		t.Fatalf("the bomb made the process allocate %d MiB", grown>>20)
	}
	if n := srv.Refused()["websocket_message_size"]; n != 1 {
		t.Fatalf("websocket_message_size refusals %d, want 1", n)
	}
}

// An attacker opening many sockets and sending an upgrade request a byte
// at a time holds at most the header bytes it sent, and every socket is
// closed by the header timeout and counted; a header over
// max_header_bytes gets 431 at once.
func TestWSLoopSlowHeaderAttackClosedByTimeout(t *testing.T) {
	srv, wsAddr := wsLoopBroker(t, func(o *Options) {
		o.WebSocketListeners[0].HeaderTimeout = 500 * time.Millisecond
		o.WebSocketListeners[0].MaxHeaderBytes = 1024
	})
	const n = 200
	req := wsUpgradeRequest("/mqtt", "")
	conns := make([]net.Conn, n)
	for i := range conns {
		c, err := net.Dial("tcp", wsAddr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		conns[i] = c
	}
	start := time.Now()
	var wg sync.WaitGroup
	closedAfter := make([]time.Duration, n)
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; ; j++ {
				if _, err := c.Write([]byte{req[j%(len(req)-4)]}); err != nil {
					break
				}
				_ = c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
				var ne net.Error
				if _, err := c.Read(make([]byte, 1)); err != nil && (!errors.As(err, &ne) || !ne.Timeout()) {
					break
				}
				if time.Since(start) > 5*time.Second {
					break
				}
			}
			closedAfter[i] = time.Since(start)
		}()
	}
	wg.Wait()
	for i, d := range closedAfter {
		if d > 3*time.Second {
			t.Fatalf("connection %d still open after %v", i, d)
		}
	}
	if got := srv.Refused()["websocket_header_timeout"]; got != n {
		t.Fatalf("websocket_header_timeout refusals %d, want %d", got, n)
	}

	c, err := net.Dial("tcp", wsAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = c.Write([]byte("GET /mqtt HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 2000)))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("oversized header: %v %v", resp, err)
	}
	if got := srv.Refused()["websocket_header"]; got != 1 {
		t.Fatalf("websocket_header refusals %d, want 1", got)
	}
}

// A ping is answered with a pong carrying its payload, also over wss://;
// a pong is ignored.
func TestWSLoopPingPongOverWSS(t *testing.T) {
	cfg, pool := selfSigned(t)
	srv, _ := startBroker(t, func(o *Options) {
		o.WebSocketEngine = WebSocketEngineLoops
		o.WebSocketListeners = []WebSocketListener{{Addr: "127.0.0.1:0", Config: cfg}}
	})
	w, _ := dialRawWS(t, srv.WebSocketAddrs()[0].String(), &tls.Config{RootCAs: pool}, "")
	if _, err := mqtttest.New(w).Connect(codec.Connect{ClientID: []byte("pinger"), CleanStart: true}); err != nil {
		t.Fatal(err)
	}
	_, _ = w.Conn.Write(append(wsFrame(0xA, true, false, false, []byte("unsolicited")), wsFrame(0x9, true, false, false, []byte("payload"))...))
	_ = w.SetReadDeadline(time.Now().Add(5 * time.Second))
	op, _, _, p, err := w.readFrame()
	if err != nil || op != 0xA || string(p) != "payload" {
		t.Fatalf("pong: op %#x %q %v", op, p, err)
	}
	_, _ = w.Conn.Write(wsFrame(0x8, true, false, false, []byte{0x03, 0xE8}))
	w.expectClose(t, 1000)
}

// No goroutine per connection: 1,000 idle WebSocket clients (raw sockets,
// which need no goroutine on the test's side either) add a handful of
// goroutines to the process, not one or two per connection.
func TestWSLoopNoGoroutinePerConnection(t *testing.T) {
	if testing.Short() {
		t.Skip("1,000 connections")
	}
	_, wsAddr := wsLoopBroker(t, nil)
	settledGoroutines()
	before := runtime.NumGoroutine()
	const n = 1000
	for i := range n {
		w, _ := dialRawWS(t, wsAddr, nil, "")
		if _, err := mqtttest.New(w).Connect(codec.Connect{ClientID: []byte(topicN("idle", i)), CleanStart: true}); err != nil {
			t.Fatal(err)
		}
	}
	settledGoroutines()
	if grown := runtime.NumGoroutine() - before; grown > 20 {
		t.Fatalf("%d goroutines more with %d idle WebSocket connections", grown, n)
	}
}
