package tlsloop

// Handshake workers: the coroutines crypto/tls's handshakes run on
// (package comment, "Handshakes on the loops"). A coroutine's goroutine
// starts with the smallest stack and a TLS 1.3 server handshake grows it
// several times (each growth copies the stack: ~4 % of the broker's CPU
// per handshake in a connect storm), so a worker is not ended after its
// handshake but kept, up to maxIdleWorkers, for the next one, its grown
// stack with it. An idle worker waits below a frame of idlePad bytes, so
// that the garbage collector, which halves the stack of a goroutine using
// less than a quarter of it, leaves its stack as the handshake grew it.
// Workers left idle for a whole workerTrimEvery end (trim): after a storm
// the pool empties within two ticks, and goroutines return to the
// baseline.

import (
	"iter"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// maxIdleWorkers bounds the idle workers kept (each holds its stack,
	// 16–32 KiB): enough for a connect storm's turnover on a few cores,
	// small next to the connections (32 × 32 KiB = 1 MiB).
	maxIdleWorkers = 32
	// idlePad is the stack an idle worker holds in use while it waits
	// (see above): a quarter of a 32 KiB stack.
	idlePad = 8 << 10
	// workerTrimEvery is how often idle workers unused since the previous
	// trim end.
	workerTrimEvery = time.Second
)

// hsWorker is a coroutine that runs handshakes, one at a time. Loop only:
// whoever holds it (a connection's handshake, or the pool's lock) is the
// only one to resume it.
type hsWorker struct {
	next  func() (struct{}, bool) // resumes the coroutine (iter.Pull)
	stop  func()                  // ends an idle worker
	yield func(struct{}) bool     // inside the coroutine: back to the loop
	c     *conn                   // the connection whose handshake it runs; nil when idle
	ended bool                    // stop was called: no more handshakes
}

// workerPool keeps idle workers. Safe from any goroutine.
type workerPool struct {
	mu      sync.Mutex
	idle    []*hsWorker   // the most recently used last
	low     int           // the fewest idle since the last trim: idle[:low] were not used since
	stopped bool          // Stop ran: put ends workers instead of keeping them
	started atomic.Uint64 // workers started (tests: how well they are reused)
}

// get returns an idle worker or a new one. The caller sets its c before
// resuming it.
func (p *workerPool) get(e *Engine) *hsWorker {
	p.mu.Lock()
	if n := len(p.idle); n > 0 {
		w := p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
		p.low = min(p.low, n-1)
		p.mu.Unlock()
		return w
	}
	p.mu.Unlock()
	w := &hsWorker{}
	e.hsWG.Add(1)
	p.started.Add(1)
	w.next, w.stop = iter.Pull(func(yield func(struct{}) bool) {
		defer e.hsWG.Done()
		w.yield = yield
		for !w.ended {
			e.startHandshake(w.c)
			w.c = nil
			w.idle() // until the next handshake, or stop
		}
	})
	return w
}

// put keeps w for the next handshake, or ends it. w is idle: its
// handshake returned.
func (p *workerPool) put(w *hsWorker) {
	p.mu.Lock()
	if !p.stopped && len(p.idle) < maxIdleWorkers {
		p.idle = append(p.idle, w)
		p.mu.Unlock()
		return
	}
	p.mu.Unlock()
	w.stop()
}

// trim ends the workers that stayed idle since the previous trim.
func (p *workerPool) trim() {
	p.mu.Lock()
	old := slices.Clone(p.idle[:p.low])
	p.idle = slices.Delete(p.idle, 0, p.low)
	p.low = len(p.idle)
	p.mu.Unlock()
	for _, w := range old {
		w.stop()
	}
}

// stopAll ends the idle workers and those put afterwards.
func (p *workerPool) stopAll() {
	p.mu.Lock()
	idle := p.idle
	p.idle, p.stopped = nil, true
	p.mu.Unlock()
	for _, w := range idle {
		w.stop()
	}
}

// startHandshake runs c's handshake to its end on the worker's coroutine
// (its name is what server's TestTLSLoopsCloseDuringHandshake looks for in
// goroutine stacks: a handshake in progress).
func (e *Engine) startHandshake(c *conn) {
	hs := c.hs
	hs.err = c.tc.Handshake()
	hs.done = true
}

// wait returns to the loop until it resumes the handshake (more input, or
// the connection closed). Inside the coroutine.
func (w *hsWorker) wait() {
	if !w.yield(struct{}{}) {
		panic("tlsloop: handshake worker stopped during a handshake")
	}
}

// idle returns to the loop until the worker gets its next handshake or is
// stopped, with idlePad bytes of stack in use meanwhile. Inside the
// coroutine.
func (w *hsWorker) idle() {
	var pad [idlePad]byte
	if !w.yield(struct{}{}) {
		w.ended = true
	}
	keepStack(&pad)
}

// keepStack makes pad live across the wait (the compiler cannot drop it).
//
//go:noinline
func keepStack(pad *[idlePad]byte) { pad[0]++ }
