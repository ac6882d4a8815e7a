package auth

import (
	"errors"
	"strings"
	"testing"

	"github.com/ternmq/tern/codec"
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

// runSCRAM runs a whole conversation; it returns the exchange and the
// error of the step that failed.
func runSCRAM(a EnhancedAuthenticator, info ConnectInfo, user, pw string) (Exchange, error) {
	x := a.Start(info)
	sc := &authtest.SCRAMClient{User: user, Password: pw}
	out, done, err := x.Step(sc.First())
	if err != nil || done {
		return x, errors.Join(err, errors.New("first step"))
	}
	fin, err := sc.Final(string(out))
	if err != nil {
		return x, err
	}
	out, done, err = x.Step(fin)
	if err != nil {
		return x, err
	}
	if !done || !sc.Verify(out) {
		return x, errors.New("server-final not verified")
	}
	return x, nil
}

// Finding: a SCRAM client with an empty CONNECT user name got the
// anonymous rules. The exchange now names the user it authenticated
// (IdentifiedExchange), and only once it succeeded.
func TestSCRAMIdentityIsTheSCRAMUser(t *testing.T) {
	store := NewSCRAMStore()
	if err := store.AddUser("alice", "wonderland"); err != nil {
		t.Fatal(err)
	}
	a := NewSCRAMSHA256(store)
	x, err := runSCRAM(a, ConnectInfo{}, "alice", "wonderland")
	if err != nil {
		t.Fatal(err)
	}
	if id := x.(IdentifiedExchange).Identity(); id != "alice" {
		t.Errorf("identity %q, want alice", id)
	}
	x, err = runSCRAM(a, ConnectInfo{}, "alice", "wrong")
	if err == nil {
		t.Fatal("wrong password accepted")
	}
	if id := x.(IdentifiedExchange).Identity(); id != "" {
		t.Errorf("failed exchange has identity %q", id)
	}
	x = a.Start(ConnectInfo{})
	if _, _, err := x.Step((&authtest.SCRAMClient{User: "alice"}).First()); err != nil {
		t.Fatal(err)
	}
	if id := x.(IdentifiedExchange).Identity(); id != "" {
		t.Errorf("unfinished exchange has identity %q", id)
	}
}

// Failed SCRAM proofs count in the limiter like failed passwords; a locked
// out user is refused at its first message with 0x8A Banned.
func TestSCRAMLockout(t *testing.T) {
	store := NewSCRAMStore()
	if err := store.AddUser("alice", "wonderland"); err != nil {
		t.Fatal(err)
	}
	a := NewSCRAMSHA256(store)
	if a.Limiter() == nil {
		t.Fatal("no limiter by default")
	}
	lim, _ := testLimiter(LimiterConfig{})
	a.SetLimiter(lim)
	from := ConnectInfo{Remote: tcp("203.0.113.5")}
	for range DefaultFailuresPerUser {
		if _, err := runSCRAM(a, from, "alice", "guess"); err == nil || errors.Is(err, ErrLockedOut) {
			t.Fatalf("guess: %v", err)
		}
	}
	if _, err := runSCRAM(a, from, "alice", "wonderland"); !errors.Is(err, ErrLockedOut) {
		t.Fatalf("right password while locked out: %v", err)
	}
	var ce *codec.Error
	if _, err := runSCRAM(a, from, "alice", "wonderland"); !errors.As(err, &ce) || ce.Code != codec.Banned {
		t.Fatalf("lockout reason: %v, want 0x8A", err)
	}
}

// An unknown user's challenge looks like a known user's: the iteration
// count most users have, and the same salt on every attempt.
func TestSCRAMUnknownUserChallenge(t *testing.T) {
	store := NewSCRAMStore()
	for _, u := range []string{"a", "b"} {
		cred, err := NewSCRAMCredential("pw", 1500)
		if err != nil {
			t.Fatal(err)
		}
		store.Set(u, cred)
	}
	a := NewSCRAMSHA256(store)
	challenge := func(user string) (salt, iter string) {
		out, _, err := a.Start(ConnectInfo{}).Step([]byte("n,,n=" + user + ",r=abc"))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range strings.Split(string(out), ",") {
			switch {
			case strings.HasPrefix(f, "s="):
				salt = f
			case strings.HasPrefix(f, "i="):
				iter = f
			}
		}
		return salt, iter
	}
	_, knownIter := challenge("a")
	s1, i1 := challenge("nobody")
	s2, _ := challenge("nobody")
	if i1 != knownIter || s1 != s2 {
		t.Errorf("unknown user: %s %s then %s; known user %s", s1, i1, s2, knownIter)
	}
	store.Delete("a")
	store.Delete("b")
	if _, i := challenge("nobody"); i != "i=4096" {
		t.Errorf("empty store: %s, want i=4096", i)
	}
}
