package server

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"net"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/panjf2000/gnet/v2"
	"github.com/panjf2000/gnet/v2/pkg/socket"
	"golang.org/x/sys/unix"
)

// gnetLogger routes gnet's own logging into the broker's slog.Logger and
// keeps its error lines: when gnet stops the whole engine by itself, Rotate
// returns nil, so those lines are the only record of why, for Serve's
// error. A failed accept (EMFILE, ENFILE, ENOBUFS, ENOMEM) no longer stops
// the engine (the patch in third_party/gnet refuses the queued connection
// with a spare descriptor instead); it is counted and logged, rate-limited,
// as a refusal of limit accept_emfile — an attacker opening sockets must
// not also flood the log.
type gnetLogger struct{ s *Server }

func (g gnetLogger) Debugf(format string, args ...any) {
	g.s.log.Log(context.Background(), slog.LevelDebug-4, "gnet: "+fmt.Sprintf(format, args...))
}

func (g gnetLogger) Infof(format string, args ...any) {
	g.s.log.Debug("gnet: " + fmt.Sprintf(format, args...))
}

func (g gnetLogger) Warnf(format string, args ...any) {
	g.s.log.Warn("gnet: " + fmt.Sprintf(format, args...))
}

func (g gnetLogger) Errorf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if strings.HasPrefix(format, "Accept() failed") {
		g.s.refuse(limitEMFILE, "", "", "", msg)
		return
	}
	g.s.engineErr.add(msg)
	g.s.log.Error("gnet: " + msg)
}

func (g gnetLogger) Fatalf(format string, args ...any) { g.Errorf(format, args...) }

// engineErrors keeps the last few error lines gnet logged. Safe for
// concurrent use (gnet logs from every loop).
type engineErrors struct {
	mu    sync.Mutex
	lines []string
}

func (e *engineErrors) add(line string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.lines) == 4 {
		e.lines = append(e.lines[:0], e.lines[1:]...)
	}
	e.lines = append(e.lines, line)
}

func (e *engineErrors) String() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.lines) == 0 {
		return "no error logged"
	}
	return strings.Join(e.lines, "; ")
}

// stoppedByItself is what Serve returns when gnet's loops stopped although
// Close was not called: an error naming gnet's last error lines. It also
// marks the server closing (a later Close returns at once) and stops the
// ticker.
func (s *Server) stoppedByItself() error {
	if s.closing.CompareAndSwap(false, true) {
		close(s.done)
	}
	err := fmt.Errorf("event loops stopped without Close: %s", s.engineErr.String())
	s.log.Error("broker stopped by itself", "err", err)
	return err
}

// The descriptor budget. Every connection costs a file descriptor; when
// the process has none left, accept fails with EMFILE. Upstream gnet then
// stops the engine and every connection with it; the copy in
// third_party/gnet carries a patch (third_party/gnet/PATCHES.md) that
// refuses the queued connection with a spare descriptor instead, and the
// broker counts it (limit accept_emfile). Still, the broker never lets
// clients take the last descriptors, which the store needs (Pebble opens
// files while it runs). Serve raises the soft RLIMIT_NOFILE to the hard
// limit (as nats-server and mosquitto do) and resolves
// Limits.MaxConnections against it, keeping FDReserve descriptors for the
// store, listeners, the admin port and connections accepted but not yet
// opened. OnOpen then closes, before it holds anything, a connection that
// is over MaxConnections or whose descriptor number shows the table is
// within FDReserve/2 of the limit (descriptors are allocated lowest-first,
// so descriptor n means at least n+1 are open, whoever opened them:
// Pebble's table cache, TLS connections, the admin port).
//
// gnet's acceptor goroutine takes every queued connection in one go and
// only then do the loops open (and refuse) them, so a burst of
// simultaneous connects is held in descriptors before any is refused. The
// listen backlog bounds that burst: OnBoot lowers it to FDReserve/4 (64 by
// default; mosquitto uses 100), so connections accepted but not yet
// refused fit in the half of the reserve the descriptor check leaves free.
// Before the patch, 300 simultaneous connects at RLIMIT_NOFILE 200 stopped
// the engine in 24 runs of 30 with the kernel's backlog (4096) and none in
// 30 with 25, and 400 connects still stopped it in 3 runs of 75
// (TestDescriptorLimitBurst now requires the broker to keep serving). Should
// the engine stop anyway for another reason, Serve returns an error
// (stoppedByItself) so a supervisor restarts the broker rather than
// seeing a clean exit.
//
// Far from the limit the backlog is raised again (listenbacklog.go): a
// connect storm would otherwise overflow the short queue and wait for TCP
// retransmissions.

// resolveMaxConnections sets maxConns and fdGuard from the descriptor
// limit, once, before any listener accepts. A limit under twice FDReserve
// keeps half of it in reserve instead.
func (s *Server) resolveMaxConnections() {
	lim := &s.opts.Limits
	nofile, raised, err := raiseNoFile()
	if err != nil {
		s.log.Warn("descriptor limit unknown: max_connections is not bounded by it", "err", err)
		s.maxConns, s.fdGuard, s.backlog = int64(lim.MaxConnections), math.MaxInt, 0
		if s.maxConns == 0 {
			s.maxConns = math.MaxInt64
		}
		return
	}
	reserve := lim.FDReserve
	if reserve > nofile/2 {
		reserve = nofile / 2
		s.log.Warn("descriptor limit is low: fd_reserve lowered to half of it", "nofile", nofile, "fd_reserve", reserve)
	}
	limit := nofile - reserve
	switch {
	case lim.MaxConnections == 0:
	case lim.MaxConnections > limit:
		s.log.Warn("max_connections is more than the descriptor limit leaves: lowered (raise the limit, e.g. LimitNOFILE= in the systemd unit)",
			"max_connections", lim.MaxConnections, "nofile", nofile, "fd_reserve", reserve, "lowered_to", limit)
	default:
		limit = lim.MaxConnections
	}
	s.maxConns = int64(limit)
	s.fdGuard = nofile - reserve/2
	s.backlog = max(reserve/4, 8)
	s.log.Info("connection limit", "max_connections", limit, "nofile", nofile, "nofile_raised", raised,
		"fd_reserve", reserve, "listen_backlog", s.backlog)
}

// raiseNoFile raises the soft RLIMIT_NOFILE to the hard limit and returns
// the soft limit in force afterwards (capped to what an int descriptor
// count needs) and whether it was raised. A refused raise (macOS refuses
// more than OPEN_MAX) keeps the soft limit.
func raiseNoFile() (int, bool, error) {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return 0, false, err
	}
	raised := false
	if r.Cur < r.Max {
		want := syscall.Rlimit{Cur: r.Max, Max: r.Max}
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err == nil {
			r, raised = want, true
		}
	}
	if r.Cur > math.MaxInt32 {
		return math.MaxInt32, raised, nil
	}
	return int(r.Cur), raised, nil
}

// admit counts a new connection and decides whether it may stay (see the
// descriptor budget above). l says whether c is a gnet socket with a
// descriptor of its own. Refusals are counted and logged by limit.
func (s *Server) admit(l *loop, c gnet.Conn) bool {
	n := s.conns.Add(1)
	if n > s.maxConns {
		s.conns.Add(-1)
		s.refuse(limitConnections, "", "", remoteString(c),
			"closed at once: "+strconv.FormatInt(n-1, 10)+" connections open, max_connections is "+strconv.FormatInt(s.maxConns, 10))
		return false
	}
	if l.fds {
		if fd := c.Fd(); fd >= s.fdGuard {
			s.conns.Add(-1)
			s.refuse(limitDescriptors, "", "", remoteString(c),
				"closed at once: descriptor "+strconv.Itoa(fd)+" is within fd_reserve/2 of the descriptor limit")
			return false
		}
	}
	return true
}

// tcpKeepAlive is the idle time after which the kernel probes a silent TCP
// connection (then every tcpKeepAlive/5, closing after 5 unanswered
// probes: about two minutes for a peer that vanished). MQTT's keepalive
// covers clients that ask for one; a client with keepalive 0 is never
// checked by MQTT, and without this a peer gone without a FIN or RST
// (power loss, a NAT that forgot the flow) would hold its session and
// descriptor forever.
const tcpKeepAlive = 60 * time.Second

// setKeepAlive turns TCP keepalive on for the listening socket fd. Linux,
// FreeBSD and DragonFly copy it to every accepted socket; elsewhere OnOpen
// sets it per connection (keepAliveInherited). Setting it here rather
// than with gnet.WithTCPKeepAlive matters: gnet applies that option even
// when bind failed, to the descriptor number bind closed, replacing the
// bind error ("address already in use") with a setsockopt one.
func setKeepAlive(fd int) error {
	return socket.SetKeepAlive(fd, true, int(tcpKeepAlive/time.Second), int(tcpKeepAlive/time.Second)/5, 5)
}

const keepAliveInherited = runtime.GOOS == "linux" || runtime.GOOS == "freebsd" || runtime.GOOS == "dragonfly"

// loopOf returns the broker state for gnet loop el, creating it on first use.
func (s *Server) loopOf(el gnet.EventLoop) *loop {
	s.loopsMu.Lock()
	defer s.loopsMu.Unlock()
	l := s.loops[el]
	if l == nil {
		l = newLoop(s, el)
		l.id = len(s.loops) // loops are never removed: ids stay unique
		s.loops[el] = l
		list := make([]*loop, 0, len(s.loops))
		for _, x := range s.loops {
			list = append(list, x)
		}
		s.loopSet.Store(&list)
	}
	return l
}

type handler struct {
	gnet.BuiltinEventEngine
	s *Server
}

func (h *handler) OnBoot(eng gnet.Engine) gnet.Action {
	s := h.s
	s.eng = eng
	for _, l := range s.opts.Listeners {
		fd, err := eng.DupListener("tcp", l)
		if err != nil {
			continue
		}
		if err := setKeepAlive(fd); err != nil {
			s.log.Warn("TCP keepalive not set on listener", "listener", l, "err", err)
		}
		keep := false
		if s.backlog > 0 { // listen again on a listening socket only sets its backlog
			if err := unix.Listen(fd, s.backlog); err != nil {
				s.log.Warn("listen backlog not lowered", "listener", l, "backlog", s.backlog, "err", err)
			} else {
				keep = true // listenbacklog.go: raised while descriptors are plenty
			}
		}
		if sa, err := unix.Getsockname(fd); err == nil {
			var bound net.Addr
			switch a := sa.(type) {
			case *unix.SockaddrInet4:
				bound = &net.TCPAddr{IP: net.IP(a.Addr[:]).To16(), Port: a.Port}
			case *unix.SockaddrInet6:
				bound = &net.TCPAddr{IP: net.IP(a.Addr[:]), Port: a.Port}
			}
			if bound != nil {
				s.addrs = append(s.addrs, bound)
				s.bindListenerSettings(l, bound, true) // ratelimit.go
			}
		}
		if keep {
			s.keepListenFD(fd)
		} else {
			_ = unix.Close(fd)
		}
	}
	s.tuneBacklog()
	s.log.Info("tern listening", "listeners", s.addrStrings())
	close(s.ready)
	return gnet.None
}

func (s *Server) addrStrings() []string {
	out := make([]string, len(s.addrs))
	for i, a := range s.addrs {
		out[i] = a.String()
	}
	return out
}

func (h *handler) OnOpen(c gnet.Conn) ([]byte, gnet.Action) {
	s := h.s
	if s.closing.Load() {
		return nil, gnet.Close
	}
	l := s.loopOf(c.EventLoop())
	if !s.admit(l, c) {
		return nil, gnet.Close
	}
	if l.fds && !keepAliveInherited {
		_ = c.SetKeepAlive(true, tcpKeepAlive, tcpKeepAlive/5, 5)
	}
	l.now = time.Now().UnixNano()
	ls := s.listenerOf(c.LocalAddr()) // ratelimit.go: nil unless the listener has settings
	if ls != nil && !s.admitListener(ls, c, l.now) {
		s.conns.Add(-1)
		return nil, gnet.Close
	}
	cl := &client{loop: l, conn: c, deadline: uint32(l.now/1e9 + int64(s.opts.ConnectTimeout/time.Second))}
	if ls != nil { // only a listener with settings: its connection count (ratelimit.go)
		cl.coldState().lst = ls
	}
	cl.flags.put(flagProxyWait, ls != nil && ls.proxyOnGnet)
	cl.flags.put(flagLoopback, s.onLoopbackListener(c.LocalAddr())) // connect.go: by the listener's configured address
	c.SetContext(cl)
	l.wheel.add(cl, int64(cl.deadline))
	s.tuneBacklog() // listenbacklog.go
	return nil, gnet.None
}

// OnShutdown closes what OnBoot kept of the listeners.
func (h *handler) OnShutdown(gnet.Engine) { h.s.closeListenFDs() }

func (h *handler) OnTraffic(c gnet.Conn) gnet.Action {
	cl, _ := c.Context().(*client)
	if cl == nil {
		return gnet.Close
	}
	return cl.onTraffic()
}

// OnClose runs once per connection OnOpen admitted (a refused one has no
// client and was never counted).
func (h *handler) OnClose(c gnet.Conn, err error) gnet.Action {
	cl, _ := c.Context().(*client)
	if cl == nil {
		return gnet.None
	}
	h.s.conns.Add(-1)
	h.s.tuneBacklog() // listenbacklog.go
	if cl.cold != nil && cl.cold.lst != nil {
		cl.cold.lst.conns.Add(-1)
	}
	cl.stopRateTimer()
	cl.onClose(err)
	return gnet.None
}

func isLoopback(a net.Addr) bool {
	if t, ok := a.(*net.TCPAddr); ok {
		return t.IP.IsLoopback()
	}
	if a == nil {
		return false
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// gnetPkg is the import path of gnet's own types: a gnet.EventLoop of
// that package runs raw sockets; any other (server/stdnet's task loops)
// runs standard-library connections, which have no descriptor of their
// own to inspect or half-close and linger on their own when closed.
var gnetPkg = reflect.TypeOf(gnet.Engine{}).PkgPath()

func ownsFDs(el gnet.EventLoop) bool {
	t := reflect.TypeOf(el)
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t.PkgPath() == gnetPkg
}

// closeConn closes c on its loop el at once. A connection of server/tlsloop
// or server/wsloop wraps the gnet connection gnet's loop knows (a wss://
// one wraps twice): that one is closed (gnet then calls OnClose, which
// reaches the broker with the outer wrapper). A wsloop connection closes
// the WebSocket way instead (CloseHandshake: close frame, OnClose at once,
// the socket kept until the peer answers).
func closeConn(el gnet.EventLoop, c gnet.Conn) error {
	if w, ok := c.(interface{ CloseHandshake() bool }); ok && w.CloseHandshake() {
		return nil
	}
	for {
		u, ok := c.(interface{ Unwrap() gnet.Conn })
		if !ok {
			return el.Close(c)
		}
		c = u.Unwrap()
	}
}
