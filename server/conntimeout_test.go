package server

// The connect timeout bounds the client's time to send CONNECT (3.1.1 §3.1,
// 5.0 §3.1.4: a Server SHOULD close a connection that sends no CONNECT
// "within a reasonable amount of time"; [MQTT-3.1.0-1]), not the broker's
// own work on a CONNECT it has: a 19k connect storm under load saw clients
// closed before CONNACK, whose CONNECTs had waited in the broker past the
// 10 s timeout. Every close by the timeout is counted
// (tern_limit_refused_total{limit="connect_timeout"}) and logged,
// rate-limited.

import (
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/ternmq/tern/codec"
)

// slowAuth accepts every client after delay: an Authenticator (a password
// hash, an LDAP server) busier than the connect timeout.
type slowAuth struct {
	delay time.Duration
	calls atomic.Int32
}

func (a *slowAuth) Authenticate(ConnectInfo) error {
	a.calls.Add(1)
	time.Sleep(a.delay)
	return nil
}

// A socket that sends nothing, and one that sends half a CONNECT, are
// closed by the connect timeout (1 s, checked each second) and each close
// is counted as connect_timeout.
func TestConnectTimeoutClosesAndCounts_MQTT_3_1_0_1(t *testing.T) {
	t.Parallel()
	srv, addr := startBroker(t, func(o *Options) { o.ConnectTimeout = time.Second })
	silent := dialRaw(t, addr)
	half := dialRaw(t, addr)
	half.send(connect311[:5])
	start := time.Now()
	silent.expectClosed(5 * time.Second)
	half.expectClosed(5 * time.Second)
	if d := time.Since(start); d > 3500*time.Millisecond {
		t.Errorf("closed after %v, want about the 1 s connect timeout", d)
	}
	waitUntil(t, 2*time.Second, "both closes counted", func() bool { return srv.Refused()["connect_timeout"] == 2 })
}

// A client whose CONNECT is in while the Authenticator takes longer than
// the connect timeout is not closed for it: it gets CONNACK 0 and works.
// Before, it was closed before CONNACK (and not counted anywhere).
func TestConnectTimeoutSparesBrokerWait_MQTT_3_1_0_1(t *testing.T) {
	t.Parallel()
	a := &slowAuth{delay: 2500 * time.Millisecond}
	srv, addr := startBroker(t, func(o *Options) {
		o.ConnectTimeout = time.Second
		o.Authenticator = a
	})
	start := time.Now()
	c := pahoClient(t, addr, "ct-slow-auth", func(o *mqtt.ClientOptions) {
		o.SetUsername("u").SetPassword("p").SetConnectTimeout(10 * time.Second)
	})
	if d := time.Since(start); d < 2*time.Second {
		t.Fatalf("connected after %v: the Authenticator did not delay it", d)
	}
	r := newReceived()
	subscribe(t, c, "ct/t", 1, r)
	wait(t, c.Publish("ct/t", 1, false, "x"), "publish")
	r.waitN(t, 1, 5*time.Second)
	if n := srv.Refused()["connect_timeout"]; n != 0 {
		t.Errorf("connect_timeout counted %d, want 0", n)
	}
	if a.calls.Load() != 1 {
		t.Errorf("Authenticator called %d times, want 1", a.calls.Load())
	}
}

// A CONNECT that reached the broker's socket while its event loop was
// stalled (blocked in the store's back-pressure, persist's Commit, while
// fsyncs lag under load) is not closed by the connect timeout that ran out
// during the stall: the client sent it in time, the broker had not read
// it. Here both loops are stalled for 2.5 s with a 1 s connect timeout;
// the ticks queued meanwhile run before the read, as after a real stall.
func TestConnectTimeoutSparesLoopStall_MQTT_3_1_0_1(t *testing.T) {
	t.Parallel()
	srv, addr := startBroker(t, func(o *Options) { o.ConnectTimeout = time.Second })
	r := dialRaw(t, addr)
	waitUntil(t, 5*time.Second, "the connection to be open", func() bool { return srv.conns.Load() >= 1 })
	time.Sleep(50 * time.Millisecond) // OnOpen has run on its loop
	for _, l := range *srv.loopSet.Load() {
		l.post(func() { time.Sleep(2500 * time.Millisecond) })
	}
	time.Sleep(100 * time.Millisecond) // the stall began
	r.connect(codec.Connect{ClientID: []byte("ct-stall"), CleanStart: true, KeepAlive: 60}, 0)
	if n := srv.Refused()["connect_timeout"]; n != 0 {
		t.Errorf("connect_timeout counted %d, want 0", n)
	}
}
