package server

import (
	"strings"
	"testing"
	"time"

	"github.com/ternmq/tern/codec"
	"github.com/ternmq/tern/server/auth"
)

// With a password file, a client with the wrong password is refused with
// CONNACK 0x04 (3.1.1) and one with the right password is served.
func TestPasswordFileConnect(t *testing.T) {
	line, _ := auth.HashPassword("dev1", "s3cret", 1000)
	pf, _ := auth.ParsePasswordFile(strings.NewReader(line))
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

// Finding: about 700 password guesses a second, with no delay or lockout.
// Through the broker: after a burst of failures (CONNACK 4, Bad user name
// or password) the user is locked out, and even the right password gets
// return code 5 (3.1.1) or 0x8A Banned (5.0); another user from the same
// address still connects; the limiter counts it all.
func TestPasswordFileLockoutThroughBroker(t *testing.T) {
	var lines []string
	for _, u := range []string{"dev1", "dev2"} {
		l, err := auth.HashPassword(u, "s3cret", 1000)
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, l)
	}
	pf, err := auth.ParsePasswordFile(strings.NewReader(strings.Join(lines, "\n")))
	if err != nil {
		t.Fatal(err)
	}
	_, addr := startBroker(t, func(o *Options) { o.Authenticator = pf })
	login := func(v byte, user, pass string, want codec.ReasonCode) {
		t.Helper()
		c := dialRaw(t, addr)
		c.connect(codec.Connect{ProtocolVersion: v, ClientID: []byte("c-" + user), CleanStart: true, KeepAlive: 30,
			UsernameFlag: true, Username: []byte(user), PasswordFlag: true, Password: []byte(pass)}, want)
	}
	for range auth.DefaultFailuresPerUser {
		login(codec.Version311, "dev1", "guess", codec.ConnRefusedBadUserPass311)
	}
	login(codec.Version311, "dev1", "s3cret", codec.ConnRefusedNotAuthorized311)
	login(codec.Version5, "dev1", "s3cret", codec.Banned)
	login(codec.Version311, "dev2", "s3cret", 0)
	st := pf.Limiter().Stats()
	if st.Failures != uint64(auth.DefaultFailuresPerUser) || st.Refused != 2 || st.Lockouts != 1 {
		t.Errorf("limiter stats %+v", st)
	}
}
