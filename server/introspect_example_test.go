package server_test

import (
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/ternmq/tern/server"
)

// Introspection from Go: list the connected clients, look at one, kick it
// (its will is published, as for any connection that ends without
// DISCONNECT), and clear a retained message. The admin HTTP API is the
// same calls behind /api/v1/.
func ExampleServer_Clients() {
	srv, err := server.New(server.Options{Listeners: []string{"127.0.0.1:0"}, Durability: server.DurabilityNone, Logger: quiet})
	if err != nil {
		log.Fatal(err)
	}
	addr := start(srv)
	defer srv.Close()
	for _, id := range []string{"sensor-2", "sensor-1", "gateway"} {
		connect(addr, id, nil)
	}

	page := srv.Clients(server.ClientFilter{IDPrefix: "sensor-", Limit: 10})
	for _, c := range page.Clients {
		fmt.Println(c.ID, c.Connected, c.ProtocolVersion)
	}
	fmt.Println("total", page.Total)

	if err := srv.Kick("sensor-1", "maintenance"); err != nil {
		log.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if _, ok := srv.ClientInfo("sensor-1"); !ok { // a clean session ends with its connection
			break
		}
	}
	_, ok := srv.ClientInfo("sensor-1")
	fmt.Println("sensor-1 still known:", ok)

	if err := srv.Publish("site/state", []byte("open"), 1, true); err != nil {
		log.Fatal(err)
	}
	if err := srv.DeleteRetained("site/state"); err != nil {
		log.Fatal(err)
	}
	err = srv.DeleteRetained("site/state")
	fmt.Println("deleted twice:", errors.Is(err, server.ErrNotFound))
	// Output:
	// sensor-1 true 3.1.1
	// sensor-2 true 3.1.1
	// total 2
	// sensor-1 still known: false
	// deleted twice: true
}
