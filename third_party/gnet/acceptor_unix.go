// Copyright (c) 2021 The Gnet Authors. All rights reserved.
//
// Licensed under the Apache License, Version 2.0 (the "License");
// you may not use this file except in compliance with the License.
// You may obtain a copy of the License at
//
//     http://www.apache.org/licenses/LICENSE-2.0
//
// Unless required by applicable law or agreed to in writing, software
// distributed under the License is distributed on an "AS IS" BASIS,
// WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
// See the License for the specific language governing permissions and
// limitations under the License.

//go:build darwin || dragonfly || freebsd || linux || netbsd || openbsd

package gnet

import (
	"net"
	"runtime"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/panjf2000/gnet/v2/pkg/errors"
	"github.com/panjf2000/gnet/v2/pkg/netpoll"
	"github.com/panjf2000/gnet/v2/pkg/queue"
	"github.com/panjf2000/gnet/v2/pkg/socket"
)

func (el *eventloop) accept0(fd int, _ netpoll.IOEvent, _ netpoll.IOFlags) error {
	for {
		nfd, sa, err := socket.Accept(fd)
		switch err {
		case nil:
		case unix.EAGAIN: // the Accept queue has been drained out, we can return now
			return nil
		case unix.EINTR, unix.ECONNRESET, unix.ECONNABORTED:
			// ECONNRESET or ECONNABORTED could indicate that a socket
			// in the Accept queue was closed before we Accept()ed it.
			// It's a silly error, let's retry it.
			continue
		default:
			if !isTransientAcceptError(err) {
				el.getLogger().Errorf("Accept() failed due to error: %v", err)
				return errors.ErrAcceptSocket
			}
			// Tern patch: descriptor or memory exhaustion is transient.
			// Refuse the head of the queue with the spare descriptor and
			// go on draining (the listener is edge-triggered here, so
			// the queue must be drained to EAGAIN); if even that fails,
			// back off and retry from the task queue, where a shutdown
			// request still gets through.
			switch el.shedOne(fd) {
			case shedRefused:
				el.getLogger().Errorf("Accept() failed due to error: %v; refused a queued connection", err)
				continue
			case shedQueueEmpty:
				// accept(2) reports EMFILE before it looks at the
				// queue: with the table full and nobody waiting, there
				// is nothing to refuse or retry, and the next
				// connection raises a new edge.
				return nil
			}
			el.getLogger().Errorf("Accept() failed due to error: %v; no spare descriptor, retrying", err)
			el.retryAcceptLater(fd)
			return nil
		}

		// Tern patch 3: the peer's address is built only when the load
		// balancer hashes it; newStreamConn keeps a TCP peer inline.
		var remoteAddr net.Addr
		if el.engine.opts.LB == SourceAddrHash {
			remoteAddr = socket.SockaddrToTCPOrUnixAddr(sa)
		}
		network := el.listeners[fd].network
		if opts := el.engine.opts; opts.TCPKeepAlive > 0 && network == "tcp" &&
			(runtime.GOOS != "linux" && runtime.GOOS != "freebsd" && runtime.GOOS != "dragonfly") {
			// TCP keepalive options are not inherited from the listening socket
			// on platforms other than Linux, FreeBSD, or DragonFlyBSD.
			// We therefore need to set them on the accepted socket explicitly.
			//
			// Check out https://github.com/nginx/nginx/pull/337 for details.
			if err = setKeepAlive(
				nfd,
				true,
				opts.TCPKeepAlive,
				opts.TCPKeepInterval,
				opts.TCPKeepCount); err != nil {
				el.getLogger().Errorf("failed to set TCP keepalive on fd=%d: %v", fd, err)
			}
		}

		el := el.engine.eventLoops.next(remoteAddr)
		c := newStreamConn(network, nfd, el, sa, el.listeners[fd].addr, remoteAddr)
		err = el.poller.Trigger(queue.HighPriority, el.register, c)
		if err != nil {
			el.getLogger().Errorf("failed to enqueue the accepted socket fd=%d to poller: %v", c.fd, err)
			_ = unix.Close(nfd)
			c.release()
		}
	}
}

func (el *eventloop) accept(fd int, ev netpoll.IOEvent, flags netpoll.IOFlags) error {
	network := el.listeners[fd].network
	if network == "udp" {
		return el.readUDP(fd, ev, flags)
	}

	nfd, sa, err := socket.Accept(fd)
	switch err {
	case nil:
	case unix.EINTR, unix.EAGAIN, unix.ECONNRESET, unix.ECONNABORTED:
		// ECONNRESET or ECONNABORTED could indicate that a socket
		// in the Accept queue was closed before we Accept()ed it.
		// It's a silly error, let's retry it.
		return nil
	default:
		if !isTransientAcceptError(err) {
			el.getLogger().Errorf("Accept() failed due to error: %v", err)
			return errors.ErrAcceptSocket
		}
		// Tern patch: see accept0. This listener is level-triggered, so
		// returning leaves the rest of the queue for the next poll.
		if el.shedOne(fd) == shedRefused {
			el.getLogger().Errorf("Accept() failed due to error: %v; refused a queued connection", err)
		}
		return nil
	}

	if opts := el.engine.opts; opts.TCPKeepAlive > 0 && el.listeners[fd].network == "tcp" &&
		(runtime.GOOS != "linux" && runtime.GOOS != "freebsd" && runtime.GOOS != "dragonfly") {
		// TCP keepalive options are not inherited from the listening socket
		// on platforms other than Linux, FreeBSD, or DragonFlyBSD.
		// We therefore need to set them on the accepted socket explicitly.
		//
		// Check out https://github.com/nginx/nginx/pull/337 for details.
		if err = setKeepAlive(
			nfd,
			true,
			opts.TCPKeepAlive,
			opts.TCPKeepInterval,
			opts.TCPKeepCount); err != nil {
			el.getLogger().Errorf("failed to set TCP keepalive on fd=%d: %v", fd, err)
		}
	}

	c := newStreamConn(network, nfd, el, sa, el.listeners[fd].addr, nil) // Tern patch 3: the peer's address on demand
	return el.register0(c)
}

// Tern patch (see PATCHES.md): upstream gnet v2.10.0 stops the whole engine,
// and every connection with it, when accept(2) fails with anything but
// EINTR, EAGAIN, ECONNRESET or ECONNABORTED. The errors below are
// transient: the descriptor table (EMFILE per process, ENFILE system-wide)
// or kernel memory (ENOBUFS, ENOMEM) is full for the moment. For them the
// acceptor refuses queued connections instead: it closes a spare
// descriptor kept for this, accepts one connection into the freed slot,
// closes it at once (the client sees its connection reset, not a hang),
// and opens the spare again: the classic reserve-descriptor technique of
// libev and nginx.

func isTransientAcceptError(err error) bool {
	switch err {
	case unix.EMFILE, unix.ENFILE, unix.ENOBUFS, unix.ENOMEM:
		return true
	}
	return false
}

// spare is the reserve descriptor, one per process: only one acceptor at a
// time may hold the slot it frees, hence the mutex (several engines, or
// several event loops accepting with ReusePort, may hit the limit at once).
var spare struct {
	sync.Mutex
	fd     int
	opened bool
}

// openSpare opens the reserve descriptor if it is not open. It is called
// when an engine starts, so the slot is held before the table fills.
func openSpare() {
	spare.Lock()
	defer spare.Unlock()
	if !spare.opened {
		if fd, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0); err == nil {
			spare.fd, spare.opened = fd, true
		}
	}
}

// shedResult is what shedOne did.
type shedResult int

const (
	shedFailed     shedResult = iota // no spare descriptor, or accept failed again
	shedRefused                      // one queued connection accepted and closed
	shedQueueEmpty                   // the slot was free but nobody was waiting
)

// shedOne refuses one queued connection of listener fd using the spare
// descriptor. accept(2) fails with EMFILE before it dequeues anything, so
// an EMFILE says nothing about the queue; with the spare's slot free, the
// accept here tells a refused connection from an empty queue, and only
// the former is a refusal worth counting.
func (el *eventloop) shedOne(fd int) shedResult {
	spare.Lock()
	defer spare.Unlock()
	if !spare.opened {
		if nfd, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0); err == nil {
			spare.fd, spare.opened = nfd, true
		}
		return shedFailed
	}
	_ = unix.Close(spare.fd)
	spare.opened = false
	nfd, _, err := socket.Accept(fd)
	if err == nil {
		_ = unix.Close(nfd)
	}
	if sfd, oerr := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0); oerr == nil {
		spare.fd, spare.opened = sfd, true
	}
	switch err {
	case nil:
		return shedRefused
	case unix.EAGAIN:
		return shedQueueEmpty
	}
	return shedFailed
}

// acceptRetryDelay is how long the main reactor waits before it tries a
// listener's queue again after shedding failed too.
const acceptRetryDelay = 20 * time.Millisecond

// retryAcceptLater sleeps briefly on the main reactor (it only accepts:
// connections are served by the other loops) and queues another accept of
// listener fd as a task, so a queue that stays non-empty without new edges
// is not forgotten, and a shutdown request queued meanwhile runs first.
func (el *eventloop) retryAcceptLater(fd int) {
	time.Sleep(acceptRetryDelay)
	err := el.poller.Trigger(queue.LowPriority, func(any) error {
		return el.accept0(fd, 0, 0)
	}, nil)
	if err != nil {
		el.getLogger().Errorf("failed to queue a retry of Accept() on fd=%d: %v", fd, err)
	}
}
