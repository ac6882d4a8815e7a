// Package bench is Tern's load generator: it measures any MQTT 3.1.1 or 5.0
// broker over the wire. Of Tern it imports only the codec and the clock-free
// timer heap (never the broker), so the numbers it reports for Tern,
// mosquitto or mochi-mqtt come from the same client code.
//
// # The model
//
// A Run opens clients in event loops — one goroutine per loop (GOMAXPROCS by
// default), each owning an epoll instance, a timerfd and the connections
// registered in it. There is no goroutine per connection, so an idle
// connection costs one small struct plus its kernel socket; `tern bench conn`
// measures and reports the harness's own RSS per connection.
//
//	             ┌───────── loop 0 ─────────┐   ┌───────── loop 1 ─────────┐
//	orchestrator │ epoll: sockets, eventfd, │   │                          │
//	(Run) ─post─▶│ timerfd (next send due)  │   │           …              │
//	             │ heap of publishers by    │   │                          │
//	             │ next intended send time  │   │                          │
//	             │ Histogram, Ledger (owned)│   │                          │
//	             └──────────────────────────┘   └──────────────────────────┘
//
// Other goroutines talk to a loop only by posting closures (post/call); the
// loop's histograms and ledger are read after it exits, or through a posted
// closure for the live progress line.
//
// Publishing is open loop. Publisher k's message n is due at start + n/rate
// (Schedule), whatever happened to message n−1. The payload carries that
// intended time, and the subscriber measures latency from it, so a broker
// (or harness) that stalls shows as latency instead of quietly lowering the
// offered load — no coordinated omission. When a publisher cannot send (QoS
// 1/2 window full, socket buffer over Config.MaxOutbound) its schedule falls
// behind and the messages go out later with their original timestamps. The
// report separates the harness's own lateness (SendLag: write time −
// intended time) and its CPU, next to the broker's, so a reader can tell
// when the harness was the bottleneck.
//
// Closed loop (Config.ClosedLoop) is the other mode: a publisher sends
// whenever it may — fewer than Inflight QoS 1/2 publications
// unacknowledged, and nothing left in its own output buffer — and stamps
// each message with the time it handed it to the socket. It measures "as
// fast as the window allows" without counting a backlog of messages the
// harness never got to send as broker latency, which is what an open-loop
// rate far above capacity does (there SendLag grows with the run).
//
// Throttled subscribers (Config.SubRate, SubStopAfter) process at most so
// many PUBLISH packets per second, or stop at some point: out of budget a
// subscriber stops reading its socket, so the broker meets a slow consumer
// as it would in production (throttle.go, throttle_linux.go).
//
// # Writes, TLS and connect storms
//
// A loop never writes a packet when it is produced: it appends it to its
// connection's output and writes every connection with output once at the
// end of its turn (conn_linux.go flushDirty), so the acknowledgements of a
// whole read, or a publisher's burst and its PUBRELs, leave in one write
// syscall. That, and not reprogramming the timerfd when the next send is
// already due, took the harness from ≈ 6.5 to ≈ 1.3 µs of CPU per
// delivered message in p2p QoS 1 (BENCHMARKS.md).
//
// With Config.TLS the same connection runs crypto/tls over an in-memory
// transport the loop feeds (tls_linux.go); only the handshake runs on a
// short-lived goroutine, because crypto/tls cannot resume a handshake after
// "would block". TLSOptions.Resume primes a shared session cache with one
// full handshake per broker, so a connect storm measures resumed handshakes.
// Config.Parallel bounds the clients in their connect phase; the report
// gives CONNACK latency, connect-phase CPU per client of both sides, TLS
// handshakes full/resumed and the clients that needed a TCP retransmission.
//
// Sweep (sweep.go) runs one scenario at increasing open-loop rates until a
// step loses a message, fails a connection, falls behind (Report.ArrivalRate
// below what was offered) or passes a p99 knee.
//
// # Payload layout
//
// Every payload starts with a 26-byte header (big-endian), then zero padding
// up to Config.Size:
//
//	0      2          6            10                     18                    26
//	+------+----------+------------+----------------------+---------------------+--- - -
//	| 'T'  | run id   | publisher  | sequence number      | intended send time  | padding
//	| 'c'  | (u32)    | id (u32)   | (u64, from 0)        | (unix ns, i64)      | (zeros)
//	+------+----------+------------+----------------------+---------------------+--- - -
//
// Payloads without the magic, or from another run (a random id per Run;
// the standalone sub scenario takes any), are counted as foreign and
// otherwise ignored: two harnesses on the same topics, or a sweep step
// meeting the last one's stragglers, cannot credit each other's messages.
// Latency uses the wall clock on both ends; run publishers and subscribers
// on one machine (or NTP-disciplined ones) when they are separate processes.
//
// # Accounting
//
// Each loop keeps a Ledger: per (publisher, receiver) pair, a bitset of the
// sequence numbers received. A receiver is a subscriber, or the whole group
// for shared subscriptions. At the end the scenario states which pairs
// should have received what (Expectation), and Tally reports lost (expected
// but never received), duplicated (received twice: for a shared group,
// also by two members) and out-of-order (older than one the same connection
// already got from the same publisher) counts, plus deliveries nobody
// expected. Losses are counted after a drain period (Config.Drain) that
// waits for deliveries still in flight. The standalone sub scenario cannot
// know what was sent and counts gaps instead.
//
// Report.Series has one line per second (sent, received, the p99 of that
// second's deliveries, live connections, broker RSS), so a rate that
// changes during the run or latency that grows with its length is visible.
//
// Latencies go into a Histogram: HDR-style log-linear buckets with < 1 %
// relative error, fixed 34 KiB, O(1) allocation-free Record, merged across
// loops.
//
// # Scale
//
// The kernel limits outgoing connections to one broker address to the local
// port range per source address (~28k here); Config.Sources binds clients to
// several loopback addresses (127.0.0.2, …) round-robin. A process is also
// limited by its descriptor cap (20,000 on the reference machine): run
// several `tern bench conn` processes to go further.
//
// # Concurrency
//
// Run and Compare may be called from any goroutine; one Run uses its own
// loops and shares nothing with another. Histogram and Ledger are not safe
// for concurrent use (each loop owns its own).
//
// The epoll engine is Linux-only; elsewhere Run returns an error.
//
// # Reading order
//
// config.go (what a run is asked to do), run_linux.go (Run's steps and the
// connect phase), measure_linux.go (the measured window, resource samples,
// assembling the report), engine_linux.go (one event loop), conn_linux.go
// (sockets), protocol_linux.go (the MQTT conversation), publish_linux.go
// (the send queue and timer), throttle_linux.go (slow subscribers),
// tls_linux.go (TLS clients), series_linux.go (the per-second record), then
// the parts: schedule.go, throttle.go, payload.go, histogram.go, ledger.go,
// report.go, compare.go, sweep.go, tlsconfig.go, proc.go.
package bench
