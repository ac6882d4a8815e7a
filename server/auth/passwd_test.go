package auth

import (
	"strings"
	"testing"
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
