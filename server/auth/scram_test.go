package auth

import (
	"errors"
	"testing"

	"github.com/ternmq/tern/server/auth/authtest"
)

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
		sc := &authtest.SCRAMClient{User: user, Password: pw}
		out, done, err := x.Step(sc.First())
		if err != nil || done {
			return errors.Join(err, errors.New("first step"))
		}
		fin, err := sc.Final(string(out))
		if err != nil {
			return err
		}
		out, done, err = x.Step(fin)
		if err != nil {
			return err
		}
		if !done || !sc.Verify(out) {
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
