package server

import (
	"errors"
	"fmt"
	"net"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/ternmq/tern/codec"
	"github.com/ternmq/tern/trie"
)

// Introspection: what the broker holds, as Go calls. The admin HTTP API
// (adminapi.go) is a thin JSON layer over these methods, so an embedder gets
// the same operations without HTTP.
//
// Concurrency contract, shared by every method in this file: callable from
// any goroutine, including concurrently with each other and with traffic.
// Nothing here holds a lock across I/O or a store wait. A read takes the
// registry shard locks one at a time (only to copy a shard's entries) and
// each session's mutex once, briefly, to copy that session's counters, so
// a listing never stalls an event loop for more than one session's copy;
// what one ClientInfo or SessionInfo reports is consistent for that client
// (taken under its session's mutex), while a list is not a point-in-time
// snapshot of the whole broker (clients come and go while it is read).
// Changes (Kick, DeleteSession, DeleteRetained) run the connection's part
// on the connection's own event loop through its mailbox, and return once
// the change is done (and durable, with a store).

// ErrNotFound is what the introspection methods return (wrapped, with the
// name of what was looked for) when a client, session or retained message
// does not exist.
var ErrNotFound = errors.New("not found")

// ErrServerClosed is returned by a change requested while the broker is
// shutting down.
var ErrServerClosed = errors.New("server closed")

// adminWait bounds how long a change waits for the connection's event loop
// to run it. A loop answers in microseconds; only a stopping engine (or a
// loop wedged by a bug) takes longer, and then the caller gets an error
// instead of hanging.
const adminWait = 5 * time.Second

// ClientInfo describes one client: its session and, while connected, its
// connection. Times are UTC; durations are in seconds as MQTT states them.
type ClientInfo struct {
	ID       string `json:"id"`
	Username string `json:"username,omitempty"` // the authenticated identity; "" for anonymous clients
	// Connected is true while a network connection holds the session. The
	// connection fields below are zero while it is false.
	Connected       bool      `json:"connected"`
	RemoteAddr      string    `json:"remote_addr,omitempty"`
	Listener        string    `json:"listener,omitempty"` // e.g. "tcp://127.0.0.1:1883", "tls://…", "ws://…"
	ProtocolVersion string    `json:"protocol_version"`   // "3.1", "3.1.1" or "5.0" (of the last connection)
	ConnectedSince  time.Time `json:"connected_since,omitzero"`
	KeepAlive       uint16    `json:"keepalive"` // seconds, as granted (0: none)
	// Persistent is true when the session outlives its connection (3.1.1
	// clean session 0, 5.0 Session Expiry > 0); SessionExpiry is that
	// lifetime in seconds after disconnect, capped by max_session_expiry.
	Persistent    bool   `json:"persistent"`
	SessionExpiry uint32 `json:"session_expiry"`
	Subscriptions int    `json:"subscriptions"`
	// Queued counts QoS 0/1/2 deliveries waiting to be sent: in memory
	// (QueuedBytes of them) plus, for a persistent session whose backlog
	// spilled to the store, the ones waiting there.
	Queued      int `json:"queued"`
	QueuedBytes int `json:"queued_bytes"`
	// Inflight counts QoS 1/2 deliveries sent and not yet acknowledged.
	Inflight int `json:"inflight"`
	// Dropped counts deliveries this session lost to queue limits.
	Dropped uint64 `json:"dropped"`
	// OfflineSince is when the session's last connection ended (zero while
	// connected); ExpiresAt when the offline session will be removed.
	OfflineSince time.Time `json:"offline_since,omitzero"`
	ExpiresAt    time.Time `json:"expires_at,omitzero"`
}

// SessionSubscription is one subscription of a session.
type SessionSubscription struct {
	Filter            string `json:"filter"` // as subscribed, "$share/group/…" included
	QoS               byte   `json:"qos"`
	NoLocal           bool   `json:"no_local,omitempty"`
	RetainAsPublished bool   `json:"retain_as_published,omitempty"`
	// Identifier is the 5.0 Subscription Identifier (0: none).
	Identifier uint32 `json:"identifier,omitempty"`
}

// SessionInfo is a session in detail: the client's state plus its
// subscriptions and the inbound QoS 2 flows awaiting PUBREL.
type SessionInfo struct {
	ClientInfo
	SubscriptionList []SessionSubscription `json:"subscription_list"`
	InboundQoS2      int                   `json:"inbound_qos2"`
}

// ClientFilter selects and pages the clients Clients lists. Every set field
// must match. Clients are ordered by id; page with After (a cursor: the
// last id of the previous page, stable while clients come and go) or with
// Offset.
type ClientFilter struct {
	// Search matches a substring of the id, the username or the remote address.
	Search string
	// IDPrefix matches the start of the client id.
	IDPrefix string
	// Username matches the authenticated identity exactly.
	Username string
	// Address matches the start of the remote address ("10.1.", "[::1]:").
	Address string
	// Offline includes sessions without a connection (persistent sessions
	// waiting for their client); by default only connected clients are listed.
	Offline bool
	// After lists only ids greater than it.
	After string
	// Offset skips that many matching clients; Limit returns at most that
	// many (0: all).
	Offset, Limit int
}

// ClientList is one page of clients.
type ClientList struct {
	Clients []ClientInfo `json:"clients"`
	// Total counts every client the filter matched, before paging.
	Total int `json:"total"`
	// Next is the After cursor of the following page; "" on the last page.
	Next string `json:"next,omitempty"`
}

// clientCand is a session a listing may report, with its id for ordering.
type clientCand struct {
	id   string
	sess *session
}

// Clients lists the clients filter selects, ordered by client id.
//
// Cost: one pass over the registry, a shard at a time. What the id, the
// username (fixed for a session's life) and the online flag (an atomic)
// decide is decided under the shard's lock without touching the session;
// only an address filter or search locks each candidate session, after the
// shard's lock is released. Matches stream into a bounded max-heap of
// k = Offset+Limit entries (O(n log k), no slice of the whole fleet), so a
// page of 100 out of 19,000 clients costs one walk; only the page's
// clients are copied out, each under its session's mutex. See the
// concurrency contract above.
func (s *Server) Clients(f ClientFilter) ClientList {
	k := -1 // all
	if f.Limit > 0 {
		k = f.Offset + f.Limit
	}
	var (
		h       idHeap
		total   int
		pending []clientCand
	)
	lockFilter := f.Address != "" || f.Search != ""
	for i := range s.sessions.shards {
		sh := &s.sessions.shards[i]
		sh.mu.Lock()
		for id, sess := range sh.m.all {
			if (f.After != "" && id <= f.After) || !strings.HasPrefix(id, f.IDPrefix) ||
				(!f.Offline && !sess.isOnline()) || (f.Username != "" && sess.user != f.Username) {
				continue
			}
			if lockFilter {
				pending = append(pending, clientCand{id, sess})
				continue
			}
			total++
			h.push(clientCand{id, sess}, k)
		}
		sh.mu.Unlock()
		for _, c := range pending {
			if s.clientMatches(c, &f) {
				total++
				h.push(c, k)
			}
		}
		clear(pending)
		pending = pending[:0]
	}
	page := h.sorted()
	if f.Offset < len(page) {
		page = page[f.Offset:]
	} else {
		page = nil
	}
	out := ClientList{Total: total, Clients: make([]ClientInfo, 0, len(page))}
	for _, c := range page {
		c.sess.mu.Lock()
		if !c.sess.dead {
			out.Clients = append(out.Clients, s.clientInfoLocked(c.sess))
		}
		c.sess.mu.Unlock()
	}
	if f.Limit > 0 && f.Offset+f.Limit < total && len(page) > 0 {
		out.Next = page[len(page)-1].id
	}
	return out
}

// clientMatches applies the filters that need the session's lock (the
// remote address). It is formatted (an allocation) only when a filter
// still needs it: not for a search the id or username already matched.
func (s *Server) clientMatches(c clientCand, f *ClientFilter) bool {
	sess := c.sess
	sess.mu.Lock()
	owner, dead := sess.owner, sess.dead
	var remote net.Addr
	if owner != nil {
		remote = owner.peerAddr() // safe under sess.mu while owner is set; see peerAddr
	}
	sess.mu.Unlock()
	if dead || (owner == nil && !f.Offline) {
		return false
	}
	idOrUser := f.Search != "" && (strings.Contains(c.id, f.Search) || strings.Contains(c.sess.user, f.Search))
	if f.Address == "" && (f.Search == "" || idOrUser) {
		return true
	}
	addr := addrString(remote)
	return (f.Address == "" || strings.HasPrefix(addr, f.Address)) &&
		(f.Search == "" || idOrUser || strings.Contains(addr, f.Search))
}

// idHeap keeps the k candidates with the smallest ids seen (k < 0: all),
// as a max-heap by id once it holds k.
type idHeap struct{ h []clientCand }

func (q *idHeap) push(c clientCand, k int) {
	switch {
	case k < 0:
		q.h = append(q.h, c)
	case len(q.h) < k:
		q.h = append(q.h, c)
		for i := len(q.h) - 1; i > 0; { // sift up
			p := (i - 1) / 2
			if q.h[p].id >= q.h[i].id {
				break
			}
			q.h[p], q.h[i] = q.h[i], q.h[p]
			i = p
		}
	case k > 0 && c.id < q.h[0].id:
		q.h[0] = c
		siftDown(q.h, 0)
	}
}

// sorted returns the kept candidates in id order.
func (q *idHeap) sorted() []clientCand {
	slices.SortFunc(q.h, func(a, b clientCand) int { return strings.Compare(a.id, b.id) })
	return q.h
}

func siftDown(h []clientCand, i int) {
	for {
		l, big := 2*i+1, i
		if l < len(h) && h[l].id > h[big].id {
			big = l
		}
		if r := l + 1; r < len(h) && h[r].id > h[big].id {
			big = r
		}
		if big == i {
			return
		}
		h[i], h[big] = h[big], h[i]
		i = big
	}
}

// collect returns the (id, session) pairs of the registry whose id keep
// accepts, taking each shard's lock only while copying that shard.
func (r *registry) collect(keep func(id string) bool) []clientCand {
	out := make([]clientCand, 0, r.count.Load())
	for i := range r.shards {
		sh := &r.shards[i]
		sh.mu.Lock()
		for id, sess := range sh.m.all {
			if keep(id) {
				out = append(out, clientCand{id, sess})
			}
		}
		sh.mu.Unlock()
	}
	return out
}

// ClientInfo returns one client by id: its session, and its connection if
// it has one. ok is false when no session has that id. (Named ClientInfo,
// not Client, to leave Client to an in-process client.)
func (s *Server) ClientInfo(id string) (info ClientInfo, ok bool) {
	sess := s.sessions.get(id)
	if sess == nil {
		return ClientInfo{}, false
	}
	sess.mu.Lock()
	defer sess.mu.Unlock()
	if sess.dead {
		return ClientInfo{}, false
	}
	return s.clientInfoLocked(sess), true
}

// clientInfoLocked copies what a ClientInfo reports. sess.mu held. The
// connection's fields it reads (listener, since, keepAlive, its address: see peerAddr) are
// written once on its loop before the connection becomes the session's
// owner under sess.mu, so holding sess.mu and seeing owner set orders the
// reads after those writes.
func (s *Server) clientInfoLocked(sess *session) ClientInfo {
	info := ClientInfo{
		ID:              sess.id,
		Username:        sess.user,
		ProtocolVersion: versionName(sess.version),
		Persistent:      sess.persistent,
		SessionExpiry:   sess.expiry,
		Subscriptions:   len(sess.subs),
	}
	if c := sess.owner; c != nil {
		info.Connected = true
		info.RemoteAddr = addrString(c.peerAddr())
		info.Listener = s.listenerName(c.listener)
		info.ConnectedSince = time.Unix(int64(c.since), 0).UTC()
		info.KeepAlive = c.keepAlive
	} else if sess.offlineAt > 0 {
		info.OfflineSince = time.UnixMilli(sess.offlineAt).UTC()
		if sess.persistent {
			info.ExpiresAt = info.OfflineSince.Add(time.Duration(sess.expiry) * time.Second)
		}
	}
	if f := sess.f; f != nil {
		info.Queued = f.queue.Len()
		info.QueuedBytes = f.queue.Bytes()
		info.Inflight = f.window.Len()
		info.Dropped = f.dropped
		if f.spilled && f.nextSeq > f.diskFrom {
			info.Queued += int(f.nextSeq - f.diskFrom)
		}
	}
	return info
}

// listenerList is every bound listener as introspection names it:
// "tcp://addr" for each of Addrs, then "tls://…", then "ws://…". Bound
// once the broker is Ready (the loops only see connections after that).
func (s *Server) listenerList() []string {
	s.listenersOnce.Do(func() {
		for _, l := range []struct {
			scheme string
			addrs  []net.Addr
		}{{"tcp://", s.addrs}, {"tls://", s.tlsAddrs}, {"ws://", s.wsAddrs}} {
			for _, a := range l.addrs {
				s.listenerNames = append(s.listenerNames, l.scheme+a.String())
			}
		}
	})
	return s.listenerNames
}

// listenerIndexOf returns 1 + the index in listenerList of the listener a
// connection with local address local came in through (0: unknown),
// matched by port (and address, unless either is unspecified). A plain
// gnet socket's local address is its listener's address as configured,
// port 0 included: that one is matched by the configured string. Runs on
// the connection's loop at CONNECT; no allocation unless a port is 0.
func (s *Server) listenerIndexOf(local net.Addr) uint8 {
	names := s.listenerList()
	t, ok := local.(*net.TCPAddr)
	if !ok {
		return 0
	}
	if t.Port == 0 {
		if i := slices.Index(s.opts.Listeners, t.String()); i >= 0 && len(s.addrs) == len(s.opts.Listeners) {
			return listenerIndex(i)
		}
		return 0
	}
	i := 0
	for _, addrs := range [][]net.Addr{s.addrs, s.tlsAddrs, s.wsAddrs} {
		for _, a := range addrs {
			if la, ok := a.(*net.TCPAddr); ok && la.Port == t.Port &&
				(la.IP.IsUnspecified() || t.IP.IsUnspecified() || la.IP.Equal(t.IP)) && i < len(names) {
				return listenerIndex(i)
			}
			i++
		}
	}
	return 0
}

func listenerIndex(i int) uint8 {
	if i+1 > 255 {
		return 0
	}
	return uint8(i + 1)
}

// listenerName is the name of listener index i (listenerIndexOf), "" if unknown.
func (s *Server) listenerName(i uint8) string {
	if names := s.listenerList(); i > 0 && int(i) <= len(names) {
		return names[i-1]
	}
	return ""
}

func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}

// Session returns a session in detail (subscriptions, queued and inflight
// counts, when it went offline and when it expires). ok is false when no
// session has that id.
func (s *Server) Session(id string) (info SessionInfo, ok bool) {
	sess := s.sessions.get(id)
	if sess == nil {
		return SessionInfo{}, false
	}
	sess.mu.Lock()
	defer sess.mu.Unlock()
	if sess.dead {
		return SessionInfo{}, false
	}
	info.ClientInfo = s.clientInfoLocked(sess)
	info.SubscriptionList = make([]SessionSubscription, len(sess.subs))
	for i, sub := range sess.subs {
		info.SubscriptionList[i] = sessionSubscription(sub)
	}
	slices.SortFunc(info.SubscriptionList, func(a, b SessionSubscription) int { return strings.Compare(a.Filter, b.Filter) })
	if sess.f != nil {
		info.InboundQoS2 = sess.f.inbound.Len()
	}
	return info, true
}

func sessionSubscription(sub sessionSub) SessionSubscription {
	return SessionSubscription{Filter: sub.filter, QoS: sub.qos, NoLocal: sub.opts&optNoLocal != 0,
		RetainAsPublished: sub.opts&optRetainAsPublished != 0, Identifier: sub.id}
}

// Kick disconnects a connected client, on its event loop, as if the broker
// had closed it for an administrative reason: a 5.0 client is told
// DISCONNECT 0x98 Administrative action (with reason as Reason String)
// [MQTT-3.14.2-1], a 3.1/3.1.1 client's connection is closed; either way
// its will is published (the client did not DISCONNECT) [MQTT-3.1.2-8]
// and its session stays as its expiry says (a persistent session goes
// offline; see DeleteSession to remove it). It returns once the loop has
// closed the connection, or an error wrapping ErrNotFound when the client
// is not connected.
func (s *Server) Kick(id, reason string) error {
	if s.closing.Load() {
		return ErrServerClosed
	}
	sess := s.sessions.get(id)
	var c *client
	if sess != nil {
		sess.mu.Lock()
		if !sess.dead {
			c = sess.owner
		}
		sess.mu.Unlock()
	}
	if c == nil {
		return fmt.Errorf("%w: client %q is not connected", ErrNotFound, id)
	}
	s.log.Info("client kicked by administrator", "client_id", id, "user", sess.user, "reason", reason)
	return s.closeOnLoop(c, kickReason(reason))
}

func kickReason(reason string) string {
	if reason == "" {
		return "disconnected by an administrator"
	}
	return "disconnected by an administrator: " + reason
}

// closeOnLoop closes c on its loop (closeNow) and waits for it.
func (s *Server) closeOnLoop(c *client, why string) error {
	done := make(chan struct{})
	c.loop.post(func() {
		defer close(done)
		if c.state == stateConnected { // not already closing, not a stale pointer to a closed connection
			c.closeNow(codec.AdministrativeAction, why)
		}
	})
	t := time.NewTimer(adminWait)
	defer t.Stop()
	select {
	case <-done:
		return nil
	case <-s.done:
		return ErrServerClosed
	case <-t.C:
		return fmt.Errorf("client %q: its event loop did not run the close within %v", c.id, adminWait)
	}
}

// DeleteSession removes a session and everything it holds: subscriptions,
// queued and inflight deliveries, its stored state (the deletion is durable
// when DeleteSession returns). A connected client is disconnected on its
// loop as by Kick (will published, 5.0 DISCONNECT 0x98); it will find no
// session when it reconnects (Session Present 0). It returns an error
// wrapping ErrNotFound when no session has that id.
func (s *Server) DeleteSession(id string) error {
	if s.closing.Load() {
		return ErrServerClosed
	}
	sess := s.sessions.get(id)
	if sess == nil {
		return fmt.Errorf("%w: session %q", ErrNotFound, id)
	}
	sess.mu.Lock()
	owner, dead := sess.owner, sess.dead
	sess.mu.Unlock()
	if dead {
		return fmt.Errorf("%w: session %q", ErrNotFound, id)
	}
	// End the session first: from here on its connection, until its loop
	// closes it, works on a dead session (deliveries dropped, SUBSCRIBE
	// refused), exactly as a connection whose session was taken over.
	var t txn
	s.endSession(&t, sess)
	s.log.Info("session deleted by administrator", "client_id", id, "user", sess.user, "connected", owner != nil)
	err := s.submitWait(&t)
	if owner != nil {
		if cerr := s.closeOnLoop(owner, "session deleted by an administrator"); err == nil {
			err = cerr
		}
	}
	return err
}

// RetainedInfo is one retained message.
type RetainedInfo struct {
	Topic   string `json:"topic"`
	QoS     byte   `json:"qos"`
	Payload []byte `json:"payload"` // base64 in JSON
	// Size is the payload's length (Payload may be a truncated copy in the
	// HTTP API).
	Size int `json:"size"`
	// ExpiresAt is when a 5.0 Message Expiry Interval ends (zero: never).
	ExpiresAt time.Time `json:"expires_at,omitzero"`
}

// Retained lists up to limit retained messages whose topic matches filter
// (an MQTT filter: "#" lists all but the $SYS topics [MQTT-4.7.2-1],
// "$SYS/#" those), each with a copy of its payload. limit 0 means all.
// The order is the topic tree's, not sorted. It walks only the subtrees
// filter can match and holds no lock while copying.
func (s *Server) Retained(filter string, limit int) ([]RetainedInfo, error) {
	if err := trie.ValidateFilter([]byte(filter), s.opts.MaxTopicLevels); err != nil {
		return nil, fmt.Errorf("invalid filter %q: %w", filter, err)
	}
	if strings.HasPrefix(filter, "$share/") {
		return nil, fmt.Errorf("invalid filter %q: a shared subscription filter matches no retained message [MQTT-4.8.2-6]", filter)
	}
	var out []RetainedInfo
	s.retained.Match(filter, func(topic string, m *message) bool {
		ri := RetainedInfo{Topic: topic, QoS: m.qos, Payload: slices.Clone(m.payload), Size: len(m.payload)}
		if m.expiresAt != 0 {
			ri.ExpiresAt = time.Unix(0, m.expiresAt).UTC()
		}
		out = append(out, ri)
		return limit <= 0 || len(out) < limit
	})
	return out, nil
}

// DeleteRetained clears the retained message on topic, as a retained
// PUBLISH with an empty payload would [MQTT-3.3.1-10], durably when it
// returns. It returns an error wrapping ErrNotFound when nothing is
// retained there.
func (s *Server) DeleteRetained(topic string) error {
	if err := trie.ValidateTopic([]byte(topic), s.opts.MaxTopicLevels); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidTopic, err)
	}
	if _, ok := s.retained.Get(topic); !ok {
		return fmt.Errorf("%w: no retained message on %q", ErrNotFound, topic)
	}
	s.retainQuota.remove(s, topic)
	var t txn
	if s.store != nil && !isSysTopic([]byte(topic)) { // $SYS topics are never stored (sys.go)
		t.batch(s).DeleteRetained(topic)
	}
	s.log.Info("retained message deleted by administrator", "topic", topic)
	return s.submitWait(&t)
}

// FilterSubscribers lists the sessions subscribed with one filter.
type FilterSubscribers struct {
	Filter      string       `json:"filter"`
	Subscribers []Subscriber `json:"subscribers"`
}

// Subscriber is one session's subscription to a filter.
type Subscriber struct {
	ClientID  string `json:"client_id"`
	Connected bool   `json:"connected"`
	QoS       byte   `json:"qos"`
}

// SubscriptionList is what Subscriptions returns.
type SubscriptionList struct {
	Filters []FilterSubscribers `json:"filters"`
	// Total counts the subscriptions matched (a session per filter);
	// Truncated says limit left some out.
	Total     int  `json:"total"`
	Truncated bool `json:"truncated,omitempty"`
}

// Subscriptions lists which sessions subscribe with which filter, ordered
// by filter then client id. filter "" lists every filter; otherwise only
// that exact filter (as subscribed, "$share/group/…" included). limit
// bounds the subscriptions returned (0: all) and the memory the call
// holds (2×limit entries). One pass over the sessions, each locked briefly.
func (s *Server) Subscriptions(filter string, limit int) SubscriptionList {
	type entry struct {
		filter string
		sub    Subscriber
	}
	byKey := func(a, b entry) int {
		if c := strings.Compare(a.filter, b.filter); c != 0 {
			return c
		}
		return strings.Compare(a.sub.ClientID, b.sub.ClientID)
	}
	// found stays under 2×limit entries: past it, it is sorted and cut to
	// the first limit (amortised O(n log limit)), so memory is bounded by
	// the page, not by the fleet's subscriptions.
	var found []entry
	total := 0
	add := func(e entry) {
		total++
		found = append(found, e)
		if limit > 0 && len(found) >= 2*limit {
			slices.SortFunc(found, byKey)
			clear(found[limit:])
			found = found[:limit]
		}
	}
	for _, c := range s.sessions.collect(func(string) bool { return true }) {
		sess := c.sess
		sess.mu.Lock()
		if !sess.dead {
			online := sess.owner != nil
			if filter != "" {
				if i := sess.findSubLocked(filter); i >= 0 {
					add(entry{filter, Subscriber{sess.id, online, sess.subs[i].qos}})
				}
			} else {
				for _, sub := range sess.subs {
					add(entry{sub.filter, Subscriber{sess.id, online, sub.qos}})
				}
			}
		}
		sess.mu.Unlock()
	}
	slices.SortFunc(found, byKey)
	out := SubscriptionList{Total: total}
	if limit > 0 && len(found) > limit {
		found = found[:limit]
	}
	out.Truncated = len(found) < total
	for _, e := range found {
		if n := len(out.Filters); n == 0 || out.Filters[n-1].Filter != e.filter {
			out.Filters = append(out.Filters, FilterSubscribers{Filter: e.filter})
		}
		last := &out.Filters[len(out.Filters)-1]
		last.Subscribers = append(last.Subscribers, e.sub)
	}
	return out
}

// BrokerInfo describes the running broker.
type BrokerInfo struct {
	Version       string    `json:"version"`
	GoVersion     string    `json:"go_version"`
	StartedAt     time.Time `json:"started_at"`
	UptimeSeconds int64     `json:"uptime_seconds"`
	Durability    string    `json:"durability"`
	EventLoops    int       `json:"event_loops"`
	// Listeners are the bound addresses, by scheme ("tcp://…", "tls://…",
	// "ws://…", "http://…" for the admin listener).
	Listeners []string `json:"listeners"`
	// Connections counts open network connections (CONNECT done or not);
	// Connected those that completed CONNECT.
	Connections     int64  `json:"connections"`
	Connected       int64  `json:"connected"`
	Sessions        int64  `json:"sessions"`
	Subscriptions   int    `json:"subscriptions"`
	Retained        int    `json:"retained"`
	MessagesIn      uint64 `json:"messages_in"`
	MessagesOut     uint64 `json:"messages_out"`
	MessagesDropped uint64 `json:"messages_dropped"`
	StoreAvailable  bool   `json:"store_available"`
}

// Info returns the broker's version, uptime, listeners and counts.
func (s *Server) Info() BrokerInfo {
	st := s.Stats()
	bi := BrokerInfo{
		Version: s.opts.Version, GoVersion: runtime.Version(), StartedAt: s.started.UTC(),
		UptimeSeconds: int64(time.Since(s.started).Seconds()), Durability: string(s.opts.Durability),
		EventLoops: s.opts.EventLoops, Connections: s.conns.Load(), Connected: st.Connected,
		Sessions: st.Sessions, Subscriptions: st.Subscriptions, Retained: st.Retained,
		MessagesIn: st.MessagesIn, MessagesOut: st.MessagesOut, MessagesDropped: st.MessagesDropped,
		StoreAvailable: s.store == nil || st.Store.Unavailable == nil,
	}
	bi.Listeners = append(bi.Listeners, s.listenerList()...)
	if a := s.adminAddr; a != nil {
		bi.Listeners = append(bi.Listeners, "http://"+a.String())
	}
	return bi
}

// AdminAddr returns the admin HTTP listener's bound address (nil when
// AdminListen is off), valid after Ready.
func (s *Server) AdminAddr() net.Addr { return s.adminAddr }
