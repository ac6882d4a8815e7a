package server

import (
	"strings"
	"testing"
	"time"

	"github.com/ternmq/tern/codec"
)

func TestPasswordFile(t *testing.T) {
	line, err := HashPassword("dev1", "s3cret", 1000)
	if err != nil {
		t.Fatal(err)
	}
	pf, err := ParsePasswordFile(strings.NewReader("# devices\n\n" + line + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		user, pass string
		ok         bool
	}{{"dev1", "s3cret", true}, {"dev1", "s3cret", true}, {"dev1", "wrong", false}, {"nobody", "s3cret", false}, {"dev1", "", false}} {
		if err := pf.Authenticate(ConnectInfo{Username: tc.user, Password: []byte(tc.pass)}); (err == nil) != tc.ok {
			t.Errorf("%s/%s: err %v, want ok=%v", tc.user, tc.pass, err, tc.ok)
		}
	}
	if _, err := ParsePasswordFile(strings.NewReader("a:plain\nb\n" + line + "\n")); err == nil ||
		!strings.Contains(err.Error(), "line 1") || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("bad lines not all reported: %v", err)
	}
}

// With a password file, a client with the wrong password is refused with
// CONNACK 0x04 (3.1.1) and one with the right password is served.
func TestPasswordFileConnect(t *testing.T) {
	line, _ := HashPassword("dev1", "s3cret", 1000)
	pf, _ := ParsePasswordFile(strings.NewReader(line))
	_, addr := startBroker(t, func(o *Options) { o.Authenticator = pf })
	bad := dialRaw(t, addr)
	bad.connect(codec.Connect{ClientID: []byte("x"), CleanStart: true, UsernameFlag: true, Username: []byte("dev1"),
		PasswordFlag: true, Password: []byte("nope")}, codec.ConnRefusedBadUserPass311)
	bad.expectClosed(5 * time.Second)
	anon := dialRaw(t, addr)
	anon.connect(codec.Connect{ClientID: []byte("y"), CleanStart: true}, codec.ConnRefusedBadUserPass311)
	good := dialRaw(t, addr)
	good.connect(codec.Connect{ClientID: []byte("z"), CleanStart: true, UsernameFlag: true, Username: []byte("dev1"),
		PasswordFlag: true, Password: []byte("s3cret")}, 0)
}
