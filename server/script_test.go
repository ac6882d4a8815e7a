package server

// Scripted conversation tests: each file in testdata/scripts/*.txt is a
// conversation between raw MQTT clients and a real broker (real sockets, a
// real Pebble store in a temporary directory), written so that it reads like
// the specification's flow diagrams. TestScripts runs one subtest per file.
//
// The format, one command per line ('#' starts a comment, at the start of a
// line or after a space; blank lines are ignored):
//
//	skip: <reason>                  the whole script is skipped with reason
//	connect <c> <v31|v311|v5> [clean=0|1] [id=X] [keepalive=N] [expiry=N]
//	        [will=<topic> will-qos=N will-retain=0|1 will-payload="…"]
//	                                dial a new connection named c (replacing
//	                                any old one) and send CONNECT; clean
//	                                defaults to 1, id to c, keepalive to 60,
//	                                expiry (5.0 Session Expiry) to none
//	send <c> <PACKET> <fields>      encode and send one packet
//	expect <c> <PACKET> <fields>    read the next packet (5 s) and check it
//	expect <c> closed               the broker closes c (no packet first)
//	expect <c> nothing [duration]   no packet arrives for duration (300ms)
//	disconnect <c>                  send DISCONNECT, wait until the broker
//	                                closes the connection (so it has taken
//	                                the DISCONNECT into account before the
//	                                next command), close the socket
//	drop <c>                        close the socket without DISCONNECT
//	restart                         stop the broker and start it again on
//	                                the same data dir and port
//
// Packets and fields (a field that is written is checked by expect; qos,
// retain and dup are always checked, defaulting to 0):
//
//	PUBLISH <topic> [qos=N] [id=N] [retain=1] [dup=1] ["payload"]
//	SUBSCRIBE id=N <filter> qos=N [<filter> qos=N …]
//	SUBACK id=N [codes]             codes as [1,0x80]
//	UNSUBSCRIBE id=N <filter> …     UNSUBACK id=N
//	PUBACK|PUBREC|PUBREL|PUBCOMP id=N
//	CONNACK [present=0|1] [rc=N]    PINGREQ  PINGRESP  DISCONNECT
//
// A packet identifier may be a variable, id=$name: the first expect that
// mentions $name binds it to the identifier the broker chose, later ones
// check it is the same (a redelivery must reuse it [MQTT-4.4.0-1]), and send
// uses its value.
//
// A script whose expectation is the specification's but not yet the
// broker's behaviour keeps the specification's expectation and starts with
// a skip: line saying why, so the gap stays visible.

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ternmq/tern/codec"
	"github.com/ternmq/tern/internal/mqtttest"
)

func TestScripts(t *testing.T) {
	files, err := filepath.Glob("testdata/scripts/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no scripts: %v", err)
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".txt"), func(t *testing.T) {
			t.Parallel()
			runScript(t, f)
		})
	}
}

// scriptLine is one parsed command with where it came from.
type scriptLine struct {
	pos  string   // file:line
	text string   // the line as written, for failure messages
	args []string // tokens; quoted strings are unquoted, [lists] kept whole
}

// script is the state of one running conversation.
type script struct {
	t       *testing.T
	broker  *restartable
	clients map[string]*mqtttest.Conn
	vars    map[string]uint16
	line    scriptLine
}

func runScript(t *testing.T, path string) {
	lines, skip := parseScript(t, path)
	if skip != "" {
		t.Skip(skip)
	}
	s := &script{t: t, broker: newRestartable(t, DurabilitySync),
		clients: map[string]*mqtttest.Conn{}, vars: map[string]uint16{}}
	t.Cleanup(func() {
		for _, c := range s.clients {
			_ = c.Close()
		}
	})
	for _, l := range lines {
		s.line = l
		s.exec(l.args)
	}
}

// parseScript reads path into commands and returns the skip reason, if any.
func parseScript(t *testing.T, path string) ([]scriptLine, string) {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []scriptLine
	skip := ""
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		text := strings.TrimSpace(sc.Text())
		pos := fmt.Sprintf("%s:%d", filepath.Base(path), n)
		if r, ok := strings.CutPrefix(text, "skip:"); ok {
			skip = pos + ": " + strings.TrimSpace(r)
			continue
		}
		args, err := tokenize(text)
		if err != nil {
			t.Fatalf("%s: %v", pos, err)
		}
		if len(args) > 0 {
			out = append(out, scriptLine{pos: pos, text: text, args: args})
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out, skip
}

// tokenize splits a line on spaces; "quoted strings" (Go syntax) and
// [bracketed lists] are single tokens; '#' at a token start ends the line.
func tokenize(line string) ([]string, error) {
	var out []string
	for {
		line = strings.TrimLeft(line, " \t")
		if line == "" || line[0] == '#' {
			return out, nil
		}
		switch line[0] {
		case '"':
			prefix, err := strconv.QuotedPrefix(line)
			if err != nil {
				return nil, fmt.Errorf("bad string: %v", err)
			}
			s, _ := strconv.Unquote(prefix)
			out = append(out, "\x00"+s) // marked: a payload, never a keyword
			line = line[len(prefix):]
		case '[':
			end := strings.IndexByte(line, ']')
			if end < 0 {
				return nil, fmt.Errorf("unterminated list")
			}
			out = append(out, line[:end+1])
			line = line[end+1:]
		default:
			end := strings.IndexAny(line, " \t")
			if end < 0 {
				end = len(line)
			}
			// key="quoted value" keeps its spaces.
			if eq := strings.Index(line[:end], "=\""); eq >= 0 {
				prefix, err := strconv.QuotedPrefix(line[eq+1:])
				if err != nil {
					return nil, fmt.Errorf("bad string: %v", err)
				}
				v, _ := strconv.Unquote(prefix)
				out = append(out, line[:eq+1]+v)
				line = line[eq+1+len(prefix):]
				continue
			}
			out = append(out, line[:end])
			line = line[end:]
		}
	}
}

func (s *script) fatalf(format string, a ...any) {
	s.t.Helper()
	s.t.Fatalf("%s: %s\n\t%s", s.line.pos, fmt.Sprintf(format, a...), s.line.text)
}

func (s *script) exec(args []string) {
	s.t.Helper()
	need := func(n int) {
		if len(args) < n {
			s.fatalf("%s needs %d arguments", args[0], n-1)
		}
	}
	switch args[0] {
	case "connect":
		need(3)
		s.connect(args[1], args[2], fieldsOf(args[3:]))
	case "send":
		need(3)
		s.send(s.client(args[1]), args[2], fieldsOf(args[3:]))
	case "expect":
		need(3)
		s.expect(args[1], args[2], args[3:])
	case "disconnect":
		need(2)
		c := s.client(args[1])
		if err := c.Send(&codec.Disconnect{}); err != nil {
			s.fatalf("send DISCONNECT: %v", err)
		}
		// The broker closes the connection on DISCONNECT (§3.14.4) once it
		// has discarded the will; waiting for that orders this client's
		// next CONNECT, on a new connection, after it.
		if got, err := c.UntilClosed(5 * time.Second); err != nil || len(got) > 0 {
			s.fatalf("after DISCONNECT: %v (packets %s)", err, packetNames(got))
		}
		_ = c.Close()
	case "drop":
		need(2)
		_ = s.client(args[1]).Close()
	case "restart":
		s.broker.stop()
		s.broker.start(DurabilitySync)
	default:
		s.fatalf("unknown command %q", args[0])
	}
}

func (s *script) client(name string) *mqtttest.Conn {
	c := s.clients[name]
	if c == nil {
		s.fatalf("no client %q (connect it first)", name)
	}
	return c
}

// fields are a command's arguments: key=value pairs, positional words (a
// topic, filters) and at most one quoted payload, in order.
type fields struct {
	kv         map[string]string
	words      []string
	pairs      [][2]string // every key=value in order (SUBSCRIBE's qos= follows its filter)
	payload    string
	hasPayload bool
}

func fieldsOf(args []string) fields {
	f := fields{kv: map[string]string{}}
	for _, a := range args {
		switch {
		case strings.HasPrefix(a, "\x00"):
			f.payload, f.hasPayload = a[1:], true
		case strings.Contains(a, "=") && !strings.HasPrefix(a, "["):
			k, v, _ := strings.Cut(a, "=")
			f.kv[k] = v
			f.pairs = append(f.pairs, [2]string{k, v})
		default:
			f.words = append(f.words, a)
		}
	}
	return f
}

func (f fields) has(k string) bool { _, ok := f.kv[k]; return ok }

// num parses field k (decimal or 0x…), def when absent.
func (s *script) num(f fields, k string, def int) int {
	s.t.Helper()
	v, ok := f.kv[k]
	if !ok {
		return def
	}
	n, err := strconv.ParseUint(v, 0, 32)
	if err != nil {
		s.fatalf("%s=%q: not a number", k, v)
	}
	return int(n)
}

// id resolves id=N or id=$var for sending (the variable must be bound).
func (s *script) id(f fields) uint16 {
	s.t.Helper()
	v := f.kv["id"]
	if name, ok := strings.CutPrefix(v, "$"); ok {
		id, bound := s.vars[name]
		if !bound {
			s.fatalf("$%s is not bound yet", name)
		}
		return id
	}
	return uint16(s.num(f, "id", 0))
}

// checkID compares the identifier got with id=N, or binds/compares id=$var.
func (s *script) checkID(f fields, got uint16) {
	s.t.Helper()
	v, ok := f.kv["id"]
	if !ok {
		return
	}
	if name, isVar := strings.CutPrefix(v, "$"); isVar {
		if want, bound := s.vars[name]; bound && want != got {
			s.fatalf("packet id %d, want $%s = %d", got, name, want)
		}
		s.vars[name] = got
		return
	}
	if want := uint16(s.num(f, "id", 0)); want != got {
		s.fatalf("packet id %d, want %d", got, want)
	}
}

func (s *script) connect(name, version string, f fields) {
	s.t.Helper()
	p := codec.Connect{ClientID: []byte(name), CleanStart: s.num(f, "clean", 1) == 1,
		KeepAlive: uint16(s.num(f, "keepalive", 60))}
	switch version {
	case "v31":
		p.ProtocolVersion = codec.Version31
	case "v311":
		p.ProtocolVersion = codec.Version311
	case "v5":
		p.ProtocolVersion = codec.Version5
	default:
		s.fatalf("unknown protocol version %q", version)
	}
	if id, ok := f.kv["id"]; ok {
		p.ClientID = []byte(id)
	}
	if f.has("expiry") {
		p.Props.SessionExpiry = uint32(s.num(f, "expiry", 0))
		p.Props.Set(codec.PropSessionExpiry)
	}
	if w, ok := f.kv["will"]; ok {
		p.WillFlag, p.WillTopic = true, []byte(w)
		p.WillQoS = byte(s.num(f, "will-qos", 0))
		p.WillRetain = s.num(f, "will-retain", 0) == 1
		p.WillPayload = []byte(f.kv["will-payload"])
	}
	if old := s.clients[name]; old != nil {
		_ = old.Close()
	}
	c, err := mqtttest.Dial(s.broker.addr)
	if err != nil {
		s.fatalf("dial: %v", err)
	}
	c.Version = p.ProtocolVersion
	s.clients[name] = c
	if err := c.Send(&p); err != nil {
		s.fatalf("send CONNECT: %v", err)
	}
}

func (s *script) send(c *mqtttest.Conn, kind string, f fields) {
	s.t.Helper()
	var pkt any
	switch kind {
	case "PUBLISH":
		if len(f.words) != 1 {
			s.fatalf("PUBLISH needs one topic")
		}
		p := &codec.Publish{Topic: []byte(f.words[0]), QoS: byte(s.num(f, "qos", 0)),
			Retain: s.num(f, "retain", 0) == 1, Dup: s.num(f, "dup", 0) == 1, Payload: []byte(f.payload)}
		if p.QoS > 0 {
			p.PacketID = s.id(f)
		}
		pkt = p
	case "SUBSCRIBE":
		p := &codec.Subscribe{PacketID: s.id(f)}
		// Filters are the words; each qos= applies to the filter before it.
		qos := []byte{}
		for _, kv := range f.pairs {
			if kv[0] == "qos" {
				n, _ := strconv.Atoi(kv[1])
				qos = append(qos, byte(n))
			}
		}
		for i, w := range f.words {
			sub := codec.Subscription{Filter: []byte(w)}
			if i < len(qos) {
				sub.QoS = qos[i]
			}
			p.Subscriptions = append(p.Subscriptions, sub)
		}
		pkt = p
	case "UNSUBSCRIBE":
		p := &codec.Unsubscribe{PacketID: s.id(f)}
		for _, w := range f.words {
			p.Filters = append(p.Filters, []byte(w))
		}
		pkt = p
	case "PUBACK", "PUBREC", "PUBREL", "PUBCOMP":
		pkt = &codec.Ack{Type: ackType(kind), PacketID: s.id(f)}
	case "PINGREQ":
		pkt = &codec.Pingreq{}
	case "DISCONNECT":
		pkt = &codec.Disconnect{}
	default:
		s.fatalf("cannot send %q", kind)
	}
	if err := c.Send(pkt); err != nil {
		s.fatalf("send %s: %v", kind, err)
	}
}

func ackType(kind string) codec.PacketType {
	return map[string]codec.PacketType{"PUBACK": codec.PUBACK, "PUBREC": codec.PUBREC,
		"PUBREL": codec.PUBREL, "PUBCOMP": codec.PUBCOMP}[kind]
}

func (s *script) expect(name, kind string, args []string) {
	s.t.Helper()
	c := s.client(name)
	switch kind {
	case "closed":
		got, err := c.UntilClosed(5 * time.Second)
		if err != nil || len(got) > 0 {
			s.fatalf("want the connection closed: %v (packets %s first)", err, packetNames(got))
		}
		return
	case "nothing":
		d := 300 * time.Millisecond
		if len(args) > 0 {
			var err error
			if d, err = time.ParseDuration(args[0]); err != nil {
				s.fatalf("bad duration: %v", err)
			}
		}
		p, err := c.ReadPacket(time.Now().Add(d))
		if err != mqtttest.ErrTimeout {
			s.fatalf("want nothing for %v, got %s (%v)", d, mqtttest.TypeName(p.Header.Type), err)
		}
		return
	}
	pkt, err := c.Next(time.Now().Add(5 * time.Second))
	if err != nil {
		s.fatalf("want %s: %v", kind, err)
	}
	f := fieldsOf(args)
	switch p := pkt.(type) {
	case *codec.Connack:
		s.wantKind(kind, "CONNACK")
		if f.has("present") && p.SessionPresent != (s.num(f, "present", 0) == 1) {
			s.fatalf("session present %v", p.SessionPresent)
		}
		if rc := s.num(f, "rc", 0); int(p.ReasonCode) != rc {
			s.fatalf("CONNACK code 0x%02x, want 0x%02x", p.ReasonCode, rc)
		}
	case *codec.Publish:
		s.wantKind(kind, "PUBLISH")
		if len(f.words) == 1 && string(p.Topic) != f.words[0] {
			s.fatalf("PUBLISH topic %q", p.Topic)
		}
		if int(p.QoS) != s.num(f, "qos", 0) || p.Retain != (s.num(f, "retain", 0) == 1) || p.Dup != (s.num(f, "dup", 0) == 1) {
			s.fatalf("PUBLISH %s qos=%d retain=%v dup=%v %q", p.Topic, p.QoS, p.Retain, p.Dup, p.Payload)
		}
		if f.hasPayload && string(p.Payload) != f.payload {
			s.fatalf("PUBLISH payload %q", p.Payload)
		}
		if p.QoS > 0 {
			s.checkID(f, p.PacketID)
		}
	case *codec.Ack:
		s.wantKind(kind, mqtttest.TypeName(p.Type))
		s.checkID(f, p.PacketID)
	case *codec.Suback:
		s.wantKind(kind, "SUBACK")
		s.checkID(f, p.PacketID)
		if len(f.words) == 1 {
			if want := s.codes(f.words[0]); !slices.Equal(p.ReasonCodes, want) {
				s.fatalf("SUBACK codes %v, want %v", p.ReasonCodes, want)
			}
		}
	case *codec.Unsuback:
		s.wantKind(kind, "UNSUBACK")
		s.checkID(f, p.PacketID)
	case *codec.Pingresp:
		s.wantKind(kind, "PINGRESP")
	case *codec.Disconnect:
		s.wantKind(kind, "DISCONNECT")
	default:
		s.fatalf("want %s, got %T", kind, pkt)
	}
}

func (s *script) wantKind(want, got string) {
	s.t.Helper()
	if want != got {
		s.fatalf("want %s, got %s", want, got)
	}
}

// codes parses "[1,0x80]".
func (s *script) codes(list string) []codec.ReasonCode {
	s.t.Helper()
	inner := strings.Trim(list, "[]")
	var out []codec.ReasonCode
	for _, v := range strings.Split(inner, ",") {
		if v = strings.TrimSpace(v); v == "" {
			continue
		}
		n, err := strconv.ParseUint(v, 0, 8)
		if err != nil {
			s.fatalf("bad code %q", v)
		}
		out = append(out, codec.ReasonCode(n))
	}
	return out
}

// packetNames lists packets for a failure message.
func packetNames(ps []mqtttest.Packet) string {
	var out []string
	for _, p := range ps {
		out = append(out, fmt.Sprintf("%s %x", mqtttest.TypeName(p.Header.Type), p.Body))
	}
	return "[" + strings.Join(out, ", ") + "]"
}
