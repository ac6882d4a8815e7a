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

//go:build (darwin || dragonfly || freebsd || linux || netbsd || openbsd) && !poll_opt

package gnet

import "github.com/panjf2000/gnet/v2/pkg/netpoll"

// connPoll is what a conn keeps for the poller (Tern patches 2 and 6). The
// default reactor registers a descriptor by number and finds its conn by
// descriptor when an event comes, so it keeps nothing: the
// netpoll.PollAttachment it is handed is built for the call (FD only) and
// never stored. Upstream every conn carried one (16 bytes) and a method
// value for its Callback (a 16-byte allocation) that only the poll_opt
// reactor calls.
type connPoll struct{}

// attachment returns the poller attachment of c for one poller call.
func (c *conn) attachment() *netpoll.PollAttachment { return &netpoll.PollAttachment{FD: c.fd} }

// initStreamPoll and initUDPPoll set up c's attachment; nothing to do here.
func (c *conn) initStreamPoll()        {}
func (c *conn) initUDPPoll(*eventloop) {}
