package persist

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
)

// orderedCommitter commits batches from many goroutines and records, for
// each, its place in commit order (assigned under a mutex around Commit,
// so it is the order of the store's queue) and the order and result of its
// done callback.
type orderedCommitter struct {
	s      Store
	submit sync.Mutex
	next   int

	mu   sync.Mutex
	done []doneRecord
}

type doneRecord struct {
	seq int
	err error
}

// commit submits b and returns a channel that gets its result.
func (oc *orderedCommitter) commit(b *Batch) <-chan error {
	ch := make(chan error, 1)
	oc.submit.Lock()
	seq := oc.next
	oc.next++
	oc.s.Commit(b, func(err error) {
		oc.mu.Lock()
		oc.done = append(oc.done, doneRecord{seq, err})
		oc.mu.Unlock()
		ch <- err
	})
	oc.submit.Unlock()
	return ch
}

// checkOrder fails t unless every done callback ran in commit order and
// no success follows a failure. It returns the number of successes.
func (oc *orderedCommitter) checkOrder(t *testing.T) (acked int) {
	t.Helper()
	oc.mu.Lock()
	defer oc.mu.Unlock()
	failedAt := -1
	for i, d := range oc.done {
		if i > 0 && d.seq <= oc.done[i-1].seq {
			t.Fatalf("done #%d is batch %d, after batch %d: completion out of commit order", i, d.seq, oc.done[i-1].seq)
		}
		switch {
		case d.err == nil && failedAt >= 0:
			t.Fatalf("batch %d acknowledged after batch %d failed", d.seq, oc.done[failedAt].seq)
		case d.err == nil:
			acked++
		case failedAt < 0:
			failedAt = i
		}
	}
	return acked
}

// TestPipelineCompletesInCommitOrder: with a slow fsync, several groups are
// applied while earlier ones sync, yet every done callback runs in commit
// order, after its own group's fsync; Close completes what is in flight.
func TestPipelineCompletesInCommitOrder(t *testing.T) {
	t.Run("default", func(t *testing.T) { testPipelineOrder(t, 0, 0) })
	// Two groups in flight and 4 KiB pending at most: the committer and
	// the callers wait (counted), and the order still holds.
	t.Run("bounded", func(t *testing.T) { testPipelineOrder(t, 2, 4<<10) })
}

func testPipelineOrder(t *testing.T, inflight, pendingBytes int) {
	o, inj := injectedOptions(t)
	inj.delay.Store(int64(2 * time.Millisecond))
	o.MaxInFlightGroups = inflight
	if pendingBytes > 0 {
		o.MaxGroupBytes, o.MaxPendingBytes = 4<<10, pendingBytes
	}
	p := openPebble(t, o)
	oc := &orderedCommitter{s: p}
	const workers, each = 32, 20
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				b := p.NewBatch()
				id := b.PutMessage(testMessage("t", make([]byte, 100)))
				b.AddRef(id)
				b.PutOutbound(fmt.Sprint("c", w), uint64(i), Outbound{MessageID: id, QoS: 1})
				if err := <-oc.commit(b); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if n := oc.checkOrder(t); n != workers*each {
		t.Fatalf("%d acknowledged, want %d", n, workers*each)
	}
	st := p.Stats()
	t.Logf("%d batches, %d groups, %d fsyncs (%v), at most %d groups in flight, %d pipeline waits, %d commit waits",
		st.Batches, st.Groups, st.Syncs, st.SyncTime, st.MaxInFlight, st.PipelineWaits, st.CommitWaits)
	if inflight > 0 && st.PipelineWaits == 0 {
		t.Errorf("no pipeline wait with %d groups in flight at most", inflight)
	}
	if pendingBytes > 0 && st.CommitWaits == 0 {
		t.Errorf("no commit waited with %d bytes pending at most", pendingBytes)
	}
	if st.MaxInFlight < 2 {
		t.Errorf("at most %d group in flight: the committer waited for each fsync", st.MaxInFlight)
	}
	if st.MaxInFlight > uint64(p.opts.MaxInFlightGroups) {
		t.Errorf("%d groups in flight, over the bound", st.MaxInFlight)
	}
	if st.Syncs == 0 || st.Syncs > st.Groups {
		t.Errorf("%d fsyncs for %d groups", st.Syncs, st.Groups)
	}

	// Batches still in flight at Close get their done, and are durable.
	var pending []<-chan error
	for i := range 200 {
		b := p.NewBatch()
		b.PutSession(fmt.Sprintf("late-%03d", i), &Session{ProtocolVersion: 5})
		pending = append(pending, oc.commit(b))
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	for i, ch := range pending {
		select {
		case err := <-ch:
			if err != nil {
				t.Fatalf("late batch %d: %v", i, err)
			}
		default:
			t.Fatalf("late batch %d: done not called by Close", i)
		}
	}
	oc.checkOrder(t)
	o.FS = vfs.Default
	snap := recoverAll(t, openPebble(t, o))
	for i := range 200 {
		if snap.Sessions[fmt.Sprintf("late-%03d", i)] == nil {
			t.Fatalf("late-%03d acknowledged at Close but not recovered", i)
		}
	}
	for w := range workers {
		if n := len(snap.Outbound[fmt.Sprint("c", w)]); n != each {
			t.Fatalf("client c%d: %d entries recovered, want %d", w, n, each)
		}
	}
}

// TestPipelineSyncFailureFailsEveryLaterGroup: when a WAL write or fsync
// fails while groups are in flight, the group it hits and every group
// after it fail — none is acknowledged, whatever its own sync reports —
// the store becomes unavailable, and a restart finds everything that was
// acknowledged.
func TestPipelineSyncFailureFailsEveryLaterGroup(t *testing.T) {
	o, inj := injectedOptions(t)
	inj.delay.Store(int64(3 * time.Millisecond))
	p := openPebble(t, o)
	oc := &orderedCommitter{s: p}
	const workers = 24
	var acked sync.Map // client id -> last acknowledged sequence
	var ackCount atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := fmt.Sprint("c", w)
			for i := uint64(1); ; i++ {
				b := p.NewBatch()
				id := b.PutMessage(testMessage("t", make([]byte, 100)))
				b.AddRef(id)
				b.PutOutbound(client, i, Outbound{MessageID: id, QoS: 1})
				if err := <-oc.commit(b); err != nil {
					if !errors.Is(err, ErrStoreUnavailable) {
						t.Errorf("%s: %v, want ErrStoreUnavailable", client, err)
					}
					return
				}
				acked.Store(client, i)
				ackCount.Add(1)
			}
		}()
	}
	deadline := time.Now().Add(10 * time.Second)
	for ackCount.Load() < 300 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	inj.fail.Store(true)
	wg.Wait()
	inj.fail.Store(false) // the disk "recovers"; the store must not trust it
	oc.checkOrder(t)
	st := p.Stats()
	t.Logf("%d acknowledged, %d failed batches, at most %d groups in flight", ackCount.Load(), st.FailedBatches, st.MaxInFlight)
	if st.Unavailable == nil || st.FailedBatches < workers {
		t.Fatalf("after the failure: unavailable %v, %d failed batches (want >= %d)", st.Unavailable, st.FailedBatches, workers)
	}
	if st.MaxInFlight < 2 {
		t.Errorf("at most %d group in flight: the failure did not meet a pipeline", st.MaxInFlight)
	}
	if err := p.Close(); !errors.Is(err, ErrStoreUnavailable) {
		t.Errorf("close: %v", err)
	}
	o.FS = vfs.Default
	snap := recoverAll(t, openPebble(t, o))
	acked.Range(func(k, v any) bool {
		entries := snap.Outbound[k.(string)]
		if uint64(len(entries)) < v.(uint64) {
			t.Errorf("%s: %d entries recovered, %d acknowledged", k, len(entries), v)
		}
		return true
	})
}

// TestPowerLossKeepsAcknowledged simulates power cuts: while 16 writers
// commit (puts, and deletions of what they put earlier) through a slow
// fsync, the filesystem is cloned as a crash would leave it — only synced
// data, or synced data plus a random part of the rest. A store opened on
// each clone holds every put acknowledged before the cut and none of the
// acknowledged deletions, with no orphan or dangling record (each batch is
// atomic).
func TestPowerLossKeepsAcknowledged(t *testing.T) {
	mem, p := crashableStore(t, time.Millisecond)

	const workers, perWorker = 16, 100000
	state := newDeliveryFlags(workers, perWorker)
	var stop atomic.Bool
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := powerClient(w)
			ids := map[int]uint64{}
			for i := 1; i < perWorker && !stop.Load(); i++ {
				b := p.NewBatch()
				id := b.PutMessage(testMessage("t/"+client, make([]byte, 64+i%300)))
				b.AddRef(id)
				b.PutOutbound(client, uint64(i), Outbound{MessageID: id, QoS: 1})
				ids[i] = id
				del := 0
				if i%3 == 0 && i > 2 {
					del = i - 2
					b.DeleteOutbound(client, uint64(del))
					b.Release(ids[del])
					delete(ids, del)
					state[w][del].delSent.Store(true)
				}
				if err := p.CommitWait(b); err != nil {
					t.Error(err)
					return
				}
				state[w][i].put.Store(true)
				if del > 0 {
					state[w][del].del.Store(true)
				}
			}
		}()
	}

	cuts := takePowerCuts(mem, state, 6, 2)
	stop.Store(true)
	wg.Wait()
	st := p.Stats()
	t.Logf("%d batches in %d groups, %d fsyncs, at most %d groups in flight", st.Batches, st.Groups, st.Syncs, st.MaxInFlight)
	if st.MaxInFlight < 2 {
		t.Errorf("at most %d group in flight: no pipelining to test", st.MaxInFlight)
	}

	checkPowerCuts(t, cuts, state)
}

// deliveryFlags is the progress of one delivery in a power-loss test:
// put acknowledged, deletion submitted, deletion acknowledged.
type deliveryFlags struct{ put, delSent, del atomic.Bool }

// newDeliveryFlags returns the flags of perWorker deliveries for each of
// workers writers; writer w writes client powerClient(w), sequence i.
func newDeliveryFlags(workers, perWorker int) [][]deliveryFlags {
	state := make([][]deliveryFlags, workers)
	for w := range state {
		state[w] = make([]deliveryFlags, perWorker)
	}
	return state
}

func powerClient(w int) string { return fmt.Sprintf("w%02d", w) }

// powerCut is a crash clone of the store's filesystem with what was known
// when it was taken: puts and deletions acknowledged before it (read
// before the clone) must be in it; a put whose deletion was submitted
// before it (read after the clone) may be gone.
type powerCut struct {
	fs                  *vfs.MemFS
	put, del, mayBeGone [][]bool
}

// takePowerCuts takes n crash clones of mem at random moments, every
// other one keeping a random half of the unsynced data.
func takePowerCuts(mem *vfs.MemFS, state [][]deliveryFlags, n int, seed uint64) []powerCut {
	read := func(f func(*deliveryFlags) bool) [][]bool {
		dst := make([][]bool, len(state))
		for w := range state {
			dst[w] = make([]bool, len(state[w]))
			for i := range state[w] {
				dst[w][i] = f(&state[w][i])
			}
		}
		return dst
	}
	rng := rand.New(rand.NewPCG(seed, 2))
	var cuts []powerCut
	for k := range n {
		time.Sleep(time.Duration(50+rng.IntN(100)) * time.Millisecond)
		var c powerCut
		c.put = read(func(f *deliveryFlags) bool { return f.put.Load() })
		c.del = read(func(f *deliveryFlags) bool { return f.del.Load() })
		cfg := vfs.CrashCloneCfg{}
		if k%2 == 1 {
			cfg = vfs.CrashCloneCfg{UnsyncedDataPercent: 50, RNG: rand.New(rand.NewPCG(uint64(k), 9))}
		}
		c.fs = mem.CrashClone(cfg)
		c.mayBeGone = read(func(f *deliveryFlags) bool { return f.delSent.Load() })
		cuts = append(cuts, c)
	}
	return cuts
}

// checkPowerCuts opens a store on each cut and checks that it holds every
// acknowledged put not since deleted, none of the acknowledged deletions,
// and no orphan or dangling record.
func checkPowerCuts(t *testing.T, cuts []powerCut, state [][]deliveryFlags) {
	t.Helper()
	for k, c := range cuts {
		o := quietOptions()
		o.Dir = "/db"
		o.FS = c.fs
		q, err := OpenPebble(o)
		if err != nil {
			t.Fatalf("cut %d: open: %v", k, err)
		}
		snap := recoverAll(t, q)
		present := map[string]map[uint64]bool{}
		for client, es := range snap.Outbound {
			present[client] = map[uint64]bool{}
			for _, e := range es {
				present[client][e.Seq] = true
				if snap.Messages[e.MessageID] == nil {
					t.Errorf("cut %d: %s/%d: message %d missing", k, client, e.Seq, e.MessageID)
				}
			}
		}
		putsAcked, lost := 0, 0
		for w := range state {
			client := powerClient(w)
			for i := range state[w] {
				here := present[client][uint64(i)]
				switch {
				case c.del[w][i] && here:
					t.Errorf("cut %d: %s/%d: acknowledged deletion undone", k, client, i)
				case c.put[w][i] && !c.mayBeGone[w][i] && !here:
					lost++
				}
				if c.put[w][i] {
					putsAcked++
				}
			}
		}
		if lost > 0 {
			t.Errorf("cut %d: %d of %d acknowledged puts lost", k, lost, putsAcked)
		}
		if u := usage(t, q); u.OrphanMessages != 0 || u.DanglingEntries != 0 {
			t.Errorf("cut %d: %d orphan messages, %d dangling entries", k, u.OrphanMessages, u.DanglingEntries)
		}
		t.Logf("cut %d: %d acknowledged puts, all present; %d entries recovered", k, putsAcked, len(snap.Messages))
		if err := q.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// crashableStore opens a store on a crashable in-memory filesystem whose
// WAL fsyncs take syncDelay.
func crashableStore(t *testing.T, syncDelay time.Duration) (*vfs.MemFS, *Pebble) {
	mem := vfs.NewCrashableMem()
	inj := &walInjector{}
	inj.delay.Store(int64(syncDelay))
	o := quietOptions()
	o.Dir = "/db"
	o.FS = errorfs.Wrap(mem, inj)
	return mem, openPebble(t, o)
}
