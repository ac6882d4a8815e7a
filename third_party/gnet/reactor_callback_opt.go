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

//go:build (darwin || dragonfly || freebsd || linux || netbsd || openbsd) && poll_opt

package gnet

import "github.com/panjf2000/gnet/v2/pkg/netpoll"

// connPoll is what a conn keeps for the poller (Tern patches 2 and 6): the
// poll_opt reactor stores a pointer to the attachment in the kernel's event
// data and calls its Callback, so it must live as long as the conn.
type connPoll struct {
	pa netpoll.PollAttachment
}

// attachment returns the poller attachment of c.
func (c *conn) attachment() *netpoll.PollAttachment { return &c.poll.pa }

// initStreamPoll sets up the attachment of a stream connection.
func (c *conn) initStreamPoll() {
	c.poll.pa = netpoll.PollAttachment{FD: c.fd, Callback: c.processIO}
}

// initUDPPoll sets up the attachment of a UDP connection of el.
func (c *conn) initUDPPoll(el *eventloop) {
	c.poll.pa = netpoll.PollAttachment{FD: c.fd, Callback: el.readUDP}
}
