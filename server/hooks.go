package server

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/ternmq/tern/codec"
	"github.com/ternmq/tern/trie"
)

// Hooks are functions the broker calls at points of a client's life and of
// a message's path. Every field is optional; a nil field costs one nil
// check where it would be called (measured: BenchmarkHookPublish, the
// loopback pub/sub path with and without a no-op OnPublish). Options.Hooks
// holds any number of sets, composed in order (see each field). The sets
// are fixed by New: the hot path reads them without a lock.
//
// Where hooks run: "loop" is the event loop of the client concerned —
// the hook must not block (it stalls every connection of that loop) and
// may not call back into a Client or Server method that waits for the
// broker (Client.Publish, Server.Publish, Close). "pool" is the bounded
// hook pool (HookOptions.Workers goroutines): those hooks may block, up to
// HookOptions.Timeout. Byte slices a hook receives are valid only during
// the call.
type Hooks struct {
	// Authenticate decides a CONNECT: nil accepts, an error refuses
	// (a *codec.Error ≥ 0x80 names the reason, otherwise 0x86 Bad user
	// name or password / 3.1.1 return code 4). Runs on the pool, off the
	// event loops, after Options.Authenticator (if any) accepted; may block
	// up to HookOptions.Timeout — past it, or if it panics, the client is
	// refused with 0x88 Server unavailable (3.1.1: 3) or 0x80 Unspecified
	// error and the broker goes on. Verdicts are cached for
	// HookOptions.CacheTTL per (client id, username, password): a changed
	// password takes up to that long to apply. Every set's Authenticate
	// must accept. Not called for in-process clients (Server.Client).
	Authenticate func(ctx context.Context, req AuthRequest) (AuthResult, error)
	// Authorize decides a PUBLISH, a SUBSCRIBE filter and a will topic.
	// Runs on the pool and may block; verdicts are cached for
	// HookOptions.CacheTTL per (action, client id, username, topic or
	// filter), and a cached verdict is read on the loop at the cost of one
	// map lookup. On a cache miss the client's input stops until the
	// verdict is back (other clients go on). A timeout or a panic denies.
	// Denied: PUBACK/PUBREC 0x87 (3.1.1: acknowledged, not routed), SUBACK
	// 0x87 (3.1.1: 0x80), CONNACK 0x87 for a will. Every set's Authorize
	// must allow; Options.Authorizer, if any, is asked first.
	Authorize func(ctx context.Context, req AuthzRequest) bool
	// OnConnect runs on the loop once a client is connected (CONNACK queued).
	OnConnect func(HookClient)
	// OnDisconnect runs on the loop when a connected client's connection
	// ends; reason says why (nil: the client sent DISCONNECT).
	OnDisconnect func(c HookClient, reason error)
	// OnPublish sees every message a client or Server.Publish publishes,
	// after authorization and before routing and retaining, and may rewrite
	// its topic and payload (assign new slices) or drop it. Runs on the
	// publisher's loop (the caller's goroutine for Server.Publish); the
	// sets run in order, each seeing the previous one's rewrite, and the
	// first Drop ends the chain. A dropped QoS 1/2 message is still
	// acknowledged (as one nobody subscribes to). A rewritten topic that
	// is not a valid topic name drops the message (logged).
	OnPublish func(m *HookMessage) PublishAction
	// OnSubscribe runs on the loop for each filter granted.
	OnSubscribe func(c HookClient, filter string, qos byte)
	// OnUnsubscribe runs on the loop for each filter removed.
	OnUnsubscribe func(c HookClient, filter string)
	// OnDelivered runs on the subscriber's loop when a delivery is written
	// to its connection (QoS 1/2: not yet acknowledged).
	OnDelivered func(clientID string, m *HookMessage)
	// OnDropped runs when a delivery is given up: a full queue (on the
	// publisher's loop) or a slow consumer's QoS 0 or a message over the
	// client's Maximum Packet Size (on the subscriber's loop).
	OnDropped func(clientID string, m *HookMessage, reason string)
	// OnExpired runs on the subscriber's loop for a queued message whose
	// Message Expiry Interval passed before it was sent [MQTT-3.3.2-5].
	OnExpired func(clientID string, m *HookMessage)
	// OnSessionCreated and OnSessionResumed run on the loop when a CONNECT
	// starts a new session or resumes one (clean takeovers count as new).
	OnSessionCreated func(HookClient)
	OnSessionResumed func(HookClient)
	// OnSessionExpired runs when an offline session's expiry passed and
	// it was removed: on the ticker goroutine, or on a goroutine of its own
	// for a $share member whose stored group messages are read back first.
	OnSessionExpired func(clientID string)
	// OnWillSent runs when a will is published: on the loop of the client
	// that left, or on the ticker goroutine for a delayed 5.0 will.
	OnWillSent func(clientID string, m *HookMessage)
}

// PublishAction is what an OnPublish hook decides.
type PublishAction uint8

// OnPublish outcomes.
const (
	// Keep routes the message (with the hook's rewrite, if any).
	Keep PublishAction = iota
	// Drop discards the message before routing; it is neither delivered
	// nor retained.
	Drop
)

// HookClient describes a connected client to a hook (Server.ClientInfo,
// in introspect.go, is the fuller snapshot an operator lists).
type HookClient struct {
	ClientID string
	Username string   // the verified identity; "" for an anonymous client
	Remote   net.Addr // "inproc" for an in-process client
	// ProtocolVersion is 3 (3.1), 4 (3.1.1) or 5.
	ProtocolVersion byte
	InProcess       bool // a Client of Server.Client
}

// HookMessage is a message shown to a hook. Topic and Payload are views
// valid only during the call; OnPublish may replace them.
type HookMessage struct {
	ClientID string // the publisher; "" for Server.Publish
	Username string
	Topic    []byte
	Payload  []byte
	QoS      byte
	Retain   bool
}

// AuthRequest is what an Authenticate hook sees of a CONNECT.
type AuthRequest struct {
	ClientID        string
	Username        string
	Password        []byte // a copy; the hook may keep it
	Remote, Local   net.Addr
	ProtocolVersion byte
}

// AuthResult is an accepted CONNECT's outcome.
type AuthResult struct {
	// Identity, if not empty, replaces the CONNECT User Name as the
	// client's identity (for Authorize, the ACL and session ownership):
	// e.g. the account a token belongs to.
	Identity string
}

// AuthzAction is what an AuthzRequest asks for.
type AuthzAction uint8

// Authorization actions.
const (
	AuthzPublish AuthzAction = iota + 1
	AuthzSubscribe
	AuthzWill
)

func (a AuthzAction) String() string {
	switch a {
	case AuthzPublish:
		return "publish"
	case AuthzSubscribe:
		return "subscribe"
	case AuthzWill:
		return "will"
	}
	return "unknown"
}

// AuthzRequest is what an Authorize hook decides.
type AuthzRequest struct {
	Action   AuthzAction
	ClientID string
	Username string
	Topic    string // the topic name, or the filter for AuthzSubscribe
}

// HookOptions bounds the pool that runs Authenticate and Authorize hooks
// and their cache. Go values only (no configuration file keys): they
// matter only to an embedder who sets Hooks.
type HookOptions struct {
	// Workers is the number of goroutines that run blocking hooks, hence
	// how many run at once. Default: DefaultHookWorkers.
	Workers int
	// Timeout bounds one call, queueing included: a CONNECT waiting longer
	// is refused, an authorization denied. Default: DefaultHookTimeout.
	Timeout time.Duration
	// CacheTTL is how long a verdict is reused. Default: DefaultHookCacheTTL;
	// negative: no cache (every CONNECT, and every PUBLISH, asks the hook).
	CacheTTL time.Duration
	// CacheSize bounds the cached verdicts. Default: DefaultHookCacheSize.
	CacheSize int
}

// HookOptions defaults.
const (
	DefaultHookWorkers   = 64
	DefaultHookTimeout   = 5 * time.Second
	DefaultHookCacheTTL  = 30 * time.Second
	DefaultHookCacheSize = 100_000
)

func (o *HookOptions) ensureDefaults() {
	setDefault(&o.Workers, DefaultHookWorkers)
	setDefault(&o.CacheSize, DefaultHookCacheSize)
	if o.Timeout == 0 {
		o.Timeout = DefaultHookTimeout
	}
	if o.CacheTTL == 0 {
		o.CacheTTL = DefaultHookCacheTTL
	}
}

func (o *HookOptions) validate() error {
	var errs []error
	if o.Workers < 0 || o.Workers > 65536 {
		errs = append(errs, fmt.Errorf("HookOptions.Workers: must be 1 to 65536, got %d", o.Workers))
	}
	if o.Timeout < 0 {
		errs = append(errs, fmt.Errorf("HookOptions.Timeout: must be positive, got %v", o.Timeout))
	}
	if o.CacheSize < 0 {
		errs = append(errs, fmt.Errorf("HookOptions.CacheSize: must not be negative, got %d", o.CacheSize))
	}
	return errors.Join(errs...)
}

// hookChain is Options.Hooks flattened per hook, fixed at New: a nil
// slice is a hook nobody set, and the hot path tests only that.
type hookChain struct {
	authenticate  []func(context.Context, AuthRequest) (AuthResult, error)
	authorize     []func(context.Context, AuthzRequest) bool
	onConnect     []func(HookClient)
	onDisconnect  []func(HookClient, error)
	onPublish     []func(*HookMessage) PublishAction
	onSubscribe   []func(HookClient, string, byte)
	onUnsubscribe []func(HookClient, string)
	onDelivered   []func(string, *HookMessage)
	onDropped     []func(string, *HookMessage, string)
	onExpired     []func(string, *HookMessage)
	onSessCreated []func(HookClient)
	onSessResumed []func(HookClient)
	onSessExpired []func(string)
	onWillSent    []func(string, *HookMessage)
	authCache     *verdictCache
	timeout       time.Duration
}

func newHookChain(sets []Hooks, o HookOptions) *hookChain {
	h := &hookChain{timeout: o.Timeout}
	for _, s := range sets {
		if s.Authenticate != nil {
			h.authenticate = append(h.authenticate, s.Authenticate)
		}
		if s.Authorize != nil {
			h.authorize = append(h.authorize, s.Authorize)
		}
		if s.OnConnect != nil {
			h.onConnect = append(h.onConnect, s.OnConnect)
		}
		if s.OnDisconnect != nil {
			h.onDisconnect = append(h.onDisconnect, s.OnDisconnect)
		}
		if s.OnPublish != nil {
			h.onPublish = append(h.onPublish, s.OnPublish)
		}
		if s.OnSubscribe != nil {
			h.onSubscribe = append(h.onSubscribe, s.OnSubscribe)
		}
		if s.OnUnsubscribe != nil {
			h.onUnsubscribe = append(h.onUnsubscribe, s.OnUnsubscribe)
		}
		if s.OnDelivered != nil {
			h.onDelivered = append(h.onDelivered, s.OnDelivered)
		}
		if s.OnDropped != nil {
			h.onDropped = append(h.onDropped, s.OnDropped)
		}
		if s.OnExpired != nil {
			h.onExpired = append(h.onExpired, s.OnExpired)
		}
		if s.OnSessionCreated != nil {
			h.onSessCreated = append(h.onSessCreated, s.OnSessionCreated)
		}
		if s.OnSessionResumed != nil {
			h.onSessResumed = append(h.onSessResumed, s.OnSessionResumed)
		}
		if s.OnSessionExpired != nil {
			h.onSessExpired = append(h.onSessExpired, s.OnSessionExpired)
		}
		if s.OnWillSent != nil {
			h.onWillSent = append(h.onWillSent, s.OnWillSent)
		}
	}
	if o.CacheTTL > 0 && (h.authenticate != nil || h.authorize != nil) {
		h.authCache = &verdictCache{ttl: o.CacheTTL, max: o.CacheSize, m: make(map[string]verdict)}
	}
	return h
}

// blocking reports whether any hook must run on the pool.
func (h *hookChain) blocking() bool { return h.authenticate != nil || h.authorize != nil }

// Errors a refused client or a denied request is given when a hook did
// not answer.
var (
	errHookTimeout = codec.Errf(codec.ServerUnavailable, "", "authentication hook timed out")
	errHookPanic   = codec.Errf(codec.UnspecifiedError, "", "authentication hook failed")
)

// verdictCache holds hook verdicts for CacheTTL, at most max of them.
// Safe for concurrent use; mu is a leaf lock.
type verdictCache struct {
	ttl time.Duration
	max int
	mu  sync.Mutex
	m   map[string]verdict
}

type verdict struct {
	until    int64 // unix nanoseconds
	allow    bool
	identity string
	err      error
}

// get returns the live verdict for key. The string(key) conversion in the
// map index does not allocate.
func (vc *verdictCache) get(key []byte, now int64) (verdict, bool) {
	if vc == nil {
		return verdict{}, false
	}
	vc.mu.Lock()
	v, ok := vc.m[string(key)]
	vc.mu.Unlock()
	if !ok || v.until <= now {
		return verdict{}, false
	}
	return v, true
}

// put stores a verdict; when full it first drops expired verdicts, then
// an arbitrary eighth (map order), so it never grows past max.
func (vc *verdictCache) put(key string, v verdict, now int64) {
	if vc == nil {
		return
	}
	v.until = now + int64(vc.ttl)
	vc.mu.Lock()
	defer vc.mu.Unlock()
	if len(vc.m) >= vc.max {
		for k, old := range vc.m {
			if old.until <= now {
				delete(vc.m, k)
			}
		}
		for k := range vc.m {
			if len(vc.m) < vc.max-vc.max/8 {
				break
			}
			delete(vc.m, k)
		}
	}
	vc.m[key] = v
}

// authzKey builds the cache key of an authorization into dst.
func authzKey(dst []byte, a AuthzAction, clientID, user string, topic []byte) []byte {
	dst = append(dst[:0], 'z', byte(a))
	dst = append(dst, clientID...)
	dst = append(dst, 0)
	dst = append(dst, user...)
	dst = append(dst, 0)
	return append(dst, topic...)
}

// authnKey is the cache key of a CONNECT's credentials: a hash, so the
// cache holds no password.
func authnKey(r *AuthRequest) string {
	h := sha256.New()
	for _, s := range [][]byte{[]byte(r.ClientID), []byte(r.Username), r.Password} {
		var n [4]byte
		n[0], n[1], n[2], n[3] = byte(len(s)>>24), byte(len(s)>>16), byte(len(s)>>8), byte(len(s))
		h.Write(n[:])
		h.Write(s)
	}
	return "n" + string(h.Sum(nil))
}

// runAuthenticate asks every Authenticate hook, recovering a panic into a
// refusal. Pool goroutine.
func (s *Server) runAuthenticate(ctx context.Context, req AuthRequest) (res AuthResult, err error) {
	defer func() {
		if r := recover(); r != nil {
			s.refuse(limitHookPanic, req.ClientID, req.Username, addrString(req.Remote),
				fmt.Sprintf("Authenticate hook panicked: %v", r))
			s.log.Error("Authenticate hook panicked", "client_id", req.ClientID, "panic", r, "stack", string(debug.Stack()))
			res, err = AuthResult{}, errHookPanic
		}
	}()
	for _, f := range s.hooks.authenticate {
		r, err := f(ctx, req)
		if err != nil {
			return AuthResult{}, err
		}
		if r.Identity != "" {
			res.Identity = r.Identity
			req.Username = r.Identity
		}
	}
	return res, nil
}

// runAuthorize asks every Authorize hook; a panic denies. Pool goroutine.
func (s *Server) runAuthorize(ctx context.Context, req AuthzRequest) (ok bool) {
	defer func() {
		if r := recover(); r != nil {
			s.refuse(limitHookPanic, req.ClientID, req.Username, "", fmt.Sprintf("Authorize hook panicked: %v", r))
			s.log.Error("Authorize hook panicked", "client_id", req.ClientID, "panic", r, "stack", string(debug.Stack()))
			ok = false
		}
	}()
	for _, f := range s.hooks.authorize {
		if !f(ctx, req) {
			return false
		}
	}
	return true
}

// onPool runs job on the hook pool with the hook timeout: finish is
// called exactly once, with job's outcome or, past the timeout (queueing
// included), with timedOut. A job still running then finishes in its
// worker and its outcome is dropped. false: the pool's queue is full.
func (s *Server) onPool(job func(ctx context.Context) any, timedOut any, finish func(any)) bool {
	var once atomic.Bool
	end := func(v any) {
		if once.CompareAndSwap(false, true) {
			finish(v)
		}
	}
	t := time.AfterFunc(s.hooks.timeout, func() { end(timedOut) })
	ok := s.auth.submit(func() {
		if once.Load() {
			return // timed out in the queue
		}
		ctx, cancel := context.WithTimeout(context.Background(), s.hooks.timeout)
		v := job(ctx)
		cancel()
		t.Stop()
		end(v)
	})
	if !ok {
		t.Stop()
	}
	return ok
}

// authResult is an Authenticate outcome travelling back to the loop.
type authResult struct {
	res AuthResult
	err error
}

// connectHooks runs the blocking CONNECT checks off the loop: the
// Options.Authenticator (if any), the Authenticate hooks, and the
// Authorize hooks on the will topic. Runs on c's loop; the verdict comes
// back through c.authenticated.
// authn false: the client is already authenticated (or anonymous); only
// the will is checked.
func (c *client) connectHooks(p *codec.Connect, assigned bool, authn bool) gnet.Action {
	srv := c.loop.srv
	cp := cloneConnect(p)
	info := ConnectInfo{ClientID: c.id, Username: c.username(), Password: cp.Password,
		Remote: c.conn.RemoteAddr(), Local: c.conn.LocalAddr(), ProtocolVersion: cp.ProtocolVersion}
	if info.Username == "" {
		info.Username = string(cp.Username) // setUser keeps it only when a hook asks; the hooks do
	}
	req := AuthRequest{ClientID: info.ClientID, Username: info.Username, Password: cp.Password,
		Remote: info.Remote, Local: info.Local, ProtocolVersion: info.ProtocolVersion}
	c.flags.set(flagAuthenticating)
	job := func(ctx context.Context) any {
		if a := srv.opts.Authenticator; a != nil && authn {
			if err := a.Authenticate(info); err != nil {
				return authResult{err: err}
			}
		}
		var r authResult
		if srv.hooks.authenticate != nil && authn {
			key := authnKey(&req)
			if v, ok := srv.hooks.authCache.get([]byte(key), nanotime()); ok {
				r = authResult{res: AuthResult{Identity: v.identity}, err: v.err}
			} else {
				r.res, r.err = srv.runAuthenticate(ctx, req)
				if r.err != errHookPanic && ctx.Err() == nil {
					srv.hooks.authCache.put(key, verdict{identity: r.res.Identity, err: r.err}, nanotime())
				}
			}
			if r.err != nil {
				return r
			}
		}
		if cp.WillFlag && srv.hooks.authorize != nil {
			user := req.Username
			if r.res.Identity != "" {
				user = r.res.Identity
			}
			if !srv.authorizeCached(ctx, AuthzRequest{Action: AuthzWill, ClientID: req.ClientID, Username: user, Topic: string(cp.WillTopic)}) {
				srv.refuse(limitACLWill, req.ClientID, user, addrString(req.Remote), "will topic "+string(cp.WillTopic))
				r.err = codec.Errf(codec.NotAuthorized, "", "not authorized to publish the will topic")
			}
		}
		return r
	}
	ok := srv.onPool(job, authResult{err: errHookTimeout}, func(v any) {
		r := v.(authResult)
		if r.err == errHookTimeout {
			srv.refuse(limitHookTimeout, req.ClientID, req.Username, addrString(req.Remote), "CONNECT: authentication hook timed out")
		}
		c.loop.post(func() { c.hooksDecided(cp, assigned, r) })
	})
	if !ok {
		c.flags.clear(flagAuthenticating)
		srv.refuse(limitAuthQueue, c.id, c.username(), remoteString(c.conn), "authentication queue full")
		return c.refuse(cp.ProtocolVersion, codec.ServerBusy, "server busy: too many CONNECTs waiting for authentication")
	}
	return gnet.None
}

// hooksDecided runs on c's loop with the CONNECT's verdict.
func (c *client) hooksDecided(p *codec.Connect, assigned bool, r authResult) {
	if r.err == nil && r.res.Identity != "" && c.flags.has(flagAuthenticating) && c.state == stateNew {
		c.coldState().user = r.res.Identity
	}
	c.authenticated(p, assigned, r.err)
}

// authorizeCached answers an authorization from the cache or by asking
// the hooks (and caching the answer). Pool goroutine.
func (s *Server) authorizeCached(ctx context.Context, req AuthzRequest) bool {
	key := authzKey(nil, req.Action, req.ClientID, req.Username, []byte(req.Topic))
	if v, ok := s.hooks.authCache.get(key, nanotime()); ok {
		return v.allow
	}
	allow := s.runAuthorize(ctx, req)
	if ctx.Err() == nil {
		s.hooks.authCache.put(string(key), verdict{allow: allow}, nanotime())
	}
	return allow
}

// authzPending is a PUBLISH or SUBSCRIBE held while the Authorize hooks
// decide on its topics, re-handled with their verdicts.
type authzPending struct {
	h        codec.FixedHeader
	body     []byte
	action   AuthzAction
	topics   []string
	verdicts []bool
}

// hookVerdict returns the Authorize hooks' verdict on topic for c, from
// the packet being re-handled or the cache; ok false: unknown yet. Loop.
func (c *client) hookVerdict(a AuthzAction, topic []byte) (allow, ok bool) {
	if c.cold != nil && c.cold.authz != nil {
		for i, t := range c.cold.authz.topics {
			if t == string(topic) && c.cold.authz.action == a {
				return c.cold.authz.verdicts[i], true
			}
		}
	}
	l := c.loop
	l.hookKey = authzKey(l.hookKey, a, c.id, c.username(), topic)
	v, ok := l.srv.hooks.authCache.get(l.hookKey, l.now)
	return v.allow, ok
}

// authorizeAsync holds the packet (h, body) and asks the Authorize hooks
// about topics on the pool; the client reads no input meanwhile. The
// packet is handled again, with the verdicts, on c's loop. A timeout or a
// full pool denies.
func (c *client) authorizeAsync(h codec.FixedHeader, body []byte, a AuthzAction, topics []string) gnet.Action {
	srv := c.loop.srv
	p := &authzPending{h: h, body: append([]byte(nil), body...), action: a, topics: topics}
	id, user := c.id, c.username()
	c.flags.set(flagAuthenticating)
	job := func(ctx context.Context) any {
		v := make([]bool, len(topics))
		for i, t := range topics {
			v[i] = srv.authorizeCached(ctx, AuthzRequest{Action: a, ClientID: id, Username: user, Topic: t})
		}
		return v
	}
	done := func(v any) {
		verdicts, ok := v.([]bool)
		if !ok { // timed out
			srv.refuse(limitHookTimeout, id, user, "", a.String()+": authorization hook timed out")
			verdicts = make([]bool, len(topics))
		}
		p.verdicts = verdicts
		c.loop.post(func() { c.authorized(p) })
	}
	if !srv.onPool(job, nil, done) {
		srv.refuse(limitAuthQueue, id, user, remoteString(c.conn), "authorization queue full: denied")
		done(nil)
	}
	return gnet.None
}

// authorized re-handles a held packet with its verdicts, then whatever
// input arrived meanwhile. Runs on c's loop.
func (c *client) authorized(p *authzPending) {
	if !c.flags.has(flagAuthenticating) || c.state != stateConnected {
		return
	}
	c.flags.clear(flagAuthenticating)
	l := c.loop
	l.now = nanotime()
	c.coldState().authz = p
	act := c.handle(p.h, p.body)
	c.cold.authz = nil
	if act = c.endEvent(act); act == gnet.Close {
		_ = l.el.Close(c.conn)
		return
	}
	if !c.flags.has(flagPaced|flagAuthenticating) && c.conn.InboundBuffered() > 0 {
		if c.onTraffic() == gnet.Close {
			_ = l.el.Close(c.conn)
		}
	}
}

// hookEvent is a delivery outcome drain reports to the hooks once it
// released the session lock.
type hookEvent struct {
	kind uint8 // hookDelivered, hookDropped, hookExpired
	q    byte
	m    *message
}

const (
	hookDelivered uint8 = iota
	hookDroppedSlow
	hookDroppedTooLarge
	hookExpiredMsg
)

// wantsDeliveryHooks reports whether drain must record outcomes.
func (h *hookChain) wantsDeliveryHooks() bool {
	return h.onDelivered != nil || h.onDropped != nil || h.onExpired != nil
}

// fireDeliveryHooks reports drain's recorded outcomes. Loop, no lock held.
func (s *Server) fireDeliveryHooks(l *loop, clientID string) {
	var hm HookMessage
	for i, e := range l.hookEvents {
		switch e.kind {
		case hookDelivered:
			for _, f := range s.hooks.onDelivered {
				f(clientID, hookMessageOf(&hm, e.m, e.q))
			}
		case hookDroppedSlow:
			s.hookDropped(clientID, e.m, e.q, "slow consumer: outbound buffer over max_outbound_bytes")
		case hookDroppedTooLarge:
			s.hookDropped(clientID, e.m, e.q, "larger than the client's Maximum Packet Size")
		case hookExpiredMsg:
			for _, f := range s.hooks.onExpired {
				f(clientID, hookMessageOf(&hm, e.m, e.q))
			}
		}
		l.hookEvents[i] = hookEvent{}
	}
	l.hookEvents = l.hookEvents[:0]
}

// clientInfo describes c to a hook.
func (c *client) clientInfo() HookClient {
	return HookClient{ClientID: c.id, Username: c.username(), Remote: c.conn.RemoteAddr(),
		ProtocolVersion: c.version, InProcess: c.flags.has(flagInproc)}
}

// hookPublish runs the OnPublish chain on (topic, payload) and returns
// the result, or drop. l is the caller's loop (nil: Server.Publish).
func (s *Server) hookPublish(hm *HookMessage) (drop bool) {
	topic := hm.Topic
	for _, f := range s.hooks.onPublish {
		if f(hm) == Drop {
			return true
		}
	}
	if string(hm.Topic) != string(topic) {
		if err := trie.ValidateTopic(hm.Topic, s.opts.MaxTopicLevels); err != nil {
			s.log.Warn("OnPublish rewrote a topic into an invalid one: message dropped",
				"client_id", hm.ClientID, "topic", string(hm.Topic), "err", err)
			return true
		}
	}
	return false
}

// hookMessage fills the loop's scratch HookMessage from a message.
func hookMessageOf(dst *HookMessage, m *message, q byte) *HookMessage {
	*dst = HookMessage{Topic: m.topic, Payload: m.payload, QoS: q, Retain: m.retain}
	if m.from != nil {
		dst.ClientID = m.from.id
	}
	return dst
}

func (s *Server) hookDropped(clientID string, m *message, q byte, reason string) {
	var hm HookMessage
	for _, f := range s.hooks.onDropped {
		f(clientID, hookMessageOf(&hm, m, q), reason)
	}
}

func (s *Server) hookSession(c *client, present bool) {
	list := s.hooks.onSessCreated
	if present {
		list = s.hooks.onSessResumed
	}
	if list == nil {
		return
	}
	info := c.clientInfo()
	for _, f := range list {
		f(info)
	}
}
