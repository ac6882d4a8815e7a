package server_test

import (
	"fmt"
	"io"
	"log"
	"log/slog"
	"strings"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/ternmq/tern/server"
)

// quiet is a logger for the examples: their output is what they print.
var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// start runs srv in the background and waits until it listens.
func start(srv *server.Server) string {
	go func() {
		if err := srv.Serve(); err != nil {
			log.Print(err)
		}
	}()
	<-srv.Ready()
	return srv.Addrs()[0].String()
}

// connect connects an MQTT 3.1.1 client (paho) to addr.
func connect(addr, id string, onMessage mqtt.MessageHandler) mqtt.Client {
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker("tcp://" + addr).
		SetClientID(id).SetAutoReconnect(false).SetDefaultPublishHandler(onMessage))
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		log.Fatalf("connect: %v", tok.Error())
	}
	return c
}

// An embedded broker: New checks the options, Serve listens until Close.
// The application publishes into it directly with Publish, here a retained
// message that a client subscribing later still receives.
func ExampleNew() {
	srv, err := server.New(server.Options{
		Listeners: []string{"127.0.0.1:0"}, // any free port; Addrs says which
		// Memory only. With the default (DurabilitySync) sessions, queued
		// messages and retained messages live in DataDir and survive a
		// restart.
		Durability: server.DurabilityNone,
		Logger:     quiet,
	})
	if err != nil {
		log.Fatal(err)
	}
	addr := start(srv)
	defer srv.Close()

	if err := srv.Publish("greetings/en", []byte("hello"), 1, true); err != nil {
		log.Fatal(err)
	}

	got := make(chan mqtt.Message, 1)
	c := connect(addr, "example-sub", func(_ mqtt.Client, m mqtt.Message) { got <- m })
	defer c.Disconnect(100)
	c.Subscribe("greetings/#", 1, nil).WaitTimeout(5 * time.Second)
	m := <-got
	fmt.Printf("%s: %s (retained: %v)\n", m.Topic(), m.Payload(), m.Retained())
	// Output:
	// greetings/en: hello (retained: true)
}

// deviceACL is an Authorizer for a fleet of devices: each may publish only
// below its own devices/<client id>/ and subscribe only to its own
// commands/<client id>/#. Its methods run on the broker's event loops, for
// every PUBLISH and SUBSCRIBE, so they must be quick and must not block.
type deviceACL struct{}

func (deviceACL) CanPublish(clientID, username, topic string) bool {
	return strings.HasPrefix(topic, "devices/"+clientID+"/")
}

func (deviceACL) CanSubscribe(clientID, username, filter string) bool {
	return filter == "commands/"+clientID+"/#"
}

// A custom Authorizer: a refused subscription is answered with the failure
// return code 0x80 in SUBACK (MQTT 3.1.1; 0x87 Not authorized in 5.0).
func ExampleAuthorizer() {
	srv, err := server.New(server.Options{
		Listeners:  []string{"127.0.0.1:0"},
		Durability: server.DurabilityNone,
		Authorizer: deviceACL{},
		Logger:     quiet,
	})
	if err != nil {
		log.Fatal(err)
	}
	addr := start(srv)
	defer srv.Close()

	c := connect(addr, "dev1", nil)
	defer c.Disconnect(100)
	for _, filter := range []string{"commands/dev1/#", "commands/dev2/#"} {
		tok := c.Subscribe(filter, 1, nil)
		tok.WaitTimeout(5 * time.Second)
		fmt.Printf("%s: 0x%02x\n", filter, tok.(*mqtt.SubscribeToken).Result()[filter])
	}
	// Output:
	// commands/dev1/#: 0x01
	// commands/dev2/#: 0x80
}

// Stats is a snapshot of the broker's counters, cheap enough to poll: here
// after one client subscribed and received three messages it published.
func ExampleServer_Stats() {
	srv, err := server.New(server.Options{
		Listeners:   []string{"127.0.0.1:0"},
		Durability:  server.DurabilityNone,
		SysInterval: -1, // no $SYS messages: they would count too
		Logger:      quiet,
	})
	if err != nil {
		log.Fatal(err)
	}
	addr := start(srv)
	defer srv.Close()

	got := make(chan mqtt.Message, 3)
	c := connect(addr, "stats-client", func(_ mqtt.Client, m mqtt.Message) { got <- m })
	defer c.Disconnect(100)
	c.Subscribe("sensors/+", 1, nil).WaitTimeout(5 * time.Second)
	for _, topic := range []string{"sensors/a", "sensors/b", "sensors/c"} {
		c.Publish(topic, 1, false, "21.5").WaitTimeout(5 * time.Second)
	}
	for range 3 {
		<-got
	}
	// The event loops update the counters as they work: MessagesIn before
	// the PUBACK goes out, MessagesOut just after the socket write, so a
	// snapshot taken the moment a message arrives may not count it yet.
	st := srv.Stats()
	fmt.Println("connected:", st.Connected)
	fmt.Println("subscriptions:", st.Subscriptions)
	fmt.Println("messages in:", st.MessagesIn, "dropped:", st.MessagesDropped)
	fmt.Println("retained:", st.Retained)
	// Output:
	// connected: 1
	// subscriptions: 1
	// messages in: 3 dropped: 0
	// retained: 0
}
