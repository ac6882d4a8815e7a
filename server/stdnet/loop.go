package stdnet

import (
	"context"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/panjf2000/gnet/v2"
)

// ErrNotSupported is returned by the gnet.EventLoop methods a task loop
// does not implement (Register, Enroll, Schedule) and by Close for a
// connection that is not one of this package's.
var ErrNotSupported = errors.New("stdnet: not supported on a standard-library connection")

// ErrLoopStopped is returned by Execute (and AsyncWrite callbacks are
// dropped) once the transport stopped its loops.
var ErrLoopStopped = errors.New("stdnet: loop stopped")

// task is one unit of work for a taskLoop: either fn, or r run with ctx.
// Keeping Runnable and context in the struct (rather than a closure around
// them) makes Execute — the broker's cross-loop wake-up — allocation-free.
type task struct {
	fn  func()
	r   gnet.Runnable
	ctx context.Context
}

// taskLoop implements gnet.EventLoop for standard-library connections: a
// goroutine that runs posted tasks one at a time, in order, so that
// everything it runs has the single-owner guarantee of a gnet event loop.
//
// Concurrency: post, Execute and the unsupported methods are safe from any
// goroutine; Close must run on the loop (as gnet requires).
type taskLoop struct {
	mu      sync.Mutex
	tasks   []task
	stopped bool
	wake    chan struct{}
	done    chan struct{}
	exited  chan struct{}
}

func newTaskLoop() *taskLoop {
	t := &taskLoop{wake: make(chan struct{}, 1), done: make(chan struct{}), exited: make(chan struct{})}
	go t.run()
	return t
}

// post queues tk; it fails once the loop was stopped.
func (t *taskLoop) post(tk task) error {
	t.mu.Lock()
	if t.stopped {
		t.mu.Unlock()
		return ErrLoopStopped
	}
	t.tasks = append(t.tasks, tk)
	t.mu.Unlock()
	select {
	case t.wake <- struct{}{}:
	default:
	}
	return nil
}

// postFn queues fn.
func (t *taskLoop) postFn(fn func()) error { return t.post(task{fn: fn}) }

func (t *taskLoop) run() {
	defer close(t.exited)
	var batch []task
	for {
		select {
		case <-t.done:
			return
		case <-t.wake:
		}
		for {
			t.mu.Lock()
			batch, t.tasks = t.tasks, batch[:0]
			t.mu.Unlock()
			if len(batch) == 0 {
				break
			}
			for i := range batch {
				if tk := &batch[i]; tk.fn != nil {
					tk.fn()
				} else {
					_ = tk.r.Run(tk.ctx)
				}
				batch[i] = task{}
			}
		}
	}
}

// stop refuses further tasks and ends the goroutine once the task running
// now (if any) returns; queued tasks are dropped. It waits for the exit.
func (t *taskLoop) stop() {
	t.mu.Lock()
	already := t.stopped
	t.stopped = true
	t.tasks = nil
	t.mu.Unlock()
	if !already {
		close(t.done)
	}
	<-t.exited
}

// Execute runs r on the loop goroutine. Safe from any goroutine.
func (t *taskLoop) Execute(ctx context.Context, r gnet.Runnable) error {
	return t.post(task{r: r, ctx: ctx})
}

// Close closes c, which must belong to this loop, running OnClose now.
// Loop only.
func (t *taskLoop) Close(c gnet.Conn) error {
	if nc, ok := c.(*conn); ok && nc.loop == t {
		nc.closeOnLoop(nil)
		return nil
	}
	return ErrNotSupported
}

// Register is not supported.
func (t *taskLoop) Register(context.Context, net.Addr) (<-chan gnet.RegisteredResult, error) {
	return nil, ErrNotSupported
}

// Enroll is not supported.
func (t *taskLoop) Enroll(context.Context, net.Conn) (<-chan gnet.RegisteredResult, error) {
	return nil, ErrNotSupported
}

// Schedule is not supported (gnet does not implement it either).
func (t *taskLoop) Schedule(context.Context, gnet.Runnable, time.Duration) error {
	return ErrNotSupported
}
