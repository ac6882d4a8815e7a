//go:build linux

package bench

import (
	"errors"
	"fmt"
	"math"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ternmq/tern/codec"
)

// Client roles.
const (
	roleIdle uint8 = iota
	rolePub
	roleSub
)

// Connection states, in order.
const (
	stDialing uint8 = iota // non-blocking connect in progress
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
}

// conn is one client. Every field is owned by its loop's goroutine. It is
// kept small on purpose: the idle-connection scenario multiplies it.
type conn struct {
	fd      int
	slot    int32 // index in loop.conns
	heapIdx int32 // index in loop.heap, −1 when not queued
	state   uint8
	role    uint8
	blocked bool // publisher waiting for a window slot or socket space
	pubID   uint32
	rcv     uint32
	dialAt  int64
	lastOut int64 // last time anything was written (keepalive)
	topic   []byte
	filter  []byte
	in      []byte // partial inbound packet
	out     []byte // bytes the socket did not take yet
	sched   Schedule
	window  int      // publish window (inflight cap)
	inflt   int      // unacknowledged QoS>0 publications
	nextID  uint16   // next packet id to try
	ids     []uint64 // bitmap of packet ids in use (QoS>0 publishers only)
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

	mu    sync.Mutex
	tasks []func(*loop)

	conns []*conn
	free  []int32
	heap  []*conn
	buf   []byte
	enc   []byte
	pay   []byte
	stop  bool

	stats loopStats

	// Owned by the loop; read by others only after it exited, or through a
	// posted task.
	lat       *Histogram // end-to-end latency (intended send → receipt)
	lag       *Histogram // send lag (actual write − intended time)
	connLat   *Histogram // TCP connect + CONNACK (+ SUBACK)
	ledger    *Ledger
	failures  map[string]int
	measureLo int64 // intended-time window counted in rates/latencies
	measureHi int64
	sentIn    int64 // publications with intended time in the window
	recvIn    int64 // deliveries with intended time in the window
	rejected  int64 // QoS>0 publications the broker refused (5.0 reason ≥ 0x80)
	sentBy    []uint64
	pubsDone  bool

	pub  codec.Publish
	ack  codec.Ack
	cack codec.Connack
	sack codec.Suback
	disc codec.Disconnect
}

func newLoop(r *runner) (*loop, error) {
	l := &loop{r: r, epfd: -1, evfd: -1, tfd: -1, sentBy: make([]uint64, r.cfg.Pubs),
		buf: make([]byte, readBufSize), lat: NewHistogram(), lag: NewHistogram(),
		connLat: NewHistogram(), ledger: NewLedger(), failures: map[string]int{},
		measureHi: math.MaxInt64, pay: make([]byte, r.cfg.Size)}
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

// run is the loop's goroutine.
func (l *loop) run() {
	defer l.closeFDs()
	events := make([]unix.EpollEvent, 256)
	nextHousekeep := time.Now().UnixNano() + int64(time.Second)
	for !l.stop {
		n, err := unix.EpollWait(l.epfd, events, 1000)
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
		l.publishDue(now)
		if now >= nextHousekeep {
			l.housekeep(now)
			nextHousekeep = now + int64(time.Second)
		}
	}
	for _, c := range l.conns {
		if c != nil {
			l.closeConn(c, "")
		}
	}
}

func (l *loop) runTasks() {
	l.mu.Lock()
	tasks := l.tasks
	l.tasks = nil
	l.mu.Unlock()
	for _, t := range tasks {
		t(l)
	}
}

// fail counts a connection failure by reason and closes c (if any).
func (l *loop) fail(c *conn, reason string) {
	l.failures[reason]++
	if c != nil {
		if c.state < stReady {
			l.stats.failed.Add(1)
		} else {
			l.stats.closed.Add(1)
		}
		l.closeConn(c, "")
	}
}

// dial starts a non-blocking connect for s.
func (l *loop) dial(s *spec, now int64) {
	family := unix.AF_INET
	if _, ok := s.broker.(*unix.SockaddrInet6); ok {
		family = unix.AF_INET6
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		l.failures["socket: "+errnoName(err)]++
		l.stats.failed.Add(1)
		return
	}
	unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	if s.source != nil {
		// Defer port choice to connect(), so the kernel can reuse a local
		// port towards different brokers (the 4-tuple, not the port, must
		// be unique).
		unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
		if err := unix.Bind(fd, cloneSockaddr(s.source)); err != nil {
			unix.Close(fd)
			l.failures["bind: "+errnoName(err)]++
			l.stats.failed.Add(1)
			return
		}
	}
	c := &conn{fd: fd, role: s.role, heapIdx: -1, rcv: s.rcv, pubID: uint32(s.idx),
		topic: s.topic, filter: s.filter, dialAt: now, state: stDialing}
	if len(l.free) > 0 {
		c.slot = l.free[len(l.free)-1]
		l.free = l.free[:len(l.free)-1]
		l.conns[c.slot] = c
	} else {
		c.slot = int32(len(l.conns))
		l.conns = append(l.conns, c)
	}
	err = unix.Connect(fd, cloneSockaddr(s.broker))
	if err != nil && !errors.Is(err, unix.EINPROGRESS) {
		l.fail(c, "connect: "+errnoName(err))
		return
	}
	ev := unix.EpollEvent{Events: unix.EPOLLOUT | unix.EPOLLIN | unix.EPOLLRDHUP, Fd: int32(fd), Pad: c.slot}
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		l.fail(c, "epoll: "+errnoName(err))
		return
	}
}

func errnoName(err error) string {
	var en syscall.Errno
	if errors.As(err, &en) {
		switch en {
		case unix.ECONNREFUSED:
			return "connection refused"
		case unix.ETIMEDOUT:
			return "timed out"
		case unix.EADDRNOTAVAIL:
			return "no free local port (EADDRNOTAVAIL: add --source addresses)"
		case unix.EMFILE, unix.ENFILE:
			return "too many open files (raise ulimit -n or use more processes)"
		case unix.ECONNRESET:
			return "connection reset"
		}
	}
	return err.Error()
}

func (l *loop) handle(c *conn, events uint32) {
	if c.state == stDialing {
		if events&(unix.EPOLLOUT|unix.EPOLLERR|unix.EPOLLHUP) == 0 {
			return
		}
		soerr, err := unix.GetsockoptInt(c.fd, unix.SOL_SOCKET, unix.SO_ERROR)
		if err == nil && soerr != 0 {
			err = syscall.Errno(soerr)
		}
		if err != nil {
			l.fail(c, "connect: "+errnoName(err))
			return
		}
		c.state = stConnack
		l.setInterest(c, false)
		l.sendConnect(c)
		return
	}
	if events&unix.EPOLLOUT != 0 && len(c.out) > 0 {
		l.flush(c)
		if c.state == stClosed {
			return
		}
	}
	if events&(unix.EPOLLIN|unix.EPOLLERR|unix.EPOLLHUP|unix.EPOLLRDHUP) != 0 {
		l.readFrom(c)
	}
}

func (l *loop) setInterest(c *conn, wantOut bool) {
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: int32(c.fd), Pad: c.slot}
	if wantOut {
		ev.Events |= unix.EPOLLOUT
	}
	unix.EpollCtl(l.epfd, unix.EPOLL_CTL_MOD, c.fd, &ev)
}

// write sends b now if the socket takes it, else buffers the rest and asks
// for EPOLLOUT. Order is preserved: once something is buffered, everything
// after it is too.
func (l *loop) write(c *conn, b []byte, now int64) {
	c.lastOut = now
	if len(c.out) > 0 {
		c.out = append(c.out, b...)
		return
	}
	n, err := unix.Write(c.fd, b)
	if err != nil && !errors.Is(err, unix.EAGAIN) {
		l.lostConn(c, "write: "+errnoName(err))
		return
	}
	if n < 0 {
		n = 0
	}
	if n < len(b) {
		c.out = append(c.out, b[n:]...)
		l.setInterest(c, true)
	}
}

func (l *loop) flush(c *conn) {
	n, err := unix.Write(c.fd, c.out)
	if err != nil && !errors.Is(err, unix.EAGAIN) {
		l.lostConn(c, "write: "+errnoName(err))
		return
	}
	if n > 0 {
		c.out = c.out[:copy(c.out, c.out[n:])]
	}
	if len(c.out) == 0 {
		if cap(c.out) > 64<<10 {
			c.out = nil
		}
		l.setInterest(c, false)
		if c.blocked && c.role == rolePub && c.inflt < c.window {
			c.blocked = false
			l.push(c)
		}
	}
}

// lostConn handles a connection that broke: a connect failure before it was
// ready, a counted disconnection after.
func (l *loop) lostConn(c *conn, reason string) {
	if c.state == stClosed {
		return
	}
	if c.state < stReady {
		l.fail(c, reason)
		return
	}
	if !l.stop && !l.r.closing.Load() {
		l.failures["dropped after connect: "+reason]++
	}
	l.stats.closed.Add(1)
	l.closeConn(c, "")
}

func (l *loop) closeConn(c *conn, _ string) {
	if c.state == stClosed {
		return
	}
	if c.heapIdx >= 0 {
		l.remove(c)
	}
	if c.role == rolePub {
		l.recordSent(c)
	}
	c.state = stClosed
	unix.Close(c.fd)
	l.conns[c.slot] = nil
	l.free = append(l.free, c.slot)
	c.in, c.out, c.ids = nil, nil, nil
}

// recordSent remembers how many sequence numbers publisher c spent.
func (l *loop) recordSent(c *conn) {
	if int(c.pubID) < len(l.sentBy) && c.sched.Sent() > l.sentBy[c.pubID] {
		l.sentBy[c.pubID] = c.sched.Sent()
	}
}

func (l *loop) sendConnect(c *conn) {
	cfg := &l.r.cfg
	p := codec.Connect{
		ProtocolName:    []byte("MQTT"),
		ProtocolVersion: cfg.Protocol,
		CleanStart:      !cfg.Persistent,
		KeepAlive:       uint16(cfg.KeepAlive / time.Second),
		ClientID:        l.r.clientID(c),
	}
	if cfg.Username != "" {
		p.UsernameFlag, p.Username = true, []byte(cfg.Username)
	}
	if cfg.Password != "" {
		p.PasswordFlag, p.Password = true, []byte(cfg.Password)
	}
	if cfg.Protocol == codec.Version5 {
		p.Props.ReceiveMaximum = 65535
		p.Props.Set(codec.PropReceiveMaximum)
		if cfg.Persistent {
			p.Props.SessionExpiry = cfg.SessionExpiry
			p.Props.Set(codec.PropSessionExpiry)
		}
	}
	l.enc = p.Append(l.enc[:0])
	l.write(c, l.enc, time.Now().UnixNano())
}

func (l *loop) readFrom(c *conn) {
	for i := 0; i < 4; i++ { // bounded per wake-up, for fairness
		n, err := unix.Read(c.fd, l.buf)
		if err != nil {
			if errors.Is(err, unix.EAGAIN) {
				return
			}
			if errors.Is(err, unix.EINTR) {
				continue
			}
			l.lostConn(c, "read: "+errnoName(err))
			return
		}
		if n == 0 {
			if c.state < stReady {
				l.fail(c, "closed by broker before "+stateWaits(c.state))
			} else {
				l.lostConn(c, "closed by broker")
			}
			return
		}
		l.consume(c, l.buf[:n])
		if c.state == stClosed || n < len(l.buf) {
			return
		}
	}
}

func stateWaits(s uint8) string {
	switch s {
	case stConnack:
		return "CONNACK"
	case stSuback:
		return "SUBACK"
	}
	return "ready"
}

// consume parses every whole packet of data (prefixed by c's partial one).
func (l *loop) consume(c *conn, data []byte) {
	if len(c.in) > 0 {
		c.in = append(c.in, data...)
		data = c.in
	}
	now := time.Now().UnixNano()
	for len(data) > 0 && c.state != stClosed {
		h, body, total, err := codec.ReadPacket(data, 0)
		if err == codec.ErrIncomplete {
			break
		}
		if err != nil {
			l.lostConn(c, "bad packet from broker: "+err.Error())
			return
		}
		l.packet(c, h, body, now)
		data = data[total:]
	}
	if c.state == stClosed {
		return
	}
	if len(data) == 0 {
		c.in = c.in[:0]
		if cap(c.in) > 64<<10 {
			c.in = nil
		}
		return
	}
	if len(c.in) > 0 {
		c.in = c.in[:copy(c.in, data)]
	} else {
		c.in = append(c.in[:0], data...)
	}
}

func (l *loop) packet(c *conn, h codec.FixedHeader, body []byte, now int64) {
	v := l.r.cfg.Protocol
	switch h.Type {
	case codec.CONNACK:
		if c.state != stConnack {
			l.lostConn(c, "unexpected CONNACK")
			return
		}
		l.cack.Props.Reset()
		if err := l.cack.Decode(h, body, v); err != nil {
			l.fail(c, "bad CONNACK: "+err.Error())
			return
		}
		if l.cack.ReasonCode != 0 {
			l.fail(c, fmt.Sprintf("CONNACK refused: 0x%02x", l.cack.ReasonCode))
			return
		}
		c.window = l.r.cfg.Inflight
		if v == codec.Version5 && l.cack.Props.Has(codec.PropReceiveMaximum) && int(l.cack.Props.ReceiveMaximum) < c.window {
			c.window = int(l.cack.Props.ReceiveMaximum)
		}
		if len(c.filter) > 0 {
			s := codec.Subscribe{PacketID: 1, Subscriptions: []codec.Subscription{{Filter: c.filter, QoS: l.r.cfg.QoS}}}
			l.enc = s.Append(l.enc[:0], v)
			c.state = stSuback
			l.write(c, l.enc, now)
			return
		}
		l.ready(c, now)
	case codec.SUBACK:
		if c.state != stSuback {
			return
		}
		l.sack.Props.Reset()
		if err := l.sack.Decode(h, body, v); err != nil {
			l.fail(c, "bad SUBACK: "+err.Error())
			return
		}
		if len(l.sack.ReasonCodes) != 1 || l.sack.ReasonCodes[0] >= 0x80 {
			l.fail(c, fmt.Sprintf("SUBACK refused: % x", l.sack.ReasonCodes))
			return
		}
		l.ready(c, now)
	case codec.PUBLISH:
		l.pub.Props.Reset()
		if err := l.pub.Decode(h, body, v); err != nil {
			l.lostConn(c, "bad PUBLISH: "+err.Error())
			return
		}
		l.deliver(c, &l.pub, now)
	case codec.PUBACK, codec.PUBREC, codec.PUBREL, codec.PUBCOMP:
		l.ack.Props.Reset()
		if err := l.ack.Decode(h, body, v); err != nil {
			l.lostConn(c, "bad ack: "+err.Error())
			return
		}
		l.onAck(c, now)
	case codec.PINGRESP:
	case codec.DISCONNECT:
		l.disc.Props.Reset()
		_ = l.disc.Decode(h, body, v)
		l.lostConn(c, fmt.Sprintf("DISCONNECT from broker: 0x%02x", l.disc.ReasonCode))
	default:
		l.lostConn(c, fmt.Sprintf("unexpected packet type %d", h.Type))
	}
}

func (l *loop) ready(c *conn, now int64) {
	c.state = stReady
	l.connLat.Record(now - c.dialAt)
	l.stats.connected.Add(1)
}

// deliver accounts one received PUBLISH and acknowledges it.
func (l *loop) deliver(c *conn, p *codec.Publish, now int64) {
	pub, seq, at, ok := ParseHeader(p.Payload)
	if !ok {
		l.stats.foreign.Add(1)
	} else {
		l.stats.recv.Add(1)
		dup := l.ledger.Receive(pub, c.rcv, c.pubID, seq)
		if !dup && at >= l.measureLo && at < l.measureHi {
			l.lat.Record(now - at)
			l.recvIn++
		}
	}
	switch p.QoS {
	case 1:
		l.ack = codec.Ack{Type: codec.PUBACK, PacketID: p.PacketID}
		l.enc = l.ack.Append(l.enc[:0], l.r.cfg.Protocol)
		l.write(c, l.enc, now)
	case 2:
		l.ack = codec.Ack{Type: codec.PUBREC, PacketID: p.PacketID}
		l.enc = l.ack.Append(l.enc[:0], l.r.cfg.Protocol)
		l.write(c, l.enc, now)
	}
}

func (l *loop) onAck(c *conn, now int64) {
	a := &l.ack
	switch a.Type {
	case codec.PUBREL: // we are the receiver of a QoS 2 message
		out := codec.Ack{Type: codec.PUBCOMP, PacketID: a.PacketID}
		l.enc = out.Append(l.enc[:0], l.r.cfg.Protocol)
		l.write(c, l.enc, now)
		return
	case codec.PUBREC:
		if a.ReasonCode >= 0x80 {
			l.rejected++
			l.freeID(c, a.PacketID)
			return
		}
		out := codec.Ack{Type: codec.PUBREL, PacketID: a.PacketID}
		l.enc = out.Append(l.enc[:0], l.r.cfg.Protocol)
		l.write(c, l.enc, now)
		return
	case codec.PUBACK, codec.PUBCOMP:
		if a.ReasonCode >= 0x80 {
			l.rejected++
		}
		l.freeID(c, a.PacketID)
	}
}

func (l *loop) freeID(c *conn, id uint16) {
	if c.ids == nil || c.ids[id/64]&(1<<(id%64)) == 0 {
		return // not ours: ignore rather than corrupt the window
	}
	c.ids[id/64] &^= 1 << (id % 64)
	c.inflt--
	if c.blocked && c.inflt < c.window && len(c.out) <= l.r.cfg.MaxOutbound {
		c.blocked = false
		l.push(c)
	}
}

// takeID finds a free packet id, or 0 if none is free.
func (c *conn) takeID() uint16 {
	if c.ids == nil {
		c.ids = make([]uint64, idSpace/64)
	}
	for tries := 0; tries < idSpace; tries++ {
		c.nextID++
		if c.nextID == 0 {
			c.nextID = 1
		}
		id := c.nextID
		if c.ids[id/64]&(1<<(id%64)) == 0 {
			c.ids[id/64] |= 1 << (id % 64)
			return id
		}
	}
	return 0
}

// publishDue sends every publication whose intended time has come, then
// arms the timer for the next one.
func (l *loop) publishDue(now int64) {
	for len(l.heap) > 0 {
		c := l.heap[0]
		_, at, ok := c.sched.Next()
		if !ok {
			l.remove(c)
			continue
		}
		if at > now {
			break
		}
		l.remove(c)
		l.publish(c, now)
		if c.state == stReady && !c.blocked {
			if _, _, ok := c.sched.Next(); ok {
				l.push(c)
			}
		}
	}
	l.arm()
}

// publish writes up to burstMax due messages of c in one write.
func (l *loop) publish(c *conn, now int64) {
	cfg := &l.r.cfg
	l.enc = l.enc[:0]
	due := c.sched.Due(now, burstMax)
	for i := 0; i < due; i++ {
		if c.role != rolePub || c.state != stReady {
			break
		}
		if cfg.QoS > 0 && c.inflt >= c.window {
			c.blocked = true
			break
		}
		if len(c.out) > cfg.MaxOutbound {
			c.blocked = true
			break
		}
		seq, at, _ := c.sched.Next()
		c.sched.Advance()
		if at >= l.measureLo && at < l.measureHi {
			l.sentIn++
		}
		l.stats.sent.Add(1)
		if cfg.DropEvery > 0 && seq%uint64(cfg.DropEvery) == uint64(cfg.DropEvery-1) {
			continue // deliberately never written: must show up as lost
		}
		l.stats.written.Add(1)
		PutHeader(l.pay, c.pubID, seq, at)
		p := codec.Publish{QoS: cfg.QoS, Topic: c.topic, Payload: l.pay}
		if cfg.QoS > 0 {
			p.PacketID = c.takeID()
			c.inflt++
		}
		l.enc = p.Append(l.enc, cfg.Protocol)
		l.lag.Record(now - at)
	}
	if len(l.enc) > 0 {
		l.write(c, l.enc, now)
	}
}

// arm sets the timerfd to the next due publication (absolute, realtime).
func (l *loop) arm() {
	var at int64
	if len(l.heap) > 0 {
		_, at, _ = l.heap[0].sched.Next()
	}
	if at == l.armedAt {
		return
	}
	l.armedAt = at
	var spec unix.ItimerSpec // zero disarms
	if at > 0 {
		spec.Value = unix.NsecToTimespec(at)
	}
	unix.TimerfdSettime(l.tfd, unix.TFD_TIMER_ABSTIME, &spec, nil)
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

// Heap of publishers ordered by next intended send time.

func (l *loop) due(i int) int64 { _, at, _ := l.heap[i].sched.Next(); return at }

func (l *loop) push(c *conn) {
	if c.heapIdx >= 0 {
		return
	}
	c.heapIdx = int32(len(l.heap))
	l.heap = append(l.heap, c)
	l.up(len(l.heap) - 1)
}

func (l *loop) remove(c *conn) {
	i := int(c.heapIdx)
	last := len(l.heap) - 1
	if i != last {
		l.swap(i, last)
	}
	l.heap[last] = nil
	l.heap = l.heap[:last]
	c.heapIdx = -1
	if i != last {
		l.down(i)
		l.up(i)
	}
}

func (l *loop) swap(i, j int) {
	l.heap[i], l.heap[j] = l.heap[j], l.heap[i]
	l.heap[i].heapIdx = int32(i)
	l.heap[j].heapIdx = int32(j)
}

func (l *loop) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if l.due(p) <= l.due(i) {
			return
		}
		l.swap(i, p)
		i = p
	}
}

func (l *loop) down(i int) {
	n := len(l.heap)
	for {
		m, a, b := i, 2*i+1, 2*i+2
		if a < n && l.due(a) < l.due(m) {
			m = a
		}
		if b < n && l.due(b) < l.due(m) {
			m = b
		}
		if m == i {
			return
		}
		l.swap(i, m)
		i = m
	}
}

// startPublishing is posted to every loop: publishers get their schedules.
func (l *loop) startPublishing(start int64, lo, hi int64) {
	cfg := &l.r.cfg
	l.measureLo, l.measureHi = lo, hi
	for _, c := range l.conns {
		if c == nil || c.role != rolePub || c.state != stReady {
			continue
		}
		c.sched = NewSchedule(start, cfg.Rate, float64(c.pubID%1024)/1024)
		l.push(c)
	}
	l.arm()
}

// stopPublishing freezes every schedule and records what was sent.
func (l *loop) stopPublishing() {
	for _, c := range l.conns {
		if c == nil || c.role != rolePub {
			continue
		}
		c.sched.Stop()
		if c.heapIdx >= 0 {
			l.remove(c)
		}
		l.recordSent(c)
	}
	l.pubsDone = true
	l.arm()
}

// disconnectAll sends DISCONNECT on every ready connection and closes all.
func (l *loop) disconnectAll() {
	var d codec.Disconnect
	for _, c := range l.conns {
		if c == nil {
			continue
		}
		if c.state == stReady && len(c.out) == 0 {
			l.enc = d.Append(l.enc[:0], l.r.cfg.Protocol)
			unix.Write(c.fd, l.enc)
		}
		l.closeConn(c, "")
	}
	l.stop = true
}

// resolve turns host:port into a socket address (first address found).
func resolve(hostport string) (unix.Sockaddr, error) {
	a, err := net.ResolveTCPAddr("tcp", hostport)
	if err != nil {
		return nil, err
	}
	return sockaddr(a.IP, a.Port), nil
}

// cloneSockaddr copies sa: x/sys/unix writes into a Sockaddr's private raw
// form on every call, so loops must not share one.
func cloneSockaddr(sa unix.Sockaddr) unix.Sockaddr {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		c := *a
		return &c
	case *unix.SockaddrInet6:
		c := *a
		return &c
	}
	return sa
}

func sockaddr(ip net.IP, port int) unix.Sockaddr {
	if v4 := ip.To4(); v4 != nil {
		sa := &unix.SockaddrInet4{Port: port}
		copy(sa.Addr[:], v4)
		return sa
	}
	sa := &unix.SockaddrInet6{Port: port}
	copy(sa.Addr[:], ip.To16())
	return sa
}

// clientID builds the client id of c: stable across runs for persistent
// sessions, so a second run resumes the same sessions.
func (r *runner) clientID(c *conn) []byte {
	b := []byte(r.cfg.ClientIDPrefix)
	switch c.role {
	case rolePub:
		b = append(b, 'p')
		b = strconv.AppendUint(b, uint64(c.pubID), 10)
	case roleSub:
		b = append(b, 's')
		b = strconv.AppendUint(b, uint64(c.pubID), 10)
	default:
		b = append(b, 'c')
		b = strconv.AppendUint(b, uint64(c.pubID), 10)
	}
	return b
}
