// Command device-commands embeds the Tern broker behind an HTTP API that
// sends commands to devices and returns their answers, using MQTT 5.0
// request/response: the command carries a Response Topic and Correlation
// Data, the device publishes its answer there. The back-end is an
// in-process client (no socket); devices are any MQTT 5.0 clients — the
// -simulate flag starts in-process ones for a quick try.
//
//	go run ./examples/device-commands -simulate lamp-1
//	curl -d 'switch on' localhost:8080/devices/lamp-1/command
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ternmq/tern/server"
)

// requests matches replies to waiting HTTP requests by correlation data.
type requests struct {
	mu      sync.Mutex
	waiting map[string]chan []byte
	next    atomic.Uint64
}

func (r *requests) open() (string, chan []byte) {
	id := strconv.FormatUint(r.next.Add(1), 10)
	ch := make(chan []byte, 1)
	r.mu.Lock()
	r.waiting[id] = ch
	r.mu.Unlock()
	return id, ch
}

func (r *requests) close(id string) {
	r.mu.Lock()
	delete(r.waiting, id)
	r.mu.Unlock()
}

// reply is the back-end's handler for replies/backend: it runs on the
// client's dispatcher goroutine, so it only hands the payload over.
func (r *requests) reply(m *server.Message) {
	r.mu.Lock()
	ch := r.waiting[string(m.CorrelationData)]
	r.mu.Unlock()
	if ch != nil {
		ch <- append([]byte(nil), m.Payload...) // m is valid only during the call
	}
}

func main() {
	listen := flag.String("listen", "127.0.0.1:1883", "MQTT listener")
	httpAddr := flag.String("http", "127.0.0.1:8080", "HTTP API listener")
	simulate := flag.String("simulate", "", "comma-separated ids of simulated (in-process) devices")
	flag.Parse()
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))

	srv, err := server.New(server.Options{Listeners: []string{*listen}, Durability: server.DurabilityNone, Logger: logger})
	if err != nil {
		log.Fatal(err)
	}
	go func() {
		if err := srv.Serve(); err != nil {
			log.Fatal(err)
		}
	}()
	<-srv.Ready()

	reqs := &requests{waiting: map[string]chan []byte{}}
	backend, err := srv.Client("backend", server.ClientOptions{Subscriptions: []server.Subscription{
		{Filter: "replies/backend", QoS: 1, Handler: reqs.reply},
	}})
	if err != nil {
		log.Fatal(err)
	}
	for _, id := range strings.Split(*simulate, ",") {
		if id != "" {
			simulateDevice(srv, id)
		}
	}

	http.HandleFunc("POST /devices/{id}/command", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(r.Body, 64<<10))
		corr, ch := reqs.open()
		defer reqs.close(corr)
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		// QoS 1: PublishMessage returns once the broker has the command.
		err := backend.PublishMessage(ctx, &server.Message{
			Topic: "devices/" + r.PathValue("id") + "/commands", Payload: body, QoS: 1,
			ResponseTopic: "replies/backend", CorrelationData: []byte(corr), Expiry: 5 * time.Second,
		})
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		select {
		case answer := <-ch:
			_, _ = w.Write(append(answer, '\n'))
		case <-ctx.Done():
			http.Error(w, "device did not answer in time", http.StatusGatewayTimeout)
		}
	})
	logger.Info("HTTP API listening", "addr", *httpAddr)
	log.Fatal(http.ListenAndServe(*httpAddr, nil))
}

// simulateDevice starts an in-process device that answers every command.
func simulateDevice(srv *server.Server, id string) {
	var dev *server.Client
	var err error
	dev, err = srv.Client(id, server.ClientOptions{Subscriptions: []server.Subscription{{
		Filter: "devices/" + id + "/commands", QoS: 1,
		Handler: func(m *server.Message) {
			answer := fmt.Sprintf("%s: done %q", id, m.Payload)
			// From another goroutine: a handler should not wait for the
			// broker on its own client's delivery path.
			reply := &server.Message{Topic: m.ResponseTopic, Payload: []byte(answer), QoS: 1,
				CorrelationData: append([]byte(nil), m.CorrelationData...)}
			go func() { _ = dev.PublishMessage(context.Background(), reply) }()
		},
	}}})
	if err != nil {
		log.Fatal(err)
	}
}
