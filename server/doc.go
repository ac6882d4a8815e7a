// Package server is the Tern MQTT broker: connections, sessions, routing,
// durability, wills, $SYS and the embedding API (New, Serve, Close, Publish,
// Stats). Its leaves live in sub-packages that never import it:
// server/auth (password file, ACL, SCRAM), server/stdnet (TLS and
// WebSocket on the standard library, adapted to gnet's interfaces; client
// certificates and their reload), server/tlsloop (TLS on the gnet event
// loops, tls_engine: loops) and server/wsloop (WebSocket on the gnet event
// loops, websocket_engine: loops; wss:// over server/tlsloop).
//
// # Embedding: the model
//
// A Go program embeds the broker with three calls:
//
//	srv, err := server.New(opts) // check options, open the store (Pebble in DataDir)
//	go srv.Serve()               // listen; <-srv.Ready() once it accepts
//	defer srv.Close()            // close connections, flush the store
//
// and uses, as it needs them:
//
//   - Options is the whole configuration as code: every key of the YAML
//     file is a field (same names in the yaml tags), plus what a file
//     cannot say: an Authenticator, an Authorizer, Hooks, a Logger, and a
//     persist.Store implementation (Options.Store; Pebble in DataDir is
//     the default). The four keys of tern serve's file that are not
//     Options fields map to Go values: password_file and acl_file are
//     auth.LoadPasswordFile / auth.LoadACLFile set as Authenticator and
//     Authorizer, log_level and log_format the Logger.
//   - Hooks are functions the broker calls as clients connect and leave
//     and as messages pass: Authenticate and Authorize may block (a
//     database, an HTTP call) and run on a bounded pool off the event
//     loops, with a timeout and a verdict cache; the others run on the
//     event loop of the client concerned and must be quick. A hook that is
//     not set costs one nil check. See Hooks for each hook's goroutine and
//     cost.
//   - Server.Client connects an in-process client: a real MQTT 5.0
//     client of the broker without a socket, whose Publish at QoS 1/2
//     returns once the broker acknowledged it (after the fsync with
//     DurabilitySync), whose subscriptions call Go handlers, and whose
//     session can be persistent (it survives restarts in the store). It
//     goes through the same code as a network client: ACL, hooks, limits,
//     queues and back-pressure (see Client).
//   - Server.Publish injects a message without a client (fire and
//     forget at QoS 0; at QoS 1/2 it returns once the store has it).
//
// The examples (Example functions here, and the programs in the
// repository's examples/ directory) show authentication from a user
// database, device commands over MQTT 5.0 request/response, and device
// telemetry bridged into a Go channel with a persistent session.
//
// # Files in reading order
//
// A packet's life follows the files:
//
//	engine.go     gnet handler: OnBoot, OnOpen, OnTraffic, OnClose
//	client.go     one connection: framing (onTraffic), dispatch (handle), fail/close, keepalive
//	connect.go    CONNECT: authentication, will, session attach/takeover, CONNACK
//	publish.go    inbound PUBLISH: validation, ACL, QoS 2 dedupe, retained; Server.Publish
//	route.go      trie match, one delivery per session at the highest QoS
//	deliver.go    enqueue on the session, wake its loop; drain: queue → inflight → write
//	ack.go        PUBACK, PUBREC, PUBREL, PUBCOMP from the client
//	subscribe.go  SUBSCRIBE, UNSUBSCRIBE, retained on subscribe
//	commit.go     txn, group commit, replies held until durable
//	store.go      broker state ↔ persist records
//	recover.go    rebuilding sessions, queues and retained messages at start
//	loop.go       per-event-loop state, cross-loop mailbox, one-second tick
//	session.go    session, flow (queue + inflight window), subscriptions
//	registry.go   client id → session, sharded
//	expiry.go     offline sessions expiring
//	will.go       wills, 5.0 Will Delay
//	limits.go     broker-wide limits, refusal counters and rate-limited logs
//	ratelimit.go  per-listener connection rate and cap, per-client publish rate (pacing)
//	proxyproto.go PROXY protocol v1/v2 header before MQTT on opted-in plain TCP listeners (TLS/WebSocket: stdnet/proxy.go, tlsloop)
//	reload.go     Reload: password file, ACL (atomic swap, subscriptions re-checked), OnReload hooks
//	v5.go, v5_alias.go, auth.go   5.0-only state: capabilities, topic aliases, AUTH
//	sys.go        $SYS topics, /healthz, the admin HTTP listener (auth in adminapi.go)
//	metrics.go    /metrics: client_golang collector read at scrape time, Go and process collectors
//	datalock.go   one broker per data directory (flock, holder's PID in the error)
//	introspect.go clients, sessions, retained, subscriptions as Go calls; kick, delete
//	adminapi.go   the admin HTTP API /api/v1/ over introspect.go
//	options.go    Options: every setting, its default and YAML key
//	hooks.go      Hooks: the chain, the blocking-hook pool, timeout, cache
//	inproc.go     in-process clients: an in-memory gnet.Conn on in-process loops
//	cluster.go    hooks of a cluster (package cluster): forward, retained, interest, claims
//	cluster_session.go  a persistent session exported to / imported from another node
//
// # The PUBLISH path
//
// A QoS 1 PUBLISH to a persistent subscriber on another loop:
//
//	gnet read event ─▶ client.onTraffic: codec.ReadPacket frames whole packets (views, no copy)
//	  └─ handle ─▶ handlePublish: topic, ACL, $SYS, QoS 2 dedupe (qos.Inbound)
//	       └─ newMessage: topic+payload copied ONCE, shared by every recipient and the store
//	       └─ publishMessage: retained index (with its quota) ─▶ route: trie.Match (lock-free)
//	            └─ deliver: under the session's mutex, push on its queue (qos.Queue);
//	               persistent + QoS>0: message once + outbound entry into the event's txn
//	  PUBACK appended to the loop's scratch output
//	end of event ─▶ finishEvent: txn submitted to the store's group commit; the
//	  PUBACK waits for the fsync (commitDone posts it back to the loop); the
//	  subscriber's client is woken once the batch is submitted (ticket)
//	subscriber's loop: loop.drainRemote ─▶ client.drain: queue ─▶ inflight
//	  window (qos.Window, Receive Maximum) ─▶ encode once into the loop's
//	  buffer ─▶ one write per drain
//
// # Goroutines and ownership
//
// gnet runs N event loops (Options.EventLoops, GOMAXPROCS by default); each
// connection belongs to one loop for its whole life and no goroutine is
// created per plain TCP connection. TLS connections run on the gnet loops
// themselves (tls_engine: loops, the default: server/tlsloop wraps the
// handler and hands the broker a gnet.Conn of plaintext; el.Close goes
// through closeConn to reach the raw connection), and so do WebSocket ones
// (websocket_engine: loops, the default: server/wsloop, a gnet.Conn of the
// MQTT byte stream; for wss:// it wraps tlsloop's conn: gnet → tlsloop →
// wsloop → broker). With tls_engine or websocket_engine stdnet, those
// connections run on server/stdnet's task loops, which give the same
// single-owner guarantee.
//
//	client   one per connection; owned by its loop goroutine. Other loops
//	         touch only its atomics (wakeQueued, takenOver).
//	session  outlives connections; guarded by session.mu, taken briefly by
//	         the owning loop, by publishers on any loop and by a
//	         reconnecting client on any loop (takeover).
//	loop     per event loop: timing wheel, decode/encode scratch, the txn of
//	         the current event; loop.mu guards only the cross-loop mailbox.
//
// Global indexes are concurrent structures of their own: the subscription
// trie (lock-free Match), the retained index, the sharded registry.
// Cross-loop delivery is batched: while a message is routed, the targets on
// other loops are listed in the publisher's loop (no lock); once it is
// routed, each target loop gets its list in its mailbox under one lock and
// ONE task per loop per burst, before the publisher's loop writes to its own
// subscribers.
//
// # Lock order
//
// Locks are taken in this order and never the other way round; no lock is
// held across I/O or a store wait:
//
//	registry shard mu ─▶ session.mu ─▶ trie shard (inside trie) / loop.mu (mailbox)
//	session.mu ─▶ the cluster's locks (Cluster.Interest runs under it; the
//	              cluster never calls back into the server holding its own)
//	retainQuota.mu ─▶ retained index (inside trie)
//	expiryMu and willTimers.mu are leaves: released before session.mu is taken
//
// A goroutine holds at most one session.mu at a time (route locks each
// target session in turn). The store calls back without locks (from its
// completer goroutine with durability sync, its committer otherwise);
// completions are posted to the loop that owns the connection.
//
// # Durability
//
// A QoS 1 PUBLISH is PUBACKed, and a QoS 2 PUBLISH PUBRECed, only once
// everything needed to deliver it to every matching persistent session is in
// the store and synced (with DurabilitySync).
//
// Every event that changes durable state (a read event of one connection, a
// connection closing, an API call) gathers its writes in one txn: one
// persist.Batch. At the end of a read event the batch is committed and the
// replies the event produced (PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK,
// CONNACK…) are held until the store calls done; the store merges the
// batches of all loops queued at that moment into one group, applies it
// (after the previous group's fsync with the default max_inflight_groups
// of 1; while up to that many earlier groups are still being fsynced
// otherwise), and calls done for each group, in commit order, once an
// fsync covers it (persist's "Group commit"). Replies of later
// events on the same connection queue behind pending ones, so
// acknowledgements leave in the order the packets came [MQTT-4.6.0-2]. An
// event with no reply (a subscriber's PUBACKs) commits without waiting for
// done: nothing of it is acknowledged, and later replies wait for their
// own, later batches.
//
// Within a group the store writes only the last operation on a key, and
// nothing for a delivery stored, sent and acknowledged inside it (persist's
// "Write avoidance"; the delivery's entry is put with InsertOutbound): a
// QoS 1 message whose subscriber PUBACKed it while the publisher's batch
// waited for the previous fsync is never written, and its publisher's
// PUBACK still waits for that group's fsync.
//
// What is written:
//
//	persistent session created, (un)subscribed, disconnected → PutSession (once per packet)
//	QoS 1/2 delivery to a persistent session → PutMessage (once per message) + AddRef + InsertOutbound(Queued)
//	PUBACK / PUBCOMP / expiry / drop of such a delivery → DeleteOutbound (+ Release)
//	PUBREC from the subscriber → PutOutbound(AwaitingPubcomp) + Release; PUBREL waits for it
//	QoS 2 PUBLISH from a persistent session → PutInbound; PUBREC waits for it
//	PUBREL from that session → DeleteInbound; PUBCOMP waits for it
//	retained set / cleared → PutRetained / DeleteRetained
//	session ended → DeleteSession (the store drops the client's whole range)
//
// Clean sessions (3.1.1 clean session 1, 5.0 session expiry 0) write nothing.
//
// Outbound packet ids derive from the delivery's sequence number (seq mod
// 65535 + 1), so "sent" need not be stored: after a crash a recovered
// delivery goes out again with the id it first had, and a QoS 2 receiver
// that still holds that id treats it as the duplicate it is [MQTT-4.3.3-9].
// Only PUBREC → PUBREL must be durable before PUBREL leaves, because after
// PUBREL the receiver forgets the id. A stored delivery is not sent before
// its batch has been handed to the store (ticket.submitted): the
// subscriber's acknowledgement, committed in a later batch, can then never
// be applied before the entry it deletes.
//
// # Identity and authorization
//
// A client's identity is the username an Authenticator verified (or the
// SCRAM exchange authenticated); an unverified username is anonymous. A
// session belongs to the identity that created it: another identity cannot
// resume, take over or wipe it. Wills are authorized like a PUBLISH at
// CONNECT; $SYS is never publishable by clients; resumed subscriptions are
// re-checked against the Authorizer. The Authorizer in force is one atomic
// pointer that Reload swaps (reload.go); subscriptions the new one refuses
// are removed from online and offline sessions.
//
// # Bounds
//
// Every queue is bounded: the inflight window (ReceiveMaximum), the session
// queue (MaxQueuedMessages, MaxQueuedBytes — 5.0 properties count; QoS 0 is
// dropped first), inbound QoS 2 flows awaiting PUBREL (MaxInboundQoS2), the
// packet size (checked from the fixed header before the body is buffered;
// the first packet has its own, smaller limit), the socket's outbound buffer
// (over MaxOutboundBytes QoS 0 deliveries are dropped; over 4× the client is
// disconnected as a slow consumer), and the broker-wide Limits
// (connections, bytes in partial packets, subscriptions per client,
// client-id length, sessions, retained messages). Every refusal is counted
// (Server.Refused, /metrics) and logged at most once a second per limit.
//
// # Timers
//
// Connect timeout and keepalive (1.5× the client's value) run on a per-loop
// one-second timing wheel: O(1) per connection per keepalive period. Offline
// sessions expire and delayed wills fire from deadline heaps checked once a
// second. No timer fires early: deadlines are rounded up to the tick.
//
// # Not yet here
//
// Delayed 5.0 wills are held in memory (a restart loses those still
// waiting). Maximum QoS and Retain Available are not configurable (the
// broker always supports QoS 2 and retained messages).
package server
