package server

import (
	"sync"

	"github.com/ternmq/tern/internal/timer"
)

// sessionExpiry holds offline persistent sessions by the millisecond they
// expire (a deadline heap checked once a second by the ticker). An entry is
// checked against the session when it comes due, so a reconnect need not
// remove it. mu is a leaf lock: released before any session.mu is taken.
type sessionExpiry struct {
	mu   sync.Mutex
	heap timer.Heap[*session]
}

// scheduleExpiry arranges for sess to be looked at when it may expire: at
// unix millisecond at (offlineAt + expiry). Safe from any goroutine.
func (s *Server) scheduleExpiry(sess *session, at int64) {
	s.expiry.mu.Lock()
	s.expiry.heap.Push(at, sess)
	s.expiry.mu.Unlock()
}

// expireSessions ends the offline sessions whose expiry passed by unix
// millisecond now: never early, at most one tick (a second) late. Runs on
// the ticker goroutine.
func (s *Server) expireSessions(now int64) {
	for {
		s.expiry.mu.Lock()
		sess, ok := s.expiry.heap.PopDue(now)
		s.expiry.mu.Unlock()
		if !ok {
			return
		}
		sess.mu.Lock()
		expired := sess.owner == nil && !sess.dead && sess.offlineAt+int64(sess.expiry)*1000 <= now
		st := s.storedShareLocked(sess)
		sess.mu.Unlock()
		switch {
		case expired && st.to > st.from:
			// Its $share messages are read back from the store first
			// (share.go): possibly a long backlog, so not on the ticker.
			go s.endExpired(sess)
		case expired:
			s.endExpired(sess)
		}
	}
}

// endExpired ends an expired session and waits for its deletion to commit.
func (s *Server) endExpired(sess *session) {
	s.log.Info("session expired", "client_id", sess.id)
	var t txn
	s.endSession(&t, sess)
	if err := s.submitWait(&t); err != nil {
		s.log.Error("deleting expired session", "client_id", sess.id, "err", err)
	}
	for _, f := range s.hooks.onSessExpired {
		f(sess.id)
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
	stored := s.storedShareLocked(sess) // share.go: its groups' messages on disk
	if sess.stored {
		t.batch(s).DeleteSession(sess.id)
		sess.stored = false
	}
	sess.dead = true
	subs := sess.clearSubsLocked()
	waiters := sess.takeWaitersLocked()
	left := sharedLeftovers(sess.f) // share.go
	sess.f = nil
	sess.mu.Unlock()
	for _, sub := range subs {
		s.unsubscribeTrie(sub.filter, sess)
	}
	s.sessions.removeIf(sess.id, sess)
	if stored.to > stored.from {
		s.redispatchStored(sess, stored) // before t deletes them
	}
	if left != nil {
		s.redispatchShared(t, sess, left)
	}
	if waiters != nil {
		s.releasePaced(waiters)
	}
}
