// Copyright (c) 2019 The Gnet Authors. All rights reserved.
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
	"io"
	"net"
	"os"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/panjf2000/gnet/v2/pkg/bs"
	"github.com/panjf2000/gnet/v2/pkg/buffer/elastic"
	errorx "github.com/panjf2000/gnet/v2/pkg/errors"
	gio "github.com/panjf2000/gnet/v2/pkg/io"
	bsPool "github.com/panjf2000/gnet/v2/pkg/pool/byteslice"
	"github.com/panjf2000/gnet/v2/pkg/queue"
	"github.com/panjf2000/gnet/v2/pkg/socket"
)

type conn struct {
	fd             int                 // file descriptor
	ctx            any                 // user-defined context
	safeCtx        atomic.Pointer[any] // safe user-defined context
	localAddr      net.Addr            // local addr
	remoteAddr     net.Addr            // remote addr, when not kept in peer (Tern patch 3); a *udpPeer for unconnected UDP (patch 7)
	peer           peerAddr            // a TCP peer's address, inline (Tern patch 3)
	loop           *eventloop          // connected event-loop
	poll           connPoll            // what the poller needs kept (Tern patch 6: nothing, unless poll_opt)
	outboundBuffer elastic.Buffer      // buffer for data that is eligible to be sent to the remote
	inboundBuffer  elastic.RingBuffer  // buffer for leftover data from the remote
	isDatagram     bool                // UDP protocol
	opened         bool                // connection opened event fired
	isEOF          bool                // whether the connection has reached EOF
	isTCP          bool                // a TCP connection (was proto == "tcp"; Tern patch 3)
}

// newStreamConn makes the connection of stream socket fd. Tern patch 3: a
// TCP peer's address is kept inline (peer) and RemoteAddr builds a
// net.Addr from it per call, so an idle connection holds no address
// allocations (a *net.TCPAddr and the unix.Sockaddr its IP aliased: 80
// bytes); remoteAddr may be nil then, and is only used when sa is not an
// IP address (a Unix domain socket's peer).
func newStreamConn(proto string, fd int, el *eventloop, sa unix.Sockaddr, localAddr, remoteAddr net.Addr) (c *conn) {
	c = &conn{
		fd:        fd,
		isTCP:     proto == "tcp",
		loop:      el,
		localAddr: localAddr,
	}
	if !c.isTCP || !c.peer.set(sa) {
		if remoteAddr == nil {
			remoteAddr = socket.SockaddrToTCPOrUnixAddr(sa)
		}
		c.remoteAddr = remoteAddr
	}
	c.initStreamPoll() // Tern patches 2 and 6: a no-op unless poll_opt
	c.outboundBuffer.Reset(el.engine.opts.WriteBufferCap)
	return
}

// udpPeer is the remote address of an unconnected UDP connection (one
// datagram of a UDP listener): the net.UDPAddr RemoteAddr returns and the
// unix.Sockaddr replies are sent to, in one object. Tern patch 7: upstream
// kept that Sockaddr in a field of every conn (`remote`, 16 bytes, nil for
// every stream connection and every connected UDP socket).
type udpPeer struct {
	net.UDPAddr
	sa    unix.Sockaddr
	valid bool // RemoteAddr returns &UDPAddr: sa is an IP address and the conn is not released
}

func newUDPConn(fd int, el *eventloop, localAddr net.Addr, sa unix.Sockaddr, connected bool) (c *conn) {
	c = &conn{
		fd:         fd,
		loop:       el,
		localAddr:  localAddr,
		isDatagram: true,
	}
	if connected {
		c.remoteAddr = socket.SockaddrToUDPAddr(sa)
	} else {
		p := &udpPeer{sa: sa}
		p.valid = socket.SockaddrToUDPAddrValue(sa, &p.UDPAddr)
		c.remoteAddr = p
	}
	c.initUDPPoll(el)
	return
}

// replyTo returns the address an unconnected UDP connection replies to, nil
// for any other connection (upstream's c.remote).
func (c *conn) replyTo() unix.Sockaddr {
	if p, ok := c.remoteAddr.(*udpPeer); ok {
		return p.sa
	}
	return nil
}

func (c *conn) release() {
	c.opened = false
	c.isEOF = false
	c.ctx = nil
	c.safeCtx.Store(nil)
	if el := c.loop; el != nil && el.cacheFor == c {
		el.cache, el.cacheFor = nil, nil
	}
	if addr, ok := c.localAddr.(*net.TCPAddr); ok && len(c.loop.listeners) == 0 && len(addr.Zone) > 0 {
		bsPool.Put(bs.StringToBytes(addr.Zone))
	}
	if addr, ok := c.remoteAddr.(*net.TCPAddr); ok && len(addr.Zone) > 0 {
		bsPool.Put(bs.StringToBytes(addr.Zone))
	}
	if addr, ok := c.localAddr.(*net.UDPAddr); ok && len(c.loop.listeners) == 0 && len(addr.Zone) > 0 {
		bsPool.Put(bs.StringToBytes(addr.Zone))
	}
	if addr, ok := c.remoteAddr.(*net.UDPAddr); ok && len(addr.Zone) > 0 {
		bsPool.Put(bs.StringToBytes(addr.Zone))
	}
	if p, ok := c.remoteAddr.(*udpPeer); ok && len(p.Zone) > 0 {
		bsPool.Put(bs.StringToBytes(p.Zone))
	}
	c.localAddr = nil
	if p, ok := c.remoteAddr.(*udpPeer); ok {
		// Upstream kept c.remote after release (a reply queued by
		// AsyncWrite in OnTraffic is sent after it) while RemoteAddr
		// became nil: keep the Sockaddr, hide the address. The UDPAddr
		// itself is left alone: the application may hold the pointer
		// RemoteAddr returned (upstream's was a separate object).
		p.valid = false
	} else {
		c.remoteAddr = nil
	}
	c.peer = peerAddr{}
	if !c.isDatagram {
		c.inboundBuffer.Done()
		c.outboundBuffer.Release()
	}
}

func (c *conn) open(buf []byte) error {
	if c.isDatagram && c.replyTo() == nil {
		return unix.Send(c.fd, buf, 0)
	}

	for {
		n, err := unix.Write(c.fd, buf)
		if err != nil {
			if err == unix.EAGAIN {
				_, _ = c.outboundBuffer.Write(buf)
				break
			}
			return err
		}
		buf = buf[n:]
		if len(buf) == 0 {
			break
		}
	}

	return nil
}

func (c *conn) write(data []byte) (n int, err error) {
	isET := c.loop.engine.opts.EdgeTriggeredIO
	n = len(data)
	// If there is pending data in outbound buffer,
	// the current data ought to be appended to the
	// outbound buffer for maintaining the sequence
	// of network packets.
	if !c.outboundBuffer.IsEmpty() {
		_, _ = c.outboundBuffer.Write(data)
		return
	}

	defer func() {
		if err != nil {
			_ = c.loop.close(c, os.NewSyscallError("write", err))
		}
	}()

	var sent int
loop:
	if sent, err = unix.Write(c.fd, data); err != nil {
		// A temporary error occurs, append the data to outbound buffer,
		// writing it back to the remote in the next round for LT mode.
		if err == unix.EAGAIN {
			_, err = c.outboundBuffer.Write(data)
			if !isET {
				err = c.loop.poller.ModReadWrite(c.attachment(), isET)
			}
			return
		}
		return 0, err
	}
	data = data[sent:]
	if isET && len(data) > 0 {
		goto loop
	}
	// Failed to send all data back to the remote, buffer the leftover data for the next round.
	if len(data) > 0 {
		_, _ = c.outboundBuffer.Write(data)
		err = c.loop.poller.ModReadWrite(c.attachment(), isET)
	}

	return
}

func (c *conn) writev(bs [][]byte) (n int, err error) {
	isET := c.loop.engine.opts.EdgeTriggeredIO

	for _, b := range bs {
		n += len(b)
	}

	// If there is pending data in outbound buffer,
	// the current data ought to be appended to the
	// outbound buffer for maintaining the sequence
	// of network packets.
	if !c.outboundBuffer.IsEmpty() {
		_, _ = c.outboundBuffer.Writev(bs)
		return
	}

	defer func() {
		if err != nil {
			_ = c.loop.close(c, os.NewSyscallError("writev", err))
		}
	}()

	remaining := n
	var sent int
loop:
	if sent, err = gio.Writev(c.fd, bs); err != nil {
		// A temporary error occurs, append the data to outbound buffer,
		// writing it back to the remote in the next round for LT mode.
		if err == unix.EAGAIN {
			_, err = c.outboundBuffer.Writev(bs)
			if !isET {
				err = c.loop.poller.ModReadWrite(c.attachment(), isET)
			}
			return
		}
		return 0, err
	}
	pos := len(bs)
	if remaining -= sent; remaining > 0 {
		for i := range bs {
			bn := len(bs[i])
			if sent < bn {
				bs[i] = bs[i][sent:]
				pos = i
				break
			}
			sent -= bn
		}
	}
	bs = bs[pos:]
	if isET && remaining > 0 {
		goto loop
	}

	// Failed to send all data back to the remote, buffer the leftover data for the next round.
	if remaining > 0 {
		_, _ = c.outboundBuffer.Writev(bs)
		err = c.loop.poller.ModReadWrite(c.attachment(), isET)
	}

	return
}

type asyncWriteHook struct {
	callback AsyncCallback
	data     []byte
}

func (c *conn) asyncWrite(a any) (err error) {
	hook := a.(*asyncWriteHook)
	defer func() {
		if hook.callback != nil {
			_ = hook.callback(c, err)
		}
	}()

	if !c.opened {
		return net.ErrClosed
	}

	_, err = c.write(hook.data)
	return
}

type asyncWritevHook struct {
	callback AsyncCallback
	data     [][]byte
}

func (c *conn) asyncWritev(a any) (err error) {
	hook := a.(*asyncWritevHook)
	defer func() {
		if hook.callback != nil {
			_ = hook.callback(c, err)
		}
	}()

	if !c.opened {
		return net.ErrClosed
	}

	_, err = c.writev(hook.data)
	return
}

func (c *conn) sendTo(buf []byte, addr unix.Sockaddr) (n int, err error) {
	defer func() {
		if err != nil {
			n = 0
		}
	}()

	if addr != nil {
		return len(buf), unix.Sendto(c.fd, buf, 0, addr)
	}
	to := c.replyTo()
	if to == nil { // connected UDP socket of client
		return len(buf), unix.Send(c.fd, buf, 0)
	}
	return len(buf), unix.Sendto(c.fd, buf, 0, to) // unconnected UDP socket of server
}

// inbuf is the unread part of the bytes the loop just read for c: only
// while c's OnTraffic runs (Tern patch 5: it was a field of every conn).
func (c *conn) inbuf() []byte {
	if el := c.loop; el != nil && el.cur == c {
		return el.curBuf
	}
	return nil
}

// setInbuf sets what inbuf returns; a no-op outside c's OnTraffic.
func (c *conn) setInbuf(b []byte) {
	if el := c.loop; el != nil && el.cur == c {
		el.curBuf = b
	}
}

func (c *conn) resetBuffer() {
	c.setInbuf(c.inbuf()[:0])
	c.inboundBuffer.Reset()
	c.inboundBuffer.Done()
}

func (c *conn) Read(p []byte) (n int, err error) {
	b := c.inbuf()
	if c.inboundBuffer.IsEmpty() {
		n = copy(p, b)
		c.setInbuf(b[n:])
		if n == 0 && len(p) > 0 {
			err = io.ErrShortBuffer
		}
		return
	}
	n, _ = c.inboundBuffer.Read(p)
	if n == len(p) {
		return
	}
	m := copy(p[n:], b)
	n += m
	c.setInbuf(b[m:])
	return
}

func (c *conn) Next(n int) (buf []byte, err error) {
	inBufferLen := c.inboundBuffer.Buffered()
	b := c.inbuf()
	if totalLen := inBufferLen + len(b); n > totalLen {
		return nil, io.ErrShortBuffer
	} else if n <= 0 {
		n = totalLen
	}

	if c.inboundBuffer.IsEmpty() {
		buf = b[:n]
		c.setInbuf(b[n:])
		return
	}

	buf = bsPool.Get(n)
	_, err = c.Read(buf)
	return
}

func (c *conn) Peek(n int) (buf []byte, err error) {
	inBufferLen := c.inboundBuffer.Buffered()
	b := c.inbuf()
	if totalLen := inBufferLen + len(b); n > totalLen {
		return nil, io.ErrShortBuffer
	} else if n <= 0 {
		n = totalLen
	}

	if c.inboundBuffer.IsEmpty() {
		return b[:n], err
	}

	head, tail := c.inboundBuffer.Peek(n)
	if len(head) == n {
		return head, err
	}
	buf = bsPool.Get(n)[:0]
	buf = append(buf, head...)
	buf = append(buf, tail...)
	if inBufferLen >= n {
		return
	}

	remaining := n - inBufferLen
	buf = append(buf, b[:remaining]...)
	// Tern patch 5: the pooled copy is remembered on the loop until c's
	// Discard returns it to the pool. Another connection's Peek replaces
	// it and leaves the older copy to the garbage collector (its owner
	// may still be reading it), as a second Peek did upstream.
	c.loop.cache, c.loop.cacheFor = buf, c
	return
}

func (c *conn) Discard(n int) (int, error) {
	if el := c.loop; el.cacheFor == c && len(el.cache) > 0 {
		bsPool.Put(el.cache)
		el.cache, el.cacheFor = nil, nil
	}

	inBufferLen := c.inboundBuffer.Buffered()
	b := c.inbuf()
	if totalLen := inBufferLen + len(b); n >= totalLen || n <= 0 {
		c.resetBuffer()
		return totalLen, nil
	}

	if c.inboundBuffer.IsEmpty() {
		c.setInbuf(b[n:])
		return n, nil
	}

	discarded, _ := c.inboundBuffer.Discard(n)
	if discarded < inBufferLen {
		return discarded, nil
	}

	remaining := n - inBufferLen
	c.setInbuf(b[remaining:])
	return n, nil
}

func (c *conn) Write(p []byte) (int, error) {
	if c.isDatagram {
		return c.sendTo(p, nil)
	}
	return c.write(p)
}

func (c *conn) SendTo(p []byte, addr net.Addr) (int, error) {
	if !c.isDatagram {
		return 0, errorx.ErrUnsupportedOp
	}

	sa := socket.NetAddrToSockaddr(addr)
	if sa == nil {
		return 0, errorx.ErrInvalidNetworkAddress
	}

	return c.sendTo(p, sa)
}

func (c *conn) Writev(bs [][]byte) (int, error) {
	if c.isDatagram {
		return 0, errorx.ErrUnsupportedOp
	}
	return c.writev(bs)
}

func (c *conn) ReadFrom(r io.Reader) (int64, error) {
	return c.outboundBuffer.ReadFrom(r)
}

func (c *conn) WriteTo(w io.Writer) (n int64, err error) {
	if !c.inboundBuffer.IsEmpty() {
		if n, err = c.inboundBuffer.WriteTo(w); err != nil {
			return
		}
	}
	var m int
	b := c.inbuf()
	m, err = w.Write(b)
	n += int64(m)
	c.setInbuf(b[m:])
	return
}

func (c *conn) Flush() error {
	return c.loop.write(c)
}

func (c *conn) InboundBuffered() int {
	return c.inboundBuffer.Buffered() + len(c.inbuf())
}

func (c *conn) OutboundBuffered() int {
	return c.outboundBuffer.Buffered()
}

func (c *conn) Context() any        { return c.ctx }
func (c *conn) SetContext(ctx any)  { c.ctx = ctx }
func (c *conn) LocalAddr() net.Addr { return c.localAddr }

// RemoteAddr returns the peer's address; nil once the connection is
// closed. Tern patch 3: for a TCP connection it is built from the inline
// peer on each call (one allocation per call, none per idle connection).
func (c *conn) RemoteAddr() net.Addr {
	if c.peer.family != 0 {
		return c.peer.tcpAddr()
	}
	if p, ok := c.remoteAddr.(*udpPeer); ok {
		if !p.valid {
			return nil // upstream: SockaddrToUDPAddr's nil
		}
		return &p.UDPAddr
	}
	return c.remoteAddr
}

// Implementation of Socket interface

// func (c *conn) Gfd() gfd.GFD             { return c.gfd }

func (c *conn) Fd() int                        { return c.fd }
func (c *conn) Dup() (fd int, err error)       { return socket.Dup(c.fd) }
func (c *conn) SetReadBuffer(bytes int) error  { return socket.SetRecvBuffer(c.fd, bytes) }
func (c *conn) SetWriteBuffer(bytes int) error { return socket.SetSendBuffer(c.fd, bytes) }
func (c *conn) SetLinger(sec int) error        { return socket.SetLinger(c.fd, sec) }
func (c *conn) SetNoDelay(noDelay bool) error {
	return socket.SetNoDelay(c.fd, func(b bool) int {
		if b {
			return 1
		}
		return 0
	}(noDelay))
}

func (c *conn) SetKeepAlivePeriod(d time.Duration) error {
	if !c.isTCP {
		return errorx.ErrUnsupportedOp
	}
	return socket.SetKeepAlivePeriod(c.fd, int(d.Seconds()))
}

func (c *conn) SetKeepAlive(enabled bool, idle, intvl time.Duration, cnt int) error {
	if !c.isTCP {
		return errorx.ErrUnsupportedOp
	}
	return socket.SetKeepAlive(c.fd, enabled, int(idle.Seconds()), int(intvl.Seconds()), cnt)
}

func (c *conn) AsyncWrite(buf []byte, callback AsyncCallback) error {
	if c.isDatagram {
		_, err := c.sendTo(buf, nil)
		// TODO: it will not go asynchronously with UDP, so calling a callback is needless,
		//  we may remove this branch in the future, please don't rely on the callback
		// 	to do something important under UDP, if you're working with UDP, just call Conn.Write
		// 	to send back your data.
		if callback != nil {
			_ = callback(nil, nil)
		}
		return err
	}
	return c.loop.poller.Trigger(queue.HighPriority, c.asyncWrite, &asyncWriteHook{callback, buf})
}

func (c *conn) AsyncWritev(bs [][]byte, callback AsyncCallback) error {
	if c.isDatagram {
		return errorx.ErrUnsupportedOp
	}
	return c.loop.poller.Trigger(queue.HighPriority, c.asyncWritev, &asyncWritevHook{callback, bs})
}

func (c *conn) Wake(callback AsyncCallback) error {
	return c.loop.poller.Trigger(queue.LowPriority, func(_ any) (err error) {
		err = c.loop.wake(c)
		if callback != nil {
			_ = callback(c, err)
		}
		return
	}, nil)
}

func (c *conn) CloseWithCallback(callback AsyncCallback) error {
	return c.loop.poller.Trigger(queue.LowPriority, func(_ any) (err error) {
		err = c.loop.close(c, nil)
		if callback != nil {
			_ = callback(c, err)
		}
		return
	}, nil)
}

func (c *conn) Close() error {
	return c.loop.poller.Trigger(queue.LowPriority, func(_ any) (err error) {
		err = c.loop.close(c, nil)
		return
	}, nil)
}

func (c *conn) EventLoop() EventLoop {
	return c.loop
}

func (*conn) SetDeadline(_ time.Time) error {
	return errorx.ErrUnsupportedOp
}

func (*conn) SetReadDeadline(_ time.Time) error {
	return errorx.ErrUnsupportedOp
}

func (*conn) SetWriteDeadline(_ time.Time) error {
	return errorx.ErrUnsupportedOp
}

func (c *conn) SafeContext() (ctx any) {
	if p := c.safeCtx.Load(); p != nil {
		return *p
	}
	return nil
}

func (c *conn) SetSafeContext(ctx any) {
	c.safeCtx.Store(&ctx)
}
