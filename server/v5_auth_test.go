package server

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/ternmq/tern/codec"
	"github.com/ternmq/tern/server/auth"
	"github.com/ternmq/tern/server/auth/authtest"
)

// scramClient is authtest.SCRAMClient (the client side of SCRAM-SHA-256,
// written from RFC 5802 independently of the broker's side) as a
// paho.Auther.
type scramClient struct {
	authtest.SCRAMClient
}

func newSCRAMClient(user, password string) *scramClient {
	return &scramClient{authtest.SCRAMClient{User: user, Password: password}}
}

func (s *scramClient) Authenticate(a *paho.Auth) *paho.Auth {
	out, _ := s.Final(string(a.Properties.AuthData)) // nil data: the broker refuses the proof
	return &paho.Auth{ReasonCode: byte(codec.ContinueAuthentication),
		Properties: &paho.AuthProperties{AuthMethod: auth.SCRAMSHA256Method, AuthData: out}}
}

func (s *scramClient) Authenticated() {}

func scramBroker(t *testing.T) string {
	store := auth.NewSCRAMStore()
	if err := store.AddUser("alice", "wonderland"); err != nil {
		t.Fatal(err)
	}
	_, addr := startBroker(t, func(o *Options) { o.EnhancedAuth = []EnhancedAuthenticator{auth.NewSCRAMSHA256(store)} })
	return addr
}

func scramConnect(t *testing.T, addr, id string, sc *scramClient) (*paho.Client, *paho.Connack, error) {
	c, ca, _, err := dial5(t, addr, &paho.Connect{ClientID: id, CleanStart: true,
		Properties: &paho.ConnectProperties{AuthMethod: auth.SCRAMSHA256Method, AuthData: sc.First()}},
		func(cc *paho.ClientConfig) { cc.AuthHandler = sc })
	return c, ca, err
}

// Enhanced authentication with SCRAM-SHA-256 (§4.12): CONNECT, AUTH
// continue, CONNACK success with the server's signature; a wrong password
// is CONNACK 0x87; an unknown method CONNACK 0x8C [MQTT-4.12.0-1].
func TestV5EnhancedAuthSCRAM_MQTT_4_12_0_1(t *testing.T) {
	addr := scramBroker(t)
	sc := newSCRAMClient("alice", "wonderland")
	c, ca, err := scramConnect(t, addr, "scram-ok", sc)
	if err != nil {
		t.Fatalf("connect: %v (%+v)", err, ca)
	}
	if ca.Properties.AuthMethod != auth.SCRAMSHA256Method || !sc.Verify(ca.Properties.AuthData) {
		t.Errorf("CONNACK method %q data %q: server signature not verified", ca.Properties.AuthMethod, ca.Properties.AuthData)
	}
	// The connection works.
	sub5(t, c, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "scram", QoS: 1}}})

	for _, tc := range []struct {
		name string
		sc   *scramClient
		want codec.ReasonCode
	}{
		{"wrong password", newSCRAMClient("alice", "nope"), codec.NotAuthorized},
		{"unknown user", newSCRAMClient("mallory", "x"), codec.NotAuthorized},
	} {
		_, ca, err := scramConnect(t, addr, "scram-bad", tc.sc)
		if err == nil || ca == nil || ca.ReasonCode != byte(tc.want) {
			t.Errorf("%s: err %v connack %+v, want reason 0x%02X", tc.name, err, ca, byte(tc.want))
		}
	}
	_, ca, _, err = dial5(t, addr, &paho.Connect{ClientID: "scram-method", CleanStart: true,
		Properties: &paho.ConnectProperties{AuthMethod: "KERBEROS-9"}}, nil)
	if err == nil || ca == nil || ca.ReasonCode != byte(codec.BadAuthenticationMethod) {
		t.Errorf("unknown method: err %v connack %+v, want 0x8C", err, ca)
	}
	// Only AUTH or DISCONNECT may follow CONNECT while the exchange runs.
	raw := dialRaw(t, addr)
	cp := codec.Connect{ProtocolVersion: codec.Version5, ProtocolName: []byte("MQTT"), ClientID: []byte("scram-raw"), CleanStart: true, KeepAlive: 30}
	cp.Props.AuthMethod = []byte(auth.SCRAMSHA256Method)
	cp.Props.AuthData = newSCRAMClient("alice", "").First()
	cp.Props.Set(codec.PropAuthMethod)
	cp.Props.Set(codec.PropAuthData)
	raw.vers = codec.Version5
	raw.send(cp.Append(nil))
	if h, _ := raw.read(5 * time.Second); h.Type != codec.AUTH {
		t.Fatalf("want AUTH continue, got %d", h.Type)
	}
	raw.send(codec.AppendPingreq(nil))
	got := raw.untilClosed(5 * time.Second)
	if len(got) != 1 || got[0].h.Type != codec.CONNACK {
		t.Fatalf("want CONNACK before close, got %v", got)
	}
	var ack codec.Connack
	if err := ack.Decode(got[0].h, got[0].body, codec.Version5); err != nil || ack.ReasonCode != codec.ProtocolError {
		t.Errorf("CONNACK 0x%02X %v, want 0x82", ack.ReasonCode, err)
	}
}

// Re-authentication: AUTH 0x19 with the CONNECT's method, answered by
// AUTH 0x00 [MQTT-4.12.1-1]; a failed one ends with DISCONNECT
// [MQTT-4.12.1-2]; AUTH from a client that did not use enhanced
// authentication is a Protocol Error.
func TestV5ReAuthentication_MQTT_4_12_1_1(t *testing.T) {
	addr := scramBroker(t)
	sc := newSCRAMClient("alice", "wonderland")
	c, _, err := scramConnect(t, addr, "reauth", sc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := c.Authenticate(ctx, &paho.Auth{ReasonCode: byte(codec.ReAuthenticate),
		Properties: &paho.AuthProperties{AuthMethod: auth.SCRAMSHA256Method, AuthData: sc.First()}})
	if err != nil || !resp.Success {
		t.Fatalf("re-authentication: %v %+v", err, resp)
	}
	sub5(t, c, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "reauth", QoS: 1}}})

	// A re-authentication with a wrong password ends the connection.
	sc.Password = "changed"
	resp, err = c.Authenticate(ctx, &paho.Auth{ReasonCode: byte(codec.ReAuthenticate),
		Properties: &paho.AuthProperties{AuthMethod: auth.SCRAMSHA256Method, AuthData: sc.First()}})
	if err != nil || resp.Success || resp.ReasonCode != byte(codec.NotAuthorized) {
		t.Fatalf("failed re-authentication: %v %+v", err, resp)
	}

	// Another method than CONNECT's [MQTT-4.12.1-1].
	sc2 := newSCRAMClient("alice", "wonderland")
	c2, _, err := scramConnect(t, addr, "reauth2", sc2)
	if err != nil {
		t.Fatal(err)
	}
	resp, err = c2.Authenticate(ctx, &paho.Auth{ReasonCode: byte(codec.ReAuthenticate),
		Properties: &paho.AuthProperties{AuthMethod: "OTHER"}})
	if err != nil || resp.ReasonCode != byte(codec.ProtocolError) {
		t.Fatalf("re-auth with another method: %v %+v", err, resp)
	}

	// No method in CONNECT: AUTH is a Protocol Error.
	raw, _ := dialRaw5(t, addr, codec.Connect{ClientID: []byte("reauth-none"), CleanStart: true})
	a := codec.Auth{ReasonCode: codec.ReAuthenticate}
	a.Props.AuthMethod = []byte(auth.SCRAMSHA256Method)
	a.Props.Set(codec.PropAuthMethod)
	raw.send(a.Append(nil))
	raw.expectDisconnect(codec.ProtocolError)
}

// Finding: a SCRAM client with an empty CONNECT User Name got the anonymous
// rules. Through the broker: the SCRAM user is the client's identity for
// the ACL (alice's rules, not the anonymous ones), and a re-authentication
// as another user fails and ends the connection [MQTT-4.12.1-2].
func TestV5SCRAMIdentityIsTheSCRAMUser(t *testing.T) {
	store := auth.NewSCRAMStore()
	for _, u := range []string{"alice", "bob"} {
		if err := store.AddUser(u, u+"-pw"); err != nil {
			t.Fatal(err)
		}
	}
	acl, err := auth.ParseACL(strings.NewReader("topic readwrite public/#\nuser alice\ntopic readwrite alice/#\n"))
	if err != nil {
		t.Fatal(err)
	}
	_, addr := startBroker(t, func(o *Options) {
		o.EnhancedAuth = []EnhancedAuthenticator{auth.NewSCRAMSHA256(store)}
		o.Authorizer = acl
	})
	sc := newSCRAMClient("alice", "alice-pw")
	c, ca, err := scramConnect(t, addr, "scram-id", sc) // no CONNECT User Name
	if err != nil {
		t.Fatalf("connect: %v (%+v)", err, ca)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// paho reports an error when a subscription fails; the SUBACK tells.
	sa, _ := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "alice/#", QoS: 1}, {Topic: "public/#", QoS: 1}}})
	if sa == nil || len(sa.Reasons) != 2 || sa.Reasons[0] != 1 || sa.Reasons[1] != byte(codec.NotAuthorized) {
		t.Fatalf("SUBACK %+v, want [1 0x87]: alice's rules, not the anonymous ones", sa)
	}
	sc.User, sc.Password = "bob", "bob-pw" // the client's AuthHandler now speaks for bob
	resp, err := c.Authenticate(ctx, &paho.Auth{ReasonCode: byte(codec.ReAuthenticate),
		Properties: &paho.AuthProperties{AuthMethod: auth.SCRAMSHA256Method, AuthData: sc.First()}})
	if err == nil && resp.Success {
		t.Fatal("re-authentication as another user succeeded")
	}
}

// Failed SCRAM proofs lock the user out like failed passwords: after the
// burst, the right password gets CONNACK 0x8A Banned.
func TestV5SCRAMLockout(t *testing.T) {
	addr := scramBroker(t)
	for range auth.DefaultFailuresPerUser {
		if _, ca, err := scramConnect(t, addr, "guess", newSCRAMClient("alice", "guess")); err == nil || ca == nil || ca.ReasonCode != byte(codec.NotAuthorized) {
			t.Fatalf("guess: err %v connack %+v, want 0x87", err, ca)
		}
	}
	if _, ca, err := scramConnect(t, addr, "right", newSCRAMClient("alice", "wonderland")); err == nil || ca == nil || ca.ReasonCode != byte(codec.Banned) {
		t.Fatalf("right password while locked out: err %v connack %+v, want 0x8A", err, ca)
	}
}
