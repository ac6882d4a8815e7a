// Copyright (c) 2023 The Gnet Authors. All rights reserved.
//
// Licensed under the Apache License, Version 2.0 (the "License");
// you may not use this file except in compliance with the License.
// You may obtain a copy of the License at
//
//      http://www.apache.org/licenses/LICENSE-2.0
//
// Unless required by applicable law or agreed to in writing, software
// distributed under the License is distributed on an "AS IS" BASIS,
// WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
// See the License for the specific language governing permissions and
// limitations under the License.

//go:build (darwin || dragonfly || freebsd || linux || netbsd || openbsd) && !gc_opt

package gnet

import (
	"sync"
	"sync/atomic"
)

// Tern patch 4 (see PATCHES.md): connections by descriptor in one
// process-wide table instead of a map per event loop.
//
// A descriptor number belongs to at most one open connection in the whole
// process, so one table indexed by fd serves every loop of every engine:
// 8 bytes per descriptor number (pages of fdPageSize slots, allocated when
// a descriptor in their range is first used and kept, so the table is
// bounded by the highest descriptor the process ever had, at most
// RLIMIT_NOFILE × 8 bytes) instead of a map entry per connection (~37
// bytes at a swiss table's load). Slots are atomic: a loop writes only the
// slots of its own connections, but closeConns scans every slot and a
// descriptor closed by one loop may be reused by another at once, so every
// reader checks that the connection is its own (c.loop) and a delete only
// clears its own entry (CompareAndSwap).
type connMatrix struct {
	connCount int32
	el        *eventloop
}

const fdPageShift = 10
const fdPageSize = 1 << fdPageShift

type fdPage [fdPageSize]atomic.Pointer[conn]

// fdTable is the process-wide table described above.
var fdTable struct {
	mu  sync.Mutex                // serialises growing pages
	dir atomic.Pointer[[]*fdPage] // copy-on-write directory of pages
}

// fdSlot returns the slot of fd, allocating its page if create.
func fdSlot(fd int, create bool) *atomic.Pointer[conn] {
	if fd < 0 {
		return nil
	}
	i := fd >> fdPageShift
	if d := fdTable.dir.Load(); d != nil && i < len(*d) && (*d)[i] != nil {
		return &(*d)[i][fd&(fdPageSize-1)]
	}
	if !create {
		return nil
	}
	fdTable.mu.Lock()
	defer fdTable.mu.Unlock()
	var old []*fdPage
	if d := fdTable.dir.Load(); d != nil {
		old = *d
	}
	if i < len(old) && old[i] != nil {
		return &old[i][fd&(fdPageSize-1)]
	}
	n := len(old)
	if i >= n {
		n = i + 1
	}
	nd := make([]*fdPage, n)
	copy(nd, old)
	nd[i] = new(fdPage)
	fdTable.dir.Store(&nd)
	return &nd[i][fd&(fdPageSize-1)]
}

func (cm *connMatrix) init(el *eventloop) {
	cm.el = el
}

func (cm *connMatrix) iterate(f func(*conn) bool) {
	d := fdTable.dir.Load()
	if d == nil {
		return
	}
	for _, p := range *d {
		if p == nil {
			continue
		}
		for i := range p {
			if c := p[i].Load(); c != nil && c.loop == cm.el {
				if !f(c) {
					return
				}
			}
		}
	}
}

func (cm *connMatrix) incCount(_ int, delta int32) {
	atomic.AddInt32(&cm.connCount, delta)
}

func (cm *connMatrix) loadCount() (n int32) {
	return atomic.LoadInt32(&cm.connCount)
}

// addConn indexes c. Tern patch 6: upstream also stored gfd.NewGFD(fd,
// index, 0, 0) in c, which nothing reads in this build (the async-command
// API that took a GFD is disabled in v2.10.0).
func (cm *connMatrix) addConn(c *conn, _ int) {
	fdSlot(c.fd, true).Store(c)
	cm.incCount(0, 1)
}

func (cm *connMatrix) delConn(c *conn) {
	if s := fdSlot(c.fd, false); s != nil {
		s.CompareAndSwap(c, nil)
	}
	cm.incCount(0, -1)
}

func (cm *connMatrix) getConn(fd int) *conn {
	if s := fdSlot(fd, false); s != nil {
		if c := s.Load(); c != nil && c.loop == cm.el {
			return c
		}
	}
	return nil
}

/*
func (cm *connMatrix) getConnByGFD(fd gfd.GFD) *conn {
	return cm.getConn(fd.Fd())
}
*/
