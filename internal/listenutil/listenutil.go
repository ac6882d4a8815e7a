// Package listenutil holds what the broker's Go-side accept loops share
// (server/stdnet for TLS and WebSocket, server/tlsloop and server/wsloop
// on the event loops): the pause after accept errors, a sleep that ends at
// stop, log lines rate-limited so a scanner or a reconnect storm cannot
// flood the log, and (acceptor.go) the Acceptor that tlsloop and wsloop
// both run: accept loops enrolling sockets on gnet's event loops, with the
// PROXY protocol header read first where a listener expects one. Of
// Tern's packages it imports only internal/proxyproto.
package listenutil

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Backoff is the pause after consecutive Accept errors: 5 ms doubling to
// 1 s, as net/http does, so that EMFILE does not spin a core. prev is the
// previous pause (0 after a success).
func Backoff(prev time.Duration) time.Duration {
	if prev == 0 {
		return 5 * time.Millisecond
	}
	return min(2*prev, time.Second)
}

// Sleep waits d or until done is closed; false if done was closed.
func Sleep(done <-chan struct{}, d time.Duration) bool {
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-done:
		return false
	case <-tm.C:
		return true
	}
}

// LogEvery is how often a RateLog lets a line through.
const LogEvery = 10 * time.Second

// RateLog lets one log line of a kind through per LogEvery and counts the
// ones it held back (reported as suppressed_since_last on the next line).
// The zero value is ready; safe from any goroutine.
type RateLog struct {
	mu         sync.Mutex
	next       time.Time
	suppressed int
}

// Log writes msg at level to l unless a line of this RateLog went out less
// than LogEvery ago.
func (r *RateLog) Log(l *slog.Logger, level slog.Level, msg string, args ...any) {
	now := time.Now()
	r.mu.Lock()
	if now.Before(r.next) {
		r.suppressed++
		r.mu.Unlock()
		return
	}
	n := r.suppressed
	r.suppressed = 0
	r.next = now.Add(LogEvery)
	r.mu.Unlock()
	if n > 0 {
		args = append(args, "suppressed_since_last", n)
	}
	l.Log(context.Background(), level, msg, args...)
}
