package auth

import (
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ternmq/tern/codec"
)

// A Limiter slows online password guessing. It counts failed
// authentications per user name and per source address in token buckets:
// each key may fail a burst of N times, and earns one more failure every
// Window/N. A key whose bucket is empty is locked out: its attempts are
// refused at once, before any password is checked, with ErrLockedOut
// (0x8A Banned to a 5.0 client, return code 5 Not authorized to 3.1.1).
//
// Both kinds matter: the per-user bucket bounds the guesses against one
// account however many addresses an attacker has; the per-address bucket
// bounds how many accounts one address can try. Failures for user names
// that do not exist count like any other, so a lockout does not tell which
// users exist. Source addresses are keyed by IPv4 address or IPv6 /64
// (one host commonly holds a whole /64).
//
// A lockout also refuses the right password: that is what stops guessing,
// and it means an attacker can keep one user, or every client behind one
// NAT address, locked out. Hence the per-address default is looser than
// the per-user one; a deployment with many devices behind one address may
// raise it or turn it off.
//
// Memory is bounded: each kind remembers at most MaxTracked keys, forgetting
// the least recently failed first, and forgets a key whose bucket is full
// again. A Limiter is safe for concurrent use; a nil *Limiter limits
// nothing. Lockouts are logged at Warn, at most one line a second.
type Limiter struct {
	users, addrs bucketTable
	log          *slog.Logger
	now          func() time.Time

	failures, refused, lockouts atomic.Uint64
	lastLog                     atomic.Int64 // unix nanoseconds
	suppressed                  atomic.Uint64
}

// LimiterConfig configures a Limiter. Zero fields take the defaults.
type LimiterConfig struct {
	// PerUser is the burst of failures one user name may have; it refills
	// at PerUser per Window. Default 10; negative: no per-user limit.
	PerUser int
	// PerAddress is the same for one source address. Default 30;
	// negative: no per-address limit.
	PerAddress int
	// Window is the refill period. Default one minute.
	Window time.Duration
	// MaxTracked bounds the keys remembered of each kind. Default 100,000
	// (about 12 MB per kind when full: some 115 bytes a key).
	MaxTracked int
	// Logger receives lockout lines. Default slog.Default().
	Logger *slog.Logger
}

// Limiter defaults.
const (
	DefaultFailuresPerUser    = 10
	DefaultFailuresPerAddress = 30
	DefaultFailureWindow      = time.Minute
	DefaultMaxTracked         = 100_000
)

// ErrLockedOut is what an attempt from a locked-out user or address is
// refused with.
var ErrLockedOut = codec.Errf(codec.Banned, "", "too many failed authentications, try again later")

// NewLimiter returns a Limiter with cfg's settings.
func NewLimiter(cfg LimiterConfig) *Limiter {
	if cfg.PerUser == 0 {
		cfg.PerUser = DefaultFailuresPerUser
	}
	if cfg.PerAddress == 0 {
		cfg.PerAddress = DefaultFailuresPerAddress
	}
	if cfg.Window <= 0 {
		cfg.Window = DefaultFailureWindow
	}
	if cfg.MaxTracked <= 0 {
		cfg.MaxTracked = DefaultMaxTracked
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	l := &Limiter{log: cfg.Logger, now: time.Now}
	l.users.init("user", cfg.PerUser, cfg.Window, cfg.MaxTracked)
	l.addrs.init("address", cfg.PerAddress, cfg.Window, cfg.MaxTracked)
	return l
}

// LimiterStats are a Limiter's counters since it was made.
type LimiterStats struct {
	Failures uint64 // failed authentications recorded
	Refused  uint64 // attempts refused while locked out
	Lockouts uint64 // times a user name or address became locked out
	Tracked  int    // user names and addresses remembered now
}

// Stats returns the counters (zero for a nil Limiter).
func (l *Limiter) Stats() LimiterStats {
	if l == nil {
		return LimiterStats{}
	}
	return LimiterStats{Failures: l.failures.Load(), Refused: l.refused.Load(),
		Lockouts: l.lockouts.Load(), Tracked: l.users.len() + l.addrs.len()}
}

// Allow returns ErrLockedOut if user (when not empty) or remote is locked
// out, and nil otherwise. Call it before checking credentials.
func (l *Limiter) Allow(user string, remote net.Addr) error {
	if l == nil {
		return nil
	}
	now := l.now().UnixNano()
	if (user != "" && l.users.locked(user, now)) || l.addrs.locked(addrKey(remote), now) {
		l.refused.Add(1)
		return ErrLockedOut
	}
	return nil
}

// locked is Allow's check without counting a refusal: for a caller that
// falls back to Authenticate, which counts it.
func (l *Limiter) locked(user string, remote net.Addr) bool {
	if l == nil {
		return false
	}
	now := l.now().UnixNano()
	return (user != "" && l.users.locked(user, now)) || l.addrs.locked(addrKey(remote), now)
}

// Failed records a failed authentication of user (when not empty) from
// remote.
func (l *Limiter) Failed(user string, remote net.Addr) {
	if l == nil {
		return
	}
	l.failures.Add(1)
	now := l.now().UnixNano()
	if user != "" && l.users.fail(user, now) {
		l.lockedOut(l.users.kind, user, remote)
	}
	if a := addrKey(remote); l.addrs.fail(a, now) {
		l.lockedOut(l.addrs.kind, a, remote)
	}
}

func (l *Limiter) lockedOut(kind, key string, remote net.Addr) {
	l.lockouts.Add(1)
	now := time.Now().UnixNano()
	last := l.lastLog.Load()
	if now-last < int64(time.Second) || !l.lastLog.CompareAndSwap(last, now) {
		l.suppressed.Add(1)
		return
	}
	r := ""
	if remote != nil {
		r = remote.String()
	}
	l.log.Warn("authentication lockout: too many failures", "kind", kind, "key", key, "remote", r,
		"lockouts_suppressed_since_last", l.suppressed.Swap(0))
}

// addrKey is the bucket key of a source address: the IPv4 address, the
// IPv6 /64, or the address text for other networks ("" for none).
func addrKey(a net.Addr) string {
	if a == nil {
		return ""
	}
	var ip netip.Addr
	switch v := a.(type) {
	case *net.TCPAddr:
		ip, _ = netip.AddrFromSlice(v.IP)
	default:
		ap, err := netip.ParseAddrPort(a.String())
		if err != nil {
			return a.String()
		}
		ip = ap.Addr()
	}
	ip = ip.Unmap()
	if !ip.IsValid() {
		return a.String()
	}
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return p.String()
	}
	return ip.String()
}

// bucketTable is one kind's token buckets, most recently failed first.
type bucketTable struct {
	kind  string
	burst float64
	per   float64 // nanoseconds to earn one failure back
	max   int
	off   bool

	mu         sync.Mutex
	m          map[string]*bucket
	head, tail *bucket // LRU order, head most recent
}

type bucket struct {
	key        string
	tokens     float64 // failures still allowed
	at         int64   // when tokens was computed, unix nanoseconds
	locked     bool    // tokens fell below one (logged once per lockout)
	prev, next *bucket
}

func (t *bucketTable) init(kind string, burst int, window time.Duration, max int) {
	t.kind, t.max, t.m = kind, max, map[string]*bucket{}
	if burst < 0 {
		t.off = true
		return
	}
	t.burst, t.per = float64(burst), float64(window)/float64(burst)
}

func (t *bucketTable) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.m)
}

// refillLocked brings b's tokens up to now.
func (t *bucketTable) refillLocked(b *bucket, now int64) {
	if now > b.at {
		b.tokens = min(t.burst, b.tokens+float64(now-b.at)/t.per)
		b.at = now
	}
	if b.tokens >= 1 {
		b.locked = false
	}
}

// locked reports whether key has no failure left.
func (t *bucketTable) locked(key string, now int64) bool {
	if t.off || key == "" {
		return false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	b := t.m[key]
	if b == nil {
		return false
	}
	t.refillLocked(b, now)
	if b.tokens >= t.burst {
		t.removeLocked(b) // forgiven: forget it
		return false
	}
	return b.tokens < 1
}

// fail spends one of key's failures and reports whether that locked it out.
func (t *bucketTable) fail(key string, now int64) (lockedNow bool) {
	if t.off || key == "" {
		return false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	b := t.m[key]
	if b == nil {
		b = &bucket{key: key, tokens: t.burst, at: now}
		t.m[key] = b
		t.pushLocked(b)
		if len(t.m) > t.max {
			t.removeLocked(t.tail)
		}
	} else {
		t.refillLocked(b, now)
		t.unlinkLocked(b)
		t.pushLocked(b)
	}
	// Concurrent attempts may all have passed Allow; never go below zero,
	// so a lockout lasts one refill period past the last failure.
	b.tokens = max(0, b.tokens-1)
	wasLocked := b.locked
	b.locked = b.tokens < 1
	return b.locked && !wasLocked
}

func (t *bucketTable) pushLocked(b *bucket) {
	b.prev, b.next = nil, t.head
	if t.head != nil {
		t.head.prev = b
	}
	t.head = b
	if t.tail == nil {
		t.tail = b
	}
}

func (t *bucketTable) unlinkLocked(b *bucket) {
	if b.prev != nil {
		b.prev.next = b.next
	} else {
		t.head = b.next
	}
	if b.next != nil {
		b.next.prev = b.prev
	} else {
		t.tail = b.prev
	}
	b.prev, b.next = nil, nil
}

func (t *bucketTable) removeLocked(b *bucket) {
	t.unlinkLocked(b)
	delete(t.m, b.key)
}
