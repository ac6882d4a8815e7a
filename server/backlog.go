package server

import (
	"errors"

	"github.com/ternmq/tern/codec"
	"github.com/ternmq/tern/persist"
	"github.com/ternmq/tern/qos"
)

// Disk-backed queues of persistent sessions.
//
// Every QoS 1/2 delivery to a persistent session is written to the store
// (message once + outbound entry, commit.go) before anyone is acknowledged.
// Memory holds only a window of them: at most backlogWindow deliveries
// queued plus the inflight window. A delivery that does not fit, or that
// arrives while older ones wait on disk, or for a session that is offline,
// stays in the store alone ("spilled"): the flow records that deliveries
// [diskFrom, nextSeq) are only on disk. As the window drains, the owning
// loop pages the next deliveries in, in sequence order (pageIn). A session
// that goes offline gives its in-memory deliveries back (they are all in the
// store) and holds no per-message memory until its client returns. At
// startup only each session's backlog bounds are read, not its messages.
//
// Visibility: a spilled delivery is readable once its batch is applied, so
// the owner is woken after the commit (txn.spills), not after submission.
// Batches of different loops may be applied out of sequence order: pageIn
// stops at the first gap and is woken again when the missing batch lands.
//
// Quotas: a session's stored deliveries are bounded by
// Options.MaxSessionBacklogBytes, the store by MaxStoreBytes and
// MinFreeDiskBytes (checked once a second). A message that a durable
// recipient cannot take is refused as a whole before any delivery
// (route.go): 5.0 publishers get PUBACK/PUBREC 0x97, 3.1.1 publishers get no
// acknowledgement and are disconnected, so they send it again later.
// Nothing acknowledged is dropped.

// backlogWindow is how many deliveries of a persistent session are queued
// in memory at most; the rest waits in the store.
const backlogWindow = 512

// deliverDurableLocked writes a QoS 1/2 delivery to a persistent session
// and queues it in memory if it fits the window. target.mu held.
func (s *Server) deliverDurableLocked(l *loop, t *txn, target *session, f *flow, om outMsg, q byte) {
	owner := target.owner
	m := om.m
	om.seq = f.nextSeq
	f.nextSeq++
	if s.moves.n.Load() != 0 {
		s.moves.record(target, om.seq, m.origin) // cluster_session.go: the session moves between nodes
	}
	s.storeDelivery(t, target, &om, q) // sets stored and the ticket
	f.lastTk = om.ticket
	f.diskBytes += int64(m.size())
	s.saveBacklogBytesLocked(t, target)
	queued := false
	if !f.spilled && owner != nil && f.queue.Len() < backlogWindow {
		var dropped qos.Item[outMsg]
		var hasDropped bool
		dropped, hasDropped, queued = f.queue.Push(qos.Item[outMsg]{Msg: om, QoS: q, Size: m.size()}, qos.DropNewest)
		if hasDropped && dropped.Msg.m != m { // a QoS 0 delivery made room
			f.dropped++
			s.stats.dropped.Add(1)
		}
	}
	if !queued {
		if !f.spilled {
			f.spilled, f.diskFrom = true, om.seq
		}
		target.setCongested(true) // share.go: groups prefer another member
		if owner != nil && (len(t.spills) == 0 || t.spills[len(t.spills)-1] != target) {
			t.spills = append(t.spills, target)
		}
		return
	}
	t.wakes = append(t.wakes, owner)
}

// backlogRefusalLocked says why target cannot take one more stored delivery
// of m (0: it can). target.mu held.
func (s *Server) backlogRefusalLocked(target *session, m *message) limitID {
	if s.storeFull.Load() {
		return limitStoreFull
	}
	if max := s.opts.MaxSessionBacklogBytes; max > 0 && target.f != nil && target.f.diskBytes+int64(m.size()) > max {
		return limitSessionBacklog
	}
	return 0
}

// backlogGranule is how far a session's quota count may move before it is
// written to the store again: 1/64 of the quota, between 1 KiB and 1 MiB
// (1 MiB without a quota). Writing it on every delivery would add a key
// to every batch; a granule adds one per thousands of small messages.
func backlogGranule(o *Options) int64 {
	if o.MaxSessionBacklogBytes <= 0 {
		return 1 << 20
	}
	return min(max(o.MaxSessionBacklogBytes/64, 1<<10), 1<<20)
}

// saveBacklogBytesLocked writes s's quota count (flow.diskBytes) into t
// when it has moved by a granule since it was last written, when it is
// within two granules of the quota (so the quota refuses at the same
// point after a restart), and when the backlog empties. Recovery reads it
// back with the backlog bounds (recover.go): the per-session quota then
// holds across restarts without reading any backlog. What is recovered is
// within a granule of the count, plus what batches committed out of lock
// order reorder (a batch of another loop is submitted after a later
// one): bounded, never cumulative, since each write is the whole count.
// target.mu held.
func (srv *Server) saveBacklogBytesLocked(t *txn, s *session) {
	f := s.f
	if f == nil || srv.store == nil || !s.storable() || s.dead || f.diskBytes == f.diskSaved {
		return
	}
	g := backlogGranule(&srv.opts)
	quota := srv.opts.MaxSessionBacklogBytes
	if d := f.diskBytes - f.diskSaved; d < g && -d < g && f.diskBytes != 0 && (quota <= 0 || f.diskBytes < quota-2*g) {
		return
	}
	t.batch(srv).PutBacklogBytes(s.id, uint64(f.diskBytes))
	f.diskSaved = f.diskBytes
}

// releaseBacklogLocked gives back the in-memory deliveries of a persistent
// session whose client went away: they are all in the store and will be
// paged in again, in order, when it returns. QoS 0 deliveries go (they are
// not kept for absent clients). s.mu held.
func (srv *Server) releaseBacklogLocked(s *session) {
	f := s.f
	if f == nil || srv.store == nil || !s.storable() {
		return
	}
	end := f.nextSeq // the first delivery that was not in memory
	if f.spilled {
		end = f.diskFrom
	}
	lowest := end
	f.pruneSettleTks()
	held := func(om outMsg) {
		if !om.stored {
			return
		}
		lowest = min(lowest, om.seq)
		if tk := om.ticket; tk != nil && !tk.submitted.Load() && (len(f.settleTks) == 0 || f.settleTks[len(f.settleTks)-1] != tk) {
			f.settleTks = append(f.settleTks, tk)
		}
	}
	for _, e := range f.window.Entries() {
		held(e.Msg)
	}
	for {
		it, ok := f.queue.Pop()
		if !ok {
			break
		}
		held(it.Msg)
	}
	f.window.Reset()
	if lowest < end {
		// [lowest, end) held the deliveries in memory and the holes of
		// those done meanwhile: holes there are for good once the
		// batches of the ones held are applied (settleHoles).
		f.holeEnd = max(f.holeEnd, end)
		f.settled = false
		f.settleGen++
	}
	if lowest < f.nextSeq {
		f.spilled, f.diskFrom = true, lowest
	}
}

// settleHoles makes pageIn step over the holes below f.holeEnd once they
// are known to be for good: it commits a marker batch, which the store
// applies after every batch submitted before it, and — if by then every
// batch that wrote a delivery held in memory at the last release had been
// submitted — marks the holes settled when the marker lands, then wakes the
// owner. Otherwise the owner is only woken and asks again. One marker at
// a time per session; f.settling must have been set by the caller, under
// s.mu; called without it (Commit may run done at once).
func (srv *Server) settleHoles(s *session, f *flow, gen uint32, all bool) {
	b := srv.store.NewBatch()
	b.DeleteOutbound(s.id, ^uint64(0)) // a key no delivery uses: the batch writes nothing real
	srv.store.Commit(b, func(error) {
		s.mu.Lock()
		if s.f == f {
			f.settling = false
			if all && f.settleGen == gen {
				f.settled = true
			}
		}
		s.mu.Unlock()
		srv.wakeOwner(s)
	})
}

// settleLocked prepares a settleHoles call: it drops the tickets now
// submitted and reports whether a marker should go (none in flight).
// s.mu held.
func (f *flow) settleLocked() (gen uint32, all, send bool) {
	if f.settling || f.settled {
		return 0, false, false
	}
	f.pruneSettleTks()
	f.settling = true
	return f.settleGen, len(f.settleTks) == 0, true
}

// pruneSettleTks forgets the batches of settleTks submitted by now. s.mu held.
func (f *flow) pruneSettleTks() {
	live := f.settleTks[:0]
	for _, tk := range f.settleTks {
		if !tk.submitted.Load() {
			live = append(live, tk)
		}
	}
	clear(f.settleTks[len(live):])
	f.settleTks = live
}

// errGap stops a page-in at a delivery whose batch is not applied yet.
var errGap = errors.New("gap in the stored backlog")

// pageIn moves the next stored deliveries of c's session into memory, in
// sequence order, up to the window, and returns out with a PUBREL appended
// for each delivery recovered in the AwaitingPubcomp state. Runs on c's
// loop; the store is read without the session lock (publishers keep
// appending meanwhile; only the owner pages in).
//
// A sequence gap means an earlier batch is not applied yet (its sequence
// was taken while the publisher's event was still running): pageIn stops
// there and never skips it — an acknowledged delivery is never given up.
// It is woken again when a spilled batch of the session lands (txn.spills)
// and, once per position, after everything submitted so far is applied
// (wakeAfterApplied). A stored delivery that cannot be read (its entry or
// its message does not decode, or the message is missing: corruption on
// disk) is not a gap: the store reports it at its sequence, and pageIn
// deletes it (tombstoneLocked) and goes on with the rest, in order.
func (c *client) pageIn(out []byte) []byte {
	l, s, srv := c.loop, c.sess, c.loop.srv
	s.mu.Lock()
	f := s.f
	if f == nil || !f.spilled || s.owner != c || srv.store == nil {
		s.mu.Unlock()
		return out
	}
	from, sentEnd := f.diskFrom, f.sentEnd
	room := backlogWindow - f.queue.Len()
	var skipEnd uint64 // holes below it are for good (settleHoles)
	if f.settled {
		skipEnd = f.holeEnd
	}
	s.mu.Unlock()
	if room < backlogWindow/4 {
		return out // still busy with what it has
	}
	paged := l.paged[:0]
	next := from
	_, n, err := srv.store.ReadOutbound(s.id, from, room, func(seq uint64, o persist.Outbound, rec *persist.Message, bad error) error {
		if seq != next && next < skipEnd {
			next = min(seq, skipEnd) // a settled hole: deleted, never to be filled
		}
		if seq != next {
			return errGap
		}
		next = seq + 1
		p := pagedDelivery{seq: seq, state: o.State, qos: o.QoS, packetID: o.PacketID, msgID: o.MessageID, bad: bad, shared: o.Shared}
		if rec != nil && bad == nil {
			p.m, p.bad = messageFromRecord(o.MessageID, rec)
		}
		paged = append(paged, p)
		return nil
	})
	l.paged = paged[:0]
	if err != nil && err != errGap {
		srv.log.Error("reading a session backlog", "client_id", s.id, "err", err)
	}
	var settle, marker, all bool
	var gen uint32
	s.mu.Lock()
	defer func() {
		s.mu.Unlock()
		// Markers are committed without the lock: Commit may call done
		// (which takes it) at once, or block on a full queue.
		if settle {
			srv.settleHoles(s, f, gen, all)
		} else if marker {
			srv.wakeAfterApplied(s)
		}
	}()
	if s.owner != c || f != s.f || f.diskFrom != from {
		return out
	}
	for _, p := range paged {
		om := outMsg{m: p.m, seq: p.seq, stored: true}
		if p.shared && p.m != nil {
			om.share = sharedGroupOf(s.subs, p.m.topic, 0) // redispatched if the session ends (share.go)
		}
		switch {
		case p.bad != nil:
			srv.tombstoneLocked(&l.tx, s, p)
		case p.state == persist.AwaitingPubcomp:
			om.m = &message{} // only PUBREL is sent again
			f.window.Restore(qos.Entry[outMsg]{Msg: om, PacketID: p.packetID, QoS: 2, State: qos.AwaitPubcomp})
			rel := codec.Ack{Type: codec.PUBREL, PacketID: p.packetID}
			out = rel.Append(out, c.version)
		case p.qos > 0 && (p.seq < sentEnd || p.state == persist.AwaitingPuback || p.state == persist.AwaitingPubrec):
			// It was in flight when the client went away: re-sent now,
			// in order, with DUP [MQTT-4.4.0-1], straight into the window.
			st := qos.AwaitPuback
			if p.qos == 2 {
				st = qos.AwaitPubrec
			}
			id := packetIDFor(p.seq)
			f.window.Restore(qos.Entry[outMsg]{Msg: om, PacketID: id, QoS: p.qos, State: st})
			out = c.appendPublish(out, om, p.qos, id, true)
		default:
			if _, _, ok := f.queue.Push(qos.Item[outMsg]{Msg: om, QoS: p.qos, Size: p.m.size()}, qos.DropNewest); !ok {
				return out // the byte bound: the rest stays on disk (diskFrom is p.seq)
			}
		}
		f.diskFrom = p.seq + 1
	}
	short := err == nil && n < room // nothing committed is left after what was read
	if short && skipEnd > f.diskFrom {
		f.diskFrom = skipEnd // only settled holes were left below it
	}
	if f.diskFrom >= f.nextSeq {
		f.spilled = false
		return out
	}
	stuck := err == errGap || short
	switch {
	case stuck && f.diskFrom < f.holeEnd && !f.settled:
		// Below holeEnd the hole may be a delivery deleted while it was
		// in memory: find out (settleHoles) instead of waiting for it.
		gen, all, settle = f.settleLocked()
	case stuck && f.gapCheck != f.diskFrom+1:
		// An earlier batch is still on its way: look again once every batch
		// submitted so far is applied (once per position; later batches
		// wake the owner themselves when they land).
		f.gapCheck = f.diskFrom + 1
		marker = true
	case stuck:
		srv.log.Debug("session backlog waits for a stored delivery", "client_id", s.id, "seq", f.diskFrom)
	}
	return out
}

// pagedDelivery is one stored delivery read back by pageIn.
type pagedDelivery struct {
	m        *message
	seq      uint64
	msgID    uint64
	bad      error // it cannot be delivered: tombstoneLocked
	shared   bool  // delivered through a $share group
	state    persist.OutState
	qos      byte
	packetID uint16
}

// tombstoneLocked deletes a stored delivery of s that cannot be delivered
// (its entry or its message is corrupt or missing on disk), releasing the
// reference it holds when the entry names its message, so the rest of the
// backlog flows. Counted (tern_store_corrupt_total) and logged once per
// entry: the deletion is in t, so the entry is not read again. Its bytes
// stay counted against max_session_backlog_bytes (its size is unknown)
// until the broker restarts. s.mu held.
func (srv *Server) tombstoneLocked(t *txn, s *session, p pagedDelivery) {
	srv.stats.corrupt.Add(1)
	srv.log.Warn("stored delivery cannot be read (corrupt or missing on disk): deleted, the rest of the backlog goes on",
		"client_id", s.id, "seq", p.seq, "message_id", p.msgID, "err", p.bad)
	if !s.stored || s.dead {
		return
	}
	b := t.batch(srv)
	b.DeleteOutbound(s.id, p.seq)
	if p.msgID != 0 {
		b.Release(p.msgID)
	}
}

// wakeOwner schedules a drain of s on its owner's loop, if it has one.
// Safe from any goroutine (the store's committer calls it).
func (srv *Server) wakeOwner(s *session) {
	s.mu.Lock()
	owner := s.owner
	s.mu.Unlock()
	if owner != nil && owner.wakeQueued.CompareAndSwap(false, true) {
		owner.loop.schedule(owner, nil)
	}
}

// wakeAfterApplied wakes s's owner once every batch submitted so far is
// applied: a marker batch queued behind them (the store applies batches in
// submission order) whose completion wakes the owner.
func (srv *Server) wakeAfterApplied(s *session) {
	b := srv.store.NewBatch()
	b.DeleteOutbound(s.id, ^uint64(0)) // a key no delivery uses: the batch writes nothing real
	srv.store.Commit(b, func(error) { srv.wakeOwner(s) })
}

// checkStoreSpace sets storeFull from the store's size and the free space
// of its file system. Runs once a second on the ticker goroutine.
func (srv *Server) checkStoreSpace() {
	if srv.store == nil {
		return
	}
	o := &srv.opts
	if o.MaxStoreBytes <= 0 && o.MinFreeDiskBytes < 0 {
		return
	}
	used, free, err := srv.store.DiskUsage()
	if err != nil {
		return
	}
	full := (o.MaxStoreBytes > 0 && used > uint64(o.MaxStoreBytes)) ||
		(o.MinFreeDiskBytes >= 0 && free < uint64(o.MinFreeDiskBytes))
	if srv.storeFull.Swap(full) != full {
		if full {
			srv.log.Warn("store full: messages for persistent sessions are refused", "store_bytes", used, "free_bytes", free,
				"max_store_bytes", o.MaxStoreBytes, "min_free_disk_bytes", o.MinFreeDiskBytes)
		} else {
			srv.log.Info("store has room again", "store_bytes", used, "free_bytes", free)
		}
	}
}
