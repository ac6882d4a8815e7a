package server

import "container/heap"

// expiry of offline persistent sessions: a min-heap by deadline. An entry is
// checked against the session when it comes due, so reconnects need not
// remove it.
type expiryEntry struct {
	at int64
	s  *session
}

type expiryHeap []expiryEntry

func (h expiryHeap) Len() int { return len(h) }

func (h expiryHeap) Less(i, j int) bool { return h[i].at < h[j].at }

func (h expiryHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }

func (h *expiryHeap) Push(x any) { *h = append(*h, x.(expiryEntry)) }

func (h *expiryHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}

func (s *Server) scheduleExpiry(sess *session, at int64) {
	s.expiryMu.Lock()
	heap.Push(&s.expiry, expiryEntry{at: at, s: sess})
	s.expiryMu.Unlock()
}

func (s *Server) expireSessions(now int64) {
	for {
		s.expiryMu.Lock()
		if len(s.expiry) == 0 || s.expiry[0].at > now {
			s.expiryMu.Unlock()
			return
		}
		e := heap.Pop(&s.expiry).(expiryEntry)
		s.expiryMu.Unlock()
		sess := e.s
		sess.mu.Lock()
		expired := sess.owner == nil && !sess.dead && sess.offlineAt+int64(sess.expiry) <= now
		sess.mu.Unlock()
		if expired {
			s.log.Info("session expired", "client_id", sess.id)
			var t txn
			s.endSession(&t, sess)
			if err := s.submitWait(&t); err != nil {
				s.log.Error("deleting expired session", "client_id", sess.id, "err", err)
			}
		}
	}
}

// endSession removes a session and everything it holds, in memory and (in
// t) in the store. The caller must not hold sess.mu.
func (s *Server) endSession(t *txn, sess *session) {
	sess.mu.Lock()
	if sess.dead {
		sess.mu.Unlock()
		return
	}
	if sess.stored {
		t.batch(s).DeleteSession(sess.id)
		sess.stored = false
	}
	sess.dead = true
	subs := sess.clearSubsLocked()
	sess.f = nil
	sess.mu.Unlock()
	for _, sub := range subs {
		s.subs.Unsubscribe(sub.filter, sess)
	}
	s.sessions.removeIf(sess.id, sess)
}
