package server

import (
	"errors"
	"fmt"
	"time"

	"github.com/ternmq/tern/server/auth"
)

// Reload: configuration that changes while the broker runs.
//
// Server.Reload re-reads Options.PasswordFile and Options.ACLFile and then
// runs every hook registered with OnReload (tern serve registers the log
// level; New registers the TLS certificates, tls_certificates). Each item is all or
// nothing: a file that does not parse is rejected with an error naming it
// and its bad lines, and the configuration it would have replaced stays in
// force; items that did load take effect (a bad ACL file does not hold back
// a good password file). Nothing reload does drops a connection.
//
// The password file is swapped inside the Authenticator
// (auth.PasswordFile.Replace): connected clients stay connected, the next
// CONNECT is checked against the new users, and the failed-login limiter
// with its lockouts carries over.
//
// The ACL is one atomic pointer (Server.authz): event loops load it once
// per decision without a lock, so a PUBLISH or SUBSCRIBE is decided wholly
// by the old rules or wholly by the new ones. After the swap, subscriptions
// the new ACL no longer allows are removed:
//
//   - an online session, on its connection's event loop, as an UNSUBSCRIBE
//     would be (trie, session, and the session record in the loop's next
//     commit, so it is ordered with that client's other writes);
//   - an offline session, in memory at once (it stops collecting messages
//     from the removed filters); its stored record is rewritten when the
//     client returns, and a restart re-checks recovered subscriptions
//     against the ACL too (recover.go), so the removal survives both.
//
// Messages already queued for a removed subscription were authorized when
// they were routed and are still delivered. MQTT has no packet telling a
// client its subscription was removed; the client is not disconnected, even
// if it lost every subscription: it may still be allowed to publish, and
// what it may not do is refused per operation (SUBACK 0x87, PUBACK 0x87 on
// 5.0), each refusal logged (limits acl_subscribe, acl_publish).

// authzRef boxes the Authorizer for the atomic pointer (nil: allow all).
type authzRef struct{ a Authorizer }

// authorizer returns the Authorizer in force, or nil. Lock-free; safe from
// any goroutine.
func (s *Server) authorizer() Authorizer {
	if r := s.authz.Load(); r != nil {
		return r.a
	}
	return nil
}

// reloader is one named OnReload hook.
type reloader struct {
	name string
	fn   func() error
}

// loadAuthFiles loads Options.PasswordFile and ACLFile into the
// Authenticator and Authorizer. Called by New.
func (s *Server) loadAuthFiles() error {
	o := &s.opts
	var errs []error
	if o.PasswordFile != "" {
		pf, err := auth.LoadPasswordFile(o.PasswordFile)
		if err != nil {
			errs = append(errs, fmt.Errorf("password_file %s: %w", o.PasswordFile, err))
		} else {
			s.pwFile, o.Authenticator = pf, pf
		}
	}
	if o.ACLFile != "" {
		acl, err := auth.LoadACLFile(o.ACLFile)
		if err != nil {
			errs = append(errs, fmt.Errorf("acl_file %s: %w", o.ACLFile, err))
		} else {
			o.Authorizer = acl
		}
	}
	if o.Authorizer != nil {
		s.authz.Store(&authzRef{o.Authorizer})
	}
	return errors.Join(errs...)
}

// OnReload registers fn to run on every Reload, after the password and ACL
// files, in registration order, under name (which errors and logs use).
// fn must leave the configuration it manages unchanged when it returns an
// error. Safe to call from any goroutine, before or after Serve; fn runs on
// the goroutine that called Reload, never concurrently with another
// reload, and must not itself call Reload or OnReload (they wait for the
// reload in progress).
func (s *Server) OnReload(name string, fn func() error) {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	s.reloaders = append(s.reloaders, reloader{name, fn})
}

// Reload re-reads the password file and the ACL file (when configured) and
// runs the OnReload hooks; see the comment at the top of reload.go. It
// returns every item's error joined, each naming its item; the items that
// failed keep their previous configuration. Safe to call from any
// goroutine; concurrent calls run one after the other. It returns once
// online sessions have been re-checked against a changed ACL (or after 10
// seconds if their event loops do not answer).
func (s *Server) Reload() error {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	start := time.Now()
	var errs, done []string
	fail := func(name string, err error) {
		errs = append(errs, name+": "+err.Error())
		s.log.Error("reload: kept the previous configuration", "item", name, "err", err)
	}
	o := &s.opts
	if o.PasswordFile != "" && s.pwFile != nil {
		if pf, err := auth.LoadPasswordFile(o.PasswordFile); err != nil {
			fail("password_file "+o.PasswordFile, err)
		} else {
			s.pwFile.Replace(pf)
			done = append(done, "password_file")
			s.log.Info("reload: password file", "path", o.PasswordFile, "users", pf.Len())
		}
	}
	if o.ACLFile != "" {
		if acl, err := auth.LoadACLFile(o.ACLFile); err != nil {
			fail("acl_file "+o.ACLFile, err)
		} else {
			s.authz.Store(&authzRef{acl})
			sessions, subs := s.recheckACL()
			done = append(done, "acl_file")
			s.log.Info("reload: ACL file", "path", o.ACLFile, "sessions_changed", sessions, "subscriptions_removed", subs)
		}
	}
	for _, r := range s.reloaders {
		if err := r.fn(); err != nil {
			fail(r.name, err)
		} else {
			done = append(done, r.name)
		}
	}
	s.reloads.Add(1)
	if len(errs) > 0 {
		s.reloadFailures.Add(1)
	}
	s.log.Info("reload finished", "reloaded", done, "failed", len(errs), "took", time.Since(start).Round(time.Microsecond))
	if len(errs) == 0 {
		return nil
	}
	err := errors.New(errs[0])
	for _, e := range errs[1:] {
		err = errors.Join(err, errors.New(e))
	}
	return err
}

// recheckACL removes, from every session, the subscriptions the Authorizer
// now in force refuses. It returns how many sessions lost subscriptions and
// how many subscriptions went. Runs on the Reload goroutine.
func (s *Server) recheckACL() (sessions, removed int) {
	a := s.authorizer()
	if a == nil {
		return 0, 0
	}
	var all []*session
	for i := range s.sessions.shards {
		sh := &s.sessions.shards[i]
		sh.mu.Lock()
		for _, sess := range sh.m.all {
			all = append(all, sess)
		}
		sh.mu.Unlock()
	}
	type result struct{ removed int }
	results := make(chan result, len(all))
	posted := 0
	for _, sess := range all {
		sess.mu.Lock()
		owner := sess.owner
		if owner == nil && !sess.dead {
			n := s.dropRefusedSubsLocked(a, sess, sess.id, sess.user)
			sess.mu.Unlock()
			if n > 0 {
				sessions++
				removed += n
				s.refuse(limitACLSubscribe, sess.id, sess.user, "", fmt.Sprintf("ACL reload removed %d subscription(s) of an offline session", n))
			}
			continue
		}
		sess.mu.Unlock()
		if owner == nil || s.closing.Load() {
			continue // closing: the loops may no longer run tasks, and the sessions are going
		}
		posted++
		owner.loop.post(func() { results <- result{owner.recheckACLOnLoop(a, sess)} })
	}
	timeout := time.After(10 * time.Second)
	for range posted {
		select {
		case r := <-results:
			if r.removed > 0 {
				sessions++
				removed += r.removed
			}
		case <-timeout:
			s.log.Warn("reload: some event loops did not re-check their sessions within 10s; they will when they run")
			return sessions, removed
		}
	}
	return sessions, removed
}

// recheckACLOnLoop removes sess's subscriptions a refuses, on c's loop, if
// c still owns sess; the session record goes into the loop's txn, which
// the loop's task runner commits (loop.drainRemote).
func (c *client) recheckACLOnLoop(a Authorizer, sess *session) int {
	if c.state != stateConnected || c.sess != sess {
		return 0
	}
	srv := c.loop.srv
	sess.mu.Lock()
	n := srv.dropRefusedSubsLocked(a, sess, c.id, c.username())
	if n > 0 {
		srv.putSessionLocked(&c.loop.tx, sess, 0)
	}
	sess.mu.Unlock()
	if n > 0 {
		srv.refuse(limitACLSubscribe, c.id, c.username(), c.remote(), fmt.Sprintf("ACL reload removed %d subscription(s)", n))
	}
	// The will was authorized at CONNECT like a PUBLISH; one the new ACL
	// refuses is dropped, as its CONNECT would now be refused.
	if w := c.will; w != nil && !a.CanPublish(c.id, c.username(), string(w.topic)) {
		c.will = nil
		srv.refuse(limitACLWill, c.id, c.username(), c.remote(), "ACL reload dropped the will on "+string(w.topic))
	}
	return n
}

// dropRefusedSubsLocked removes sess's subscriptions a refuses for
// (clientID, user) from the session and the trie. sess.mu held (the trie
// is updated under it, as SUBSCRIBE does).
func (s *Server) dropRefusedSubsLocked(a Authorizer, sess *session, clientID, user string) int {
	if sess.dead {
		return 0
	}
	var refused []string
	for _, sub := range sess.subs {
		if !a.CanSubscribe(clientID, user, sub.filter) {
			refused = append(refused, sub.filter)
		}
	}
	for _, f := range refused {
		if sess.removeSubLocked(f) {
			s.unsubscribeTrie(f, sess) // cluster.go: the cluster interest too
		}
	}
	return len(refused)
}
