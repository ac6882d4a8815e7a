package server

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/ternmq/tern/codec"
	"github.com/ternmq/tern/trie"
)

func nanotime() int64 { return time.Now().UnixNano() }

// capExpiry bounds a requested session expiry by MaxSessionExpiry.
func (s *Server) capExpiry(secs uint32) uint32 {
	max := uint64(s.opts.MaxSessionExpiry / time.Second)
	if uint64(secs) > max {
		return uint32(max)
	}
	return secs
}

// refuse answers a CONNECT with a failure CONNACK in the client's protocol
// version and closes the connection.
func (c *client) refuse(version byte, code codec.ReasonCode, why string) gnet.Action {
	ack := codec.Connack{ReasonCode: code}
	if version < codec.Version5 {
		ack.ReasonCode = codec.ConnackReturnCode311(code)
	} else {
		c.setReasonAlways(&ack.Props, why)
	}
	c.loop.out = ack.Append(c.loop.out, version)
	c.setCloseWhy(why)
	// Counted, and logged at most once a second with who was refused
	// (limits.go): a connect storm of bad credentials must not flood the log.
	c.loop.srv.refuse(limitConnectRefused, c.id, c.username(), c.remote(), "CONNECT refused: "+why)
	return gnet.Close
}

func (c *client) handleConnect(h codec.FixedHeader, body []byte) gnet.Action {
	l, srv := c.loop, c.loop.srv
	p := &l.connect
	if err := p.Decode(h, body); err != nil {
		var ce *codec.Error
		if errors.As(err, &ce) && ce.Code == codec.UnsupportedProtocolVersion {
			// Answer in 3.1.1 form: return code 0x01 [MQTT-3.1.2-2].
			return c.refuse(codec.Version311, codec.UnsupportedProtocolVersion, err.Error())
		}
		return c.connectFailed(p, err) // v5.go: CONNACK with the reason for 5.0
	}
	v := p.ProtocolVersion
	c.version = v
	c.id = string(p.ClientID)
	assigned := false
	if c.id == "" {
		if v == codec.Version31 || (v == codec.Version311 && !p.CleanStart) {
			// A persistent session needs a name the client knows [MQTT-3.1.3-8].
			return c.refuse(v, codec.ClientIDNotValid, "empty client id with clean session 0")
		}
		c.id, assigned = assignClientID(), true
	}
	if max := srv.opts.Limits.MaxClientIDLength; max > 0 && len(c.id) > max {
		id := c.id[:min(len(c.id), 32)] + "…" // enough to recognise it in a log line
		c.id = id
		srv.refuse(limitClientID, id, string(p.Username), remoteString(c.conn), "client id longer than the limit")
		return c.refuse(v, codec.ClientIDNotValid, "client identifier too long")
	}
	certID := certIdentity(c.conn)
	if certID != "" {
		// The verified client certificate names the client (mTLS,
		// TLSListener.IdentityFrom): it replaces the CONNECT User Name for
		// the Authorizer and session ownership, whatever hooks are set.
		c.coldState().user = certID
	} else {
		c.setUser(c.identity(p)) // auth.go: the AUTH exchange's user, else the CONNECT User Name
	}
	if v == codec.Version5 { // will payload format, topic aliases, enhanced auth (v5.go)
		if act, stop := c.connectV5(h, body, p); stop {
			return act
		}
	}
	if certID != "" {
		// The TLS handshake authenticated the client by its certificate.
	} else if c.enhancedAuthed() || c.flags.has(flagInproc) {
		// The AUTH exchange authenticated the client (auth.go), or it is
		// the embedding program's own in-process client (inproc.go).
	} else if srv.hooks.authenticate != nil || (srv.opts.Authenticator != nil && p.WillFlag && srv.hooks.authorize != nil) {
		return c.connectHooks(p, assigned, true) // hooks.go: Authenticator, hooks, will, off the loop
	} else if a := srv.opts.Authenticator; a != nil {
		return c.authenticateAsync(a, p, assigned) // authpool.go: off the event loop
	} else if !srv.opts.AllowAnonymous && !c.flags.has(flagLoopback) {
		return c.refuse(v, codec.NotAuthorized, "anonymous clients are allowed only on loopback listeners")
	} else if c.cold != nil {
		// Anonymous: a username nobody verified is not an identity, so the
		// ACL sees the anonymous client it is, and sessions are anonymous.
		c.cold.user = ""
	}
	if p.WillFlag && srv.hooks.authorize != nil {
		return c.connectHooks(p, assigned, false) // hooks.go: the will topic, off the loop
	}
	return c.completeConnect(p, assigned)
}

// completeConnect finishes a CONNECT once the client is authenticated: the
// will, the session (attach, takeover), CONNACK, then re-sent and queued
// deliveries. p may be the loop's scratch or a copy kept across an
// asynchronous authentication. Runs on c's loop.
func (c *client) completeConnect(p *codec.Connect, assigned bool) gnet.Action {
	if c.loop.srv.cluster != nil {
		return c.claimThenConnect(p, assigned) // cluster.go: the client id must be ours first
	}
	return c.attachConnect(p, assigned, 0)
}

// attachConnect is completeConnect once the cluster (if any) gave this
// node the client id with claim token.
func (c *client) attachConnect(p *codec.Connect, assigned bool, token uint64) gnet.Action {
	l, srv := c.loop, c.loop.srv
	v := p.ProtocolVersion
	if p.WillFlag {
		if err := trie.ValidateTopic(p.WillTopic, srv.opts.MaxTopicLevels); err != nil {
			return c.fail(codec.Errf(codec.TopicNameInvalid, "MQTT-3.1.3-11", "invalid will topic: %v", err))
		}
		// A will is a PUBLISH made later on the client's behalf: it gets
		// the same authorization, now, while the client can be told.
		if len(p.WillTopic) > 0 && p.WillTopic[0] == '$' {
			srv.refuse(limitSysPublish, c.id, c.username(), remoteString(c.conn), "will topic "+string(p.WillTopic))
			return c.refuse(v, codec.NotAuthorized, "will topics starting with $ are reserved for the broker")
		}
		if a := srv.authorizer(); a != nil && !a.CanPublish(c.id, c.username(), string(p.WillTopic)) {
			srv.refuse(limitACLWill, c.id, c.username(), remoteString(c.conn), "will topic "+string(p.WillTopic))
			return c.refuse(v, codec.NotAuthorized, "not authorized to publish the will topic")
		}
		var props *codec.Properties
		if v == codec.Version5 {
			props = &p.WillProps
			c.coldState().willDelay = p.WillProps.WillDelay
		}
		c.will = newMessage(p.WillTopic, p.WillPayload, p.WillQoS, p.WillRetain, props, l.now, nil)
	}

	// Session lifetime: 3.1.1 clean session 0 keeps the session up to the
	// broker's cap; 5.0 says so with Session Expiry Interval.
	var expiry uint32
	switch {
	case v < codec.Version5 && !p.CleanStart:
		expiry = srv.capExpiry(^uint32(0))
	case v == codec.Version5:
		expiry = srv.capExpiry(p.Props.SessionExpiry)
	}
	keepAlive := p.KeepAlive
	serverKeepAlive := false
	if v == codec.Version5 && keepAlive > srv.opts.MaxKeepAlive {
		keepAlive, serverKeepAlive = srv.opts.MaxKeepAlive, true
	}
	c.keepAlive = keepAlive
	window := srv.opts.ReceiveMaximum
	if v == codec.Version5 {
		if p.Props.Has(codec.PropReceiveMaximum) && int(p.Props.ReceiveMaximum) < window {
			window = int(p.Props.ReceiveMaximum)
		}
		if p.Props.Has(codec.PropMaximumPacketSize) {
			c.v5.maxPacketOut = p.Props.MaximumPacketSize
		}
	}

	// For the introspection API, before attach publishes c as the owner.
	c.since, c.listener = uint32(l.now/1e9), srv.listenerIndexOf(c.conn.LocalAddr())
	sess, present, code, why := srv.attach(c, p.CleanStart, expiry, window)
	if sess == nil {
		c.will = nil
		return c.refuse(v, code, why)
	}
	if !c.clusterOwns(token) {
		c.takenOver.Store(true) // a newer CONNECT elsewhere won while this one was attached
		c.loop.post(func() { c.closeNow(codec.SessionTakenOver, "session taken over by a connection on another node") })
	}
	if present {
		srv.recheckSubscriptions(c, sess)
	}
	srv.resolveDelayedWill(l, c.id, present) // will.go
	sess.mu.Lock()
	srv.putSessionLocked(&l.tx, sess, 0) // a new or changed persistent session
	sess.mu.Unlock()

	ack := codec.Connack{SessionPresent: present}
	if v == codec.Version5 {
		if assigned {
			ack.Props.AssignedClientID = []byte(c.id)
			ack.Props.Set(codec.PropAssignedClientID)
		}
		if serverKeepAlive {
			ack.Props.ServerKeepAlive = keepAlive
			ack.Props.Set(codec.PropServerKeepAlive)
		}
		if p.Props.SessionExpiry != expiry {
			ack.Props.SessionExpiry = expiry
			ack.Props.Set(codec.PropSessionExpiry)
		}
		ack.Props.ReceiveMaximum = uint16(srv.opts.ReceiveMaximum)
		ack.Props.Set(codec.PropReceiveMaximum)
		ack.Props.MaximumPacketSize = uint32(srv.opts.MaxPacketSize)
		ack.Props.Set(codec.PropMaximumPacketSize)
		c.connackV5(&ack.Props, p) // v5.go
	}
	l.out = ack.Append(l.out, v)
	c.state = stateConnected
	c.sess = sess
	srv.stats.connected.Add(1)
	srv.stats.connects.Add(1)
	if l.tx.b != nil && !present {
		// A new persistent session (or a takeover that ended a stored
		// one): its record must be durable before CONNACK promises it,
		// so finishEvent holds the CONNACK until the commit is done and
		// drain sends nothing meanwhile [MQTT-3.2.0-1]. Nothing waits to
		// be sent to a new session anyway.
		c.flags.set(flagConnackHeld)
	} else {
		c.flush() // CONNACK goes before any re-sent or queued PUBLISH
	}
	if srv.log.Enabled(context.Background(), slog.LevelInfo) { // the address's formatting is per connect
		srv.log.Info("client connected", "client_id", c.id, "remote", remoteString(c.conn),
			"protocol", versionName(v), "clean", p.CleanStart, "keepalive", keepAlive, "session_present", present)
	}
	if srv.hooks.onConnect != nil || srv.hooks.onSessCreated != nil || srv.hooks.onSessResumed != nil {
		srv.hookSession(c, present)
		for _, f := range srv.hooks.onConnect {
			f(c.clientInfo())
		}
	}
	if present {
		c.resendInflight()
	}
	c.drain()
	// The connection is already on the timing wheel, at its connect
	// deadline (OnOpen); when that entry comes due, checkDeadline moves it
	// to the keepalive deadline. A second entry is added only when the
	// keepalive would expire before that: one entry per connection, not
	// two for its whole life.
	if due := l.now/1e9 + int64(keepAlive)*3/2 + 1; keepAlive > 0 && due < int64(c.deadline) {
		l.wheel.add(c, due)
	}
	return gnet.None
}

func versionName(v byte) string {
	switch v {
	case codec.Version31:
		return "3.1"
	case codec.Version311:
		return "3.1.1"
	case codec.Version5:
		return "5.0"
	}
	return "unknown"
}

// attach binds c to the session of its client id: a new one, or the
// existing one when the client asked to resume it. A connection that still
// holds the session is told to close (takeover [MQTT-3.1.4-2]); its will
// fires as for any abnormal close. The registry shard lock makes two
// CONNECTs with the same id on different loops resolve one after the other.
//
// A session belongs to the identity that created it: a CONNECT under another
// identity is refused (0x87 Not authorized) without touching the session or
// its connection, so no user can read, kick or wipe another's session. A
// CONNECT that would create a session past Limits.MaxSessions is refused
// with 0x97 Quota exceeded. On refusal the session is nil and code/why say
// what to answer.
func (s *Server) attach(c *client, clean bool, expiry uint32, window int) (sess *session, present bool, code codec.ReasonCode, why string) {
	user := c.username()
	sh := s.sessions.shard(c.id)
	sh.mu.Lock()
	old := sh.m.get(c.id)
	if old != nil {
		old.mu.Lock()
		foreign := !old.dead && old.user != user
		old.mu.Unlock()
		if foreign {
			sh.mu.Unlock()
			s.refuse(limitSessionOwner, c.id, user, remoteString(c.conn), "client id belongs to a session of another identity")
			return nil, false, codec.NotAuthorized, "client identifier in use by another identity"
		}
	} else if max := s.opts.Limits.MaxSessions; max > 0 && s.sessions.count.Load() >= int64(max) {
		sh.mu.Unlock()
		s.refuse(limitSessions, c.id, user, remoteString(c.conn), "session count at the limit")
		return nil, false, codec.QuotaExceeded, "too many sessions"
	}
	var (
		prev  *client
		ended []sessionSub
		left  []outMsg
	)
	if old != nil {
		old.mu.Lock()
		prev = old.owner
		if prev != nil {
			prev.takenOver.Store(true)
			old.owner = nil
			old.setOnline(false)
		}
		// A clean session (3.1.1 clean session 1, 5.0 expiry 0) lasts only
		// as long as its connection and is never reused, even by a takeover
		// that asks to resume [MQTT-3.1.2-6].
		if clean || old.dead || !old.persistent {
			if old.stored && s.store != nil {
				c.loop.tx.batch(s).DeleteSession(old.id)
				old.stored = false
			}
			old.dead = true
			ended = old.clearSubsLocked()
			left = sharedLeftovers(old.f) // share.go
			old.f = nil
			old.mu.Unlock()
		} else {
			sess, present = old, true
			sess.attachLocked(c, expiry, window)
			old.mu.Unlock()
		}
	}
	if sess == nil {
		sess = newSession(c.id, &s.opts)
		sess.user = user
		sess.attachLocked(c, expiry, window) // not yet visible to anyone else
		if old == nil {
			s.sessions.count.Add(1)
		}
		sh.m.put(sess)
	}
	sh.mu.Unlock()
	for _, sub := range ended {
		s.unsubscribeTrie(sub.filter, old)
	}
	if left != nil {
		s.redispatchShared(&c.loop.tx, old, left)
	}
	if prev != nil {
		// On its own loop: a 5.0 client is told 0x8E and the socket
		// lingers so the reason is read before the close [MQTT-3.1.4-3].
		prev.loop.post(func() { prev.closeNow(codec.SessionTakenOver, "session taken over by a new connection") })
	}
	return sess, present, 0, ""
}

// recheckSubscriptions drops the subscriptions of a resumed session that
// the Authorizer no longer allows (the ACL may have changed while the
// client was away, or the broker restarted with a new one).
func (s *Server) recheckSubscriptions(c *client, sess *session) {
	a := s.authorizer()
	if a == nil {
		return
	}
	sess.mu.Lock()
	subs := append([]sessionSub(nil), sess.subs...)
	sess.mu.Unlock()
	dropped := 0
	for _, sub := range subs {
		if a.CanSubscribe(c.id, c.username(), sub.filter) {
			continue
		}
		sess.mu.Lock()
		if sess.removeSubLocked(sub.filter) {
			s.unsubscribeTrie(sub.filter, sess)
			dropped++
		}
		sess.mu.Unlock()
	}
	if dropped > 0 {
		s.log.Warn("resumed session lost subscriptions the ACL no longer allows", "client_id", c.id, "user", c.username(), "dropped", dropped)
	}
}

var clientIDSeq atomic.Uint64

// assignClientID makes a unique id for a client that sent none.
func assignClientID() string {
	return "tern-" + strconv.FormatInt(time.Now().UnixNano(), 36) + "-" + strconv.FormatUint(clientIDSeq.Add(1), 36)
}

// onLoopbackListener reports whether a connection with local address a
// came in through a listener configured on a loopback address, where
// anonymous clients are allowed by default. It is decided by the
// listener's configuration, not by the connection's local address: a
// listener on 0.0.0.0 reached through a local proxy sees 127.0.0.1 locally,
// yet it serves the network. Ports of listeners bound to a non-loopback or
// wildcard address are never "loopback", even for a loopback peer.
func (s *Server) onLoopbackListener(a net.Addr) bool {
	// TLS and WebSocket listeners accept before the gnet engine has booted
	// and recorded the plain listeners' bound addresses (OnBoot): such an
	// early connection waits for it (moments) rather than read them
	// half-written.
	select {
	case <-s.ready:
	case <-s.done:
		return false
	}
	s.publicPortsOnce.Do(func() {
		s.publicPorts = make(map[int]bool)
		for _, list := range [][]net.Addr{s.addrs, s.tlsAddrs, s.wsAddrs} {
			for _, la := range list {
				if t, ok := la.(*net.TCPAddr); ok && !t.IP.IsLoopback() {
					s.publicPorts[t.Port] = true
				}
			}
		}
	})
	t, ok := a.(*net.TCPAddr)
	if !ok {
		return isLoopback(a)
	}
	return t.IP.IsLoopback() && !s.publicPorts[t.Port]
}
