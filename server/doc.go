// Package server is the Tern MQTT broker: transports, connections,
// sessions, routing, wills and the embedding API (New, Serve, Close,
// Publish).
//
// # Goroutines and ownership
//
// gnet runs N event loops (N = GOMAXPROCS by default); each TCP connection
// belongs to one loop for its whole life and no goroutine is created per
// connection. Three kinds of state exist:
//
//	client   one per connection; owned by its loop goroutine (read buffer,
//	         keepalive, protocol version). Other loops touch only its two
//	         atomics (wakeQueued, takenOver).
//	session  outlives connections (persistent sessions); guarded by its own
//	         mutex, taken briefly by the owning loop, by publishers on any
//	         loop, and by a reconnecting client on any loop (takeover).
//	loop     per event loop: timing wheel, scratch decode/encode buffers and
//	         the cross-loop mailbox (its mutex guards only the mailbox).
//
// Global indexes are concurrent structures of their own: the subscription
// trie (lock-free Match), the retained index, and the sharded client-id
// registry.
//
// # Data flow of a PUBLISH
//
//	gnet read buffer ──codec.ReadPacket/Decode (views, no copy)──▶ handlePublish
//	  ├─ validate topic (trie), ACL, QoS 2 inbound dedupe (qos.Inbound)
//	  ├─ newMessage: topic+payload copied ONCE, shared by every recipient
//	  ├─ retained index (set/replace/clear)
//	  └─ route: trie.Match → dedupe per session (highest QoS, all sub ids)
//	        └─ deliver: session queue push under session.mu
//	              └─ if the session's connection is online and not already
//	                 scheduled: put it on its loop's mailbox; the first entry
//	                 of a burst triggers ONE task on that loop
//	target loop: drain → queue → inflight window (qos.Window, Receive
//	Maximum) → encode into the loop's scratch buffer → one write per drain.
//
// Acknowledgements (PUBACK/PUBREC) for the publisher are gathered in its
// loop's scratch buffer and written once per read event.
//
// # Bounds
//
// Every queue is bounded: the inflight window (ReceiveMaximum), the session
// queue (MaxQueuedMessages, MaxQueuedBytes; QoS 0 is dropped first), inbound
// QoS 2 flows awaiting PUBREL (MaxInboundQoS2; exceeding it closes the
// connection), the packet size (checked from the fixed header before the
// body is buffered) and the socket's outbound buffer (over MaxOutboundBytes
// QoS 0 deliveries are dropped; over 4× the client is disconnected as a slow
// consumer).
//
// # Timers
//
// Connect timeout and keepalive (1.5× the client's value) run on a per-loop
// one-second timing wheel (wheel.go): each connection costs O(1) per
// keepalive period, never a scan of all connections. Offline persistent
// sessions expire from a min-heap checked once a second.
//
// # Not yet here
//
// Durable storage (sessions and QoS 1/2 state are in memory only: the
// persist package is integrated by the durability work), TLS and WebSocket
// listeners. Delayed 5.0 wills (will.go) are held in memory: a broker
// restart loses those still waiting. Maximum QoS and Retain Available are
// not configurable (the broker always supports QoS 2 and retained
// messages, so CONNACK leaves them at their defaults).
//
// # MQTT 5.0
//
// v5.go holds the 5.0-only connection state and checks (CONNACK
// capabilities, Request Problem/Response Information, Payload Format
// Indicator, inbound Receive Maximum, Subscription Identifier from a
// client); v5_alias.go topic aliases both ways; will.go the Will Delay
// Interval; auth.go the AUTH exchange and re-authentication with pluggable
// EnhancedAuthenticators; auth_scram.go the built-in SCRAM-SHA-256.
package server
