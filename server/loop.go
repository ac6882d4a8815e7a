package server

import (
	"context"
	"sync"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/ternmq/tern/codec"
	"github.com/ternmq/tern/trie"
)

// loop is the broker's state for one gnet event loop. Fields above mu are
// touched only by that loop's goroutine; mu guards the cross-loop mailbox.
//
// Cross-loop delivery: a publisher on loop A that enqueues a message for a
// session whose connection lives on loop B puts that client on B's remote
// list and, only if the list was empty, triggers one task on B
// (gnet EventLoop.Execute). B's task drains every listed client: one wake-up
// per loop per burst, not one per message. Deliveries to clients on the
// publisher's own loop go on the local list and are drained before the
// publisher's event returns.
type loop struct {
	srv *Server
	el  gnet.EventLoop
	fds bool // el is a gnet loop: its connections are raw sockets (Fd, half-close)

	now   int64 // unix nanoseconds at the start of the current event
	wheel *wheel
	out   []byte // scratch for a connection's outgoing packets
	wbuf  []byte // scratch for deliveries to another connection
	match []trie.Sub[*session]
	dedup map[*session]int
	local []*client
	tx    txn // durable writes of the current event
	// paceOn lists the clean sessions the current PUBLISH left over their
	// soft limit (pace.go); paged is pageIn's scratch (backlog.go).
	paceOn []*session
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

// schedule arranges for c's session queue to be drained on c's loop. from is
// the loop the caller runs on (nil outside any loop).
func (l *loop) schedule(c *client, from *loop) {
	if from == l {
		l.local = append(l.local, c)
		return
	}
	l.mu.Lock()
	first := len(l.remote) == 0 && len(l.tasks) == 0
	l.remote = append(l.remote, c)
	l.mu.Unlock()
	if first {
		if err := l.el.Execute(context.Background(), l.drainFn); err != nil {
			// The engine is shutting down; nothing will be delivered anyway.
			l.srv.log.Debug("cross-loop wake failed", "err", err)
		}
	}
}

// post runs fn on the loop (from any goroutine).
func (l *loop) post(fn func()) {
	l.mu.Lock()
	first := len(l.remote) == 0 && len(l.tasks) == 0
	l.tasks = append(l.tasks, fn)
	l.mu.Unlock()
	if first {
		if err := l.el.Execute(context.Background(), l.drainFn); err != nil {
			l.srv.log.Debug("loop task dropped: engine stopping", "err", err)
		}
	}
}

// drainRemote runs on the loop: posted tasks first (commit completions,
// in commit order), then every client other loops listed.
func (l *loop) drainRemote() {
	l.now = time.Now().UnixNano()
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
