package server

import (
	"bytes"
	"sync"

	"github.com/panjf2000/gnet/v2"

	"github.com/ternmq/tern/codec"
)

// Authentication off the event loops.
//
// (An Authenticator that remembers verified credentials —
// cachedAuthenticator, the password file — answers a remembered check on
// the loop instead, in about a microsecond: see authenticateAsync.)
//
// An Authenticator may be slow: the password file derives PBKDF2 keys
// (1–2 ms each), a custom one may ask a database. Run on an event loop,
// that time would stall every other connection of the loop, and a connect
// storm would stall them all. So a CONNECT that needs the Authenticator is
// copied (the loop's decode scratch is reused by the next packet) and
// handed to a fixed pool of authPoolWorkers goroutines through a bounded
// queue; the connection reads no further input meanwhile. The verdict is
// posted back to the connection's loop, which finishes the CONNECT
// (completeConnect) and then processes whatever input arrived.
//
// Bounds: the queue holds authQueueMax CONNECTs; beyond that a CONNECT is
// refused at once (0x89 Server busy / 3 Server unavailable), counted under
// "auth_queue". The connect timeout keeps running while a CONNECT waits:
// an Authenticator that never answers makes the client time out, not the
// broker hang. A client that keeps sending while it waits may buffer at
// most as much as a paced publisher (pace.go).

const authQueueMax = 4096

// authPool runs Authenticate calls. Safe for concurrent use.
type authPool struct {
	jobs chan func()
	done chan struct{}
	once sync.Once
}

func newAuthPool(workers int) *authPool {
	p := &authPool{jobs: make(chan func(), authQueueMax), done: make(chan struct{})}
	for range workers {
		go func() {
			for {
				select {
				case job := <-p.jobs:
					job()
				case <-p.done:
					return
				}
			}
		}()
	}
	return p
}

// submit queues job, reporting false when the queue is full.
func (p *authPool) submit(job func()) bool {
	select {
	case p.jobs <- job:
		return true
	default:
		return false
	}
}

// stop ends the workers; queued jobs are abandoned (their connections are
// closing with the server). Safe to call more than once, and with submits
// racing it.
func (p *authPool) stop() { p.once.Do(func() { close(p.done) }) }

// cachedAuthenticator is an Authenticator that remembers verified
// credentials and can answer from that memory without blocking
// (auth.PasswordFile): a reconnect storm then costs no derivations and no
// trip through the pool. AuthenticateCached returning false means "ask
// Authenticate", not "refused".
type cachedAuthenticator interface {
	AuthenticateCached(ConnectInfo) bool
}

// authCacheStats is an Authenticator that counts how its remembered
// verdicts served (auth.PasswordFile); /metrics exports them.
type authCacheStats interface {
	CacheStats() (hits, misses uint64)
}

// authenticateAsync hands the CONNECT p to the pool, unless the
// Authenticator remembers these credentials (then the CONNECT completes
// now, on the loop). Runs on c's loop.
func (c *client) authenticateAsync(a Authenticator, p *codec.Connect, assigned bool) gnet.Action {
	srv := c.loop.srv
	if ca, ok := a.(cachedAuthenticator); ok && ca.AuthenticateCached(ConnectInfo{ClientID: c.id, Username: c.username(),
		Password: p.Password, Remote: c.remoteAddr(), Local: c.conn.LocalAddr(), ProtocolVersion: p.ProtocolVersion}) {
		return c.completeConnect(p, assigned)
	}
	cp := cloneConnect(p)
	info := ConnectInfo{ClientID: c.id, Username: c.username(), Password: cp.Password,
		Remote: c.remoteAddr(), Local: c.conn.LocalAddr(), ProtocolVersion: cp.ProtocolVersion}
	c.flags.set(flagAuthenticating)
	ok := srv.auth.submit(func() {
		err := a.Authenticate(info)
		c.loop.post(func() { c.authenticated(cp, assigned, err) })
	})
	if !ok {
		c.flags.clear(flagAuthenticating)
		srv.refuse(limitAuthQueue, c.id, c.username(), remoteString(c.conn), "authentication queue full")
		return c.refuse(cp.ProtocolVersion, codec.ServerBusy, "server busy: too many CONNECTs waiting for authentication")
	}
	return gnet.None
}

// authenticated runs on c's loop with the Authenticator's verdict.
func (c *client) authenticated(p *codec.Connect, assigned bool, err error) {
	c.resumeConnect(func() gnet.Action {
		if err != nil {
			return c.refuse(p.ProtocolVersion, authRefusal(err), "authentication failed: "+err.Error())
		}
		return c.completeConnect(p, assigned)
	})
}

// resumeConnect continues a CONNECT that waited off the loop (for the
// Authenticator, or for the cluster's claim) with step, then does what the
// end of a read event does. Runs on c's loop.
func (c *client) resumeConnect(step func() gnet.Action) {
	if !c.flags.has(flagAuthenticating) || c.state != stateNew {
		return // closed, or timed out, meanwhile
	}
	c.flags.clear(flagAuthenticating)
	l := c.loop
	l.now = nanotime()
	act := step()
	said := len(l.out) > 0 || c.lastPending != nil
	c.finishEvent()
	l.drainLocal()
	l.srv.submit(l, &l.tx, nil)
	if act == gnet.Close {
		if said {
			act = c.linger()
		}
		if act == gnet.Close {
			_ = closeConn(l.el, c.conn)
		}
		return
	}
	if c.conn.InboundBuffered() > 0 { // what the client sent while it waited
		if c.onTraffic() == gnet.Close {
			_ = closeConn(l.el, c.conn)
		}
	}
}

// cloneConnect deep-copies a decoded CONNECT out of the loop's buffers.
func cloneConnect(p *codec.Connect) *codec.Connect {
	cp := *p
	cp.ProtocolName = bytes.Clone(p.ProtocolName)
	cp.ClientID = bytes.Clone(p.ClientID)
	cp.Username = bytes.Clone(p.Username)
	cp.Password = bytes.Clone(p.Password)
	cp.WillTopic = bytes.Clone(p.WillTopic)
	cp.WillPayload = bytes.Clone(p.WillPayload)
	cp.Props = p.Props.Clone()
	cp.WillProps = p.WillProps.Clone()
	return &cp
}
