package stdnet

import (
	"context"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/panjf2000/gnet/v2"
)

var errLoopStopped = errors.New("stdnet: loop stopped")

var errNotSupported = errors.New("not supported on a standard-library connection")

// taskLoop implements gnet.EventLoop for standard-library connections.
type taskLoop struct {
	mu    sync.Mutex
	tasks []func()
	wake  chan struct{}
	done  chan struct{}
}

func newTaskLoop() *taskLoop {
	t := &taskLoop{wake: make(chan struct{}, 1), done: make(chan struct{})}
	go t.run()
	return t
}

func (t *taskLoop) post(fn func()) error {
	select {
	case <-t.done:
		return errLoopStopped
	default:
	}
	t.mu.Lock()
	t.tasks = append(t.tasks, fn)
	t.mu.Unlock()
	select {
	case t.wake <- struct{}{}:
	default:
	}
	return nil
}

func (t *taskLoop) run() {
	var batch []func()
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
			for i, fn := range batch {
				fn()
				batch[i] = nil
			}
		}
	}
}

func (t *taskLoop) stop() { close(t.done) }

// Execute runs r on the loop goroutine.
func (t *taskLoop) Execute(ctx context.Context, r gnet.Runnable) error {
	return t.post(func() { _ = r.Run(ctx) })
}

// Close closes c, which must belong to this loop, running OnClose now.
func (t *taskLoop) Close(c gnet.Conn) error {
	if nc, ok := c.(*conn); ok {
		nc.closeOnLoop(nil)
		return nil
	}
	return errNotSupported
}

// Register is not supported.
func (t *taskLoop) Register(context.Context, net.Addr) (<-chan gnet.RegisteredResult, error) {
	return nil, errNotSupported
}

// Enroll is not supported.
func (t *taskLoop) Enroll(context.Context, net.Conn) (<-chan gnet.RegisteredResult, error) {
	return nil, errNotSupported
}

// Schedule is not supported.
func (t *taskLoop) Schedule(context.Context, gnet.Runnable, time.Duration) error {
	return errNotSupported
}
