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
