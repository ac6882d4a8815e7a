package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// client311 is tern pub/sub's MQTT 3.1.1 client (paho.mqtt.golang).
type client311 struct {
	c        mqtt.Client
	lostc    chan struct{}
	lostOnce sync.Once
}

func connect311(f *clientFlags, addr string, tlsCfg *tls.Config) (*client311, error) {
	cl := &client311{lostc: make(chan struct{})}
	scheme := "tcp"
	o := mqtt.NewClientOptions().SetClientID(f.id).SetCleanSession(!f.persistent).
		SetKeepAlive(time.Duration(f.keepalive) * time.Second).SetAutoReconnect(false).
		SetConnectTimeout(10 * time.Second).SetUsername(f.user).SetPassword(f.pass).
		SetConnectionLostHandler(func(mqtt.Client, error) { cl.lostOnce.Do(func() { close(cl.lostc) }) })
	if tlsCfg != nil {
		scheme = "ssl"
		o.SetTLSConfig(tlsCfg)
	}
	o.AddBroker(scheme + "://" + addr)
	cl.c = mqtt.NewClient(o)
	tok := cl.c.Connect()
	if !tok.WaitTimeout(clientTimeout) {
		return nil, errors.New("no CONNACK")
	}
	if err := tok.Error(); err != nil {
		return nil, err
	}
	return cl, nil
}

func (cl *client311) publish(topic string, qos byte, retain bool, payload []byte, _ *pubProps) error {
	tok := cl.c.Publish(topic, qos, retain, payload)
	if !tok.WaitTimeout(clientTimeout) {
		return errors.New("no acknowledgement")
	}
	return tok.Error()
}

func (cl *client311) subscribe(filters []string, qos byte, _ []string, out chan<- message) error {
	want := make(map[string]byte, len(filters))
	for _, t := range filters {
		want[t] = qos
	}
	tok := cl.c.SubscribeMultiple(want, func(_ mqtt.Client, m mqtt.Message) {
		out <- message{topic: m.Topic(), payload: m.Payload()}
	})
	if !tok.WaitTimeout(clientTimeout) {
		return errors.New("no SUBACK")
	}
	if err := tok.Error(); err != nil {
		return err
	}
	for t, code := range tok.(*mqtt.SubscribeToken).Result() {
		if code == 0x80 { // SUBACK failure [MQTT-3.9.3]
			return fmt.Errorf("subscription to %s refused", t)
		}
	}
	return nil
}

func (cl *client311) lost() <-chan struct{} { return cl.lostc }
func (cl *client311) disconnect()           { cl.c.Disconnect(250) }
