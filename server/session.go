package server

import (
	"sync"
	"sync/atomic"

	"github.com/ternmq/tern/qos"
	"github.com/ternmq/tern/trie"
)

// session is the state that outlives a connection: subscriptions, the
// outbound queue and inflight window, and the inbound QoS 2 flows.
//
// Concurrency: mu guards every field below it. It is taken by the owning
// connection's event loop (acks, draining the queue), by publishers on any
// loop (enqueuing a delivery) and by CONNECT on whichever loop the client
// reconnects to (takeover). The critical sections are a few slice
// operations; nothing blocks while holding mu and mu is never held while
// taking another session's mu.
type session struct {
	id string

	// flags holds two bits for lock-free readers (one word, so that the
	// struct stays at 112 bytes): sessOnline mirrors owner != nil
	// (shared subscription member selection in the trie); sessCongested
	// says the session cannot take more now (a clean session over its
	// queue limit, a persistent one with a backlog on disk), so shared
	// subscription groups pass it over while another member can
	// (share.go). See isOnline, setOnline, setCongested and
	// subscriberAvailable.
	flags  atomic.Uint32
	expiry uint32 // seconds the session outlives its connection (capped); under mu

	mu         sync.Mutex
	owner      *client // the connection the session is attached to; nil while offline
	offlineAt  int64   // unix milliseconds it went offline
	dead       bool    // removed from the registry: deliveries are dropped
	persistent bool    // survives its connection (clean session 0 / expiry > 0)
	version    byte    // protocol version of the last connection
	stored     bool    // a session record is in the store
	recvMax    uint16  // inflight window size for the current connection
	subs       []sessionSub
	subIndex   map[string]int // filter → index in subs, once subs outgrows a scan
	f          *flow          // delivery state; nil until the session has traffic
	// user is the authenticated identity that created the session ("" for
	// anonymous): a CONNECT under another identity may not resume, take
	// over or wipe it.
	user string
}

const (
	sessOnline    = 1 << iota // see session.flags
	sessCongested             // see session.flags
)

func (s *session) isOnline() bool { return s.flags.Load()&sessOnline != 0 }

// setOnline and setCongested may be called from any goroutine.
func (s *session) setOnline(on bool)    { s.setFlag(sessOnline, on) }
func (s *session) setCongested(on bool) { s.setFlag(sessCongested, on) }

func (s *session) setFlag(bit uint32, on bool) {
	if on {
		s.flags.Or(bit)
	} else {
		s.flags.And(^bit)
	}
}

// flow is a session's delivery state. It is allocated on first use, so an
// idle session (the common case in a device fleet) costs only the session
// struct; once allocated it stays, so busy sessions do not allocate per
// message.
type flow struct {
	queue   qos.Queue[outMsg]
	window  qos.Window[outMsg]
	inbound qos.Inbound
	nextSeq uint64 // sequence of the next QoS 1/2 delivery; packet ids derive from it
	dropped uint64 // deliveries lost to queue limits

	// Disk-backed backlog of a persistent session (backlog.go): while
	// spilled, the QoS 1/2 deliveries [diskFrom, nextSeq) are only in the
	// store and are paged in, in order, as the in-memory window drains.
	diskFrom  uint64
	spilled   bool
	diskBytes int64   // bytes of this session's stored deliveries, counted against MaxSessionBacklogBytes
	diskSaved int64   // diskBytes as last written to the store (saveBacklogBytesLocked)
	lastTk    *ticket // the batch of the latest stored delivery (share.go waits for it)
	gapCheck  uint64  // 1 + the diskFrom a marker wake was last asked for (one per position)
	// Holes (backlog.go, settleHoles): below holeEnd a missing delivery
	// may be one deleted while it was in memory (acknowledged, dropped,
	// tombstoned) rather than one whose batch is on its way; once settled,
	// pageIn steps over such holes.
	holeEnd   uint64
	settled   bool
	settling  bool      // a settling marker is in the store's queue
	settleGen uint32    // bumped by each release: a marker of an older one settles nothing
	settleTks []*ticket // unsubmitted batches of the deliveries in memory at release
	sentEnd   uint64    // 1 + the highest seq sent: a paged-in delivery below it was in flight (re-sent with DUP)

	// Flow control of a clean session (pace.go): publishers held back
	// while its queue is over the soft limit, and when it last made
	// progress (sent a delivery or had one acknowledged), unix ns.
	waiters      []*client
	lastProgress int64
	// abandoned counts the waiters whose connection ended while they
	// waited: each left one message past the soft limit (pace.go).
	abandoned int
}

// flowLocked returns the session's delivery state, creating it. s.mu must be held.
func (s *session) flowLocked(o *Options) *flow {
	if s.f == nil {
		f := &flow{}
		// The queue's hard bounds are twice the configured limits: the
		// configured ones are where publishers start being paced (clean
		// sessions) or deliveries start spilling to the store (persistent
		// ones, which keep at most backlogWindow in memory).
		f.queue.MaxCount = 2 * o.MaxQueuedMessages
		f.queue.MaxBytes = 2 * o.MaxQueuedBytes
		f.window.SetMax(int(s.recvMax))
		f.inbound.Max = o.MaxInboundQoS2
		s.f = f
	}
	return s.f
}

// attachLocked makes c the session's connection with the lifetime and
// inflight window its CONNECT asked for. s.mu must be held (or s not yet
// published).
func (s *session) attachLocked(c *client, expiry uint32, window int) {
	s.owner = c
	s.setOnline(true)
	s.expiry = expiry
	s.persistent = expiry > 0
	s.version = c.version
	s.setWindowLocked(window)
}

// setWindowLocked sets the inflight window for a new connection. s.mu must be held.
func (s *session) setWindowLocked(n int) {
	s.recvMax = uint16(n)
	if s.f != nil {
		s.f.window.SetMax(n)
	}
}

// sessionSub is one subscription as the session records it, so it can be
// removed from the trie when the session ends.
type sessionSub struct {
	filter string
	qos    byte
	opts   byte
	id     uint32
}

// 5.0 subscription options byte (§3.8.3.1) as stored in trie.Sub.Options.
const (
	optNoLocal           = 0x04
	optRetainAsPublished = 0x08
)

func newSession(id string, o *Options) *session {
	return &session{id: id, recvMax: uint16(o.ReceiveMaximum)}
}

// subIndexMin is the subscription count above which a session keeps a
// filter index: below it a scan of a few cache lines is cheaper than a map,
// and an idle device with one subscription pays nothing for the index.
const subIndexMin = 16

// findSubLocked returns the index of filter in s.subs, or -1. s.mu held.
func (s *session) findSubLocked(filter string) int {
	if s.subIndex != nil {
		if i, ok := s.subIndex[filter]; ok {
			return i
		}
		return -1
	}
	for i := range s.subs {
		if s.subs[i].filter == filter {
			return i
		}
	}
	return -1
}

// setSubLocked records sub in the session's list, replacing one on the same
// filter. It reports whether one was replaced. O(1) with the index. s.mu held.
func (s *session) setSubLocked(sub sessionSub) bool {
	if i := s.findSubLocked(sub.filter); i >= 0 {
		s.subs[i] = sub
		return true
	}
	s.subs = append(s.subs, sub)
	if s.subIndex != nil {
		s.subIndex[sub.filter] = len(s.subs) - 1
	} else if len(s.subs) > subIndexMin {
		s.subIndex = make(map[string]int, len(s.subs))
		for i := range s.subs {
			s.subIndex[s.subs[i].filter] = i
		}
	}
	return false
}

// removeSubLocked deletes the subscription on filter, reporting whether
// there was one. s.mu held.
func (s *session) removeSubLocked(filter string) bool {
	i := s.findSubLocked(filter)
	if i < 0 {
		return false
	}
	last := len(s.subs) - 1
	s.subs[i] = s.subs[last]
	s.subs[last] = sessionSub{}
	s.subs = s.subs[:last]
	if s.subIndex != nil {
		delete(s.subIndex, filter)
		if i < last {
			s.subIndex[s.subs[i].filter] = i
		}
	}
	return true
}

// clearSubsLocked forgets every subscription, returning them (for removal
// from the trie). s.mu held.
func (s *session) clearSubsLocked() []sessionSub {
	subs := s.subs
	s.subs, s.subIndex = nil, nil
	return subs
}

// subFor builds the trie entry of a subscription of s.
func subFor(s *session, q, opts byte, id uint32) trie.Sub[*session] {
	return trie.Sub[*session]{Subscriber: s, QoS: q, Options: opts, ID: id}
}

// subscriberAvailable tells the trie whether a shared-subscription member
// can take a message now: connected and not congested. When no member can,
// the trie picks one anyway, which queues it (nothing is dropped).
func subscriberAvailable(s *session) bool {
	return s.flags.Load()&(sessOnline|sessCongested) == sessOnline
}
