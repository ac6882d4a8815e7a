package server

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/ternmq/tern/codec"
	"github.com/ternmq/tern/internal/mqtttest"
)

// wsClientConn is a gorilla client connection as the net.Conn mqtttest
// drives: each Write one binary message, Read the messages' bytes in order.
type wsClientConn struct {
	*websocket.Conn
	r io.Reader
}

func (c *wsClientConn) Read(p []byte) (int, error) {
	for {
		if c.r == nil {
			_, r, err := c.NextReader()
			if err != nil {
				return 0, err
			}
			c.r = r
		}
		n, err := c.r.Read(p)
		if err == io.EOF {
			c.r = nil
			if n > 0 {
				return n, nil
			}
			continue
		}
		return n, err
	}
}

func (c *wsClientConn) Write(p []byte) (int, error) {
	if err := c.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (c *wsClientConn) SetDeadline(t time.Time) error {
	_ = c.SetWriteDeadline(t)
	return c.SetReadDeadline(t)
}

// countingConn counts the bytes that cross the wire.
type countingConn struct {
	net.Conn
	in *atomic.Int64
}

func (c countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.in.Add(int64(n))
	return n, err
}

// dialMQTTWS opens an MQTT WebSocket connection to url offering
// permessage-deflate when deflate is set; it returns the MQTT connection,
// the negotiated extensions and a counter of bytes received on the wire.
func dialMQTTWS(t *testing.T, url string, deflate bool) (*mqtttest.Conn, string, *atomic.Int64) {
	t.Helper()
	var in atomic.Int64
	d := websocket.Dialer{Subprotocols: []string{"mqtt"}, EnableCompression: deflate, HandshakeTimeout: 5 * time.Second,
		NetDial: func(network, addr string) (net.Conn, error) {
			c, err := net.Dial(network, addr)
			if err != nil {
				return nil, err
			}
			return countingConn{c, &in}, nil
		}}
	ws, resp, err := d.Dial(url, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	t.Cleanup(func() { ws.Close() })
	return mqtttest.New(&wsClientConn{Conn: ws}), resp.Header.Get("Sec-WebSocket-Extensions"), &in
}

// A listener with several paths upgrades on each of them and answers 404
// elsewhere; with compression on, permessage-deflate is negotiated in its
// no-context-takeover form (RFC 7692 §7.1.1, §7.1.2) and a large,
// repetitive payload crosses the wire compressed, both ways, and arrives
// whole [MQTT-6.0.0-1]; a client that does not offer it gets plain frames.
func TestWebSocketPathsAndPermessageDeflate(t *testing.T) {
	srv, addr := startBroker(t, func(o *Options) {
		o.WebSocketListeners = []WebSocketListener{{Addr: "127.0.0.1:0", Paths: []string{"/mqtt", "/ws"}, Compression: true}}
	})
	ws := srv.WebSocketAddrs()[0].String()
	if resp, err := http.Get("http://" + ws + "/other"); err != nil || resp.StatusCode != http.StatusNotFound {
		t.Fatalf("unlisted path: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	payload := bytes.Repeat([]byte(`{"sensor":"temperature","value":21.5,"unit":"C"},`), 1300) // ~64 KiB
	for _, tc := range []struct {
		path    string
		deflate bool
	}{{"/ws", true}, {"/mqtt", true}, {"/ws", false}} {
		c, ext, wire := dialMQTTWS(t, "ws://"+ws+tc.path, tc.deflate)
		switch {
		case tc.deflate && !(strings.Contains(ext, "permessage-deflate") && strings.Contains(ext, "server_no_context_takeover") && strings.Contains(ext, "client_no_context_takeover")):
			t.Fatalf("%s: negotiated %q, want permessage-deflate without context takeover", tc.path, ext)
		case !tc.deflate && ext != "":
			t.Fatalf("%s: extension %q negotiated with a client that offered none", tc.path, ext)
		}
		id := "ws" + strings.ReplaceAll(tc.path, "/", "-")
		if ack, err := c.Connect(codec.Connect{ClientID: []byte(id), CleanStart: true, KeepAlive: 30}); err != nil || ack.ReasonCode != 0 {
			t.Fatalf("%s: CONNECT: %v %+v", tc.path, err, ack)
		}
		if _, err := c.Subscribe(1, nil, codec.Subscription{Filter: []byte("deflate/" + id), QoS: 1}); err != nil {
			t.Fatal(err)
		}
		// Sent over the (compressed, if negotiated) WebSocket itself, so the
		// broker's decompression is exercised too.
		if err := c.Send(&codec.Publish{Topic: []byte("deflate/" + id), Payload: payload, QoS: 0}); err != nil {
			t.Fatal(err)
		}
		before := wire.Load()
		pkt, err := c.Next(time.Now().Add(5 * time.Second))
		if err != nil {
			t.Fatalf("%s: %v", tc.path, err)
		}
		p, ok := pkt.(*codec.Publish)
		if !ok || !bytes.Equal(p.Payload, payload) {
			t.Fatalf("%s: got %T with %d payload bytes, want the %d sent", tc.path, pkt, len(p.Payload), len(payload))
		}
		got := wire.Load() - before
		if tc.deflate && got > int64(len(payload))/10 {
			t.Errorf("%s: %d payload bytes took %d wire bytes: not compressed", tc.path, len(payload), got)
		}
		if !tc.deflate && got < int64(len(payload)) {
			t.Errorf("%s: %d payload bytes in %d wire bytes without compression", tc.path, len(payload), got)
		}
		c.Disconnect()
	}
	_ = addr
}
