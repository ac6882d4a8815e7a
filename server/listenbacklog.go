package server

import (
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// The listen backlog, sized by the descriptors left.
//
// A connect storm (a fleet reconnecting after an outage: thousands of
// clients dialing at once) overflows a short accept queue whenever the
// acceptor falls behind for a moment, and the kernel then drops SYNs and
// handshake ACKs: every such client waits for its TCP retransmission,
// one second or more, and the storm's CONNACK p99 is a second
// (measured: 256 clients dialing at a time, backlog 64, p99 ≥ 1 s; with a
// backlog of 1,024, 0.3–0.5 s on the same loaded machine).
//
// The accept queue is short (FDReserve/4, see engine.go) because gnet's
// acceptor takes every queued connection in one go, before OnOpen can
// refuse any: near the descriptor limit a long queue would be turned into
// EMFILE. Far from the limit it costs nothing. So the broker keeps a
// duplicate of each plain listener's socket and steps the backlog with
// the connections it has room for (maxConns − open): up to a step b once
// that room is at least 4·b, back down as soon as it is under 2·b. A
// queue filled at the old length still fits in the room left (the kernel
// keeps what it queued when the backlog shrinks), and near the limit the
// backlog is FDReserve/4 as before. The check is an atomic load per
// connection opened or closed; listen(2) runs only when the step changes.
var backlogSteps = [...]int{4096, 1024, 256} // largest first

type listenBacklog struct {
	mu  sync.Mutex
	fds []int        // duplicates of the plain listeners' sockets; guarded by mu
	cur atomic.Int64 // the backlog in force (0: not managed)
}

// pickBacklog returns the backlog for room connections left, from the
// current one (cur) and the floor (FDReserve/4).
func pickBacklog(cur, floor int, room int64) int {
	if cur > floor && room < 2*int64(cur) {
		for _, b := range backlogSteps {
			if b < cur && b > floor && room >= 2*int64(b) {
				return b
			}
		}
		return floor
	}
	for _, b := range backlogSteps {
		if b > cur && room >= 4*int64(b) {
			return b
		}
	}
	return cur
}

// tuneBacklog re-sizes the listen backlog if the connections open moved
// it to another step. Called by OnOpen and OnClose on any loop.
func (s *Server) tuneBacklog() {
	lb := &s.listenBacklog
	cur := int(lb.cur.Load())
	if cur == 0 {
		return
	}
	room := s.maxConns - s.conns.Load()
	if pickBacklog(cur, s.backlog, room) == cur {
		return
	}
	lb.mu.Lock()
	defer lb.mu.Unlock()
	cur = int(lb.cur.Load())
	want := pickBacklog(cur, s.backlog, room)
	if want == cur || len(lb.fds) == 0 {
		return
	}
	for _, fd := range lb.fds {
		if err := unix.Listen(fd, want); err != nil {
			s.log.Warn("listen backlog not changed", "backlog", want, "err", err)
		}
	}
	lb.cur.Store(int64(want))
}

// keepListenFD records a duplicate of a plain listener's socket whose
// backlog tuneBacklog may change (OnBoot). It is closed by
// closeListenFDs.
func (s *Server) keepListenFD(fd int) {
	lb := &s.listenBacklog
	lb.mu.Lock()
	lb.fds = append(lb.fds, fd)
	lb.mu.Unlock()
	lb.cur.Store(int64(s.backlog))
}

// closeListenFDs closes the duplicates kept by keepListenFD (OnShutdown).
func (s *Server) closeListenFDs() {
	lb := &s.listenBacklog
	lb.mu.Lock()
	defer lb.mu.Unlock()
	for _, fd := range lb.fds {
		_ = unix.Close(fd)
	}
	lb.fds = nil
	lb.cur.Store(0)
}
