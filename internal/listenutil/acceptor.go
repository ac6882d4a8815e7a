package listenutil

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"
	gerrors "github.com/panjf2000/gnet/v2/pkg/errors"

	"github.com/ternmq/tern/internal/proxyproto"
)

// Listener is one listener an Acceptor serves.
type Listener struct {
	// Ln is the bound listener; the Acceptor closes it on Stop.
	Ln net.Listener
	// Context is the gnet context its sockets are enrolled with (the
	// engine's OnOpen tells its connections from others by it).
	Context any
	// Proxied, when set, means every connection starts with a PROXY
	// protocol header: it is read (within ProxyTimeout) before the socket
	// is enrolled, with the context Proxied returns for the address the
	// header named.
	Proxied func(addr net.Addr) any
	// ProxyTimeout bounds the read of a PROXY header.
	ProxyTimeout time.Duration
}

// Acceptor runs the Go side of a listener engine on gnet's event loops
// (server/tlsloop, server/wsloop): one accept goroutine per listener that
// enrolls each socket on an event loop (Engine.Register), the PROXY
// protocol header read before that, the back-off after accept errors, and
// a Stop that closes the listeners and waits for all of it.
//
// Concurrency contract: Add before Start; Boot from the engine's OnBoot;
// Start from its OnTick (once gnet's loops are all registered); Stop,
// Stopped, Done, Sleep and AcceptErrors from any goroutine.
type Acceptor struct {
	kind         string // "TLS", "WebSocket": in log lines
	logger       *slog.Logger
	proxyRefused func(remote net.Addr, err error)

	lns     []Listener
	eng     atomic.Pointer[gnet.Engine]
	done    chan struct{}
	stopped atomic.Bool
	startMu sync.Mutex // orders Start with Stop: no wg.Add after Stop's Wait began
	started bool
	wg      sync.WaitGroup // accept loops, PROXY header reads, Start's extra goroutines

	pmu      sync.Mutex
	proxying map[net.Conn]struct{} // connections whose PROXY header is being read (Stop closes them)

	acceptErrs atomic.Uint64
	logAccept  RateLog
}

// NewAcceptor returns an Acceptor whose log lines name kind. proxyRefused,
// when set, is told of each connection closed because its PROXY header was
// missing or invalid (any goroutine).
func NewAcceptor(kind string, logger *slog.Logger, proxyRefused func(remote net.Addr, err error)) *Acceptor {
	return &Acceptor{kind: kind, logger: logger, proxyRefused: proxyRefused, done: make(chan struct{})}
}

// Add registers a bound listener. Before Start.
func (a *Acceptor) Add(l Listener) { a.lns = append(a.lns, l) }

// CloseListeners closes the listeners added so far (a failed Listen).
func (a *Acceptor) CloseListeners() {
	for _, l := range a.lns {
		_ = l.Ln.Close()
	}
}

// Boot records the gnet engine sockets are registered with (OnBoot).
func (a *Acceptor) Boot(eng gnet.Engine) { a.eng.Store(&eng) }

// Engine returns the engine Boot recorded, nil before.
func (a *Acceptor) Engine() *gnet.Engine { return a.eng.Load() }

// Start starts the accept loops, and each of also on a goroutine of its own
// that must return once done is closed (Stop waits for it). Only the first
// call does anything, and none after Stop began. gnet registers its event
// loops after OnBoot without synchronisation and starts the ticker only
// once they all are: from the first OnTick Engine.Register reads them
// race-free, so call Start there.
func (a *Acceptor) Start(also ...func(done <-chan struct{})) {
	a.startMu.Lock()
	defer a.startMu.Unlock()
	if a.started || a.stopped.Load() {
		return
	}
	a.started = true
	for _, f := range also {
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			f(a.done)
		}()
	}
	for _, l := range a.lns {
		a.wg.Add(1)
		go a.accept(l)
	}
}

// Stop closes the listeners and the connections whose PROXY header is
// being read, and waits for the accept loops and Start's goroutines.
// Idempotent; false if Stop ran before.
func (a *Acceptor) Stop() bool {
	a.startMu.Lock()
	first := a.stopped.CompareAndSwap(false, true)
	a.startMu.Unlock()
	if !first {
		return false
	}
	close(a.done)
	a.CloseListeners()
	a.pmu.Lock()
	for nc := range a.proxying {
		_ = nc.Close() // its header read fails at once
	}
	a.pmu.Unlock()
	a.wg.Wait()
	return true
}

// Stopped reports whether Stop began.
func (a *Acceptor) Stopped() bool { return a.stopped.Load() }

// Done is closed when Stop begins.
func (a *Acceptor) Done() <-chan struct{} { return a.done }

// Sleep waits d or until Stop; false once stopping.
func (a *Acceptor) Sleep(d time.Duration) bool { return Sleep(a.done, d) }

// AcceptErrors is how many Accepts failed (each backed off).
func (a *Acceptor) AcceptErrors() uint64 { return a.acceptErrs.Load() }

// accept accepts until Stop and enrolls each socket on an event loop,
// backing off on errors such as EMFILE.
func (a *Acceptor) accept(l Listener) {
	defer a.wg.Done()
	var pause time.Duration
	for {
		nc, err := l.Ln.Accept()
		if err != nil {
			if a.stopped.Load() {
				return
			}
			a.acceptErrs.Add(1)
			pause = Backoff(pause)
			a.logAccept.Log(a.logger, slog.LevelError, a.kind+" accept failed; backing off",
				"addr", l.Ln.Addr().String(), "err", err, "backoff", pause)
			if !a.Sleep(pause) {
				return
			}
			continue
		}
		pause = 0
		if l.Proxied != nil {
			a.acceptProxied(nc, l)
			continue
		}
		if !a.enroll(nc, l.Context) {
			_ = nc.Close()
			if a.stopped.Load() {
				return
			}
		}
	}
}

// acceptProxied reads nc's PROXY protocol header on a goroutine of its own
// (a silent peer holds it for at most ProxyTimeout, and delays no other
// accept), byte-exactly so that gnet then reads the first byte after it
// from the socket, and enrolls nc with the address the header named. An
// invalid header closes nc and is reported to proxyRefused.
func (a *Acceptor) acceptProxied(nc net.Conn, l Listener) {
	a.pmu.Lock()
	if a.stopped.Load() {
		a.pmu.Unlock()
		_ = nc.Close()
		return
	}
	if a.proxying == nil {
		a.proxying = map[net.Conn]struct{}{}
	}
	a.proxying[nc] = struct{}{}
	a.wg.Add(1) // the accept loop holds the group open: Stop's Wait has not returned
	a.pmu.Unlock()
	go func() {
		defer a.wg.Done()
		addr, err := proxyproto.ReadHeader(nc, l.ProxyTimeout)
		a.pmu.Lock()
		delete(a.proxying, nc)
		a.pmu.Unlock()
		if err != nil {
			_ = nc.Close()
			if !a.stopped.Load() && a.proxyRefused != nil {
				a.proxyRefused(nc.RemoteAddr(), err)
			}
			return
		}
		_ = nc.SetReadDeadline(time.Time{})
		if !a.enroll(nc, l.Proxied(addr)) {
			_ = nc.Close()
		}
	}()
}

// enroll hands nc to gnet (which dups its descriptor and closes nc). The
// loops start just after OnBoot: until they do, Register says the engine
// is empty, and enroll waits a little.
func (a *Acceptor) enroll(nc net.Conn, ctxVal any) bool {
	ctx := gnet.NewNetConnContext(gnet.NewContext(context.Background(), ctxVal), nc)
	for range 1000 {
		eng := a.eng.Load()
		if eng == nil {
			if !a.Sleep(time.Millisecond) {
				return false
			}
			continue
		}
		if _, err := eng.Register(ctx); err == nil {
			return true
		} else if a.stopped.Load() || !errors.Is(err, gerrors.ErrEmptyEngine) {
			a.logAccept.Log(a.logger, slog.LevelError, a.kind+" connection not enrolled on an event loop", "err", err)
			return false
		}
		if !a.Sleep(time.Millisecond) {
			return false
		}
	}
	return false
}
