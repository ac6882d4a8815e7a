package server

import (
	"net/http"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// MQTT over WebSocket [MQTT-6.0.0-1..-4]: a paho client on ws:// exchanges
// messages with a plain TCP client; a request without the "mqtt"
// subprotocol is refused.
func TestWebSocketListener(t *testing.T) {
	srv, addr := startBroker(t, func(o *Options) {
		o.WebSocketListeners = []WebSocketListener{{Addr: "127.0.0.1:0"}}
	})
	wsAddr := srv.WebSocketAddrs()[0].String()
	overWS := func(o *mqtt.ClientOptions) {
		o.Servers = nil
		o.AddBroker("ws://" + wsAddr + "/mqtt")
	}
	r := newReceived()
	sub := pahoClient(t, addr, "ws-sub", overWS)
	subscribe(t, sub, "ws/#", 2, r)
	pub := pahoClient(t, addr, "ws-tcp-pub")
	for i := 0; i < 20; i++ {
		wait(t, pub.Publish("ws/x", byte(i%3), false, strings.Repeat("p", 1+i*500)), "publish")
	}
	got := r.waitN(t, 20, 5*time.Second)
	if len(got[19].Payload()) != 1+19*500 {
		t.Fatalf("payload of %d bytes arrived as %d", 1+19*500, len(got[19].Payload()))
	}
	back := newReceived()
	tcpSub := pahoClient(t, addr, "ws-back")
	subscribe(t, tcpSub, "back", 1, back)
	wait(t, sub.Publish("back", 1, false, "from ws"), "publish over ws")
	back.waitN(t, 1, 5*time.Second)

	req, _ := http.NewRequest("GET", "http://"+wsAddr+"/mqtt", nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Sec-WebSocket-Version", "13")
	req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	req.Header.Set("Sec-WebSocket-Protocol", "chat")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("non-mqtt subprotocol: status %d, want 400", resp.StatusCode)
	}
}
