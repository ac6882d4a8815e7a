package server

import (
	"encoding/json"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
)

// mqttjsDir finds a directory whose node_modules holds MQTT.js:
// $TERN_MQTTJS_DIR (set up with `npm install mqtt` in it), else none.
func mqttjsDir(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("node"); err != nil {
		t.Skip("node not installed")
	}
	dir := os.Getenv("TERN_MQTTJS_DIR")
	if dir == "" {
		t.Skip("set TERN_MQTTJS_DIR to a directory where `npm install mqtt` ran, to test with MQTT.js")
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "mqtt")); err != nil {
		t.Skipf("no MQTT.js in %s: %v", dir, err)
	}
	return dir
}

// proxyCounting forwards connections to target and counts the bytes the
// target sends back, so a test sees what crossed the wire.
func proxyCounting(t *testing.T, target string) (addr string, down *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	down = new(atomic.Int64)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			go func() { _, _ = io.Copy(s, c); s.Close() }()
			// Counted as it is written: by the time the client has a
			// message, its bytes are in down.
			go func() { _, _ = io.Copy(countWriter{c, down}, s); c.Close() }()
		}
	}()
	return ln.Addr().String(), down
}

// countWriter counts what it writes to w.
type countWriter struct {
	w io.Writer
	n *atomic.Int64
}

func (c countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n.Add(int64(n))
	return n, err
}

// MQTT.js (the browser and Node client) over WebSocket, 3.1.1 and 5.0, on
// each path of a listener, with permessage-deflate offered by its "ws"
// transport: a 64 KiB QoS 1 message to itself comes back whole, the
// client ends cleanly, and with compression on the broker's answer crosses
// the wire compressed [MQTT-6.0.0-1].
func TestMQTTJSOverWebSocket(t *testing.T) {
	dir := mqttjsDir(t)
	script, err := filepath.Abs("testdata/mqttjs/ws_roundtrip.js")
	if err != nil {
		t.Fatal(err)
	}
	const size = 64 << 10
	for _, compression := range []bool{true, false} {
		srv, _ := startBroker(t, func(o *Options) {
			o.WebSocketListeners = []WebSocketListener{{Addr: "127.0.0.1:0", Paths: []string{"/mqtt", "/ws"}, Compression: compression}}
		})
		proxy, down := proxyCounting(t, srv.WebSocketAddrs()[0].String())
		for _, tc := range []struct{ path, version string }{{"/mqtt", "4"}, {"/ws", "5"}} {
			before := down.Load()
			cmd := exec.Command("node", script, "ws://"+proxy+tc.path, tc.version, strconv.Itoa(size))
			cmd.Dir = dir
			cmd.Env = append(os.Environ(), "NODE_PATH="+filepath.Join(dir, "node_modules"))
			out, err := cmd.Output()
			var res struct {
				OK    bool   `json:"ok"`
				Error string `json:"error"`
				Bytes int    `json:"bytes"`
			}
			if jerr := json.Unmarshal([]byte(strings.TrimSpace(string(out))), &res); jerr != nil || err != nil || !res.OK || res.Bytes != size {
				t.Fatalf("compression %v, %s v%s: %v %s %+v", compression, tc.path, tc.version, err, out, res)
			}
			t.Logf("compression %v, %s v%s: %d bytes from the broker", compression, tc.path, tc.version, down.Load()-before)
			// The broker sent the 64 KiB message once (plus CONNACK, SUBACK, PUBACK).
			got := down.Load() - before
			if compression && got > size/4 {
				t.Errorf("%s v%s: %d bytes from the broker for a %d-byte message: not compressed", tc.path, tc.version, got, size)
			}
			if !compression && got < size {
				t.Errorf("%s v%s: %d bytes from the broker for a %d-byte message uncompressed", tc.path, tc.version, got, size)
			}
		}
	}
}
