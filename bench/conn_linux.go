//go:build linux

package bench

import (
	"errors"
	"net"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ternmq/tern/codec"
)

// Connections: dial, readiness events, writes with buffering for what the
// socket does not take, reads, and the ways a connection ends (fail before
// it was ready, lostConn after, closeConn either way).

// fail counts a connection failure by reason and closes c (if any).
func (l *loop) fail(c *conn, reason string) {
	l.failures[reason]++
	if c != nil {
		if c.state < stReady {
			l.stats.failed.Add(1)
		} else {
			l.stats.closed.Add(1)
		}
		l.closeConn(c)
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
	c := &conn{fd: fd, role: s.role, queueIdx: -1, rcv: s.rcv, pubID: uint32(s.idx),
		topic: s.topic, filter: s.filter, dialAt: now, state: stDialing, conf: s.conf}
	l.dialing++
	l.dialMax = max(l.dialMax, l.dialing)
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

// errnoName names the socket errors a load test commonly meets, with the
// remedy where there is one.
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

// handle processes epoll events of c: completion of a non-blocking
// connect, room to flush buffered output, and input.
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
		l.setInterest(c, false)
		if c.conf != nil {
			l.startTLS(c, time.Now().UnixNano())
			return
		}
		c.state = stConnack
		l.sendConnect(c)
		// Written now rather than at the end of the turn: a connect storm
		// issues its CONNECTs as their TCP handshakes complete.
		c.dirty = false
		l.flush(c)
		return
	}
	if events&unix.EPOLLOUT != 0 && c.wantOut {
		l.flush(c)
		if c.state == stClosed {
			return
		}
	}
	if c.lim != nil && c.lim.paused {
		// Not reading (throttle_linux.go); a close by the broker is still
		// seen, or its level-triggered event would spin the loop.
		if events&(unix.EPOLLERR|unix.EPOLLHUP|unix.EPOLLRDHUP) != 0 {
			l.lostConn(c, "closed by broker while the subscriber was not reading")
		}
		return
	}
	if events&(unix.EPOLLIN|unix.EPOLLERR|unix.EPOLLHUP|unix.EPOLLRDHUP) != 0 {
		l.readFrom(c)
	}
}

// setInterest registers c for input (unless it is a paused throttled
// subscriber), and for output room when wantOut.
func (l *loop) setInterest(c *conn, wantOut bool) {
	ev := unix.EpollEvent{Events: unix.EPOLLRDHUP, Fd: int32(c.fd), Pad: c.slot}
	if c.lim == nil || !c.lim.paused {
		ev.Events |= unix.EPOLLIN
	}
	if wantOut {
		ev.Events |= unix.EPOLLOUT
	}
	unix.EpollCtl(l.epfd, unix.EPOLL_CTL_MOD, c.fd, &ev)
}

// write queues b on c. Nothing is written yet: every connection that has
// output is written once at the end of the loop's turn (flushDirty), so the
// acknowledgements of a whole read, or a publisher's burst plus its PUBRELs,
// leave in one write syscall instead of one per packet. Order is preserved:
// bytes are only ever appended to c.out.
func (l *loop) write(c *conn, b []byte, now int64) {
	c.out = append(c.out, b...)
	l.markDirty(c, now)
}

// markDirty records that c.out grew (at now) and must be written at the end
// of the turn. A connection already waiting for EPOLLOUT is written when the
// socket has room instead.
func (l *loop) markDirty(c *conn, now int64) {
	c.lastOut = now
	if c.dirty || c.wantOut {
		return
	}
	c.dirty = true
	l.dirty = append(l.dirty, c)
}

// flushDirty writes the output every connection queued during this turn:
// one write syscall per connection per turn.
func (l *loop) flushDirty() {
	for i, c := range l.dirty {
		l.dirty[i] = nil
		if !c.dirty {
			continue
		}
		c.dirty = false
		if c.state != stClosed && !c.wantOut {
			l.flush(c)
		}
	}
	l.dirty = l.dirty[:0]
}

// flush writes c's queued output; what the socket does not take waits for
// EPOLLOUT. Once it is all out, a publisher that was blocked on socket space
// is queued again.
func (l *loop) flush(c *conn) {
	out := &c.out // plain TCP: the MQTT bytes themselves
	if c.tls != nil {
		if !l.seal(c) {
			return
		}
		out = &c.tls.sock // TLS: the records sealing them
	}
	if len(*out) > 0 {
		n, err := unix.Write(c.fd, *out)
		if err != nil && !errors.Is(err, unix.EAGAIN) {
			l.lostConn(c, "write: "+errnoName(err))
			return
		}
		if n > 0 {
			*out = (*out)[:copy(*out, (*out)[n:])]
		}
		if len(*out) > 0 {
			if !c.wantOut {
				c.wantOut = true
				l.setInterest(c, true)
			}
			return
		}
	}
	if cap(*out) > 64<<10 {
		*out = nil
	}
	if c.wantOut {
		c.wantOut = false
		l.setInterest(c, false)
	}
	if c.blocked && c.role == rolePub && c.inflt < c.window {
		c.blocked = false
		l.enqueue(c)
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
	l.closeConn(c)
}

// closeConn closes c and frees its slot; a publisher's sent count is kept.
func (l *loop) closeConn(c *conn) {
	if c.state == stClosed {
		return
	}
	l.dequeue(c)
	if c.role == rolePub {
		l.recordSent(c)
	}
	if c.state < stReady {
		l.dialing--
	}
	if c.tls != nil {
		c.tls.pipe.Close() // ends a handshake goroutine waiting for input
	}
	c.state = stClosed
	unix.Close(c.fd)
	l.conns[c.slot] = nil
	l.free = append(l.free, c.slot)
	c.in, c.out, c.ids = nil, nil, nil
}

// readFrom reads what c's socket holds and consumes the packets in it.
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
		if c.tls != nil {
			l.tlsRead(c, l.buf[:n], time.Now().UnixNano())
		} else {
			l.consume(c, l.buf[:n])
		}
		if c.state == stClosed || n < len(l.buf) || (c.lim != nil && c.lim.paused) {
			return
		}
	}
}

// stateWaits names what a connection in state s waits for.
func stateWaits(s uint8) string {
	switch s {
	case stTLS:
		return "TLS handshake"
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
		if c.lim != nil && h.Type == codec.PUBLISH && !l.admit(c, now) {
			break // kept in c.in until resumeRead
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

// sockaddr converts ip and port to a socket address.
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

// dialPending dials queued clients while the loop has connect slots
// (Config.Parallel): a connect storm of N clients with at most P in their
// connect phase at once.
func (l *loop) dialPending(now int64) {
	i := 0
	for ; i < len(l.pending) && (l.budget <= 0 || l.dialing < l.budget); i++ {
		l.dial(&l.pending[i], now)
	}
	n := copy(l.pending, l.pending[i:])
	clear(l.pending[n:])
	l.pending = l.pending[:n]
}
