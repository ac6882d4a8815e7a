package server

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"
)

// gnetLogger routes gnet's own logging into the broker's slog.Logger.
type gnetLogger struct{ l *slog.Logger }

func (g gnetLogger) Debugf(format string, args ...any) {
	g.l.Log(context.Background(), slog.LevelDebug-4, "gnet: "+fmt.Sprintf(format, args...))
}

func (g gnetLogger) Infof(format string, args ...any) {
	g.l.Debug("gnet: " + fmt.Sprintf(format, args...))
}

func (g gnetLogger) Warnf(format string, args ...any) {
	g.l.Warn("gnet: " + fmt.Sprintf(format, args...))
}

func (g gnetLogger) Errorf(format string, args ...any) {
	g.l.Error("gnet: " + fmt.Sprintf(format, args...))
}

func (g gnetLogger) Fatalf(format string, args ...any) {
	g.l.Error("gnet: " + fmt.Sprintf(format, args...))
}

// loopOf returns the broker state for gnet loop el, creating it on first use.
func (s *Server) loopOf(el gnet.EventLoop) *loop {
	s.loopsMu.Lock()
	defer s.loopsMu.Unlock()
	l := s.loops[el]
	if l == nil {
		l = newLoop(s, el)
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
		if sa, err := unix.Getsockname(fd); err == nil {
			switch a := sa.(type) {
			case *unix.SockaddrInet4:
				s.addrs = append(s.addrs, &net.TCPAddr{IP: net.IP(a.Addr[:]).To16(), Port: a.Port})
			case *unix.SockaddrInet6:
				s.addrs = append(s.addrs, &net.TCPAddr{IP: net.IP(a.Addr[:]), Port: a.Port})
			}
		}
		_ = unix.Close(fd)
	}
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
	l.now = time.Now().UnixNano()
	cl := &client{loop: l, conn: c, openedAt: l.now / 1e9}
	cl.loopback = isLoopback(c.LocalAddr())
	c.SetContext(cl)
	l.wheel.add(cl, cl.openedAt+int64(s.opts.ConnectTimeout/time.Second))
	return nil, gnet.None
}

func (h *handler) OnTraffic(c gnet.Conn) gnet.Action {
	cl, _ := c.Context().(*client)
	if cl == nil {
		return gnet.Close
	}
	return cl.onTraffic()
}

func (h *handler) OnClose(c gnet.Conn, err error) gnet.Action {
	cl, _ := c.Context().(*client)
	if cl == nil {
		return gnet.None
	}
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
