package main

import (
	"log/slog"
	"os"
	"runtime"
)

// spareProc gives the Go scheduler one P more than there are event loops,
// unless the GOMAXPROCS environment variable says otherwise.
//
// Why: each gnet event loop waits in epoll_wait and writes to sockets as
// blocking system calls, each holding a P. With as many Ps as loops (the
// default on a machine with as many CPUs as loops), whenever every loop is
// in such a call no P is idle, so the runtime's sysmon takes the Ps back
// every 20 µs (proc.go: retake) and, having taken one, never backs off its
// 20 µs polling. At 100k fan-out deliveries/s on 2 CPUs that was 13 % of
// the broker's CPU in sysmon alone (perf: runtime.sysmon and its usleep),
// taken from the same 2 CPUs the loops need, with a loop returning from a
// system call finding its P gone. One idle P is enough for sysmon to leave
// a P in a system call alone for 10 ms and to sleep longer: 3.5 % with the
// spare P, broker CPU 71 % → 63 % in the same run (BENCHMARKS.md,
// "Fan-out latency"). The spare P costs nothing when unused; the loops,
// one per CPU, are still the only busy goroutines.
func spareProc(loops int, log *slog.Logger) {
	if os.Getenv("GOMAXPROCS") != "" {
		return // the operator chose
	}
	if n := runtime.GOMAXPROCS(0); n <= loops {
		runtime.GOMAXPROCS(loops + 1)
		log.Debug("GOMAXPROCS raised to one more than the event loops", "event_loops", loops, "from", n, "to", loops+1)
	}
}
