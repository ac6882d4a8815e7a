package server

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/ternmq/tern/codec"
	"github.com/ternmq/tern/trie"
)

// loop is the broker's state for one gnet event loop. Fields above mu are
// touched only by that loop's goroutine; mu guards the cross-loop mailbox.
//
// Cross-loop delivery: while a publisher on loop A routes a message
// (route.go), each session it enqueues to whose connection lives on loop B
// has its client listed in A's own handoff for B, without a lock. Once the
// message is routed, A hands each target loop its whole list under that
// loop's mu and, only if B's remote list was empty, triggers one task on B
// (gnet EventLoop.Execute). B's task drains every listed client: one lock
// and at most one wake-up per target loop per routed message, not one per
// delivery, and B starts on its share before A writes its own (A's local
// list is drained at the end of its event). Wake-ups outside routing (a
// commit's, a retained message on subscribe) are handed over at once.
type loop struct {
	srv *Server
	el  gnet.EventLoop
	fds bool // el is a gnet loop: its connections are raw sockets (Fd, half-close)
	id  int  // index of this loop among the server's loops (handoff slot)
	// wakeups counts the drainRemote tasks triggered on this loop (tests
	// check the cross-loop batching with it).
	wakeups atomic.Uint64

	now   int64 // unix nanoseconds at the start of the current event
	wheel *wheel
	out   []byte // scratch for a connection's outgoing packets
	wbuf  []byte // scratch for deliveries to another connection
	match []trie.Sub[*session]
	dedup map[*session]int
	local []*client
	// handoff[id] lists the clients of the loop with that id that this
	// loop's deliveries woke since the last flushHandoff; handTo lists
	// those loops, in first-woken order.
	handoff [][]*client
	handTo  []*loop
	routing bool // route is running: schedule lists cross-loop wakes in handoff
	tx      txn  // durable writes of the current event
	// paceOn lists the clean sessions the current PUBLISH left over their
	// soft limit (pace.go); paced is the session of the client whose
	// PUBLISH is being routed (nil otherwise), which pacing will hold back
	// (deliver: its deliveries are never dropped); paged is pageIn's
	// scratch (backlog.go).
	paceOn []*session
	paced  *session
	paged  []pagedDelivery
	// Hooks scratch (hooks.go): the message OnPublish sees, the cache
	// key of an authorization, deliveries drain reports after unlocking.
	hookMsg    HookMessage
	hookKey    []byte
	hookEvents []hookEvent

	// Decode targets reused for every packet of every connection on the loop.
	connect     codec.Connect
	publish     codec.Publish
	ack         codec.Ack
	subscribe   codec.Subscribe
	unsubscribe codec.Unsubscribe
	disconnect  codec.Disconnect
	auth        codec.Auth
	enc         codec.Publish // encode scratch

	mu      sync.Mutex
	tasks   []func() // completions posted by the store's committer
	remote  []*client
	spare   []*client
	drainFn gnet.RunnableFunc
	tickFn  gnet.RunnableFunc
}

func newLoop(s *Server, el gnet.EventLoop) *loop {
	l := &loop{srv: s, el: el, fds: ownsFDs(el), now: time.Now().UnixNano(), dedup: make(map[*session]int)}
	l.wheel = newWheel(l.now / 1e9)
	l.drainFn = func(context.Context) error { l.drainRemote(); return nil }
	l.tickFn = func(context.Context) error { l.tick(); return nil }
	return l
}

// schedule arranges for c's session queue to be drained on c's loop l.
// from is the loop the caller runs on (nil outside any loop); while from
// routes a message (from.routing), c waits in from's handoff for the
// flushHandoff that ends the routing.
func (l *loop) schedule(c *client, from *loop) {
	switch {
	case from == l:
		l.local = append(l.local, c)
	case from != nil && from.routing:
		if l.id >= len(from.handoff) {
			from.handoff = append(from.handoff, make([][]*client, l.id+1-len(from.handoff))...)
		}
		cs := from.handoff[l.id]
		if len(cs) == 0 {
			from.handTo = append(from.handTo, l)
		}
		from.handoff[l.id] = append(cs, c)
	default:
		l.mu.Lock()
		first := len(l.remote) == 0 && len(l.tasks) == 0
		l.remote = append(l.remote, c)
		l.mu.Unlock()
		if first {
			l.wake()
		}
	}
}

// flushHandoff hands every client this loop's deliveries listed for other
// loops to those loops: one lock and at most one wake-up per target. It
// runs on l's goroutine.
func (l *loop) flushHandoff() {
	for i, to := range l.handTo {
		cs := l.handoff[to.id]
		to.mu.Lock()
		first := len(to.remote) == 0 && len(to.tasks) == 0
		to.remote = append(to.remote, cs...)
		to.mu.Unlock()
		if first {
			to.wake()
		}
		clear(cs)
		l.handoff[to.id] = cs[:0]
		l.handTo[i] = nil
	}
	l.handTo = l.handTo[:0]
}

// wake triggers drainRemote on the loop (from any goroutine).
func (l *loop) wake() {
	l.wakeups.Add(1)
	if err := l.el.Execute(context.Background(), l.drainFn); err != nil {
		// The engine is shutting down; nothing will be delivered anyway.
		l.srv.log.Debug("cross-loop wake failed", "err", err)
	}
}

// post runs fn on the loop (from any goroutine).
func (l *loop) post(fn func()) {
	l.mu.Lock()
	first := len(l.remote) == 0 && len(l.tasks) == 0
	l.tasks = append(l.tasks, fn)
	l.mu.Unlock()
	if first {
		l.wake()
	}
}

// drainRemote runs on the loop: posted tasks first (commit completions,
// in commit order), then every client other loops listed.
func (l *loop) drainRemote() {
	l.now = time.Now().UnixNano()
	traceRemote(l, true)
	l.mu.Lock()
	list, tasks := l.remote, l.tasks
	l.remote, l.spare, l.tasks = l.spare[:0], nil, nil
	l.mu.Unlock()
	for _, fn := range tasks {
		fn()
	}
	for i, c := range list {
		c.drain()
		list[i] = nil
	}
	l.mu.Lock()
	if l.spare == nil {
		l.spare = list[:0]
	}
	l.mu.Unlock()
	traceRemote(l, false)
	l.drainLocal()
	l.srv.submit(l, &l.tx, nil)
}

// drainLocal drains the clients that deliveries on this loop listed.
func (l *loop) drainLocal() {
	for len(l.local) > 0 {
		list := l.local
		l.local = nil
		for i, c := range list {
			c.drain()
			list[i] = nil
		}
		if l.local == nil {
			l.local = list[:0]
		}
	}
}

// tick runs once a second on the loop: deadlines (connect timeout, keepalive).
func (l *loop) tick() {
	l.now = time.Now().UnixNano()
	l.wheel.advance(l.now/1e9, func(c *client, now int64) int64 { return c.checkDeadline(now) })
	l.drainLocal()
	l.srv.submit(l, &l.tx, nil)
}
