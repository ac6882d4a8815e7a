package persist

import "testing"

// A session record keeps its owner identity, and records written before the
// owner existed (version 1) still decode, with no owner.
func TestSessionRecordOwnerAndVersion1(t *testing.T) {
	in := &Session{ProtocolVersion: 4, ExpiryInterval: 60, Subscriptions: []Subscription{{Filter: "a/#", QoS: 1}}, Owner: "alice"}
	b := appendSession(nil, in)
	out, err := decodeSession(b)
	if err != nil || out.Owner != "alice" || len(out.Subscriptions) != 1 {
		t.Fatalf("round trip: %+v, %v", out, err)
	}
	v1 := append([]byte(nil), b[:len(b)-len("alice")-1]...) // drop the owner field
	v1[0] = 1
	old, err := decodeSession(v1)
	if err != nil || old.Owner != "" || old.Subscriptions[0].Filter != "a/#" {
		t.Fatalf("version 1: %+v, %v", old, err)
	}
	bad := append([]byte(nil), b...)
	bad[0] = 3
	if _, err := decodeSession(bad); err == nil {
		t.Fatal("unknown version 3 decoded")
	}
}
