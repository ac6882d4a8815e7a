package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ternmq/tern/trie"
)

// clientFlags are the connection flags tern pub and tern sub share, named
// like mosquitto_pub/mosquitto_sub's.
type clientFlags struct {
	host, id, user, pass, cafile string
	port, keepalive              int
	qos                          uint
	persistent, tls              bool
	protocol                     protocolFlag
	sessionExpiry                int64
	userProps                    listFlag
}

// protocolFlag is -V / --protocol: 3.1.1 (default) or 5.0, spelt as
// mosquitto does (mqttv311, mqttv5) or as a number (311, 3.1.1, 5, 5.0).
type protocolFlag struct{ v5 bool }

func (p *protocolFlag) String() string {
	if p != nil && p.v5 {
		return "5"
	}
	return "3.1.1"
}

func (p *protocolFlag) Set(s string) error {
	switch strings.ToLower(s) {
	case "5", "5.0", "mqttv5", "v5":
		p.v5 = true
	case "311", "3.1.1", "mqttv311", "4":
		p.v5 = false
	default:
		return fmt.Errorf("want 3.1.1 or 5, got %q", s)
	}
	return nil
}

func (f *clientFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.host, "h", "127.0.0.1", "broker `HOST`")
	fs.IntVar(&f.port, "p", 0, "broker `PORT` (default 1883, or 8883 with --tls)")
	fs.StringVar(&f.id, "i", "", "client `ID` (default: assigned by the broker)")
	fs.StringVar(&f.user, "u", "", "`USERNAME`")
	fs.StringVar(&f.pass, "P", "", "`PASSWORD`")
	fs.UintVar(&f.qos, "q", 0, "QoS 0, 1 or 2")
	fs.IntVar(&f.keepalive, "k", 60, "keepalive `SECONDS`")
	fs.BoolVar(&f.persistent, "c", false, "persistent session (clean session 0; needs -i)")
	fs.BoolVar(&f.tls, "tls", false, "connect over TLS")
	fs.StringVar(&f.cafile, "cafile", "", "PEM `FILE` of CA certificates to trust for --tls")
	fs.Var(&f.protocol, "V", "MQTT `VERSION`: 3.1.1 (default) or 5 (also mqttv311, mqttv5)")
	fs.Var(&f.protocol, "protocol", "same as -V")
	fs.Int64Var(&f.sessionExpiry, "x", -1, "5.0 session expiry `SECONDS` (default with -c: until the broker's max_session_expiry; without -c: 0)")
	fs.Var(&f.userProps, "user-property", "5.0 user property `KEY=VALUE` (repeatable): on the PUBLISH for tern pub, on the SUBSCRIBE for tern sub")
}

// check rejects flag combinations that cannot work, before any connection.
func (f *clientFlags) check() error {
	if f.qos > 2 {
		return errors.New("-q must be 0, 1 or 2")
	}
	if f.persistent && f.id == "" {
		return errors.New("-c needs a client id (-i)")
	}
	if !f.protocol.v5 {
		if f.sessionExpiry >= 0 {
			return errors.New("-x (session expiry) needs -V 5")
		}
		if len(f.userProps) > 0 {
			return errors.New("--user-property needs -V 5")
		}
	}
	if f.sessionExpiry > 0xFFFFFFFF {
		return fmt.Errorf("-x %d: at most %d seconds", f.sessionExpiry, uint32(0xFFFFFFFF))
	}
	for _, kv := range f.userProps {
		if !strings.Contains(kv, "=") {
			return fmt.Errorf("--user-property %q: want KEY=VALUE", kv)
		}
	}
	return nil
}

// addr returns the broker's host:port and TLS configuration (nil: plain TCP).
func (f *clientFlags) addr() (string, *tls.Config, error) {
	port := f.port
	var cfg *tls.Config
	if f.tls {
		if port == 0 {
			port = 8883
		}
		cfg = &tls.Config{MinVersion: tls.VersionTLS12, ServerName: f.host}
		if f.cafile != "" {
			pem, err := os.ReadFile(f.cafile)
			if err != nil {
				return "", nil, err
			}
			cfg.RootCAs = x509.NewCertPool()
			if !cfg.RootCAs.AppendCertsFromPEM(pem) {
				return "", nil, fmt.Errorf("%s: no PEM certificates", f.cafile)
			}
		}
	}
	if port == 0 {
		port = 1883
	}
	return fmt.Sprintf("%s:%d", f.host, port), cfg, nil
}

// message is what tern sub prints of a received PUBLISH.
type message struct {
	topic   string
	payload []byte
	props   []string // 5.0 properties as key=value, in a fixed order
}

// pubProps are the 5.0 properties tern pub may set.
type pubProps struct {
	expiry                                  int64 // seconds; negative: none
	contentType, responseTopic, correlation string
	user                                    []string // KEY=VALUE
	utf8                                    bool     // Payload Format Indicator 1
}

// client is a connected MQTT client of either protocol version: paho.mqtt.golang
// for 3.1.1 (client311.go) and paho.golang for 5.0 (client5.go).
type client interface {
	// publish sends one message and, for QoS 1 and 2, waits for its
	// acknowledgement; a 5.0 reason code of 0x80 or more is an error.
	publish(topic string, qos byte, retain bool, payload []byte, p *pubProps) error
	// subscribe subscribes to filters and delivers messages to out; a
	// refused filter is an error.
	subscribe(filters []string, qos byte, user []string, out chan<- message) error
	// lost is closed when the connection ends other than by disconnect.
	lost() <-chan struct{}
	disconnect()
}

// connect dials the broker with the version the flags ask for.
func (f *clientFlags) connect() (client, error) {
	addr, tlsCfg, err := f.addr()
	if err != nil {
		return nil, err
	}
	var c client
	if f.protocol.v5 {
		c, err = connect5(f, addr, tlsCfg)
	} else {
		c, err = connect311(f, addr, tlsCfg)
	}
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", addr, err)
	}
	return c, nil
}

// clientTimeout bounds each exchange with the broker (CONNECT, PUBLISH
// acknowledgement, SUBACK).
const clientTimeout = 15 * time.Second

func pubCmd(args []string) int {
	fs := flag.NewFlagSet("pub", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: tern pub -t TOPIC (-m MESSAGE | -s | -n) [flags]\n\nPublishes one message, like mosquitto_pub. Exit status: 0 when the\nmessage was sent (QoS 0) or acknowledged (QoS 1/2), 1 on a failure, 2 on bad flags.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	var f clientFlags
	f.register(fs)
	topic := fs.String("t", "", "`TOPIC` to publish to (no wildcards)")
	msg := fs.String("m", "", "`MESSAGE` payload")
	stdin := fs.Bool("s", false, "read the payload from standard input")
	null := fs.Bool("n", false, "send an empty payload (with -r: clears the retained message)")
	retain := fs.Bool("r", false, "retain the message")
	p := pubProps{expiry: -1}
	fs.Int64Var(&p.expiry, "expiry", -1, "5.0 message expiry interval in `SECONDS`")
	fs.StringVar(&p.contentType, "content-type", "", "5.0 content `TYPE` (e.g. application/json)")
	fs.StringVar(&p.responseTopic, "response-topic", "", "5.0 response `TOPIC` (request/response)")
	fs.StringVar(&p.correlation, "correlation-data", "", "5.0 correlation `DATA` (request/response)")
	fs.BoolVar(&p.utf8, "utf8", false, "5.0 payload format indicator: the payload is UTF-8 text")
	if err := fs.Parse(args); err != nil {
		return exitParse(err)
	}
	if fs.NArg() > 0 {
		return usageErr("pub", fmt.Errorf("unexpected argument %q (flags only; see --help)", fs.Arg(0)))
	}
	if *topic == "" {
		return usageErr("pub", errors.New("-t TOPIC is required"))
	}
	// A wildcard or an empty level makes a topic name the broker must
	// refuse by closing the connection [MQTT-3.3.2-2], which a QoS 0
	// publisher would never see: refuse it here instead.
	if err := trie.ValidateTopic([]byte(*topic), trie.MaxTopicLength); err != nil {
		return usageErr("pub", fmt.Errorf("-t %q is not a topic name: %v", *topic, err))
	}
	if err := f.check(); err != nil {
		return usageErr("pub", err)
	}
	if err := p.check(f.protocol.v5); err != nil {
		return usageErr("pub", err)
	}
	p.user = f.userProps
	payload := []byte(*msg)
	switch {
	case *stdin:
		b, err := io.ReadAll(os.Stdin)
		if err != nil {
			fmt.Fprintf(os.Stderr, "tern pub: %v\n", err)
			return 1
		}
		payload = b
	case *null:
		payload = nil
	case *msg == "":
		return usageErr("pub", errors.New("give -m MESSAGE, -s (stdin) or -n (empty)"))
	}
	c, err := f.connect()
	if err != nil {
		fmt.Fprintf(os.Stderr, "tern pub: %v\n", err)
		return 1
	}
	defer c.disconnect()
	if err := c.publish(*topic, byte(f.qos), *retain, payload, &p); err != nil {
		fmt.Fprintf(os.Stderr, "tern pub: publish: %v\n", err)
		return 1
	}
	return 0
}

// check rejects 5.0 properties without -V 5 and out-of-range values.
func (p *pubProps) check(v5 bool) error {
	set := p.expiry >= 0 || p.contentType != "" || p.responseTopic != "" || p.correlation != "" || p.utf8
	if set && !v5 {
		return errors.New("--expiry, --content-type, --response-topic, --correlation-data and --utf8 are 5.0 properties: add -V 5")
	}
	if p.expiry > 0xFFFFFFFF {
		return fmt.Errorf("--expiry %d: at most %d seconds", p.expiry, uint32(0xFFFFFFFF))
	}
	if p.responseTopic != "" {
		// The Response Topic is a topic name [MQTT-3.3.2-14].
		if err := trie.ValidateTopic([]byte(p.responseTopic), trie.MaxTopicLength); err != nil {
			return fmt.Errorf("--response-topic %q is not a topic name: %v", p.responseTopic, err)
		}
	}
	return nil
}

func subCmd(args []string) int {
	fs := flag.NewFlagSet("sub", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: tern sub -t FILTER [-t FILTER]... [flags]\n\nPrints messages, like mosquitto_sub, until -C messages or -W seconds or Ctrl-C.\nExit status: 0 after -C messages or an interrupt, 27 on the -W timeout (as\nmosquitto_sub), 1 on a failure or a lost connection, 2 on bad flags.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	var f clientFlags
	f.register(fs)
	var filters listFlag
	fs.Var(&filters, "t", "`FILTER` to subscribe to (repeatable)")
	verbose := fs.Bool("v", false, "print the topic before each payload")
	props := fs.Bool("props", false, "5.0: print each message's properties (key=value, space-separated, in brackets) before its payload")
	count := fs.Int("C", 0, "exit after `N` messages")
	wait := fs.Int("W", 0, "exit after `SECONDS`")
	if err := fs.Parse(args); err != nil {
		return exitParse(err)
	}
	if fs.NArg() > 0 {
		return usageErr("sub", fmt.Errorf("unexpected argument %q (flags only; see --help)", fs.Arg(0)))
	}
	if len(filters) == 0 {
		return usageErr("sub", errors.New("-t FILTER is required"))
	}
	for _, t := range filters {
		if err := trie.ValidateFilter([]byte(t), trie.MaxTopicLength); err != nil {
			return usageErr("sub", fmt.Errorf("-t %q is not a topic filter: %v", t, err))
		}
	}
	if err := f.check(); err != nil {
		return usageErr("sub", err)
	}
	if *props && !f.protocol.v5 {
		return usageErr("sub", errors.New("--props needs -V 5 (3.1.1 messages have no properties)"))
	}
	c, err := f.connect()
	if err != nil {
		fmt.Fprintf(os.Stderr, "tern sub: %v\n", err)
		return 1
	}
	defer c.disconnect()
	msgs := make(chan message, 1024)
	if err := c.subscribe(filters, byte(f.qos), f.userProps, msgs); err != nil {
		fmt.Fprintf(os.Stderr, "tern sub: subscribe: %v\n", err)
		return 1
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sig)
	var timeout <-chan time.Time
	if *wait > 0 {
		timeout = time.After(time.Duration(*wait) * time.Second)
	}
	for n := 0; *count == 0 || n < *count; n++ {
		select {
		case m := <-msgs:
			var b strings.Builder
			if *verbose {
				b.WriteString(m.topic)
				b.WriteByte(' ')
			}
			if *props {
				b.WriteString("[" + strings.Join(m.props, " ") + "] ")
			}
			b.Write(m.payload)
			b.WriteByte('\n')
			_, _ = os.Stdout.WriteString(b.String())
		case <-timeout:
			fmt.Fprintln(os.Stderr, "tern sub: timed out after "+strconv.Itoa(*wait)+"s")
			return 27 // mosquitto_sub's exit code for -W
		case <-c.lost():
			fmt.Fprintln(os.Stderr, "tern sub: connection lost")
			return 1
		case <-sig:
			return 0
		}
	}
	return 0
}

// usageErr reports a flag error of tern cmd and returns exit status 2.
func usageErr(cmd string, err error) int {
	fmt.Fprintf(os.Stderr, "tern %s: %v\n", cmd, err)
	return 2
}

func exitParse(err error) int {
	if err == flag.ErrHelp {
		return 0
	}
	return 2
}

// withTimeout runs an exchange with the broker under clientTimeout.
func withTimeout() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), clientTimeout)
}
