package persist

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// fuzzMaxPayload keeps the fuzzer from spending its time allocating what a
// corrupt length claims; the real limit is checked the same way.
const fuzzMaxPayload = 1 << 20

// FuzzDecodeRecord feeds arbitrary bytes to every record decoder. Decoding
// must never panic; whatever decodes must re-encode to a record that
// decodes to the same value.
func FuzzDecodeRecord(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if m, err := decodeMessage(data, fuzzMaxPayload); err == nil {
			for _, th := range []int{-1, 1} {
				m2, err := decodeMessage(appendMessage(nil, m, th), fuzzMaxPayload)
				if err != nil || !reflect.DeepEqual(m, m2) {
					t.Fatalf("message round trip (threshold %d): %v\n%+v\n%+v", th, err, m, m2)
				}
			}
		}
		if s, err := decodeSession(data); err == nil {
			s2, err := decodeSession(appendSession(nil, s))
			if err != nil || !reflect.DeepEqual(s, s2) {
				t.Fatalf("session round trip: %v\n%+v\n%+v", err, s, s2)
			}
		}
		if o, err := decodeOutbound(data); err == nil {
			if o2, err := decodeOutbound(appendOutbound(nil, o)); err != nil || o != o2 {
				t.Fatalf("outbound round trip: %v", err)
			}
		}
		if in, err := decodeInbound(data); err == nil {
			if in2, err := decodeInbound(appendInbound(nil, in)); err != nil || in != in2 {
				t.Fatalf("inbound round trip: %v", err)
			}
		}
		if ck, err := parseClientKey(data); err == nil && ck.prefixLen > len(data) {
			t.Fatal("prefix beyond key")
		}
		if n, err := decodeRefs(data); err == nil {
			if n2, err := decodeRefs(appendRefs(nil, n)); err != nil || n != n2 {
				t.Fatalf("reference count round trip: %v", err)
			}
		}
		if n, err := decodeBacklogBytes(data); err == nil {
			if n2, err := decodeBacklogBytes(appendBacklogBytes(nil, n)); err != nil || n != n2 {
				t.Fatalf("backlog byte count round trip: %v", err)
			}
		}
		_, _ = parseMessageKey(data)
		_, _ = parseRefsKey(data)
		_, _ = decodeMetaU64(data)
	})
}

// fuzzSeeds are valid records of every type (also committed under
// testdata/fuzz/FuzzDecodeRecord; regenerate with PERSIST_WRITE_SEEDS=1).
func fuzzSeeds() [][]byte {
	big := make([]byte, 3000)
	for i := range big {
		big[i] = byte('a' + i%7)
	}
	return [][]byte{
		appendMessage(nil, &Message{Topic: "a/b", Payload: []byte("hi"), QoS: 1, Publisher: "p"}, 0),
		appendMessage(nil, &Message{Topic: "t", Payload: big, QoS: 2, Retain: true, Properties: []byte{1, 1}, ExpiresAt: 1 << 40}, 1024),
		appendSession(nil, &Session{ProtocolVersion: 5, ExpiryInterval: 60, DisconnectedAt: 1, Subscriptions: []Subscription{{Filter: "$share/g/x/#", QoS: 2, Options: 0x2E, ID: 300}}}),
		appendSession(nil, &Session{ProtocolVersion: 4}),
		appendOutbound(nil, Outbound{MessageID: 5, QoS: 2, State: AwaitingPubrec, PacketID: 9}),
		appendOutbound(nil, Outbound{QoS: 2, State: AwaitingPubcomp, PacketID: 9}),
		appendOutbound(nil, Outbound{MessageID: 6, QoS: 1, State: Queued, Shared: true}),
		appendInbound(nil, Inbound{ReceivedAt: 1700000000000}),
		appendOutboundKey(nil, "client", 1),
		appendMetaU64(nil, 1<<16),
		appendRefs(nil, 3),
		appendRefsKey(nil, 7),
	}
}

func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("PERSIST_WRITE_SEEDS") == "" {
		t.Skip("set PERSIST_WRITE_SEEDS=1 to regenerate testdata/fuzz/FuzzDecodeRecord")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzDecodeRecord")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i, s := range fuzzSeeds() {
		body := "go test fuzz v1\n[]byte(" + quoteBytes(s) + ")\n"
		if err := os.WriteFile(filepath.Join(dir, "seed-"+string(rune('a'+i))), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func quoteBytes(b []byte) string {
	const hex = "0123456789abcdef"
	out := []byte{'"'}
	for _, c := range b {
		switch {
		case c == '"' || c == '\\':
			out = append(out, '\\', c)
		case c >= 0x20 && c < 0x7F:
			out = append(out, c)
		default:
			out = append(out, '\\', 'x', hex[c>>4], hex[c&15])
		}
	}
	return string(append(out, '"'))
}
