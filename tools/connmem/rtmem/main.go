// Command rtmem runs a Tern broker in-process (plain TCP, durability none,
// the defaults of tern serve otherwise) and, on each SIGUSR1, prints where
// the process's memory is: every /memory/classes runtime metric, and the
// resident set of /proc/self/smaps split into the Go heap arena, other
// anonymous mappings (runtime metadata, gnet's loop buffers, C libraries)
// and file mappings (the binary's pages). The first SIGUSR1 sets the
// baseline; later ones print the growth since it, divided by -conns.
//
// It answers the question tern bench conn's RSS per connection cannot: of
// the bytes an idle connection adds to RSS, how many are live heap, free
// slots in heap spans, span structs, GC metadata and pages outside the Go
// heap. tools/connmem/rtmem.sh drives it against tern bench conn.
//
//	go run ./tools/connmem/rtmem -listen 127.0.0.1:21040 -conns 19000 &
//	kill -USR1 $PID   # baseline
//	tern bench conn ... --subscribe --duration 20s &
//	sleep 19; kill -USR1 $PID   # growth per connection
package main

import (
	"bufio"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"os"
	"os/signal"
	"runtime/metrics"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"github.com/ternmq/tern/server"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:21040", "MQTT listener")
	conns := flag.Int("conns", 19000, "connections to divide growth by")
	flag.Parse()
	dir, err := os.MkdirTemp("", "rtmem")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	srv, err := server.New(server.Options{Listeners: []string{*listen}, DataDir: dir,
		Durability: server.DurabilityNone, Logger: logger})
	if err != nil {
		log.Fatal(err)
	}
	go func() {
		if err := srv.Serve(); err != nil {
			log.Fatal(err)
		}
	}()
	<-srv.Ready()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGUSR1, syscall.SIGTERM, syscall.SIGINT)
	var base map[string]int64
	for s := range sig {
		if s != syscall.SIGUSR1 {
			break
		}
		now := snapshot()
		if base == nil {
			base = now
			fmt.Println("baseline taken")
			continue
		}
		report(base, now, *conns)
	}
	_ = srv.Close()
}

// snapshot returns every uint64 /memory/classes metric and the resident
// bytes of the smaps groups, by name.
func snapshot() map[string]int64 {
	var samples []metrics.Sample
	for _, d := range metrics.All() {
		if d.Kind == metrics.KindUint64 && (strings.HasPrefix(d.Name, "/memory/classes/") || d.Name == "/gc/heap/objects:objects") {
			samples = append(samples, metrics.Sample{Name: d.Name})
		}
	}
	metrics.Read(samples)
	out := map[string]int64{}
	for _, s := range samples {
		out[s.Name] = int64(s.Value.Uint64())
	}
	for k, v := range residentByGroup() {
		out["rss "+k] = v
	}
	return out
}

// residentByGroup sums the Rss of /proc/self/smaps by kind of mapping. The
// Go heap is told apart by holding the address of a fresh heap object
// (arenas are reserved in large aligned mappings).
func residentByGroup() map[string]int64 {
	probe := new([64]byte)
	heapAddr := uint64(uintptr(unsafe.Pointer(probe)))
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()
	out := map[string]int64{}
	group := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		fields := strings.Fields(line)
		if len(fields) >= 5 && strings.Contains(fields[0], "-") && !strings.HasSuffix(fields[0], ":") {
			lo, hi, _ := strings.Cut(fields[0], "-")
			a, err1 := strconv.ParseUint(lo, 16, 64)
			b, err2 := strconv.ParseUint(hi, 16, 64)
			if err1 != nil || err2 != nil {
				continue
			}
			switch {
			case heapAddr >= a && heapAddr < b:
				group = "go heap arena mapping"
			case len(fields) >= 6 && strings.HasPrefix(fields[5], "["):
				// [heap], [stack], and with Go's decoratemappings the
				// runtime's own names: [anon: Go: heap metadata] …
				group = strings.Join(fields[5:], " ")
			case len(fields) >= 6:
				group = "file " + fields[5]
			default:
				group = "other anonymous"
			}
			continue
		}
		if fields[0] == "Rss:" && len(fields) >= 2 {
			kb, _ := strconv.ParseInt(fields[1], 10, 64)
			out[group] += kb << 10
		}
	}
	return out
}

// report prints the growth of every value since base, per connection.
func report(base, now map[string]int64, conns int) {
	var keys []string
	for k := range now {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	fmt.Printf("growth since baseline, per connection (%d):\n", conns)
	for _, k := range keys {
		if d := now[k] - base[k]; d != 0 {
			fmt.Printf("  %-52s %9.1f\n", k, float64(d)/float64(conns))
		}
	}
}
