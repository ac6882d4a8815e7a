package server

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/ternmq/tern/codec"
	"github.com/ternmq/tern/server/auth"
)

// authFiles writes a password file (users → passwords) and an ACL file
// into a temporary directory and returns their paths.
func authFiles(t testing.TB, users map[string]string, acl string) (pwPath, aclPath string) {
	t.Helper()
	dir := t.TempDir()
	pwPath, aclPath = filepath.Join(dir, "passwords"), filepath.Join(dir, "acl")
	writePasswords(t, pwPath, users)
	writeFile(t, aclPath, acl)
	return pwPath, aclPath
}

func writePasswords(t testing.TB, path string, users map[string]string) {
	t.Helper()
	var b strings.Builder
	for u, p := range users {
		line, err := auth.HashPassword(u, p, 1000)
		if err != nil {
			t.Fatal(err)
		}
		b.WriteString(line + "\n")
	}
	writeFile(t, path, b.String())
}

// writeFile replaces path's content atomically (as an operator's editor or
// config management would), so a reload never reads half a file.
func writeFile(t testing.TB, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func withUser(user, pass string) pahoOpt {
	return func(o *mqtt.ClientOptions) { o.SetUsername(user).SetPassword(pass) }
}

// A changed ACL takes effect on reload for connections already open: a
// subscription it no longer allows is removed (online and offline
// sessions), a new SUBSCRIBE or PUBLISH is decided by it, and no
// connection is dropped.
func TestReloadACLRechecksExistingConnections(t *testing.T) {
	pw, acl := authFiles(t, map[string]string{"alice": "a", "bob": "b"},
		"user alice\ntopic readwrite sensors/#\ntopic readwrite alerts/#\nuser bob\ntopic readwrite sensors/#\n")
	srv, addr := startBroker(t, func(o *Options) { o.PasswordFile, o.ACLFile = pw, acl })

	lost := make(chan string, 4)
	onLost := func(id string) pahoOpt {
		return func(o *mqtt.ClientOptions) {
			o.SetConnectionLostHandler(func(mqtt.Client, error) { lost <- id })
		}
	}
	sub := pahoClient(t, addr, "alice-sub", withUser("alice", "a"), onLost("alice-sub"))
	got := newReceived()
	subscribe(t, sub, "sensors/#", 1, got)
	subscribe(t, sub, "alerts/#", 1, got)
	// bob's persistent session goes offline with a subscription.
	off := pahoClient(t, addr, "bob-off", withUser("bob", "b"), func(o *mqtt.ClientOptions) { o.SetCleanSession(false) })
	subscribe(t, off, "sensors/#", 1, newReceived())
	off.Disconnect(50)
	waitOffline(t, srv, "bob-off")
	pub := pahoClient(t, addr, "alice-pub", withUser("alice", "a"), onLost("alice-pub"))

	// alice keeps alerts/# only; bob loses everything.
	writeFile(t, acl, "user alice\ntopic readwrite alerts/#\n")
	before := srv.Refused()["acl_subscribe"]
	if err := srv.Reload(); err != nil {
		t.Fatal(err)
	}
	if n := srv.Refused()["acl_subscribe"] - before; n != 2 {
		t.Errorf("acl_subscribe refusals counted for the removals: %d, want 2 (alice online, bob offline)", n)
	}
	if s := srv.sessions.get("bob-off"); s == nil || len(s.subs) != 0 {
		t.Errorf("offline session kept its subscription: %+v", s)
	}
	wait(t, pub.Publish("sensors/x", 1, false, "after"), "publish sensors/x") // 3.1.1: acknowledged, not routed
	wait(t, pub.Publish("alerts/x", 1, false, "alert"), "publish alerts/x")
	msgs := got.waitN(t, 1, 5*time.Second)
	got.quiet(t, 1, 300*time.Millisecond)
	if m := msgs[0]; m.Topic() != "alerts/x" {
		t.Fatalf("delivered %s %q; sensors/# should have been removed", m.Topic(), m.Payload())
	}
	// A new SUBSCRIBE is decided by the new ACL.
	tok := sub.Subscribe("sensors/#", 1, got.handler)
	wait(t, tok, "subscribe again")
	if st := tok.(*mqtt.SubscribeToken); st.Result()["sensors/#"] != 0x80 {
		t.Errorf("SUBSCRIBE sensors/# after reload: %#x, want 0x80", st.Result()["sensors/#"])
	}
	select {
	case id := <-lost:
		t.Fatalf("%s lost its connection on reload", id)
	default:
	}
	if !sub.IsConnected() || !pub.IsConnected() {
		t.Fatal("a client was disconnected by the reload")
	}
}

// A will the new ACL refuses is dropped on reload: the client's abrupt
// end publishes nothing there.
func TestReloadACLDropsRefusedWill(t *testing.T) {
	pw, acl := authFiles(t, map[string]string{"dev": "d", "ops": "o"},
		"user dev\ntopic readwrite status/#\nuser ops\ntopic read status/#\n")
	srv, addr := startBroker(t, func(o *Options) { o.PasswordFile, o.ACLFile = pw, acl })
	got := newReceived()
	subscribe(t, pahoClient(t, addr, "ops", withUser("ops", "o")), "status/#", 1, got)
	dev := dialRaw(t, addr)
	dev.connect(codec.Connect{ClientID: []byte("dev"), CleanStart: true, KeepAlive: 30, UsernameFlag: true, Username: []byte("dev"),
		PasswordFlag: true, Password: []byte("d"), WillFlag: true, WillQoS: 1, WillTopic: []byte("status/dev"), WillPayload: []byte("gone")}, 0)
	writeFile(t, acl, "user dev\ntopic readwrite other/#\nuser ops\ntopic read status/#\n")
	if err := srv.Reload(); err != nil {
		t.Fatal(err)
	}
	dev.c.Close() // no DISCONNECT: the will would fire
	got.quiet(t, 0, 500*time.Millisecond)
	if srv.Refused()["acl_will"] == 0 {
		t.Error("the dropped will was not counted")
	}
}

// A bad ACL or password file is rejected with an error naming the file
// and its bad line; the previous configuration stays in force.
func TestReloadBadFileKeepsPrevious(t *testing.T) {
	pw, acl := authFiles(t, map[string]string{"alice": "a"}, "user alice\ntopic readwrite sensors/#\n")
	srv, addr := startBroker(t, func(o *Options) { o.PasswordFile, o.ACLFile = pw, acl })

	writeFile(t, acl, "user alice\ntopic readwrite sensors/#\ntopic sometimes x/#\nbogus line\n")
	writeFile(t, pw, "alice:not-a-hash\n")
	err := srv.Reload()
	if err == nil {
		t.Fatal("bad files accepted")
	}
	for _, want := range []string{"acl_file " + acl, "line 4", "password_file " + pw, "line 1"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	// The old password and the old ACL still apply.
	c := pahoClient(t, addr, "a1", withUser("alice", "a"))
	got := newReceived()
	subscribe(t, c, "sensors/#", 1, got)
	wait(t, c.Publish("sensors/1", 1, false, "x"), "publish")
	got.waitN(t, 1, 5*time.Second)

	// Fixed files take effect.
	writePasswords(t, pw, map[string]string{"alice": "new"})
	writeFile(t, acl, "user alice\ntopic readwrite other/#\n")
	if err := srv.Reload(); err != nil {
		t.Fatal(err)
	}
	o := mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID("a2").SetUsername("alice").SetPassword("a").
		SetAutoReconnect(false).SetConnectRetry(false).SetProtocolVersion(4).SetConnectTimeout(5 * time.Second)
	if tok := mqtt.NewClient(o).Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() == nil {
		t.Fatal("old password accepted after the reload")
	}
	pahoClient(t, addr, "a3", withUser("alice", "new"))
	if !c.IsConnected() {
		t.Fatal("the connected client was dropped by the password reload")
	}
}

// OnReload hooks run in order after the files; a failing hook is reported
// by name and does not stop the others.
func TestReloadHooks(t *testing.T) {
	srv, _ := startBroker(t, nil)
	var order []string
	srv.OnReload("first", func() error { order = append(order, "first"); return nil })
	srv.OnReload("broken", func() error { order = append(order, "broken"); return errors.New("bad certificate") })
	srv.OnReload("last", func() error { order = append(order, "last"); return nil })
	err := srv.Reload()
	if err == nil || !strings.Contains(err.Error(), "broken: bad certificate") {
		t.Fatalf("Reload: %v", err)
	}
	if strings.Join(order, ",") != "first,broken,last" {
		t.Fatalf("order %v", order)
	}
}

// Reload under load: paho clients publish QoS 1 continuously while the
// ACL and password files are reloaded several times (concurrently from
// two goroutines, as a SIGHUP and an admin call could). No connection
// drops and every acknowledged message arrives exactly where the ACL
// (which allows it before and after) says.
func TestReloadUnderLoadLosesNothing(t *testing.T) {
	const pubs = 4
	users := map[string]string{"sub": "s"}
	for i := range pubs {
		users[fmt.Sprintf("pub%d", i)] = "p"
	}
	aclA := "user sub\ntopic read load/#\npattern write load/%u/#\n"
	aclB := "user sub\ntopic read load/#\ntopic read unrelated/#\npattern write load/%u/#\n"
	pw, acl := authFiles(t, users, aclA)
	srv, addr := startBroker(t, func(o *Options) { o.PasswordFile, o.ACLFile = pw, acl })

	var lost atomic.Int32
	onLost := func(o *mqtt.ClientOptions) {
		o.SetConnectionLostHandler(func(_ mqtt.Client, err error) { lost.Add(1); t.Logf("connection lost: %v", err) })
	}
	var mu sync.Mutex
	seen := map[string]int{}
	sub := pahoClient(t, addr, "load-sub", withUser("sub", "s"), onLost)
	wait(t, sub.Subscribe("load/#", 1, func(_ mqtt.Client, m mqtt.Message) {
		mu.Lock()
		seen[string(m.Payload())]++
		mu.Unlock()
	}), "subscribe")

	stop := make(chan struct{})
	var acked atomic.Int64
	var wg sync.WaitGroup
	for i := range pubs {
		user := fmt.Sprintf("pub%d", i)
		c := pahoClient(t, addr, user, withUser(user, "p"), onLost)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				tok := c.Publish("load/"+user+"/x", 1, false, fmt.Sprintf("%s-%d", user, n))
				if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
					t.Errorf("%s: publish %d: %v", user, n, tok.Error())
					return
				}
				acked.Add(1)
			}
		}()
	}
	var rwg sync.WaitGroup
	for g := range 2 {
		rwg.Add(1)
		go func() {
			defer rwg.Done()
			for i := range 5 {
				time.Sleep(40 * time.Millisecond)
				if g == 0 {
					if i%2 == 0 {
						writeFile(t, acl, aclB)
					} else {
						writeFile(t, acl, aclA)
					}
					writePasswords(t, pw, users)
				}
				if err := srv.Reload(); err != nil {
					t.Errorf("reload %d/%d: %v", g, i, err)
				}
			}
		}()
	}
	rwg.Wait()
	time.Sleep(100 * time.Millisecond)
	close(stop)
	wg.Wait()
	want := acked.Load()
	if want < 100 {
		t.Fatalf("only %d messages acknowledged: the load did not run", want)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		n := len(seen)
		mu.Unlock()
		if int64(n) >= want || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if int64(len(seen)) < want {
		t.Fatalf("%d acknowledged messages, %d distinct delivered: lost some across reloads", want, len(seen))
	}
	if lost.Load() != 0 {
		t.Fatalf("%d connections dropped during reloads", lost.Load())
	}
	t.Logf("%d messages acknowledged and delivered across 10 reloads", want)
}

// A password file written by mosquitto_passwd ($7$) logs mosquitto_pub in.
func TestMosquittoPasswordFileWithMosquittoPub(t *testing.T) {
	tool, err1 := exec.LookPath("mosquitto_passwd")
	pubTool, err2 := exec.LookPath("mosquitto_pub")
	if err1 != nil || err2 != nil {
		t.Skip("mosquitto_passwd or mosquitto_pub not installed")
	}
	path := filepath.Join(t.TempDir(), "pw")
	if out, err := exec.Command(tool, "-c", "-b", path, "dev7", "s3cret").CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_passwd: %v\n%s", err, out)
	}
	if raw, _ := os.ReadFile(path); !strings.Contains(string(raw), "dev7:$7$") {
		t.Fatalf("not a $7$ line: %q", raw)
	}
	srv, addr := startBroker(t, func(o *Options) { o.PasswordFile = path; o.AllowAnonymous = false })
	got := newReceived()
	subscribe(t, pahoClient(t, addr, "watch", withUser("dev7", "s3cret")), "m/#", 1, got)
	_, port, _ := strings.Cut(addr, ":")
	pub := func(pass string) error {
		out, err := exec.Command(pubTool, "-h", "127.0.0.1", "-p", port, "-u", "dev7", "-P", pass,
			"-i", "mosq-pub", "-q", "1", "-t", "m/1", "-m", "via-mosquitto").CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	}
	if err := pub("s3cret"); err != nil {
		t.Fatalf("mosquitto_pub with the right password: %v", err)
	}
	if m := got.waitN(t, 1, 5*time.Second)[0]; string(m.Payload()) != "via-mosquitto" {
		t.Fatalf("payload %q", m.Payload())
	}
	if err := pub("wrong"); err == nil {
		t.Fatal("mosquitto_pub with a wrong password succeeded")
	}
	if srv.Refused()["connect_refused"] == 0 {
		t.Error("the refused CONNECT was not counted")
	}
}

// BenchmarkReloadACL measures one ACL reload over sessions offline
// sessions with two subscriptions each, all still allowed: reading the
// file, the atomic swap and the re-check of every subscription.
func BenchmarkReloadACL(b *testing.B) {
	for _, sessions := range []int{10_000, 100_000} {
		b.Run(fmt.Sprint(sessions), func(b *testing.B) {
			_, acl := authFiles(b, nil, "pattern readwrite devices/%c/#\ntopic read broadcast/#\n")
			srv, _ := startBroker(b, func(o *Options) { o.ACLFile = acl; o.Logger = quietLogger() })
			for i := range sessions {
				id := fmt.Sprintf("dev-%d", i)
				sess := newSession(id, &srv.opts)
				for _, f := range []string{"devices/" + id + "/cmd/#", "broadcast/all"} {
					sess.setSubLocked(sessionSub{filter: f, qos: 1})
					srv.subs.Subscribe(f, subFor(sess, 1, 0, 0))
				}
				sh := srv.sessions.shard(id)
				sh.mu.Lock()
				sh.m.put(sess)
				sh.mu.Unlock()
			}
			b.ResetTimer()
			for b.Loop() {
				if err := srv.Reload(); err != nil {
					b.Fatal(err)
				}
			}
			if n := srv.subs.Len(); n != 2*sessions {
				b.Fatalf("%d subscriptions left, want %d", n, 2*sessions)
			}
		})
	}
}
