// Command auth-database embeds the Tern broker in a service that decides
// who may connect, publish and subscribe from its own user database —
// here a map; a SQL query or an HTTP call is the same code, because the
// Authenticate and Authorize hooks may block: they run on a bounded pool
// off the broker's event loops, with a timeout, and their verdicts are
// cached (server.HookOptions).
//
//	go run ./examples/auth-database
//	mosquitto_sub -h 127.0.0.1 -u meter-1 -P s3cret -t 'meters/meter-1/#' -v &
//	mosquitto_pub -h 127.0.0.1 -u meter-1 -P s3cret -t meters/meter-1/kwh -m 42
//	mosquitto_pub -h 127.0.0.1 -u meter-1 -P s3cret -t meters/meter-2/kwh -m 1   # not routed: not its prefix
//	mosquitto_pub -h 127.0.0.1 -u meter-1 -P wrong -t meters/meter-1/kwh -m 1    # refused: bad password
package main

import (
	"context"
	"errors"
	"flag"
	"log"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/ternmq/tern/server"
)

// user is a row of the application's user table.
type user struct {
	password string // a real table stores a hash (see tern passwd)
	prefix   string // the topics the user owns
}

var users = map[string]user{
	"meter-1": {password: "s3cret", prefix: "meters/meter-1/"},
	"meter-2": {password: "hunter2", prefix: "meters/meter-2/"},
	"ops":     {password: "ops", prefix: "meters/"},
}

func main() {
	listen := flag.String("listen", "127.0.0.1:1883", "MQTT listener")
	data := flag.String("data", "./data-auth-example", "data directory (Pebble)")
	flag.Parse()
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))

	hooks := server.Hooks{
		Authenticate: func(ctx context.Context, r server.AuthRequest) (server.AuthResult, error) {
			u, ok := users[r.Username] // a database query would honour ctx
			if !ok || u.password != string(r.Password) {
				return server.AuthResult{}, errors.New("unknown user or wrong password")
			}
			return server.AuthResult{}, nil
		},
		Authorize: func(ctx context.Context, r server.AuthzRequest) bool {
			return strings.HasPrefix(r.Topic, users[r.Username].prefix)
		},
		OnConnect: func(c server.HookClient) { logger.Info("device online", "user", c.Username, "client_id", c.ClientID) },
		OnDisconnect: func(c server.HookClient, why error) {
			logger.Info("device offline", "user", c.Username, "client_id", c.ClientID, "why", why)
		},
	}
	srv, err := server.New(server.Options{
		Listeners:      []string{*listen},
		DataDir:        *data,
		AllowAnonymous: false, // the Authenticate hook decides every CONNECT
		Hooks:          []server.Hooks{hooks},
		Logger:         logger,
	})
	if err != nil {
		log.Fatal(err)
	}
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
		<-sig
		_ = srv.Close()
	}()
	if err := srv.Serve(); err != nil {
		log.Fatal(err)
	}
}
