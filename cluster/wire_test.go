package cluster

import (
	"bytes"
	"log/slog"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/ternmq/tern/codec"
	"github.com/ternmq/tern/server"
)

// TestWireRoundTrip: every field of a message survives the wire, topics of
// any bytes included.
func TestWireRoundTrip(t *testing.T) {
	props := &codec.Properties{PayloadFormat: 1, ContentType: []byte("text/plain"), ResponseTopic: []byte("re/ply"),
		CorrelationData: []byte{0, 1, 2}, User: []codec.UserProperty{{Key: []byte("k"), Value: []byte("v")}}}
	props.Set(codec.PropPayloadFormat)
	props.Set(codec.PropContentType)
	now := int64(1e18)
	for _, m := range []server.ClusterMessage{
		{Topic: []byte("a/b"), Payload: []byte("x"), QoS: 1},
		{Topic: []byte("odd/ .*>~\u00e9//"), Payload: nil, QoS: 2, Retain: true},
		{Topic: []byte("p"), Payload: bytes.Repeat([]byte{7}, 1000), QoS: 0, Props: props, ExpiresAt: now + 5e9},
	} {
		b := appendMessage(nil, &m, 42, []string{"g1", "g2"}, now)
		var d decoded
		if err := decodeMessage(b, now, &d); err != nil {
			t.Fatal(err)
		}
		if string(d.m.Topic) != string(m.Topic) || !bytes.Equal(d.m.Payload, m.Payload) || d.m.QoS != m.QoS ||
			d.m.Retain != m.Retain || d.seq != 42 || len(d.groups) != 2 || d.groups[1] != "g2" {
			t.Fatalf("round trip: %+v → %+v", m, d)
		}
		if m.ExpiresAt != 0 && d.m.ExpiresAt != m.ExpiresAt {
			t.Errorf("expiry %d → %d", m.ExpiresAt, d.m.ExpiresAt)
		}
		if m.Props != nil {
			p := d.m.Props
			if p == nil || string(p.ContentType) != "text/plain" || string(p.User[0].Value) != "v" || p.PayloadFormat != 1 || p.Present != m.Props.Present {
				t.Errorf("properties: %+v", p)
			}
		}
	}
}

// TestWireGarbageNeverPanics: a peer of another version or a corrupted
// frame is an error, never a crash.
func TestWireGarbageNeverPanics(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	good := appendMessage(nil, &server.ClusterMessage{Topic: []byte("a/b"), Payload: []byte("hello"), QoS: 1}, 7, []string{"g"}, 0)
	for i := range 20000 {
		var b []byte
		if i%2 == 0 {
			b = append([]byte(nil), good[:r.IntN(len(good)+1)]...)
		} else {
			b = make([]byte, r.IntN(64))
			for j := range b {
				b[j] = byte(r.Uint32())
			}
			if len(b) > 0 {
				b[0] = wireVersion
			}
		}
		var d decoded
		_ = decodeMessage(b, 0, &d)
		_, _ = decodeRetained(b, &d)
	}
}

// TestInterestWire: a batch of changes and a fence, and a snapshot chunk,
// come out as they went in; garbage is refused without a panic.
func TestInterestWire(t *testing.T) {
	n := &Node{self: "n1", inc: 1 << 40}
	var want []delta
	for i, f := range []string{"a/+/c", "#", "$share/g/x"} {
		n.iver++
		kind := recAdd
		if i == 1 {
			kind = recRemove
		}
		n.appendRecordLocked(kind, f, "")
		want = append(want, delta{Node: "n1", Inc: n.inc, Ver: n.iver, Add: kind == recAdd, Filter: f})
	}
	n.appendRecordLocked(recFence, "tok", "n2")
	want = append(want, delta{Node: "n1", Inc: n.inc, Ver: n.iver, Fence: "tok", To: "n2"})
	var got []delta
	if !decodeInterest(n.ibuf, func(d delta) { got = append(got, d) }) {
		t.Fatal("batch refused")
	}
	if len(got) != len(want) {
		t.Fatalf("got %d records, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("record %d: %+v, want %+v", i, got[i], want[i])
		}
	}
	r := rand.New(rand.NewPCG(3, 4))
	for range 20000 {
		b := append([]byte(nil), n.ibuf[:r.IntN(len(n.ibuf)+1)]...)
		if len(b) > 2 {
			b[r.IntN(len(b)-1)+1] = byte(r.Uint32())
		}
		decodeInterest(b, func(delta) {})
		var c claimReq
		_ = c.decode(b)
		var v voteMsg
		_ = v.decode(b)
	}
}

// TestClaimWire: claims and votes survive the wire.
func TestClaimWire(t *testing.T) {
	c := claimReq{ID: "client-é", TS: 1<<62 + 5, Node: "n3", Resume: true}
	var c2 claimReq
	if err := c2.decode(c.append(nil)); err != nil || c2 != c {
		t.Fatalf("claim %+v → %+v (%v)", c, c2, err)
	}
	for _, v := range []voteMsg{{TS: 7, Grant: true, Node: "n2", Has: true}, {TS: 9, Node: "n1"}} {
		var v2 voteMsg
		if err := v2.decode(v.append(nil)); err != nil || v2 != v {
			t.Fatalf("vote %+v → %+v (%v)", v, v2, err)
		}
	}
}

// A message of another wire version (here a JSON claim, as nodes before
// the binary formats sent) is counted every time and logged once a
// minute, naming the likely cause.
func TestUndecodableLoggedOncePerMinute(t *testing.T) {
	var buf bytes.Buffer
	n := &Node{log: slog.New(slog.NewTextHandler(&buf, nil))}
	old := []byte(`{"id":"c1","node":"n2","ts":1}`)
	var r claimReq
	err := r.decode(old)
	if err == nil {
		t.Fatal("a JSON claim decoded as binary")
	}
	for range 3 {
		n.undecodable("claim", "tern.claim", old, err)
	}
	if got := n.stats.decodeErrors.Load(); got != 3 {
		t.Errorf("counted %d undecodable messages, want 3", got)
	}
	if lines := strings.Count(buf.String(), "undecodable claim"); lines != 1 {
		t.Errorf("logged %d lines, want 1 a minute:\n%s", lines, buf.String())
	}
	if !strings.Contains(buf.String(), "same Tern version") {
		t.Errorf("the log line does not name the likely cause:\n%s", buf.String())
	}
}
