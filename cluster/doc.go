// Package cluster joins Tern brokers into one: each `tern serve` with a
// cluster listen address embeds a NATS server (core NATS, no JetStream)
// whose routes connect the nodes in a full mesh, and a Node that speaks to
// the broker through server.Cluster (the server never imports NATS). Each
// node keeps its own Pebble store; NATS stores nothing.
//
// # Subjects
//
// All subjects start with "tern.<cluster name>.":
//
//	hb            heartbeat of every node (name, incarnation, interest version)
//	int           batches of a node's filters added or removed (interest deltas) and fences
//	snap.<node>   request: the node's whole filter set (chunked reply)
//	m.<node>      messages forwarded to the node (reply: ack.<publisher>)
//	ack.<node>    confirmations of what the node forwarded
//	ret           retained set / cleared, with its version
//	rsync.<node>  request: the node's retained messages and tombstones
//	claim         a CONNECT's claim on a client id (replies: vote.<node>)
//	sess.<node>   request: a persistent session moving away from the node
//
// # Routing by interest tables
//
// Every node holds one subscription trie of every node's distinct filters
// (interest.go), built from deltas (batched like forwarded messages) and
// repaired from snapshots whenever the table is still behind the version a
// node's previous heartbeat announced (a lost delta), or the node is new to
// us or restarted. A message published on
// a node is matched there; each other node with a matching filter gets one
// copy on its own subject, carrying the $share groups it is to serve; the
// receiving node matches its own sessions (No Local, subscription
// identifiers, Retain As Published, the QoS of each subscription are thus
// applied where the subscriber is) and never forwards again. Per-node
// subjects rather than NATS subject interest: the publisher must know
// which nodes are to confirm a QoS 1/2 message, and MQTT's "#" (which
// matches its parent level) and '$' rules do not map onto NATS wildcards
// without over-delivery. NATS keeps the order of one connection's messages
// on one subject, hence MQTT's per-topic order.
//
// # Batching and hand-offs
//
// batch.go, forward.go: Forward runs on the publisher's event loop and
// appends the encoded message to a buffer per (node, receive shard); the
// append that finds a buffer empty wakes the flusher goroutine, which
// publishes every non-empty buffer as one NATS message (under load tens of
// MQTT messages each: tern_cluster_forwarded_total over
// tern_cluster_backplane_sent_total). On the receiving node each shard's
// subscription goroutine delivers its NATS message through a
// server.RemoteBatch: up to 64 messages share one store commit, one
// confirmation closure and one wake-up per subscriber's event loop, and
// their confirmations go back batched the same way. A forwarded message
// thus crosses, per batch rather than per message: loop → flusher →
// nats.go flusher → in-process NATS server (net.Pipe) → route writer →
// TCP → the other node's route reader → its in-process client writer →
// nats.go reader → shard goroutine → RemoteBatch → subscriber's loop.
//
// # Confirmations (durability across nodes)
//
// A forwarded QoS 1/2 message carries a sequence number and a reply
// subject; the receiving node answers once its deliveries are committed
// (with durability sync, fsynced), and the publisher's PUBACK/PUBREC waits
// for every node it sent to (forward.go; on the server side, the event's
// held replies get one more condition). ConfirmTimeout without an answer
// disconnects the publisher unacknowledged; a node declared gone (three
// silent heartbeats) is no longer waited for. A node that refuses a message
// for a store quota answers so (a code, not just "failed"), and the
// publisher gets Quota exceeded as from one node.
//
// The sequence number is also the message's origin: the node's name hash
// in the high 32 bits, a counter starting at the incarnation's clock below
// (ClusterMessage.Origin). The publishing node's own deliveries carry the
// same origin, so two copies of one publish are recognised anywhere.
//
// # Moving a session
//
// session.go and server/cluster_session.go: the node that won the claim
// imports the session in two rounds; between them the session is
// subscribed on both nodes. The new node numbers its own deliveries past a
// gap (server moveGap) and logs their origins; the old node logs the
// origins of what it stores after the first round. Before the final round
// the fence (fence.go) makes sure every node sends the session's messages
// to the new node and has delivered to the old node everything it sent it
// before; the old node then hands over the rest and the new node drops the
// copies it already has. QoS 2 stays exactly once, nothing acknowledged is
// lost, each publisher's order holds.
//
// # Client ids
//
// claim.go: CONNECT claims (timestamp, node); every node votes; a majority
// of the configured nodes must grant and none refuse. A node grants the
// newest claim it has seen and closes its own connection of that id
// (server.RemoteTakeover). After attaching, the server checks Owns: a newer
// claim that arrived meanwhile wins. In a partition only the majority side
// admits CONNECTs, and a node that finds itself without a majority for
// three heartbeats closes its client connections (checkMajority), so one
// client id is never connected on both sides for longer than that.
//
// # Retained messages
//
// retained.go: last writer wins by (timestamp, node); clears leave
// tombstones for an hour; a node that sees another join fetches its
// retained set and applies what is newer.
//
// # What happens when a node dies
//
// Its peers notice after three heartbeats, drop its filters and stop
// waiting for its confirmations. Its clean sessions are gone with their
// connections; its persistent sessions wait in its store until it
// restarts (NATS retries the routes forever, so it rejoins by itself).
//
// # Next step: replicated sessions
//
// Today a persistent session lives on one node. The design to survive the
// loss of that node, keeping this package's shape:
//
//   - Each persistent session gets a home node and R-1 replica nodes
//     (R = 2 or 3), chosen by rendezvous hashing of the client id over the
//     live nodes, so every node computes the same placement without a
//     coordinator; the session's owner (where its client is connected)
//     may differ from its home.
//   - Every durable write of a session (session record, outbound entries,
//     inbound QoS 2 markers, acknowledgements) is shipped, in the order of
//     the owner's group commits, to the replicas on a per-replica subject;
//     a replica applies it to its Pebble store and confirms after its own
//     fsync. The owner's acknowledgement to a publisher (and the SUBACK,
//     PUBREC/PUBCOMP to a subscriber) waits for a majority of the session's
//     copies, the same held-replies mechanism as forwarding confirmations.
//   - Owner failure: the claim of the reconnecting client (on any node)
//     fetches the session from the most up-to-date live replica (highest
//     applied commit sequence), which needs a majority of copies to
//     answer; QoS 2 state travels with it, so exactly-once holds.
//   - Moving a live session (takeover to another node) is the same path
//     with the old owner as the source, as today's move (fence, origins,
//     the old copy deleted only after the new owner stored it).
//   - Rebalancing when nodes join or leave copies sessions to their new
//     replicas in the background, bounded in bytes per second.
//   - Ownership carries a term: each claim that wins a client id (claim.go,
//     already a majority vote) increments the session's term, stored with
//     it, and every replicated write carries the term it was made under. A
//     replica refuses writes of an older term, so an owner cut off by a
//     partition (which closes its clients after three heartbeats,
//     checkMajority) cannot overwrite what the majority side's new owner
//     wrote meanwhile, and its unconfirmed writes are never acknowledged.
//   - Replication reuses the per-node subjects and batching of forwarding:
//     one batch per replica carries many sessions' writes, confirmed like
//     forwarded messages (a sequence per batch, the worst code wins). With
//     R = 2 every durable QoS 1 delivery costs one more store write and one
//     backplane round trip before its acknowledgement; the design keeps the
//     publisher's held reply as the only waiting point.
//   - What it does not change: a message is still routed by the interest
//     tables to the owner's node only; replicas hold state, not
//     subscriptions, so a replica node forwards nothing and matches nothing
//     for a session it does not own.
//
// The wire formats are versioned (wire.go, interest.go, claim.go: a
// version byte first); nodes of one cluster must run the same version of
// Tern. Interest deltas, snapshots, claims and votes were JSON until the
// late session of 2026-12-02 and are binary since (one NATS message per
// batch of deltas rather than per delta): a node of an earlier version and
// one of this version cannot form one cluster — each counts the other's
// deltas, claims and votes as undecodable (tern_cluster_errors_total), so
// their tables stay empty of each other's filters and CONNECTs lack votes.
// Upgrade every node of a cluster together.
package cluster
