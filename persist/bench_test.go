package persist

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
)

var recoverN = flag.Int("persist.recover-n", 1_000_000, "queued messages written for BenchmarkRecover1M")

// qos1Batch fills b like the server does for one QoS 1 PUBLISH with one
// persistent subscriber: the message once, one outbound entry, one reference.
func qos1Batch(b *Batch, client string, seq uint64, payload []byte) {
	id := b.PutMessage(&Message{Topic: "devices/sensor-42/telemetry", Payload: payload, QoS: 1, Publisher: "sensor-42"})
	b.AddRef(id)
	b.PutOutbound(client, seq, Outbound{MessageID: id, QoS: 1})
}

// benchCommit runs b.N commits from 64 concurrent committers (the server's
// event loops plus headroom), each waiting for its done before the next.
func benchCommit(b *testing.B, s Store) {
	const committers = 64
	payload := jsonPayload(rand.New(rand.NewPCG(1, 1)), 256)
	var next atomic.Int64
	var wg sync.WaitGroup
	lat := make([]time.Duration, b.N+1) // commit latency by commit number
	before := s.Stats()
	cpu0 := cpuTime()
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for w := range committers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := fmt.Sprintf("sub-%d", w)
			done := make(chan error, 1)
			for {
				i := next.Add(1)
				if i > int64(b.N) {
					return
				}
				bt := s.NewBatch()
				qos1Batch(bt, client, uint64(i), payload)
				t0 := time.Now()
				s.Commit(bt, func(err error) { done <- err })
				if err := <-done; err != nil {
					b.Error(err)
					return
				}
				lat[i] = time.Since(t0)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start).Seconds()
	b.StopTimer()
	cpu := cpuTime() - cpu0
	st := s.Stats()
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/msg")
	b.ReportMetric(float64(st.Groups-before.Groups)/elapsed, "groups/s")
	syncs := float64(st.Syncs - before.Syncs)
	b.ReportMetric(float64(b.N)/elapsed, "msgs/s")
	b.ReportMetric(syncs/elapsed, "fsyncs/s")
	if syncs > 0 {
		b.ReportMetric(float64(b.N)/syncs, "msgs/fsync")
	}
	b.ReportMetric(float64(st.Batches-before.Batches)/float64(st.Groups-before.Groups), "batches/group")
	slices.Sort(lat[1:])
	b.ReportMetric(float64(lat[1+b.N/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[1+b.N*99/100].Microseconds()), "p99-µs")
}

// cpuTime is the CPU time (user + system) the process used so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkCommitSync: ModeSync, 64 committers, one QoS 1 message each;
// inflight=1 applies one group per fsync (the committer waits for each
// sync, as before pipelining), inflight=16 is the default pipeline.
func BenchmarkCommitSync(b *testing.B) {
	for _, inflight := range []int{1, DefaultMaxInFlightGroups} {
		b.Run(fmt.Sprintf("inflight=%d", inflight), func(b *testing.B) {
			o := quietOptions()
			o.Dir = b.TempDir()
			o.MaxInFlightGroups = inflight
			benchCommit(b, openPebble(b, o))
		})
	}
}

// BenchmarkCommitPipeline is BenchmarkCommitSync on a simulated disk: an
// in-memory filesystem whose WAL fsync takes a fixed time, so the pipeline
// is measured without the real disk's variance (msgs/s, commit latency,
// CPU per message, groups and fsyncs).
func BenchmarkCommitPipeline(b *testing.B) {
	for _, fsync := range []time.Duration{500 * time.Microsecond, 2 * time.Millisecond} {
		for _, inflight := range []int{1, DefaultMaxInFlightGroups} {
			b.Run(fmt.Sprintf("fsync=%v/inflight=%d", fsync, inflight), func(b *testing.B) {
				inj := &walInjector{}
				inj.delay.Store(int64(fsync))
				o := quietOptions()
				o.Dir = "/db"
				o.FS = errorfs.Wrap(vfs.NewMem(), inj)
				o.MaxInFlightGroups = inflight
				benchCommit(b, openPebble(b, o))
			})
		}
	}
}

// BenchmarkCommitWindow models the broker's durable QoS 1 load: 16
// publishers, each with up to 4 unacknowledged batches of 8 messages (a
// read event's worth) in flight, committing as soon as one is
// acknowledged. WAL fsyncs take a fixed time on an in-memory filesystem;
// inflight=1 waits for each group's fsync before applying the next (as
// before pipelining), inflight=64 is the default pipeline.
func BenchmarkCommitWindow(b *testing.B) {
	const publishers, window, perBatch = 16, 4, 8
	payload := jsonPayload(rand.New(rand.NewPCG(1, 1)), 64)
	for _, fsync := range []time.Duration{500 * time.Microsecond, 2 * time.Millisecond} {
		for _, inflight := range []int{1, DefaultMaxInFlightGroups} {
			b.Run(fmt.Sprintf("fsync=%v/inflight=%d", fsync, inflight), func(b *testing.B) {
				inj := &walInjector{}
				inj.delay.Store(int64(fsync))
				o := quietOptions()
				o.Dir = "/db"
				o.FS = errorfs.Wrap(vfs.NewMem(), inj)
				o.MaxInFlightGroups = inflight
				s := openPebble(b, o)
				batches := b.N/perBatch + 1
				lat := make([]time.Duration, batches)
				var next atomic.Int64
				var wg sync.WaitGroup
				before := s.Stats()
				cpu0 := cpuTime()
				b.ReportAllocs()
				b.ResetTimer()
				start := time.Now()
				for w := range publishers {
					wg.Add(1)
					go func() {
						defer wg.Done()
						client := fmt.Sprintf("sub-%d", w)
						slots := make(chan struct{}, window)
						var inner sync.WaitGroup
						for {
							slots <- struct{}{}
							i := next.Add(1) - 1
							if i >= int64(batches) {
								break
							}
							bt := s.NewBatch()
							for j := range perBatch {
								qos1Batch(bt, client, uint64(i*perBatch)+uint64(j), payload)
							}
							t0 := time.Now()
							inner.Add(1)
							s.Commit(bt, func(err error) {
								if err != nil {
									b.Error(err)
								}
								lat[i] = time.Since(t0)
								<-slots
								inner.Done()
							})
						}
						inner.Wait()
					}()
				}
				wg.Wait()
				elapsed := time.Since(start).Seconds()
				b.StopTimer()
				cpu := cpuTime() - cpu0
				st := s.Stats()
				msgs := float64(batches * perBatch)
				b.ReportMetric(msgs/elapsed, "msgs/s")
				b.ReportMetric(float64(cpu.Nanoseconds())/msgs, "cpu-ns/msg")
				b.ReportMetric(float64(st.Syncs-before.Syncs)/elapsed, "fsyncs/s")
				b.ReportMetric(float64(st.Groups-before.Groups)/elapsed, "groups/s")
				slices.Sort(lat)
				b.ReportMetric(float64(lat[batches/2].Microseconds()), "p50-µs")
				b.ReportMetric(float64(lat[batches*99/100].Microseconds()), "p99-µs")
			})
		}
	}
}

// BenchmarkCommitPeriodic: ModePeriodic (100ms), same load.
func BenchmarkCommitPeriodic(b *testing.B) {
	o := quietOptions()
	o.Dir = b.TempDir()
	o.Mode = ModePeriodic
	benchCommit(b, openPebble(b, o))
}

// BenchmarkCommitNone: the Memory store, same load.
func BenchmarkCommitNone(b *testing.B) {
	s, err := NewMemory(quietOptions())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close() })
	benchCommit(b, s)
}

// writeQueued fills a store with n queued QoS 1 messages spread over 1,000
// offline sessions, in 1,000-message batches.
func writeQueued(tb testing.TB, s Store, n int, payload func(i int) []byte) {
	writeQueuedTo(tb, s, 1000, n, payload)
}

// writeQueuedTo fills a store with n queued QoS 1 messages spread round
// robin over clients offline sessions, in 1,000-message batches.
func writeQueuedTo(tb testing.TB, s Store, clients, n int, payload func(i int) []byte) {
	const perBatch = 1000
	for i := 0; i < clients; i++ {
		bt := s.NewBatch()
		bt.PutSession(fmt.Sprintf("client-%04d", i), &Session{ProtocolVersion: 5, ExpiryInterval: 86400, DisconnectedAt: 1, Subscriptions: []Subscription{{Filter: "devices/+/telemetry", QoS: 1}}})
		commit(tb, s, bt)
	}
	for i := 0; i < n; i += perBatch {
		bt := s.NewBatch()
		for j := i; j < min(n, i+perBatch); j++ {
			qos1Batch(bt, fmt.Sprintf("client-%04d", j%clients), uint64(j/clients), payload(j))
		}
		commit(tb, s, bt)
	}
}

// BenchmarkRecover1M measures a restart with 1,000,000 queued messages
// (-persist.recover-n to change): opening plus Recover visiting every
// record (the full walk; BenchmarkOpenRecover compares it with the backlog
// walk). Run with -benchtime=1x: each iteration writes the store first
// (untimed).
func BenchmarkRecover1M(b *testing.B) {
	n := *recoverN
	payload := jsonPayload(rand.New(rand.NewPCG(2, 2)), 200)
	for range b.N {
		b.StopTimer()
		o := quietOptions()
		o.Dir = b.TempDir()
		o.Mode = ModePeriodic // setup speed; the data is synced at Close
		s, err := OpenPebble(o)
		if err != nil {
			b.Fatal(err)
		}
		writeQueued(b, s, n, func(int) []byte { return payload })
		if err := s.Close(); err != nil {
			b.Fatal(err)
		}
		o.Mode = ModeSync
		b.StartTimer()

		start := time.Now()
		s, err = OpenPebble(o)
		if err != nil {
			b.Fatal(err)
		}
		opened := time.Since(start)
		var msgs, entries int
		st, err := s.Recover(Visitor{
			Message:  func(uint64, *Message) error { msgs++; return nil },
			Outbound: func(string, uint64, Outbound) error { entries++; return nil },
		})
		total := time.Since(start)
		b.StopTimer()
		if err != nil || msgs != n || entries != n || st.Corrupt != 0 {
			b.Fatalf("recovered %d messages, %d entries, %d corrupt, err %v; want %d", msgs, entries, st.Corrupt, err, n)
		}
		_ = s.Close()
		b.ReportMetric(opened.Seconds(), "open-s")
		b.ReportMetric(total.Seconds(), "recover-s")
		b.ReportMetric(float64(n)/total.Seconds(), "msgs/s")
	}
}

// BenchmarkDiskBytesPerMessage writes 50,000 queued messages with a 2 KiB
// payload, flushes and compacts, and reports bytes on disk per queued
// message (message record + outbound entry + Pebble overhead), with the
// store's S2 compression on and off. Pebble compresses its sstable blocks
// too, so "sst" shows what the store's own compression adds on top; "disk"
// adds WAL files Pebble keeps for recycling; "wal" is the bytes written
// through the WAL and memtable, where Pebble does not compress. Run with
// -benchtime=1x.
func BenchmarkDiskBytesPerMessage(b *testing.B) {
	const n = 50_000
	rng := rand.New(rand.NewPCG(3, 3))
	kinds := map[string]func(int) []byte{
		"json":   func(int) []byte { return jsonPayload(rng, 2048) },
		"random": func(int) []byte { return randomPayload(rng, 2048) },
	}
	for _, kind := range []string{"json", "random"} {
		for _, threshold := range []int{DefaultCompressThreshold, -1} {
			name := fmt.Sprintf("%s/s2=%v", kind, threshold > 0)
			b.Run(name, func(b *testing.B) {
				for range b.N {
					o := quietOptions()
					o.Dir = b.TempDir()
					o.Mode = ModePeriodic
					o.CompressThreshold = threshold
					p, err := OpenPebble(o)
					if err != nil {
						b.Fatal(err)
					}
					writeQueued(b, p, n, kinds[kind])
					if err := p.Flush(); err != nil {
						b.Fatal(err)
					}
					u, err := p.Usage()
					if err != nil {
						b.Fatal(err)
					}
					st := p.Stats()
					_ = p.Close()
					b.ReportMetric(float64(u.DiskBytes)/n, "disk-B/msg")
					b.ReportMetric(float64(u.TableBytes)/n, "sst-B/msg")
					b.ReportMetric(float64(st.BytesCommitted)/n, "wal-B/msg")
					b.ReportMetric(float64(u.Messages.Bytes+u.Outbound.Bytes)/n, "logical-B/msg")
				}
			})
		}
	}
}

var (
	openSessions = flag.Int("persist.open-sessions", 100, "offline sessions for BenchmarkOpenRecover")
	openQueued   = flag.Int("persist.open-queued", 10_000, "queued messages per session for BenchmarkOpenRecover")
)

// BenchmarkOpenRecover measures a restart with 100 offline sessions of
// 10,000 queued QoS 1 messages each, 64-byte payloads (flags
// -persist.open-sessions and -persist.open-queued change the shape):
// opening the store plus Recover, with the backlog left on disk
// (Visitor.Backlog: what the broker does) and with every message and entry
// visited (the old startup). The store is written once, untimed, and
// reopened by each iteration; Pebble replays its WAL tail at every open,
// as after a crash; the first open after the write replays the most, so
// the slowest iteration is reported too. Run with -benchtime=3x or so.
func BenchmarkOpenRecover(b *testing.B) {
	sessions, per := *openSessions, *openQueued
	n := sessions * per
	o := quietOptions()
	o.Dir = b.TempDir()
	o.Mode = ModePeriodic // setup speed; the data is synced at Close
	s, err := OpenPebble(o)
	if err != nil {
		b.Fatal(err)
	}
	payload := randomPayload(rand.New(rand.NewPCG(4, 4)), 64)
	writeQueuedTo(b, s, sessions, n, func(int) []byte { return payload })
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
	o.Mode = ModeSync
	// The first open replays (and flushes) the WAL tail the writes left:
	// what a restart after a crash pays.
	start := time.Now()
	s, err = OpenPebble(o)
	if err != nil {
		b.Fatal(err)
	}
	opened := time.Since(start)
	if _, err := s.Recover(Visitor{Backlog: func(string, uint64, uint64, uint64) error { return nil }}); err != nil {
		b.Fatal(err)
	}
	b.Logf("first open after writing %d queued: open %v, open+recover (backlog) %v", n, opened.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	_ = s.Close()
	for _, mode := range []string{"backlog", "full"} {
		b.Run(fmt.Sprintf("%s/sessions=%d/queued=%d", mode, sessions, n), func(b *testing.B) {
			var sumOpen, sumTotal, maxTotal time.Duration
			for range b.N {
				start := time.Now()
				s, err := OpenPebble(o)
				if err != nil {
					b.Fatal(err)
				}
				opened := time.Since(start)
				var queued uint64
				v := Visitor{Session: func(string, *Session) error { return nil }}
				if mode == "backlog" {
					v.Backlog = func(_ string, first, last, _ uint64) error { queued += last - first + 1; return nil }
				} else {
					v.Message = func(uint64, *Message) error { return nil }
					v.Outbound = func(string, uint64, Outbound) error { queued++; return nil }
				}
				st, err := s.Recover(v)
				total := time.Since(start)
				if err != nil || queued != uint64(n) || st.Sessions != int64(sessions) || st.Corrupt != 0 {
					b.Fatalf("recovered %d queued, %d sessions, %d corrupt, err %v; want %d, %d", queued, st.Sessions, st.Corrupt, err, n, sessions)
				}
				b.StopTimer()
				_ = s.Close()
				b.StartTimer()
				sumOpen += opened
				sumTotal += total
				maxTotal = max(maxTotal, total)
			}
			b.ReportMetric(sumOpen.Seconds()*1e3/float64(b.N), "open-ms")
			b.ReportMetric(sumTotal.Seconds()*1e3/float64(b.N), "open+recover-ms")
			b.ReportMetric(maxTotal.Seconds()*1e3, "max-open+recover-ms")
		})
	}
}

var readCache = flag.Int("persist.read-cache", DefaultCacheSize, "Pebble block cache for BenchmarkReadOutbound")

// BenchmarkReadOutbound measures ReadOutbound paging through one session's
// queue of QoS 1 messages with 64-byte payloads, in pages of 1,000 (the
// queue is re-read from the start when a pass ends). One op is one entry
// read with its message; allocs/op are per entry.
func BenchmarkReadOutbound(b *testing.B) {
	const queued, page = 200_000, 1000
	o := quietOptions()
	o.CacheSize = int64(*readCache)
	o.Dir = b.TempDir()
	o.Mode = ModePeriodic
	s := openPebble(b, o)
	payload := randomPayload(rand.New(rand.NewPCG(5, 5)), 64)
	writeQueuedTo(b, s, 1, queued, func(int) []byte { return payload })
	if err := s.Flush(); err != nil { // read from sstables, as a backlog is
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	var from uint64
	var bytes int
	fn := func(_ uint64, _ Outbound, m *Message, _ error) error { bytes += len(m.Payload); return nil }
	for read := 0; read < b.N; {
		next, n, err := s.ReadOutbound("client-0000", from, min(page, b.N-read), fn)
		if err != nil {
			b.Fatal(err)
		}
		read += n
		from = next
		if n == 0 {
			from = 0
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "entries/s")
	if bytes != b.N*len(payload) {
		b.Fatalf("read %d payload bytes, want %d", bytes, b.N*len(payload))
	}
}

// BenchmarkDiskUsage: what a once-a-second quota check costs.
func BenchmarkDiskUsage(b *testing.B) {
	o := quietOptions()
	o.Dir = b.TempDir()
	s := openPebble(b, o)
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := s.DiskUsage(); err != nil {
			b.Fatal(err)
		}
	}
}
