//go:build linux

package bench

import (
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ternmq/tern/codec"
	"github.com/ternmq/tern/internal/timer"
)

// The event-loop engine, in four files:
//
//   - engine_linux.go (this file): a loop's state, its epoll/eventfd/timerfd
//     descriptors, the goroutine that runs it, posted tasks, housekeeping.
//   - conn_linux.go: one connection's life — dial, readiness events,
//     buffered writes, reads, failures and closing.
//   - protocol_linux.go: the MQTT conversation — CONNECT/SUBSCRIBE
//     handshakes, deliveries, acknowledgements, packet ids.
//   - publish_linux.go: the send queue of publishers by next intended time
//     and the timerfd armed to it.
//
// A loop's state is owned by its goroutine; other goroutines reach it only
// through post and call (tasks run between epoll waits), plus the atomic
// counters in loopStats.

// Client roles.
const (
	roleIdle uint8 = iota
	rolePub
	roleSub
)

// Connection states, in order.
const (
	stDialing uint8 = iota // non-blocking connect in progress
	stTLS                  // TLS handshake in progress (tls_linux.go)
	stConnack              // CONNECT written, waiting for CONNACK
	stSuback               // SUBSCRIBE written, waiting for SUBACK
	stReady                // usable
	stClosed
)

const (
	readBufSize = 64 << 10
	burstMax    = 64 // messages one publisher sends per turn, for fairness
	idSpace     = 1 << 16
)

// spec is what a loop needs to open one client.
type spec struct {
	role   uint8
	idx    int    // index within its role (publisher id, subscriber index)
	rcv    uint32 // receiver id in the ledger (subscriber index or group id)
	broker unix.Sockaddr
	source unix.Sockaddr // nil: kernel's choice
	topic  []byte        // publish topic (publishers)
	filter []byte        // subscription (subscribers, conn --subscribe)
	conf   *tlsTarget    // TLS to this broker; nil: plain TCP
}

// conn is one client. Every field is owned by its loop's goroutine. It is
// kept small on purpose: the idle-connection scenario multiplies it.
type conn struct {
	fd       int
	slot     int32 // index in loop.conns
	queueIdx int32 // index in loop.queue (kept by its Moved hook), −1 when not queued
	state    uint8
	role     uint8
	blocked  bool // publisher waiting for a window slot or socket space
	dirty    bool // in loop.dirty: c.out to be written at the end of the turn
	wantOut  bool // the socket did not take all of c.out: waiting for EPOLLOUT
	pubID    uint32
	rcv      uint32
	dialAt   int64
	lastOut  int64 // last time anything was written (keepalive)
	topic    []byte
	filter   []byte
	in       []byte // partial inbound packet
	out      []byte // bytes the socket did not take yet
	sched    Schedule
	window   int        // publish window (inflight cap)
	inflt    int        // unacknowledged QoS>0 publications
	nextID   uint16     // next packet id to try
	ids      []uint64   // bitmap of packet ids in use (QoS>0 publishers only)
	lim      *readLimit // throttled subscribers only (SubRate, SubStopAfter)
	conf     *tlsTarget // TLS clients only: the broker's TLS configuration
	tls      *tlsState  // TLS clients only, from the end of the TCP connect
}

// loopStats are the counters other goroutines read while the loop runs.
type loopStats struct {
	sent, written, recv, connected, failed, closed, foreign atomic.Int64
	_                                                       [64]byte // keep loops' counters off one cache line
}

// loop is one event loop: an epoll instance, the connections registered in
// it, and everything they record. One goroutine runs it; other goroutines
// talk to it only through post.
type loop struct {
	r       *runner
	epfd    int
	evfd    int // eventfd: wakes the loop for posted tasks
	tfd     int // timerfd: wakes the loop when the next publication is due
	armedAt int64
	due     bool // the send queue's head is already due: poll, do not wait

	mu    sync.Mutex
	tasks []func(*loop)

	conns   []*conn
	free    []int32
	queue   timer.Heap[*conn] // publishers by next intended send time; paused throttled subscribers by resume time
	requeue []*conn           // closed-loop publishers to queue again after a publishDue pass
	dirty   []*conn           // connections with output queued this turn (flushDirty)
	buf     []byte
	plain   []byte // decrypted TLS input
	enc     []byte
	pending []spec // clients waiting for a connect slot (Config.Parallel)
	dialing int    // clients of this loop in their connect phase
	dialMax int    // the most dialing ever was
	budget  int    // most clients in their connect phase at once; 0: no limit
	pay     []byte
	stop    bool

	stats loopStats

	// Owned by the loop; read by others only after it exited, or through a
	// posted task.
	lat          *Histogram       // end-to-end latency (intended send → receipt)
	latIv        *Histogram       // the same for every delivery since the last series sample
	lag          *Histogram       // send lag (actual write − intended time)
	connLat      *Histogram       // TCP connect + CONNACK (+ SUBACK)
	tlsLat       *Histogram       // TLS handshake (TCP connected → handshake done)
	tlsFull      int64            // full TLS handshakes
	tlsGroups    map[string]int64 // handshakes by negotiated key exchange and version
	retransConns int64            // conn scenario: clients whose connect needed a TCP retransmission
	tlsResumed   int64            // resumed TLS handshakes (session tickets)
	ledger       *Ledger
	failures     map[string]int
	measureLo    int64 // intended-time window counted in rates/latencies
	measureHi    int64
	sentIn       int64 // publications with intended time in the window
	recvIn       int64 // deliveries with intended time in the window
	rejected     int64 // QoS>0 publications the broker refused (5.0 reason ≥ 0x80)
	sentBy       []uint64
	pubsDone     bool

	pub  codec.Publish
	ack  codec.Ack
	cack codec.Connack
	sack codec.Suback
	disc codec.Disconnect
}

func newLoop(r *runner) (*loop, error) {
	l := &loop{r: r, epfd: -1, evfd: -1, tfd: -1, sentBy: make([]uint64, r.cfg.Pubs),
		buf: make([]byte, readBufSize), lat: NewHistogram(), latIv: NewHistogram(), lag: NewHistogram(),
		connLat: NewHistogram(), tlsLat: NewHistogram(), ledger: NewLedger(), failures: map[string]int{},
		measureHi: math.MaxInt64, pay: make([]byte, r.cfg.Size)}
	l.queue.Moved = setQueueIdx
	if r.cfg.TLS {
		l.plain = make([]byte, readBufSize)
	}
	var err error
	if l.epfd, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
		return nil, fmt.Errorf("bench: epoll: %w", err)
	}
	if l.evfd, err = unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC); err != nil {
		l.closeFDs()
		return nil, fmt.Errorf("bench: eventfd: %w", err)
	}
	if l.tfd, err = unix.TimerfdCreate(unix.CLOCK_REALTIME, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC); err != nil {
		l.closeFDs()
		return nil, fmt.Errorf("bench: timerfd: %w", err)
	}
	for _, fd := range []int{l.evfd, l.tfd} {
		ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd), Pad: -1}
		if err = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
			l.closeFDs()
			return nil, fmt.Errorf("bench: epoll_ctl: %w", err)
		}
	}
	return l, nil
}

// closeFDs closes the loop's epoll, eventfd and timerfd descriptors.
func (l *loop) closeFDs() {
	for _, fd := range []int{l.epfd, l.evfd, l.tfd} {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
}

// post queues fn to run on the loop's goroutine. Safe from any goroutine.
func (l *loop) post(fn func(*loop)) {
	l.mu.Lock()
	wake := len(l.tasks) == 0
	l.tasks = append(l.tasks, fn)
	l.mu.Unlock()
	if wake {
		var one = [8]byte{1}
		unix.Write(l.evfd, one[:])
	}
}

// call runs fn on the loop and waits for it, at most timeout.
func (l *loop) call(fn func(*loop), timeout time.Duration) bool {
	done := make(chan struct{})
	l.post(func(l *loop) { fn(l); close(done) })
	select {
	case <-done:
		return true
	case <-time.After(timeout):
		return false
	}
}

// run is the loop's goroutine: wait for events (at most a second), handle
// them, run posted tasks, send what is due, and housekeep once a second.
// Events on the eventfd and timerfd carry Pad −1 and only wake the loop.
func (l *loop) run() {
	defer l.closeFDs()
	events := make([]unix.EpollEvent, 256)
	nextHousekeep := time.Now().UnixNano() + int64(time.Second)
	for !l.stop {
		wait := 1000
		if l.due {
			wait = 0
		}
		n, err := unix.EpollWait(l.epfd, events, wait)
		if err != nil && !errors.Is(err, unix.EINTR) {
			l.fail(nil, "epoll: "+err.Error())
			return
		}
		for i := 0; i < n; i++ {
			ev := &events[i]
			if ev.Pad < 0 {
				var b [8]byte
				unix.Read(int(ev.Fd), b[:])
				continue
			}
			if int(ev.Pad) >= len(l.conns) {
				continue
			}
			c := l.conns[ev.Pad]
			if c == nil || c.fd != int(ev.Fd) {
				continue // closed earlier in this batch
			}
			l.handle(c, ev.Events)
		}
		l.runTasks()
		now := time.Now().UnixNano()
		if len(l.pending) > 0 {
			l.dialPending(now)
		}
		l.publishDue(now)
		if now >= nextHousekeep {
			l.housekeep(now)
			nextHousekeep = now + int64(time.Second)
		}
		l.flushDirty()
	}
	for _, c := range l.conns {
		if c != nil {
			l.closeConn(c)
		}
	}
}

// runTasks runs the tasks posted since the last turn.
func (l *loop) runTasks() {
	l.mu.Lock()
	tasks := l.tasks
	l.tasks = nil
	l.mu.Unlock()
	for _, t := range tasks {
		t(l)
	}
}

// housekeep runs once a second: keepalive pings and connect timeouts.
func (l *loop) housekeep(now int64) {
	ka := int64(l.r.cfg.KeepAlive)
	to := int64(l.r.cfg.ConnectTimeout)
	var ping [2]byte
	for _, c := range l.conns {
		if c == nil {
			continue
		}
		if c.state < stReady {
			if now-c.dialAt > to {
				l.fail(c, "timed out waiting for "+stateWaits(c.state))
			}
			continue
		}
		// Ping at 3/4 of the keepalive, so the broker's 1.5× grace is never
		// approached even with a slow loop.
		if ka > 0 && now-c.lastOut > ka*3/4 {
			l.write(c, codec.AppendPingreq(ping[:0]), now)
		}
	}
}
