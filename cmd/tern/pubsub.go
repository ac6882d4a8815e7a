package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// clientFlags are the connection flags tern pub and tern sub share, named
// like mosquitto_pub/mosquitto_sub's.
type clientFlags struct {
	host, id, user, pass, cafile string
	port, keepalive              int
	qos                          uint
	persistent, tls              bool
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
}

func (f *clientFlags) connect() (mqtt.Client, error) {
	if f.qos > 2 {
		return nil, errors.New("-q must be 0, 1 or 2")
	}
	if f.persistent && f.id == "" {
		return nil, errors.New("-c needs a client id (-i)")
	}
	scheme, port := "tcp", f.port
	o := mqtt.NewClientOptions().SetClientID(f.id).SetCleanSession(!f.persistent).
		SetKeepAlive(time.Duration(f.keepalive) * time.Second).SetAutoReconnect(false).
		SetConnectTimeout(10 * time.Second).SetUsername(f.user).SetPassword(f.pass)
	if f.tls {
		scheme = "ssl"
		if port == 0 {
			port = 8883
		}
		cfg := &tls.Config{MinVersion: tls.VersionTLS12}
		if f.cafile != "" {
			pem, err := os.ReadFile(f.cafile)
			if err != nil {
				return nil, err
			}
			cfg.RootCAs = x509.NewCertPool()
			if !cfg.RootCAs.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("%s: no PEM certificates", f.cafile)
			}
		}
		o.SetTLSConfig(cfg)
	}
	if port == 0 {
		port = 1883
	}
	o.AddBroker(fmt.Sprintf("%s://%s:%d", scheme, f.host, port))
	c := mqtt.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(15*time.Second) || tok.Error() != nil {
		return nil, fmt.Errorf("connect to %s:%d: %v", f.host, port, tok.Error())
	}
	return c, nil
}

func pubCmd(args []string) int {
	fs := flag.NewFlagSet("pub", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: tern pub -t TOPIC (-m MESSAGE | -s | -n) [flags]\n\nPublishes one message, like mosquitto_pub.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	var f clientFlags
	f.register(fs)
	topic := fs.String("t", "", "`TOPIC` to publish to")
	msg := fs.String("m", "", "`MESSAGE` payload")
	stdin := fs.Bool("s", false, "read the payload from standard input")
	null := fs.Bool("n", false, "send an empty payload (with -r: clears the retained message)")
	retain := fs.Bool("r", false, "retain the message")
	if err := fs.Parse(args); err != nil {
		return exitParse(err)
	}
	if *topic == "" {
		fmt.Fprintln(os.Stderr, "tern pub: -t TOPIC is required")
		return 2
	}
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
		fmt.Fprintln(os.Stderr, "tern pub: give -m MESSAGE, -s (stdin) or -n (empty)")
		return 2
	}
	c, err := f.connect()
	if err != nil {
		fmt.Fprintf(os.Stderr, "tern pub: %v\n", err)
		return 1
	}
	defer c.Disconnect(250)
	tok := c.Publish(*topic, byte(f.qos), *retain, payload)
	if !tok.WaitTimeout(15*time.Second) || tok.Error() != nil {
		fmt.Fprintf(os.Stderr, "tern pub: publish: %v\n", tok.Error())
		return 1
	}
	return 0
}

func subCmd(args []string) int {
	fs := flag.NewFlagSet("sub", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: tern sub -t FILTER [-t FILTER]... [flags]\n\nPrints messages, like mosquitto_sub, until -C messages or -W seconds or Ctrl-C.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	var f clientFlags
	f.register(fs)
	var filters listFlag
	fs.Var(&filters, "t", "`FILTER` to subscribe to (repeatable)")
	verbose := fs.Bool("v", false, "print the topic before each payload")
	count := fs.Int("C", 0, "exit after `N` messages")
	wait := fs.Int("W", 0, "exit after `SECONDS`")
	if err := fs.Parse(args); err != nil {
		return exitParse(err)
	}
	if len(filters) == 0 {
		fmt.Fprintln(os.Stderr, "tern sub: -t FILTER is required")
		return 2
	}
	c, err := f.connect()
	if err != nil {
		fmt.Fprintf(os.Stderr, "tern sub: %v\n", err)
		return 1
	}
	defer c.Disconnect(250)
	msgs := make(chan mqtt.Message, 1024)
	want := map[string]byte{}
	for _, t := range filters {
		want[t] = byte(f.qos)
	}
	tok := c.SubscribeMultiple(want, func(_ mqtt.Client, m mqtt.Message) { msgs <- m })
	if !tok.WaitTimeout(15*time.Second) || tok.Error() != nil {
		fmt.Fprintf(os.Stderr, "tern sub: subscribe: %v\n", tok.Error())
		return 1
	}
	for t, code := range tok.(*mqtt.SubscribeToken).Result() {
		if code == 0x80 {
			fmt.Fprintf(os.Stderr, "tern sub: subscription to %s refused\n", t)
			return 1
		}
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	var timeout <-chan time.Time
	if *wait > 0 {
		timeout = time.After(time.Duration(*wait) * time.Second)
	}
	for n := 0; *count == 0 || n < *count; n++ {
		select {
		case m := <-msgs:
			if *verbose {
				fmt.Printf("%s %s\n", m.Topic(), m.Payload())
			} else {
				fmt.Printf("%s\n", m.Payload())
			}
		case <-timeout:
			fmt.Fprintln(os.Stderr, "tern sub: timed out after "+strconv.Itoa(*wait)+"s")
			return 27 // mosquitto_sub's exit code for -W
		case <-sig:
			return 0
		}
	}
	return 0
}

func exitParse(err error) int {
	if err == flag.ErrHelp {
		return 0
	}
	return 2
}
