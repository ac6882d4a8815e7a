package server

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ternmq/tern/codec"
	"github.com/ternmq/tern/internal/mqtttest"
)

// idHeap keeps the same page a full sort would, for every k.
func TestIDHeapMatchesSort(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for round := range 200 {
		n := r.IntN(300)
		want := make([]string, n)
		k := r.IntN(n+2) - 1 // -1: all
		var h idHeap
		for i := range want {
			want[i] = fmt.Sprintf("c%05d", r.IntN(100000))
			h.push(clientCand{id: want[i]}, k)
		}
		slices.Sort(want)
		if k >= 0 && k < n {
			want = want[:k]
		}
		got := h.sorted()
		ids := make([]string, len(got))
		for i := range got {
			ids[i] = got[i].id
		}
		if !slices.Equal(ids, want) {
			t.Fatalf("round %d: n %d k %d: got %v, want %v", round, n, k, ids, want)
		}
	}
}

// The introspection methods run from another goroutine while clients
// connect, subscribe, publish, disconnect and get kicked on the loops: no
// data race (run with -race), no deadlock, and every snapshot is
// consistent for its client (a connected client has a remote address and
// listener; an offline one none).
func TestIntrospectDuringChurn(t *testing.T) {
	srv, addr := startBroker(t, nil)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var cycles atomic.Int64
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				id := fmt.Sprintf("churn-%d-%d", w, i%8)
				// Errors are expected (a kick or delete can close the
				// connection at any point); the cycle just ends early.
				nc, err := mqtttest.Dial(addr)
				if err != nil {
					continue
				}
				if _, err := nc.Connect(codec.Connect{ProtocolName: []byte("MQTT"), ProtocolVersion: 4, ClientID: []byte(id), CleanStart: i%2 == 0, KeepAlive: 30}); err == nil {
					if _, err := nc.Subscribe(1, nil, codec.Subscription{Filter: []byte("churn/" + id), QoS: 1}); err == nil {
						_ = nc.Send(&codec.Publish{Topic: []byte("churn/" + id), Payload: []byte("x")})
					}
				}
				_ = nc.Close()
				cycles.Add(1)
			}
		}()
	}
	deadline := time.Now().Add(1500 * time.Millisecond)
	reads := 0
	for time.Now().Before(deadline) {
		list := srv.Clients(ClientFilter{Offline: true, Limit: 10, Search: "churn"})
		for _, c := range list.Clients {
			if c.Connected != (c.RemoteAddr != "") || c.Connected != (c.Listener != "") {
				t.Fatalf("inconsistent snapshot: %+v", c)
			}
		}
		for w := range 4 {
			id := fmt.Sprintf("churn-%d-%d", w, reads%8)
			srv.ClientInfo(id)
			srv.Session(id)
			if reads%7 == 0 {
				_ = srv.Kick(id, "churn test") // may find it offline: ErrNotFound is fine
			}
			if reads%11 == 0 {
				_ = srv.DeleteSession(id)
			}
		}
		srv.Subscriptions("", 50)
		srv.Info()
		reads++
	}
	close(stop)
	wg.Wait()
	if cycles.Load() < 20 || reads < 20 {
		t.Fatalf("too little happened: %d connection cycles, %d reads", cycles.Load(), reads)
	}
	t.Logf("%d connection cycles, %d introspection rounds", cycles.Load(), reads)
}

// Each client is reported with the listener it came in through: two plain
// TCP listeners on ephemeral ports and a TLS one, on both TLS engines.
func TestIntrospectListenerNames(t *testing.T) { forEachTLSEngine(t, testIntrospectListenerNames) }

func testIntrospectListenerNames(t *testing.T, engine string) {
	cfg, pool := selfSigned(t)
	srv, _ := startBroker(t, func(o *Options) {
		o.Listeners = []string{"127.0.0.1:0", "127.0.0.2:0"}
		o.TLSListeners = []TLSListener{{Addr: "127.0.0.1:0", Config: cfg}}
		o.TLSEngine = engine
	})
	tcp := srv.Addrs()
	if len(tcp) != 2 {
		t.Fatalf("addrs %v", tcp)
	}
	for i, a := range tcp {
		nc, err := mqtttest.Dial(a.String())
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		if _, err := nc.Connect(codec.Connect{ProtocolName: []byte("MQTT"), ClientID: []byte(fmt.Sprint("tcp", i)), CleanStart: true}); err != nil {
			t.Fatal(err)
		}
	}
	tc, _ := dialTLSRaw(t, srv.TLSAddrs()[0].String(), pool)
	defer tc.Close()
	if _, err := tc.Connect(codec.Connect{ProtocolName: []byte("MQTT"), ClientID: []byte("tls0"), CleanStart: true}); err != nil {
		t.Fatal(err)
	}
	for id, want := range map[string]string{"tcp0": "tcp://" + tcp[0].String(), "tcp1": "tcp://" + tcp[1].String(),
		"tls0": "tls://" + srv.TLSAddrs()[0].String()} {
		if c, ok := srv.ClientInfo(id); !ok || c.Listener != want {
			t.Errorf("%s: listener %q (found %v), want %q", id, c.Listener, ok, want)
		}
	}
	if got := srv.Info().Listeners; len(got) != 3 {
		t.Errorf("info listeners %v", got)
	}
}

// Behind a load balancer speaking the PROXY protocol, a client is listed
// with the address the header named, and found by it.
func TestIntrospectProxiedAddress(t *testing.T) {
	srv, addr := startBroker(t, func(o *Options) {
		o.ListenerSettings = map[string]ListenerSettings{"127.0.0.1:0": {ProxyProtocol: true}}
	})
	nc, err := mqtttest.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if err := nc.Write([]byte("PROXY TCP4 203.0.113.7 10.0.0.1 51000 1883\r\n")); err != nil {
		t.Fatal(err)
	}
	if _, err := nc.Connect(codec.Connect{ProtocolName: []byte("MQTT"), ClientID: []byte("behind-lb"), CleanStart: true}); err != nil {
		t.Fatal(err)
	}
	if c, ok := srv.ClientInfo("behind-lb"); !ok || c.RemoteAddr != "203.0.113.7:51000" {
		t.Fatalf("client behind a balancer: %+v (found %v), want remote 203.0.113.7:51000", c, ok)
	}
	if l := srv.Clients(ClientFilter{Address: "203.0.113."}); l.Total != 1 {
		t.Fatalf("search by the proxied address: %+v", l)
	}
}
