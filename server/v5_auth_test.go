package server

import (
	"context"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/ternmq/tern/codec"
)

// scramClient is the client side of SCRAM-SHA-256, written from RFC 5802
// independently of the broker's side, as a paho.Auther.
type scramClient struct {
	user, password string

	mu          sync.Mutex
	clientBare  string
	authMessage string
	serverKey   []byte
	err         error
}

// first starts a conversation and returns the client-first message.
func (s *scramClient) first() []byte {
	var n [12]byte
	_, _ = rand.Read(n[:])
	s.mu.Lock()
	defer s.mu.Unlock()
	s.clientBare = "n=" + s.user + ",r=" + base64.RawStdEncoding.EncodeToString(n[:])
	return []byte("n,," + s.clientBare)
}

// final answers server-first with client-final.
func (s *scramClient) final(serverFirst string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var nonce, salt string
	iter := 0
	for _, a := range strings.Split(serverFirst, ",") {
		switch {
		case strings.HasPrefix(a, "r="):
			nonce = a[2:]
		case strings.HasPrefix(a, "s="):
			salt = a[2:]
		case strings.HasPrefix(a, "i="):
			iter, _ = strconv.Atoi(a[2:])
		}
	}
	rawSalt, err := base64.StdEncoding.DecodeString(salt)
	if err != nil || iter == 0 || !strings.HasPrefix(nonce, strings.Split(s.clientBare, ",r=")[1]) {
		return nil, errors.New("bad server-first")
	}
	salted, err := pbkdf2.Key(sha256.New, s.password, rawSalt, iter, 32)
	if err != nil {
		return nil, err
	}
	mac := func(k []byte, m string) []byte { h := hmac.New(sha256.New, k); h.Write([]byte(m)); return h.Sum(nil) }
	clientKey := mac(salted, "Client Key")
	stored := sha256.Sum256(clientKey)
	without := "c=biws,r=" + nonce
	s.authMessage = s.clientBare + "," + serverFirst + "," + without
	proof := make([]byte, 32)
	subtle.XORBytes(proof, clientKey, mac(stored[:], s.authMessage))
	s.serverKey = mac(salted, "Server Key")
	return []byte(without + ",p=" + base64.StdEncoding.EncodeToString(proof)), nil
}

// verify checks the server-final message: the broker knew the credential.
func (s *scramClient) verify(serverFinal []byte) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := hmac.New(sha256.New, s.serverKey)
	h.Write([]byte(s.authMessage))
	return string(serverFinal) == "v="+base64.StdEncoding.EncodeToString(h.Sum(nil))
}

func (s *scramClient) Authenticate(a *paho.Auth) *paho.Auth {
	out, err := s.final(string(a.Properties.AuthData))
	if err != nil {
		s.mu.Lock()
		s.err = err
		s.mu.Unlock()
	}
	return &paho.Auth{ReasonCode: byte(codec.ContinueAuthentication),
		Properties: &paho.AuthProperties{AuthMethod: SCRAMSHA256Method, AuthData: out}}
}

func (s *scramClient) Authenticated() {}

func scramBroker(t *testing.T) string {
	store := NewSCRAMStore()
	if err := store.AddUser("alice", "wonderland"); err != nil {
		t.Fatal(err)
	}
	_, addr := startBroker(t, func(o *Options) { o.EnhancedAuth = []EnhancedAuthenticator{NewSCRAMSHA256(store)} })
	return addr
}

func scramConnect(t *testing.T, addr, id string, sc *scramClient) (*paho.Client, *paho.Connack, error) {
	c, ca, _, err := dial5(t, addr, &paho.Connect{ClientID: id, CleanStart: true,
		Properties: &paho.ConnectProperties{AuthMethod: SCRAMSHA256Method, AuthData: sc.first()}},
		func(cc *paho.ClientConfig) { cc.AuthHandler = sc })
	return c, ca, err
}

// Enhanced authentication with SCRAM-SHA-256 (§4.12): CONNECT, AUTH
// continue, CONNACK success with the server's signature; a wrong password
// is CONNACK 0x87; an unknown method CONNACK 0x8C [MQTT-4.12.0-1].
func TestV5EnhancedAuthSCRAM_MQTT_4_12_0_1(t *testing.T) {
	addr := scramBroker(t)
	sc := &scramClient{user: "alice", password: "wonderland"}
	c, ca, err := scramConnect(t, addr, "scram-ok", sc)
	if err != nil {
		t.Fatalf("connect: %v (%+v)", err, ca)
	}
	if ca.Properties.AuthMethod != SCRAMSHA256Method || !sc.verify(ca.Properties.AuthData) {
		t.Errorf("CONNACK method %q data %q: server signature not verified", ca.Properties.AuthMethod, ca.Properties.AuthData)
	}
	// The connection works.
	sub5(t, c, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "scram", QoS: 1}}})

	for _, tc := range []struct {
		name string
		sc   *scramClient
		want codec.ReasonCode
	}{
		{"wrong password", &scramClient{user: "alice", password: "nope"}, codec.NotAuthorized},
		{"unknown user", &scramClient{user: "mallory", password: "x"}, codec.NotAuthorized},
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
	cp.Props.AuthMethod = []byte(SCRAMSHA256Method)
	cp.Props.AuthData = (&scramClient{user: "alice"}).first()
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
	if err := ack.Decode(got[0].h, got[0].body, codec.Version5); err != nil || ack.ReasonCode != byte(codec.ProtocolError) {
		t.Errorf("CONNACK 0x%02X %v, want 0x82", ack.ReasonCode, err)
	}
}

// Re-authentication: AUTH 0x19 with the CONNECT's method, answered by
// AUTH 0x00 [MQTT-4.12.1-1]; a failed one ends with DISCONNECT
// [MQTT-4.12.1-2]; AUTH from a client that did not use enhanced
// authentication is a Protocol Error.
func TestV5ReAuthentication_MQTT_4_12_1_1(t *testing.T) {
	addr := scramBroker(t)
	sc := &scramClient{user: "alice", password: "wonderland"}
	c, _, err := scramConnect(t, addr, "reauth", sc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := c.Authenticate(ctx, &paho.Auth{ReasonCode: byte(codec.ReAuthenticate),
		Properties: &paho.AuthProperties{AuthMethod: SCRAMSHA256Method, AuthData: sc.first()}})
	if err != nil || !resp.Success {
		t.Fatalf("re-authentication: %v %+v", err, resp)
	}
	sub5(t, c, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "reauth", QoS: 1}}})

	// A re-authentication with a wrong password ends the connection.
	sc.password = "changed"
	resp, err = c.Authenticate(ctx, &paho.Auth{ReasonCode: byte(codec.ReAuthenticate),
		Properties: &paho.AuthProperties{AuthMethod: SCRAMSHA256Method, AuthData: sc.first()}})
	if err != nil || resp.Success || resp.ReasonCode != byte(codec.NotAuthorized) {
		t.Fatalf("failed re-authentication: %v %+v", err, resp)
	}

	// Another method than CONNECT's [MQTT-4.12.1-1].
	sc2 := &scramClient{user: "alice", password: "wonderland"}
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
	a := codec.Auth{ReasonCode: byte(codec.ReAuthenticate)}
	a.Props.AuthMethod = []byte(SCRAMSHA256Method)
	a.Props.Set(codec.PropAuthMethod)
	raw.send(a.Append(nil))
	raw.expectDisconnect(codec.ProtocolError)
}

// The SCRAM exchange on its own: credentials made by NewSCRAMCredential,
// names with escaped characters, and malformed messages refused.
func TestSCRAMExchange(t *testing.T) {
	store := NewSCRAMStore()
	cred, err := NewSCRAMCredential("pw", 1000)
	if err != nil {
		t.Fatal(err)
	}
	store.Set("a,b=c", cred)
	auth := NewSCRAMSHA256(store)
	run := func(user, pw string) error {
		x := auth.Start(ConnectInfo{})
		sc := &scramClient{user: user, password: pw}
		out, done, err := x.Step(sc.first())
		if err != nil || done {
			return errors.Join(err, errors.New("first step"))
		}
		fin, err := sc.final(string(out))
		if err != nil {
			return err
		}
		out, done, err = x.Step(fin)
		if err != nil {
			return err
		}
		if !done || !sc.verify(out) {
			return errors.New("server-final not verified")
		}
		return nil
	}
	if err := run("a=2Cb=3Dc", "pw"); err != nil {
		t.Errorf("escaped user name: %v", err)
	}
	if err := run("a=2Cb=3Dc", "wrong"); err == nil {
		t.Error("wrong password accepted")
	}
	for _, bad := range []string{"", "p=tls-unique,,n=a,r=x", "n,,r=x", "n,,n=a", "n,,n=a=ZZ,r=x", "x,,n=a,r=b"} {
		if _, _, err := auth.Start(ConnectInfo{}).Step([]byte(bad)); err == nil {
			t.Errorf("client-first %q accepted", bad)
		}
	}
	// The CONNECT user name, when given, must be the SCRAM user.
	if _, _, err := auth.Start(ConnectInfo{Username: "bob"}).Step([]byte("n,,n=alice,r=abc")); err == nil {
		t.Error("SCRAM user differing from the CONNECT user accepted")
	}
}
