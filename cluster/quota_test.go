package cluster_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// TestClusterRemoteQuotaRefused: a QoS 1/2 message that another node
// refuses because a matching persistent session's store quota is full is
// refused to its publisher as on one node: a 5.0 publisher gets PUBACK or
// PUBREC with Quota exceeded (0x97, §3.4.2.1, §3.5.2.1) and stays
// connected; a 3.1.1 publisher (no refusal code) is disconnected with the
// message unacknowledged; the publisher's node counts it
// (tern_limit_refused_total{limit="cluster_remote_quota"}).
func TestClusterRemoteQuotaRefused(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "quota.yaml")
	if err := os.WriteFile(cfg, []byte("max_session_backlog_bytes: 4096\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	nodes := startCluster(t, 3, "--config", cfg)
	n1, n2 := nodes[0], nodes[1]
	s := connect(t, n2.mqtt, "quota-sub", func(o *mqtt.ClientOptions) { o.SetCleanSession(false) })
	wait(t, s.Subscribe("quota/#", 2, func(mqtt.Client, mqtt.Message) {}), "subscribe")
	s.Disconnect(50) // offline: its backlog fills on n2
	waitInterest(t, []*node{n1}, 1)

	conn, err := net.DialTimeout("tcp", n1.mqtt, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	lost := make(chan struct{}, 1)
	pub := paho.NewClient(paho.ClientConfig{ClientID: "quota-pub5", Conn: conn,
		OnClientError:      func(error) { lost <- struct{}{} },
		OnServerDisconnect: func(*paho.Disconnect) { lost <- struct{}{} }})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := pub.Connect(ctx, &paho.Connect{ClientID: "quota-pub5", CleanStart: true, KeepAlive: 30}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pub.Disconnect(&paho.Disconnect{}) })
	payload := []byte(strings.Repeat("x", 512))
	refusedAt := func(qos byte) int {
		for i := range 40 {
			pr, err := pub.Publish(ctx, &paho.Publish{Topic: "quota/x", QoS: qos, Payload: payload})
			if pr != nil && pr.ReasonCode == 0x97 {
				return i
			}
			if err != nil {
				t.Fatalf("QoS %d publish %d: %v (response %+v)", qos, i, err, pr)
			}
		}
		t.Fatalf("QoS %d: 40 messages of 512 B all accepted by a session with a 4 KiB quota", qos)
		return 0
	}
	if i := refusedAt(1); i == 0 {
		t.Errorf("refused the first message: nothing was accepted before the quota")
	}
	refusedAt(2) // the backlog is still full: PUBREC 0x97
	// Still connected, and the QoS 2 flow ended: another message goes through.
	if pr, err := pub.Publish(ctx, &paho.Publish{Topic: "elsewhere", QoS: 2, Payload: []byte("ok")}); err != nil || pr.ReasonCode != 0 {
		t.Fatalf("after the refusals: %v %+v", err, pr)
	}
	select {
	case <-lost:
		t.Fatal("the 5.0 publisher was disconnected")
	default:
	}
	if v, _ := n1.metric(`tern_limit_refused_total{limit="cluster_remote_quota"}`); v < 2 {
		t.Errorf("cluster_remote_quota refusals on n1 = %v, want >= 2", v)
	}

	// 3.1.1: no refusal code — disconnected, the message unacknowledged.
	gone := make(chan struct{}, 1)
	p311 := connect(t, n1.mqtt, "quota-pub311", func(o *mqtt.ClientOptions) {
		o.SetConnectionLostHandler(func(mqtt.Client, error) { gone <- struct{}{} })
	})
	tok := p311.Publish("quota/x", 1, false, payload)
	select {
	case <-gone:
	case <-time.After(10 * time.Second):
		t.Fatal("the 3.1.1 publisher of a refused message was not disconnected")
	}
	if tok.WaitTimeout(100*time.Millisecond) && tok.Error() == nil {
		t.Error("the refused message was acknowledged to the 3.1.1 publisher")
	}
}
