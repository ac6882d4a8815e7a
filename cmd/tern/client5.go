package main

import (
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
)

// client5 is tern pub/sub's MQTT 5.0 client (paho.golang).
type client5 struct {
	c        *paho.Client
	lostc    chan struct{}
	lostOnce sync.Once
	// out receives PUBLISHes once subscribe has set it; messages that
	// arrive before (a persistent session's backlog) wait in early.
	mu    sync.Mutex
	out   chan<- message
	early []message
}

func connect5(f *clientFlags, addr string, tlsCfg *tls.Config) (*client5, error) {
	var conn net.Conn
	var err error
	d := &net.Dialer{Timeout: clientTimeout}
	if tlsCfg != nil {
		conn, err = tls.DialWithDialer(d, "tcp", addr, tlsCfg)
	} else {
		conn, err = d.Dial("tcp", addr)
	}
	if err != nil {
		return nil, err
	}
	cl := &client5{lostc: make(chan struct{})}
	markLost := func() { cl.lostOnce.Do(func() { close(cl.lostc) }) }
	cl.c = paho.NewClient(paho.ClientConfig{
		// tls.Conn is not safe for concurrent writes; paho writes
		// acknowledgements and pings from several goroutines.
		Conn:               packets.NewThreadSafeConn(conn),
		OnPublishReceived:  []func(paho.PublishReceived) (bool, error){cl.received},
		OnClientError:      func(error) { markLost() },
		OnServerDisconnect: func(*paho.Disconnect) { markLost() },
	})
	cp := &paho.Connect{ClientID: f.id, CleanStart: !f.persistent, KeepAlive: uint16(min(max(f.keepalive, 0), 65535)),
		Username: f.user, UsernameFlag: f.user != "", Password: []byte(f.pass), PasswordFlag: f.pass != "",
		Properties: &paho.ConnectProperties{}}
	expiry := f.sessionExpiry
	if expiry < 0 && f.persistent {
		expiry = 0xFFFFFFFF // like 3.1.1 clean session 0: the broker caps it at max_session_expiry
	}
	if expiry > 0 {
		e := uint32(expiry)
		cp.Properties.SessionExpiryInterval = &e
	}
	ctx, cancel := withTimeout()
	defer cancel()
	ca, err := cl.c.Connect(ctx, cp)
	if err != nil {
		_ = conn.Close()
		if ca != nil && ca.Properties != nil && ca.Properties.ReasonString != "" {
			return nil, fmt.Errorf("%w (%s)", err, ca.Properties.ReasonString)
		}
		return nil, err
	}
	return cl, nil
}

// received hands a PUBLISH to tern sub (paho's callback goroutine).
func (cl *client5) received(pr paho.PublishReceived) (bool, error) {
	m := message{topic: pr.Packet.Topic, payload: pr.Packet.Payload, props: propStrings(pr.Packet.Properties)}
	cl.mu.Lock()
	out := cl.out
	if out == nil {
		cl.early = append(cl.early, m)
	}
	cl.mu.Unlock()
	if out != nil {
		out <- m
	}
	return true, nil
}

// propStrings renders a message's 5.0 properties for tern sub --props.
func propStrings(p *paho.PublishProperties) []string {
	if p == nil {
		return nil
	}
	var s []string
	if p.PayloadFormat != nil {
		s = append(s, "payload-format="+strconv.Itoa(int(*p.PayloadFormat)))
	}
	if p.MessageExpiry != nil {
		s = append(s, "expiry="+strconv.FormatUint(uint64(*p.MessageExpiry), 10))
	}
	if p.ContentType != "" {
		s = append(s, "content-type="+p.ContentType)
	}
	if p.ResponseTopic != "" {
		s = append(s, "response-topic="+p.ResponseTopic)
	}
	if p.CorrelationData != nil {
		cd := string(p.CorrelationData)
		if !utf8.Valid(p.CorrelationData) || strings.ContainsAny(cd, " []\n") {
			cd = "0x" + hex.EncodeToString(p.CorrelationData)
		}
		s = append(s, "correlation-data="+cd)
	}
	if p.SubscriptionIdentifier != nil {
		s = append(s, "subscription-id="+strconv.Itoa(*p.SubscriptionIdentifier))
	}
	for _, u := range p.User {
		s = append(s, "user:"+u.Key+"="+u.Value)
	}
	return s
}

// userProps turns KEY=VALUE flags (checked by clientFlags.check) into
// user properties.
func userProps(kvs []string) paho.UserProperties {
	var u paho.UserProperties
	for _, kv := range kvs {
		k, v, _ := strings.Cut(kv, "=")
		u.Add(k, v)
	}
	return u
}

func (cl *client5) publish(topic string, qos byte, retain bool, payload []byte, p *pubProps) error {
	pp := &paho.PublishProperties{ContentType: p.contentType, ResponseTopic: p.responseTopic, User: userProps(p.user)}
	if p.expiry >= 0 {
		e := uint32(p.expiry)
		pp.MessageExpiry = &e
	}
	if p.correlation != "" {
		pp.CorrelationData = []byte(p.correlation)
	}
	if p.utf8 {
		one := byte(1)
		pp.PayloadFormat = &one
	}
	ctx, cancel := withTimeout()
	defer cancel()
	resp, err := cl.c.Publish(ctx, &paho.Publish{Topic: topic, QoS: qos, Retain: retain, Payload: payload, Properties: pp})
	if err != nil {
		return withReason(err, resp)
	}
	// paho returns a PUBREC carrying a failure without an error.
	if resp != nil && resp.ReasonCode >= 0x80 {
		return withReason(fmt.Errorf("refused with reason code 0x%02X", resp.ReasonCode), resp)
	}
	return nil
}

// withReason appends the broker's Reason String to err, if it sent one.
func withReason(err error, resp *paho.PublishResponse) error {
	if resp != nil && resp.Properties != nil && resp.Properties.ReasonString != "" {
		return fmt.Errorf("%w (%s)", err, resp.Properties.ReasonString)
	}
	return err
}

func (cl *client5) subscribe(filters []string, qos byte, user []string, out chan<- message) error {
	s := &paho.Subscribe{Properties: &paho.SubscribeProperties{User: userProps(user)}}
	for _, t := range filters {
		s.Subscriptions = append(s.Subscriptions, paho.SubscribeOptions{Topic: t, QoS: qos})
	}
	ctx, cancel := withTimeout()
	defer cancel()
	sa, err := cl.c.Subscribe(ctx, s)
	if sa != nil {
		for i, code := range sa.Reasons {
			if code >= 0x80 && i < len(filters) { // SUBACK failure reason [MQTT-3.9.3]
				return fmt.Errorf("subscription to %s refused with reason code 0x%02X", filters[i], code)
			}
		}
	}
	if err != nil {
		return err
	}
	cl.mu.Lock()
	early := cl.early
	cl.early = nil
	cl.out = out
	cl.mu.Unlock()
	for _, m := range early {
		out <- m
	}
	return nil
}

func (cl *client5) lost() <-chan struct{} { return cl.lostc }

func (cl *client5) disconnect() {
	_ = cl.c.Disconnect(&paho.Disconnect{ReasonCode: 0})
}
