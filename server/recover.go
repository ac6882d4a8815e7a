package server

import (
	"fmt"
	"time"

	"github.com/ternmq/tern/persist"
	"github.com/ternmq/tern/trie"
)

// openStore opens the configured store and rebuilds the broker's state
// from it: sessions (offline, with their subscriptions), where each
// session's stored backlog starts and ends (its deliveries stay on disk
// until its client returns), inbound QoS 2 markers, and retained messages.
func (s *Server) openStore() error {
	o := &s.opts
	if o.Durability == DurabilityNone && o.Store == nil {
		return nil
	}
	st := o.Store
	if st == nil {
		mode := persist.ModeSync
		if o.Durability == DurabilityPeriodic {
			mode = persist.ModePeriodic
		}
		// One broker per data directory (datalock.go), checked before
		// Pebble so a second broker says who holds it.
		lock, err := LockDataDir(o.DataDir)
		if err != nil {
			return err
		}
		st, err = persist.Open(persist.Options{Dir: o.DataDir, Mode: mode, SyncInterval: o.SyncInterval, Logger: s.log,
			MaxInFlightGroups: o.MaxInFlightGroups,
			// Half the descriptor reserve: the store's files come out of it.
			MaxOpenFiles: max(o.Limits.FDReserve/2, 16)})
		if err != nil {
			_ = lock.Release()
			return fmt.Errorf("open store in %s: %w", o.DataDir, err)
		}
		s.dirLock = lock
	}
	s.store = st
	start := time.Now()
	// A $share member that expired while the broker was down is kept for
	// now: it is recovered with everyone else and expired right after
	// recovery (below), so its stored group messages go to another member
	// (share.go) instead of going with it.
	if n, err := st.ExpireSessions(start, sharedMember); err != nil {
		return fmt.Errorf("expire sessions: %w", err)
	} else if n > 0 {
		s.log.Info("expired sessions while the broker was down", "sessions", n)
	}
	var corrupt int64
	now := start.UnixNano()
	// Queues stay on disk (backlog.go): only each session's backlog bounds
	// are read, so startup work grows with sessions, not queued messages.
	stats, err := st.Recover(persist.Visitor{
		Session: func(id string, rec *persist.Session) error {
			s.recoverSession(id, rec, now)
			return nil
		},
		Inbound: func(id string, pid uint16, _ persist.Inbound) error {
			if sess := s.sessions.get(id); sess != nil {
				sess.mu.Lock()
				sess.flowLocked(o).inbound.Receive(pid)
				sess.mu.Unlock()
			}
			return nil
		},
		Backlog: func(id string, first, last, bytes uint64) error {
			if sess := s.sessions.get(id); sess != nil {
				sess.mu.Lock()
				f := sess.flowLocked(o)
				f.spilled, f.diskFrom = true, first
				if last >= f.nextSeq {
					f.nextSeq = last + 1
				}
				// The quota count as last saved (backlog.go): the backlog
				// recovered counts against max_session_backlog_bytes.
				f.diskBytes, f.diskSaved = int64(bytes), int64(bytes)
				// Nothing is on its way after a restart: a hole in the
				// backlog is a delivery deleted before, for good.
				f.holeEnd, f.settled = last+1, true

				sess.mu.Unlock()
			}
			return nil
		},
		Retained: func(rec *persist.Message) error {
			m, err := messageFromRecord(0, rec)
			if err != nil {
				corrupt++
				return nil
			}
			s.retainQuota.bytes += int64(m.size()) // recovery keeps what was retained, even over a lowered limit
			s.retained.Set(rec.Topic, m)
			return nil
		},
		Corrupt: func(key []byte, err error) {
			s.log.Warn("skipping corrupt record", "key", fmt.Sprintf("%x", key), "err", err)
		},
		Progress: func(rs persist.RecoveryStats) {
			s.log.Info("recovering", "records", rs.Records, "sessions", rs.Sessions, "outbound", rs.Outbound)
		},
	})
	if err != nil {
		return fmt.Errorf("recover store: %w", err)
	}
	s.expireSessions(time.Now().UnixMilli()) // the $share members kept above
	s.stats.corrupt.Add(uint64(stats.Corrupt + corrupt))
	s.log.Info("store recovered", "dir", o.DataDir, "durability", o.Durability,
		"sessions", stats.Sessions, "with_backlog", stats.Backlogs, "retained", stats.Retained,
		"corrupt_skipped", stats.Corrupt+corrupt, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// sharedMember reports whether a stored session has a $share subscription.
func sharedMember(_ string, rec *persist.Session) bool {
	for _, sub := range rec.Subscriptions {
		if _, _, ok := trie.SplitShared(sub.Filter); ok {
			return true
		}
	}
	return false
}

func (s *Server) recoverSession(id string, rec *persist.Session, now int64) {
	sess := newSession(id, &s.opts)
	sess.persistent, sess.stored = true, true
	sess.expiry = rec.ExpiryInterval
	sess.user = rec.Owner
	sess.version = rec.ProtocolVersion
	sess.offlineAt = now / 1e6
	if rec.DisconnectedAt > 0 {
		sess.offlineAt = rec.DisconnectedAt
	}
	a := s.authorizer()
	dropped := 0
	for _, sub := range rec.Subscriptions {
		// The ACL may have changed while the broker was down, or a reload
		// removed this subscription from the offline session without
		// rewriting its record (reload.go).
		if a != nil && !a.CanSubscribe(id, rec.Owner, sub.Filter) {
			dropped++
			continue
		}
		sess.subs = append(sess.subs, sessionSub{filter: sub.Filter, qos: sub.QoS, opts: sub.Options, id: sub.ID})
		s.subscribeTrie(sub.Filter, subFor(sess, sub.QoS, sub.Options, sub.ID))
	}
	if dropped > 0 {
		s.refuse(limitACLSubscribe, id, rec.Owner, "", fmt.Sprintf("recovered session lost %d subscription(s) the ACL does not allow", dropped))
	}
	sh := s.sessions.shard(id)
	sh.mu.Lock()
	sh.m.put(sess)
	sh.mu.Unlock()
	s.sessions.count.Add(1)
	s.scheduleExpiry(sess, sess.offlineAt+int64(sess.expiry)*1000)
}
