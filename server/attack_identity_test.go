package server

// Attacks on identity and authorization (sessions, wills, ACL, passwords,
// anonymity, the admin listener), each performed
// against a real broker on a loopback port with raw MQTT clients
// (internal/mqtttest), asserting the bound the broker must keep.

import (
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ternmq/tern/codec"
	"github.com/ternmq/tern/internal/mqtttest"
	"github.com/ternmq/tern/server/auth"
)

// attackAuth returns a password file for alice/bob (cheap hashes: a test
// measures authorization, not PBKDF2) and an ACL in mosquitto format.
func attackAuth(t testing.TB, acl string) (*auth.PasswordFile, *auth.ACLFile) {
	t.Helper()
	var lines []string
	for _, u := range []string{"alice", "bob"} {
		l, err := auth.HashPassword(u, u+"-pw", 1000)
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, l)
	}
	pf, err := auth.ParsePasswordFile(strings.NewReader(strings.Join(lines, "\n") + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	af, err := auth.ParseACL(strings.NewReader(acl))
	if err != nil {
		t.Fatal(err)
	}
	return pf, af
}

func mustDial(t testing.TB, addr string) *mqtttest.Conn {
	t.Helper()
	c, err := mqtttest.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// connectAs sends CONNECT and returns the CONNACK code.
func connectAs(t testing.TB, addr string, p codec.Connect) (*mqtttest.Conn, codec.Connack) {
	t.Helper()
	c := mustDial(t, addr)
	ack, err := c.Connect(p)
	if err != nil {
		t.Fatalf("connect %s: %v", p.ClientID, err)
	}
	return c, *ack
}

func login(id, user string, clean bool) codec.Connect {
	return codec.Connect{ClientID: []byte(id), UsernameFlag: true, Username: []byte(user), PasswordFlag: true, Password: []byte(user + "-pw"), CleanStart: clean, KeepAlive: 30}
}

// nextPublish waits for the next PUBLISH on c, acknowledging QoS 1.
func nextPublish(t testing.TB, c *mqtttest.Conn, d time.Duration) (*codec.Publish, bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		pkt, err := c.Next(deadline)
		if err != nil {
			return nil, false
		}
		if p, ok := pkt.(*codec.Publish); ok {
			if p.QoS == 1 {
				_ = c.Ack(codec.PUBACK, p.PacketID)
			}
			return p, true
		}
	}
}

// Row 4: a user allowed to write only bob/# published and retained into
// secret/… and $SYS through his will. The will is authorized at CONNECT.
func TestAttackWillSkipsAuthorizer(t *testing.T) {
	pf, acl := attackAuth(t, "user bob\ntopic readwrite bob/#\n")
	s, addr := startBroker(t, func(o *Options) { o.Authenticator, o.Authorizer = pf, acl })
	for _, topic := range []string{"secret/x", "$SYS/broker/version"} {
		p := login("bob-dev", "bob", true)
		p.WillFlag, p.WillTopic, p.WillPayload, p.WillRetain = true, []byte(topic), []byte("pwned"), true
		_, ack := connectAs(t, addr, p)
		if ack.ReasonCode != 5 { // 3.1.1: not authorized
			t.Errorf("will on %s: CONNACK %d, want 5", topic, ack.ReasonCode)
		}
		p.ProtocolVersion = codec.Version5
		_, ack = connectAs(t, addr, p)
		if ack.ReasonCode != codec.NotAuthorized {
			t.Errorf("5.0 will on %s: CONNACK 0x%02X, want 0x87", topic, ack.ReasonCode)
		}
	}
	p := login("bob-dev", "bob", true)
	p.WillFlag, p.WillTopic, p.WillPayload = true, []byte("bob/status"), []byte("gone")
	if _, ack := connectAs(t, addr, p); ack.ReasonCode != 0 {
		t.Errorf("allowed will refused: %d", ack.ReasonCode)
	}
	if _, ok := s.retained.Get("secret/x"); ok {
		t.Error("secret/x retained through a will")
	}
	if s.Refused()["acl_will"] == 0 || s.Refused()["sys_publish"] == 0 {
		t.Errorf("refusals not counted: %v", s.Refused())
	}
}

// Row 5: a second user connecting with another user's client id (clean
// session 0) received her queued and live messages, and could kick her or
// wipe her session. A session belongs to the identity that created it.
func TestAttackSessionHijack(t *testing.T) {
	pf, acl := attackAuth(t, "user alice\ntopic readwrite secret/#\nuser bob\ntopic readwrite bob/#\n")
	s, addr := startBroker(t, func(o *Options) { o.Authenticator, o.Authorizer = pf, acl })
	alice, ack := connectAs(t, addr, login("phone", "alice", false))
	if ack.ReasonCode != 0 {
		t.Fatal(ack.ReasonCode)
	}
	if _, err := alice.Subscribe(1, nil, codec.Subscription{Filter: []byte("secret/#"), QoS: 1}); err != nil {
		t.Fatal(err)
	}
	alice.Disconnect()
	if err := s.Publish("secret/plans", []byte("queued"), 1, false); err != nil {
		t.Fatal(err)
	}
	for _, clean := range []bool{false, true} { // resume, or wipe
		bob, ack := connectAs(t, addr, login("phone", "bob", clean))
		if ack.ReasonCode != 5 {
			t.Fatalf("bob took alice's client id (clean=%v): CONNACK %d", clean, ack.ReasonCode)
		}
		if p, ok := nextPublish(t, bob, 300*time.Millisecond); ok {
			t.Fatalf("bob received %s", p.Topic)
		}
	}
	// Alice is online again; bob's attempt must not kick her.
	alice, ack = connectAs(t, addr, login("phone", "alice", false))
	if ack.ReasonCode != 0 || !ack.SessionPresent {
		t.Fatalf("alice's session was lost: CONNACK %d present=%v", ack.ReasonCode, ack.SessionPresent)
	}
	if p, ok := nextPublish(t, alice, 5*time.Second); !ok || string(p.Payload) != "queued" {
		t.Fatal("alice did not get her queued message")
	}
	if _, ack := connectAs(t, addr, login("phone", "bob", false)); ack.ReasonCode != 5 {
		t.Fatalf("bob: CONNACK %d", ack.ReasonCode)
	}
	if err := s.Publish("secret/plans", []byte("live"), 1, false); err != nil {
		t.Fatal(err)
	}
	if p, ok := nextPublish(t, alice, 5*time.Second); !ok || string(p.Payload) != "live" {
		t.Fatal("alice was kicked by bob's attempt")
	}
	if s.Refused()["session_owner"] < 3 {
		t.Errorf("refusals counted: %v", s.Refused())
	}
}

// The owner of a session survives a restart: after recovery another
// identity still cannot resume it.
func TestSessionOwnerSurvivesRestart(t *testing.T) {
	pf, acl := attackAuth(t, "user alice\ntopic readwrite secret/#\nuser bob\ntopic readwrite bob/#\n")
	dir := t.TempDir()
	tweak := func(o *Options) { o.Authenticator, o.Authorizer, o.DataDir = pf, acl, dir }
	s1, addr := startBroker(t, tweak)
	alice, _ := connectAs(t, addr, login("tablet", "alice", false))
	if _, err := alice.Subscribe(1, nil, codec.Subscription{Filter: []byte("secret/#"), QoS: 1}); err != nil {
		t.Fatal(err)
	}
	alice.Disconnect()
	_ = s1.Close()
	_, addr = startBroker(t, tweak)
	if _, ack := connectAs(t, addr, login("tablet", "bob", false)); ack.ReasonCode != 5 {
		t.Fatalf("bob resumed alice's recovered session: CONNACK %d", ack.ReasonCode)
	}
	if _, ack := connectAs(t, addr, login("tablet", "alice", false)); ack.ReasonCode != 0 || !ack.SessionPresent {
		t.Fatalf("alice: CONNACK %d present=%v", ack.ReasonCode, ack.SessionPresent)
	}
}

// A resumed session keeps only the subscriptions the ACL allows now.
func TestResumedSubscriptionsRecheckedAgainstACL(t *testing.T) {
	pf, open := attackAuth(t, "user alice\ntopic readwrite #\n")
	_, strict := attackAuth(t, "user alice\ntopic readwrite public/#\n")
	dir := t.TempDir()
	s1, addr := startBroker(t, func(o *Options) { o.Authenticator, o.Authorizer, o.DataDir = pf, open, dir })
	c, _ := connectAs(t, addr, login("dev", "alice", false))
	if _, err := c.Subscribe(1, nil, codec.Subscription{Filter: []byte("secret/#"), QoS: 1}, codec.Subscription{Filter: []byte("public/#"), QoS: 1}); err != nil {
		t.Fatal(err)
	}
	c.Disconnect()
	_ = s1.Close()
	s2, addr := startBroker(t, func(o *Options) { o.Authenticator, o.Authorizer, o.DataDir = pf, strict, dir })
	c, ack := connectAs(t, addr, login("dev", "alice", false))
	if !ack.SessionPresent {
		t.Fatal("session not resumed")
	}
	_ = s2.Publish("secret/x", []byte("no"), 1, false)
	_ = s2.Publish("public/x", []byte("yes"), 1, false)
	p, ok := nextPublish(t, c, 5*time.Second)
	if !ok || string(p.Topic) != "public/x" {
		t.Fatalf("got %v", p)
	}
	if p, ok := nextPublish(t, c, 300*time.Millisecond); ok {
		t.Fatalf("revoked subscription delivered %s", p.Topic)
	}
}

// Row 13: a client may not publish into $SYS, whatever the ACL grants; an
// unverified username is anonymous to the ACL.
func TestAttackSysPublishAndUnverifiedUsername(t *testing.T) {
	_, acl := attackAuth(t, "topic read public/#\nuser admin\ntopic readwrite #\n")
	s, addr := startBroker(t, func(o *Options) { o.Authorizer = acl; o.SysInterval = -1 })
	// No Authenticator: "admin" is only a claim.
	c, ack := connectAs(t, addr, codec.Connect{ProtocolVersion: codec.Version5, ClientID: []byte("x"), UsernameFlag: true, Username: []byte("admin"), CleanStart: true, KeepAlive: 30})
	if ack.ReasonCode != 0 {
		t.Fatal(ack.ReasonCode)
	}
	for i, topic := range []string{"$SYS/broker/version", "secret/x"} {
		if err := c.Send(&codec.Publish{Topic: []byte(topic), Payload: []byte("fake"), QoS: 1, PacketID: uint16(i + 1), Retain: true}); err != nil {
			t.Fatal(err)
		}
		pkt, err := c.Next(time.Now().Add(5 * time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if a, ok := pkt.(*codec.Ack); !ok || a.ReasonCode != codec.NotAuthorized {
			t.Errorf("publish to %s: %#v, want PUBACK 0x87", topic, pkt)
		}
		if _, ok := s.retained.Get(topic); ok {
			t.Errorf("%s retained", topic)
		}
	}
}

// Row 12: password hashing ran on the event loop, so a burst of CONNECTs
// with guessed passwords stalled every connection of that loop. The
// Authenticator now runs on a worker pool: a bystander on the same (only)
// loop keeps answering PINGREQ promptly while expensive derivations run.
func TestAttackPasswordHashingOffTheLoop(t *testing.T) {
	if raceEnabled {
		t.Skip("a timing bound: the race detector slows the derivations and the loop unevenly")
	}
	l, err := auth.HashPassword("dev", "right", 400_000) // ~0.1 s per derivation here
	if err != nil {
		t.Fatal(err)
	}
	pf, err := auth.ParsePasswordFile(strings.NewReader(l + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	pf.SetLimiter(nil) // measure the hashing, not the lockout
	_, addr := startBroker(t, func(o *Options) { o.Authenticator = pf; o.EventLoops = 1 })
	// The bystander authenticates once (one derivation), then pings.
	by, ack := connectAs(t, addr, codec.Connect{ClientID: []byte("bystander"), CleanStart: true, KeepAlive: 60,
		UsernameFlag: true, Username: []byte("dev"), PasswordFlag: true, Password: []byte("right")})
	if ack.ReasonCode != 0 {
		t.Fatalf("bystander: CONNACK %d", ack.ReasonCode)
	}
	const guesses = 12
	done := make(chan struct{})
	for i := 0; i < guesses; i++ {
		go func(i int) {
			defer func() { done <- struct{}{} }()
			c, err := mqtttest.Dial(addr)
			if err != nil {
				return
			}
			defer c.Close()
			c.Timeout = 30 * time.Second
			_, _ = c.Connect(codec.Connect{ClientID: []byte(fmt.Sprintf("guess%d", i)), CleanStart: true,
				UsernameFlag: true, Username: []byte("dev"), PasswordFlag: true, Password: []byte("wrong")})
		}(i)
	}
	var worst time.Duration
	for i := 0; i < 10; i++ {
		start := time.Now()
		if err := by.Send(&codec.Pingreq{}); err != nil {
			t.Fatal(err)
		}
		if _, err := by.Next(time.Now().Add(10 * time.Second)); err != nil {
			t.Fatal(err)
		}
		worst = max(worst, time.Since(start))
		time.Sleep(20 * time.Millisecond)
	}
	for i := 0; i < guesses; i++ {
		<-done
	}
	// On the loop, 12 derivations of ~0.1 s would have held a PING for
	// about a second; off the loop it waits only for CPU time slices.
	if worst > 500*time.Millisecond {
		t.Errorf("bystander PING took up to %v while passwords were being checked", worst)
	}
	t.Logf("worst bystander PING round trip during %d guesses: %v", guesses, worst)
}

// Row 14: "anonymous only on loopback" looked at the connection's local
// address, so a local proxy in front of a listener on every interface made
// every remote client anonymous. It is now decided by the listener's
// configured address.
func TestAttackAnonymousDecidedByListenerNotLocalAddress(t *testing.T) {
	_, addr := startBroker(t, func(o *Options) { o.Listeners = []string{"0.0.0.0:0"} })
	_, port, _ := net.SplitHostPort(addr)
	// A "proxy" on this host connects through loopback: still the public listener.
	_, ack := connectAs(t, "127.0.0.1:"+port, codec.Connect{ClientID: []byte("anon"), CleanStart: true})
	if ack.ReasonCode != 5 {
		t.Fatalf("anonymous via a listener on 0.0.0.0: CONNACK %d, want 5 (not authorized)", ack.ReasonCode)
	}
	_, addr = startBroker(t, nil) // 127.0.0.1: anonymous allowed by default
	if _, ack := connectAs(t, addr, codec.Connect{ClientID: []byte("anon"), CleanStart: true}); ack.ReasonCode != 0 {
		t.Fatalf("anonymous on a loopback listener: CONNACK %d", ack.ReasonCode)
	}
}

// Row 14: the admin listener had no authentication and no warning off
// loopback. Off loopback it now needs a token; with a token every path but
// /healthz requires it.
func TestAttackAdminListenerNeedsTokenOffLoopback(t *testing.T) {
	_, err := New(Options{Listeners: []string{"127.0.0.1:0"}, DataDir: t.TempDir(), AdminListen: "0.0.0.0:0"})
	if err == nil || !strings.Contains(err.Error(), "admin_listen") {
		t.Fatalf("admin on 0.0.0.0 without a token: %v, want a refusal naming admin_listen", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	adminAddr := ln.Addr().String()
	_ = ln.Close()
	startBroker(t, func(o *Options) { o.AdminListen, o.AdminToken = adminAddr, "s3cret" })
	get := func(path, token string) int {
		req, _ := http.NewRequest("GET", "http://"+adminAddr+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		var resp *http.Response
		for i := 0; i < 50; i++ {
			if resp, err = http.DefaultClient.Do(req); err == nil {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := get("/metrics", ""); got != http.StatusUnauthorized {
		t.Errorf("/metrics without token: %d", got)
	}
	if got := get("/metrics", "wrong"); got != http.StatusUnauthorized {
		t.Errorf("/metrics with a wrong token: %d", got)
	}
	if got := get("/metrics", "s3cret"); got != http.StatusOK {
		t.Errorf("/metrics with the token: %d", got)
	}
	if got := get("/healthz", ""); got != http.StatusOK {
		t.Errorf("/healthz: %d", got)
	}
}
