// Command telemetry-bridge embeds the Tern broker and bridges device
// telemetry into the service's own Go code through a channel, with a
// persistent in-process session: while the service is down (or its
// writer is slow), the broker keeps the QoS 1 readings in its Pebble
// store and delivers them when the service comes back — nothing is
// buffered without bound in memory, and a slow writer holds deliveries
// back instead of losing them.
//
//	go run ./examples/telemetry-bridge
//	mosquitto_pub -h 127.0.0.1 -q 1 -t sensors/kitchen/temperature -m 21.5
package main

import (
	"flag"
	"log"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/ternmq/tern/server"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:1883", "MQTT listener")
	data := flag.String("data", "./data-bridge-example", "data directory (Pebble)")
	flag.Parse()
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))

	srv, err := server.New(server.Options{Listeners: []string{*listen}, DataDir: *data, Logger: logger})
	if err != nil {
		log.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve() }()
	<-srv.Ready()

	// A persistent session (SessionExpiry > 0): its subscription and its
	// queue outlive this process; the next run resumes them. The handler
	// is registered in ClientOptions so the readings queued while the
	// service was down find it as soon as the session resumes. It copies
	// each message onto a channel; while the channel is full it waits, and
	// so does the broker's delivery to this session (back-pressure).
	readings := make(chan server.Message, 128)
	toChan := func(m *server.Message) {
		cp := *m
		cp.Payload = append([]byte(nil), m.Payload...) // m is valid only during the call
		readings <- cp
	}
	bridge, err := srv.Client("telemetry-bridge", server.ClientOptions{SessionExpiry: 7 * 24 * time.Hour,
		Subscriptions: []server.Subscription{{Filter: "sensors/#", QoS: 1, Handler: toChan}}})
	if err != nil {
		log.Fatal(err)
	}
	go func() {
		for m := range readings {
			// The service's own code: a database insert, a stream, ...
			logger.Info("reading", "topic", m.Topic, "value", string(m.Payload), "redelivered", m.Duplicate)
		}
	}()

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	select {
	case <-sig:
	case err := <-served:
		log.Fatal(err)
	}
	_ = bridge.Close() // the session stays; readings published meanwhile wait in the store
	_ = srv.Close()
}
