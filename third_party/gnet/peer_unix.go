// Copyright (c) 2026 The Tern Authors. Licensed under the Apache License,
// Version 2.0, like the rest of gnet (see LICENSE).

//go:build darwin || dragonfly || freebsd || linux || netbsd || openbsd

package gnet

import (
	"net"
	"strconv"

	"golang.org/x/sys/unix"
)

// peerAddr is a TCP connection's remote address kept inside the conn
// struct (Tern patch 3, see PATCHES.md): 24 bytes instead of a
// *net.TCPAddr (48 bytes) and the unix.Sockaddr its IP aliased (32 bytes),
// two allocations an idle connection held for its whole life although
// most servers never ask for the address.
type peerAddr struct {
	ip     [16]byte
	zoneID uint32 // IPv6 scope (interface index); 0: none
	port   uint16
	family uint8 // 0: not set (closed, or not an IP peer), 4 or 6
}

// set records sa and reports whether it is an IP address.
func (p *peerAddr) set(sa unix.Sockaddr) bool {
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		copy(p.ip[:4], sa.Addr[:])
		p.port, p.family = uint16(sa.Port), 4
		return true
	case *unix.SockaddrInet6:
		p.ip = sa.Addr
		p.zoneID, p.port, p.family = sa.ZoneId, uint16(sa.Port), 6
		return true
	}
	return false
}

// tcpAddr builds the address as a *net.TCPAddr, in one allocation (the
// IP's bytes live in the same object). Like upstream's eager address, an
// IPv4 peer has a 4-byte IP and an IPv6 scope is the interface's name.
func (p *peerAddr) tcpAddr() *net.TCPAddr {
	a := &struct {
		net.TCPAddr
		ip [16]byte
	}{ip: p.ip}
	a.Port = int(p.port)
	if p.family == 4 {
		a.IP = a.ip[:4:4]
		return &a.TCPAddr
	}
	a.IP = a.ip[:16:16]
	if p.zoneID != 0 {
		if ifi, err := net.InterfaceByIndex(int(p.zoneID)); err == nil {
			a.Zone = ifi.Name
		} else {
			a.Zone = strconv.FormatUint(uint64(p.zoneID), 10)
		}
	}
	return &a.TCPAddr
}
