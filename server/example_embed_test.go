package server_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"strings"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/ternmq/tern/server"
)

// Authentication and authorization from the application's own user
// database (here a map; a SQL query or an HTTP call works the same way).
// The hooks may block: they run on a bounded pool off the event loops,
// with a timeout, and their verdicts are cached (HookOptions).
func ExampleHooks() {
	users := map[string]struct{ password, prefix string }{ // the "database"
		"meter-1": {"s3cret", "meters/meter-1/"},
	}
	srv, err := server.New(server.Options{
		Listeners:  []string{"127.0.0.1:0"},
		Durability: server.DurabilityNone,
		Logger:     quiet,
		Hooks: []server.Hooks{{
			Authenticate: func(ctx context.Context, r server.AuthRequest) (server.AuthResult, error) {
				u, ok := users[r.Username]
				if !ok || u.password != string(r.Password) {
					return server.AuthResult{}, errors.New("unknown user or wrong password")
				}
				return server.AuthResult{}, nil
			},
			Authorize: func(ctx context.Context, r server.AuthzRequest) bool {
				return strings.HasPrefix(r.Topic, users[r.Username].prefix)
			},
		}},
	})
	if err != nil {
		log.Fatal(err)
	}
	addr := start(srv)
	defer srv.Close()

	for _, pw := range []string{"wrong", "s3cret"} {
		c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID("meter-1").
			SetUsername("meter-1").SetPassword(pw).SetAutoReconnect(false))
		tok := c.Connect()
		tok.WaitTimeout(5 * time.Second)
		fmt.Printf("password %q: %v\n", pw, tok.Error())
		if tok.Error() == nil {
			c.Disconnect(100)
		}
	}
	// Output:
	// password "wrong": bad user name or password
	// password "s3cret": <nil>
}

// Device commands over MQTT 5.0 request/response: the back-end publishes
// a command with a Response Topic and Correlation Data and gets the
// device's answer on that topic. Here the device is an in-process client
// too; a network MQTT 5.0 device answers the same way.
func ExampleClient_requestResponse() {
	srv, err := server.New(server.Options{Listeners: []string{"127.0.0.1:0"}, Durability: server.DurabilityNone, Logger: quiet})
	if err != nil {
		log.Fatal(err)
	}
	start(srv)
	defer srv.Close()

	var device *server.Client
	device, err = srv.Client("lamp-7", server.ClientOptions{Subscriptions: []server.Subscription{{
		Filter: "devices/lamp-7/commands", QoS: 1,
		Handler: func(m *server.Message) {
			reply := &server.Message{Topic: m.ResponseTopic, Payload: []byte("ok: " + string(m.Payload)),
				QoS: 1, CorrelationData: m.CorrelationData}
			if err := device.PublishMessage(context.Background(), reply); err != nil {
				log.Print(err)
			}
		},
	}}})
	if err != nil {
		log.Fatal(err)
	}
	defer device.Close()

	backend, err := srv.Client("backend", server.ClientOptions{})
	if err != nil {
		log.Fatal(err)
	}
	defer backend.Close()
	replies, err := backend.SubscribeChan("replies/backend", 1, 8)
	if err != nil {
		log.Fatal(err)
	}
	cmd := &server.Message{Topic: "devices/lamp-7/commands", Payload: []byte("switch on"), QoS: 1,
		ResponseTopic: "replies/backend", CorrelationData: []byte("req-42")}
	if err := backend.PublishMessage(context.Background(), cmd); err != nil {
		log.Fatal(err)
	}
	r := <-replies
	fmt.Printf("%s (correlation %s)\n", r.Payload, r.CorrelationData)
	// Output:
	// ok: switch on (correlation req-42)
}

// Bridging device messages into a Go channel: an in-process subscription
// delivers copies on a channel; a slow reader holds the broker back
// within the session's bounds instead of buffering without limit.
func ExampleClient_SubscribeChan() {
	srv, err := server.New(server.Options{Listeners: []string{"127.0.0.1:0"}, Durability: server.DurabilityNone, Logger: quiet})
	if err != nil {
		log.Fatal(err)
	}
	addr := start(srv)
	defer srv.Close()

	bridge, err := srv.Client("bridge", server.ClientOptions{})
	if err != nil {
		log.Fatal(err)
	}
	defer bridge.Close()
	readings, err := bridge.SubscribeChan("sensors/+/temperature", 1, 64)
	if err != nil {
		log.Fatal(err)
	}

	dev := connect(addr, "sensor-1", nil) // a network device (MQTT 3.1.1)
	defer dev.Disconnect(100)
	dev.Publish("sensors/kitchen/temperature", 1, false, "21.5").WaitTimeout(5 * time.Second)

	m := <-readings
	fmt.Printf("%s = %s\n", m.Topic, m.Payload)
	// Output:
	// sensors/kitchen/temperature = 21.5
}
