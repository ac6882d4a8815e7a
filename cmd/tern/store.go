package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/ternmq/tern/persist"
	"github.com/ternmq/tern/server"
)

func storeCmd(args []string) int {
	if len(args) == 0 || args[0] != "inspect" {
		fmt.Fprint(os.Stderr, "Usage: tern store inspect --data DIR [--client ID] [--json]\n")
		if len(args) > 0 && (args[0] == "--help" || args[0] == "-h") {
			return 0
		}
		return 2
	}
	fs := flag.NewFlagSet("store inspect", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: tern store inspect --data DIR [--client ID] [--json]

Prints counts and sizes of the sessions, queued messages and retained
messages in a broker's data directory (stop the broker first: the store is
opened exclusively). With --client, one session in detail.

Flags:
`)
		fs.PrintDefaults()
	}
	dir := fs.String("data", "./data", "broker data `DIR`")
	client := fs.String("client", "", "show one session: client `ID`")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.Parse(args[1:]); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}
	if _, err := os.Stat(*dir); err != nil {
		fmt.Fprintf(os.Stderr, "tern store inspect: %v\n", err)
		return 1
	}
	// Opening a directory that holds no store would create an empty one
	// and report zeros: a mistyped --data must fail instead.
	if manifests, _ := filepath.Glob(filepath.Join(*dir, "MANIFEST-*")); len(manifests) == 0 {
		fmt.Fprintf(os.Stderr, "tern store inspect: %s holds no Tern store (no Pebble MANIFEST)\n", *dir)
		return 1
	}
	lock, err := server.LockDataDir(*dir) // "in use by PID n" while a broker runs
	if err != nil {
		fmt.Fprintf(os.Stderr, "tern store inspect: %v\n", err)
		return 1
	}
	defer lock.Release()
	st, err := persist.OpenPebble(persist.Options{Dir: *dir, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		fmt.Fprintf(os.Stderr, "tern store inspect: %v (is the broker still running?)\n", err)
		return 1
	}
	defer st.Close()
	var v any
	if *client != "" {
		var ci persist.ClientInfo
		ci, err = st.Inspect(*client)
		if err == nil && ci.Session == nil && ci.Inbound.Count == 0 && ci.Outbound.Count == 0 && ci.Corrupt == 0 {
			err = fmt.Errorf("no session or stored state for client %q", *client)
		}
		v = ci
	} else {
		v, err = st.Usage()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "tern store inspect: %v\n", err)
		return 1
	}
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(v)
		return 0
	}
	if u, ok := v.(persist.Usage); ok {
		fmt.Printf("data dir %s (%s on disk)\n", *dir, humanBytes(u.DiskBytes))
		for _, row := range []struct {
			name string
			u    persist.EntityUsage
		}{{"sessions", u.Sessions}, {"messages", u.Messages}, {"queued/inflight", u.Outbound},
			{"inbound QoS 2", u.Inbound}, {"retained", u.Retained}, {"corrupt keys", u.Corrupt}} {
			fmt.Printf("  %-16s %10d  %10s\n", row.name, row.u.Count, humanBytes(row.u.Bytes))
		}
		return 0
	}
	b, _ := json.MarshalIndent(v, "", "  ")
	fmt.Println(string(b))
	return 0
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
