// Package persist is Tern's durable store: persistent sessions, QoS 1/2
// inflight and queued messages, inbound QoS 2 state and retained messages,
// on one embedded Pebble database with group-committed fsync.
//
// The store is written on the publish path. It is read at startup
// (Recover), which rebuilds sessions, inbound markers and retained
// messages, and — for persistent sessions whose queues stay on disk —
// while the broker runs: ReadOutbound pages one session's queue in, in
// order, as it drains. Nothing at open or in memory grows with the number
// of queued messages. Nothing here knows MQTT packets: the server decides
// what to store, this package decides how.
//
// # Entities
//
//	Session   client id            -> protocol version, expiry interval,
//	                                  disconnected-at, subscriptions
//	Message   message id (uint64)  -> topic, payload, QoS, retain, 5.0
//	                                  properties (opaque), expiry, publisher
//	Outbound  (client id, sequence) -> message id, delivered QoS, state, packet id
//	Inbound   (client id, packet id) -> "PUBREC sent, PUBREL awaited"
//	Retained  topic                -> message, inline
//	Refs      message id           -> reference count (shared messages only)
//
// # Key schema
//
// The first key byte says what a record is. Its value orders the key space
// the way Recover wants to read it: messages before the client ranges that
// reference them; reference counts last (open reads them, Recover skips
// them).
//
//	0x01 meta      0x01 | name                        ("id", "schema", "live")
//	0x02 message   0x02 | id (u64 big-endian)
//	0x03 client    0x03 | len (u16 BE) | client id | kind | suffix
//	0x04 retained  0x04 | topic bytes
//	0x05 refs      0x05 | message id (u64 BE)
//
// Everything a client owns shares the prefix 0x03 | len | id, so a client
// is one contiguous range and DeleteSession is one range deletion. The
// length prefix keeps ranges apart: "a" followed by kind 0x02 can never be
// the client "a\x02". Inside the range, the kind byte orders session, then
// inbound markers, then outbound entries:
//
//	kind 0x01 session    (no suffix)
//	kind 0x02 inbound    packet id (u16 BE)
//	kind 0x03 outbound   sequence  (u64 BE)
//	kind 0x04 backlog    (no suffix): bytes counted against the quota
//
// Outbound entry 258 of client "dev1", byte by byte:
//
//	03 | 00 04 | 64 65 76 31 | 03 | 00 00 00 00 00 00 01 02
//	^    ^       ^ "dev1"      ^    ^ sequence 258, big-endian
//	|    |                     kind outbound
//	|    id length 4
//	client range
//
// Big-endian integers compare bytewise in numeric order, so iterating a
// client's outbound kind yields entries in sequence order: delivery order.
// The range of one client is [0x03|len|id, 0x03|len|id|0xFF).
//
// # Records
//
// Every value starts with a format version byte (each record type has its
// own: sessions are at 2, the others at 1). A decoder accepts exactly the
// versions it knows and rejects anything else — unknown versions, reserved
// flag bits, trailing bytes, out-of-range fields, lengths beyond the
// record — with an error wrapping ErrCorrupt; it never panics and never
// allocates more than the record justifies (FuzzDecodeRecord checks both).
//
// Message (key 0x02, and inline under retained keys 0x04):
//
//	0      version = 1
//	1      flags: bits 0-1 QoS, bit 2 retain, bit 3 payload S2-compressed,
//	       bits 4-7 zero
//	...    expiry time, unix ms (uvarint; 0 = none)
//	...    publisher client id (uvarint length, bytes)
//	...    topic               (uvarint length, bytes)
//	...    5.0 properties      (uvarint length, bytes; opaque wire encoding)
//	...    payload: the rest of the record; one S2 block if bit 3 is set
//
// Session (version 2; version 1, without the owner, is still read):
//
//	0      version = 2
//	1      protocol version (3, 4 or 5)
//	2-5    session expiry interval, seconds (u32 BE; 0xFFFFFFFF = never)
//	6-13   disconnected at, unix ms (u64 BE; 0 = connected)
//	...    subscription count (uvarint), then per subscription:
//	       filter (uvarint length, bytes) | QoS | options byte |
//	       subscription identifier (uvarint)
//	...    owner: the identity that created the session (uvarint length,
//	       bytes; empty = anonymous)
//
// Outbound entry, 13 bytes, fixed so a state change rewrites in place:
//
//	0      version = 1, or 2 when a flag is set
//	1      state: 0 Queued, 1 AwaitingPuback, 2 AwaitingPubrec,
//	       3 AwaitingPubcomp (PUBREL sent); version 2 only: bit 4 set
//	       = delivered through a $share subscription (Outbound.Shared),
//	       bits 5-7 zero
//	2      delivered QoS
//	3-4    packet id (u16 BE; 0 while Queued)
//	5-12   message id (u64 BE; 0 allowed only in AwaitingPubcomp)
//
// Inbound marker, 9 bytes: version = 1 | received at, unix ms (u64 BE).
//
// Backlog byte count, 9 bytes: version = 1 | bytes (u64 BE, <= MaxInt64):
// what the server counts against the client's backlog quota, written by
// Batch.PutBacklogBytes when it has moved by a granule, and reported by
// Recover with the backlog bounds, so the quota holds across a restart
// without reading the backlog. A build that predates it logs the record
// as corrupt and skips it.
//
// Reference count: version = 1 | count (uvarint, >= 2).
//
// Meta: version = 1 | u64 BE. "schema" is the key-schema version: 2 since
// count records exist; a store at 1 is migrated when opened (below), a
// store from a newer schema is refused. "id" is the id ceiling below;
// "live" the number of message records, for Stats without a scan.
//
// # Compression
//
// Payloads of at least Options.CompressThreshold bytes (default 1 KiB) are
// compressed with S2 in the Batch method, on the caller's goroutine, and
// stored compressed only if that is smaller (flag bit 3). S2 was chosen over
// zstd by measurement (BenchmarkCompress, 2-core Xeon, Go 1.26):
//
//	                       S2 encode   ratio    zstd-fastest encode   ratio
//	1 KiB telemetry JSON   1.5 µs      0.51     14.8 µs               0.32
//	4 KiB telemetry JSON   5.3 µs      0.43     34 µs                 0.22
//	64 KiB telemetry JSON  109 µs      0.34     344 µs                0.19
//	4 KiB random           1.3 µs      1.00     2.2 µs                1.00
//
// zstd stores 35-45% less but costs 3-10x the CPU on the event loop, and
// Pebble compresses sstable blocks anyway, which narrows the gap on disk
// (BenchmarkDiskBytesPerMessage: 2 KiB JSON takes 904 B/message in sstables
// with S2, 960 without; what S2 halves is the WAL: 1073 vs 2195 B/message
// written and fsynced on the hot path). S2 decodes at ~2 GB/s.
//
// # Store-once and reference counts
//
// A message delivered to 10,000 persistent sessions is written once
// (Batch.PutMessage assigns its id) and each outbound entry that points at
// it holds a reference (Batch.AddRef); the message is deleted atomically
// with its last reference, never before.
//
// Most messages have exactly one reference (one subscriber, or one
// persistent one), and for them no count is kept anywhere: releasing that
// reference deletes the record. Only a message with two or more references
// has a count, in memory (a map from id to count) and on disk (a count
// record, key 0x05 | id). Memory, and the work done at open, grow with the
// number of shared messages, not with what is queued: a million queued
// single-subscriber messages cost the store no memory at all.
//
// Counts change on the committer goroutine, batch by batch in commit
// order, as each batch is merged into its group (refs.go). They used to
// change when a batch was submitted to Commit, which stops working once
// counts are persisted as values: DeleteSession releases the entries it
// finds when it is applied, so a batch submitted behind a queued
// DeleteSession would write a count that ignores those releases: too high
// on disk, disagreeing with memory, and the message would outlive its last
// reference after a restart. On the committer every count is known exactly
// at its place in commit order. Each batch's count changes are blind writes (Set of the new
// count, or deletion of the record when it falls below two) in the same
// engine write as the batch, so the counts on disk always match the
// entries on disk.
//
// Without a count, a live message with one reference and a deleted one
// look alike in memory. Two calls need to tell them apart and read the
// message key once (a point read by the committer, after applying — without
// a sync — the batches merged before, so the read sees them): AddRef of an
// id put by an earlier batch (refused, counted in Stats.RefErrors, if the
// message is gone), and AddRefOrPut, which writes the message again under
// its id when it is gone (Stats.Rewritten) — the server uses it for a
// message it holds in memory from an earlier batch, such as a retained one
// delivered on a later SUBSCRIBE. A Release never reads: it is the hot
// path, and the caller releases what it holds. Applies are split only
// between batches, so every batch is still written atomically.
//
// DeleteSession releases the references of the client's outbound entries
// as they stand when the deletion is applied: the committer applies what
// is merged so far, reads the client's entries, and overlays the
// operations of the same batch that precede the deletion. The caller does
// not release them itself.
//
// A message record that nothing references is an orphan; an entry whose
// message is missing dangles. Atomic batches produce neither. Open does
// not look for them (it would have to read everything); Usage counts both,
// and Options.RepairReferences rebuilds every count at open by a full scan,
// deleting orphans and counting dangling entries (Stats.OrphansDeleted,
// Stats.DanglingAtOpen). Recover skips dangling entries; ReadOutbound
// reports them (bad set) so the server can delete them (a tombstone).
//
// A store written at schema 1 (counts rebuilt in memory at every open, no
// count records) is migrated by that same scan the first time it is opened
// (Stats.Migrated): count records for shared messages, the live count,
// then schema 2, last, so an interrupted migration runs again. It needs 12
// bytes of memory per message record while it runs, and takes what every
// open used to take (several seconds per million queued messages).
//
// Message ids come from an in-memory counter. So that an id is never
// reused after a restart — even when every message was deleted — the
// committer persists a ceiling 65,536 ids above the highest id handed out,
// in the same Pebble batch as the first message that crosses the previous
// ceiling; open starts at max(ceiling, highest message key + 1).
//
// # Group commit
//
// Event loops build batches on their own goroutine (encoding and
// compression happen there) and call Commit, which appends the batch to a
// queue and returns. One committer goroutine takes everything queued (up
// to Options.MaxGroupBytes) and copies it into ONE Pebble batch: a group.
// Stats counts batches, groups and fsyncs.
//
// In ModeSync the groups are pipelined: the committer does not wait for a
// group's fsync before applying the next one, so merging, the WAL write
// and the memtable inserts of group N+1 overlap the fsync of group N, and
// the disk never waits for the committer:
//
//	event loops ─ Commit ─> queue ─> committer: cut a group, merge,
//	                                 ApplyNoSyncWait (WAL buffer + memtable,
//	                                 fsync requested, not awaited)
//	                                   │ pending{batches, writer}, in order
//	                                   v
//	Pebble's WAL flush loop: fsync,    completer: SyncWait of the oldest
//	then at once one fsync for every   group, then its done callbacks in
//	group applied meanwhile            commit order; next group
//
// The types (commit.go): pending is one applied group (its batches, its
// Pebble batch, the error it met); the committer hands pendings to the
// completer through a channel in commit order; slots, a semaphore of
// Options.MaxInFlightGroups (default 64) tokens, is taken before a group
// is cut and returned when its callbacks have run.
//
// Group boundaries are adaptive, with no timer: the committer cuts a
// group from whatever is queued when it is free, and Pebble's WAL writer
// syncs, when an fsync returns, everything applied while it ran. So what
// accumulates during one fsync goes into the next, and the slower the
// disk, the more each fsync carries. Under light load a batch is applied
// at once and waits for one fsync (plus the rest of one in progress).
//
// Ordering. A group's callbacks run only after its own fsync returned and
// after every earlier group's callbacks: the completer waits for groups in
// the order they were applied, and the WAL is sequential, so an fsync
// that covers group N covers every group before it. A later group never
// acknowledges before an earlier one; acknowledgements leave per group,
// as soon as their fsync covers them, not per burst. What a group applied
// is readable (ReadOutbound) before it is durable, as it always was with
// Pebble; nothing is reported to the caller before the fsync.
//
// Bounds and back-pressure. At most MaxInFlightGroups groups are cut and
// not yet reported; when all slots are taken the committer waits
// (Stats.PipelineWaits) and batches keep queueing, to join the next group.
// The bytes of queued batches and of groups in flight together are
// bounded by Options.MaxPendingBytes: Commit blocks its caller (an event
// loop) while they are over it (Stats.CommitWaits) — back-pressure from a
// disk slower than the publishers. Stats.MaxInFlight is the most groups
// seen in flight at once.
//
// Failure. Once a group fails — its apply panics or Pebble's Fatalf
// fires (the committer recovers either), or its fsync fails (SyncWait
// returns the error) — the store is unavailable, and that group and every
// later group in flight fail, whatever their own SyncWait reports: after
// a failed fsync the kernel may have dropped the dirty pages, so a later
// successful fsync proves nothing. A group before the failed one that its
// own fsync covered is reported durable, which it is. The committer then
// fails every queued batch without writing it, and Commit fails new ones
// synchronously (see Failure below). A failed group's Pebble batch is
// abandoned rather than closed: Pebble may still refer to it.
//
// Pebble marks DB.ApplyNoSyncWait experimental; it is what CockroachDB
// commits with, and the pinned v2.1.7's semantics are the ones above
// (commitPipeline.Commit, LogWriter.flushLoop). Options.MaxInFlightGroups
// = 1 applies one group per fsync, as before pipelining.
//
// In ModePeriodic and ModeNone the committer applies each group without a
// sync and runs its callbacks itself, in order.
//
// Measured (BenchmarkCommitWindow: 16 publishers, each with 4 batches of 8
// QoS 1 messages in flight; WAL fsync simulated at a fixed 0.5 or 2 ms on
// an in-memory filesystem; 2 shared cores at load 20): at 0.5 ms, 58-173k
// msg/s pipelined against 28-87k with one group per fsync, commit p99
// 14-46 ms against 32-124 ms; at 2 ms, 42-56k against 40-53k.
// BenchmarkCommitSync is the same path on the real disk. On the whole
// broker (tools/commitbench.sh, BENCHMARKS.md) the difference was within
// the noise of a loaded machine whose fsyncs took 10-18 ms.
//
// # Write avoidance
//
// Within one group, only the last operation on a key reaches the engine,
// and a key the group created and then deleted does not reach it at all
// (elide.go). A QoS 1 delivery to a persistent session is five operations:
// the message, its outbound entry (Batch.InsertOutbound: a new sequence
// number), the entry rewritten as sent, the entry's deletion and the
// message's on PUBACK. When the PUBACK arrives while the publisher's batch
// still waits in the queue — during the fsync of the group before it —
// all five land in one group and none is written (Stats.MessagesAvoided,
// Stats.WritesAvoided; RabbitMQ's classic queues do the same for a
// message consumed and acknowledged before it reaches disk). What an
// unacknowledged delivery leaves is written as before.
//
// It is done only for a group the committer applies as ONE engine write:
// none of its batches holds a DeleteSession, an AddRefOrPut, or an AddRef
// of a message put by another batch (those make the committer apply what
// is merged so far, to read it). A crash then leaves all of the group or
// none of it; with all of it every key holds what it would have held
// without avoidance, and with none of it no batch of the group was
// acknowledged. The states a crash can leave are thus a subset of those
// possible without avoidance, whatever the QoS: for a QoS 1 message, a
// crash before the publisher's PUBACK loses it from the store and the
// publisher sends it again (at least once); after the PUBACK, every
// recipient whose write was avoided had already acknowledged it.
// TestWriteAvoidancePowerLoss cuts power while deliveries and their
// acknowledgements share groups. Options.NoWriteAvoidance turns it off.
//
// The committer counts the references of the messages a group puts in a
// slice indexed by message id from the lowest one it puts (ids come from
// one counter, so a group's are nearly contiguous), not in maps; ids more
// than 4 per put message + 1,024 above the lowest (a batch built long
// before the others of its group) are left out and written as without
// avoidance (TestWriteAvoidanceIDBeyondWindow).
//
// The window is the queueing time of the publisher's batch, so it is
// wider with fewer groups in flight: with Options.MaxInFlightGroups = 1 a
// group waits for the previous fsync, and what is acknowledged meanwhile
// is never written. The price is the overlap of merging with fsyncs.
//
// done must not block, and must not call Commit (the completer frees the
// space Commit may wait for); it should hand the result to its event loop
// (which then sends the PUBACK or PUBREC).
//
// # Modes
//
//   - ModeSync (default): done runs after the fsync that covers the
//     batch. An acknowledged message survives SIGKILL and power loss
//     (TestPowerLossKeepsAcknowledged cuts power, in effect, while groups
//     are in flight).
//   - ModePeriodic: done runs when the group is applied to Pebble (WAL
//     buffer and memtable), before any fsync; a ticker fsyncs every
//     Options.SyncInterval (default 100 ms). Risk: up to one interval of
//     acknowledged writes is lost on power loss or kernel crash, and also
//     on SIGKILL, because Pebble keeps the WAL tail in process memory until
//     a sync writes it out. A write failure surfaces at the next tick or
//     write, after the batches it affects were acknowledged.
//   - ModeNone: the Memory store, same semantics without a disk; all is
//     lost when the process exits.
//
// # Failure
//
// When a write or fsync fails (disk full, I/O error), Pebble reports it
// through Logger.Fatalf or a panic in its commit pipeline, or (a WAL
// fsync in ModeSync) through Batch.SyncWait; the store catches all three
// on its own goroutines, fails the done callbacks of the group and of
// every later group (above) with an error wrapping ErrStoreUnavailable,
// and from then on fails every
// Commit immediately (synchronously) with the same error until the process
// restarts. Retrying is unsafe: after a failed fsync the kernel may have
// dropped the dirty pages and a second fsync can report success for data
// that never reached the disk. The server then refuses new QoS 1/2
// PUBLISHes with a reason code instead of acknowledging what it could not
// store. Two failures still end the process, by Pebble's design: a Fatalf
// on one of Pebble's own background goroutines (a failed MANIFEST write
// during a flush), and a failure met while Pebble rotates its WAL (in
// v2.1.7 rotateWAL panics after releasing its mutex, and the deferred
// unlock is a fatal error that no recover catches). Neither loses an
// acknowledged write in ModeSync: the restart recovers from the synced WAL.
// Options.FS lets tests inject failures (Pebble's vfs/errorfs).
//
// # Opening and recovery
//
// Opening reads the meta records, the count records (one per shared
// message) and seeks once to the highest message key (the id allocator
// starts above it and above the ceiling); Pebble replays its WAL tail.
//
// Recover then walks the key space once, in key order, with one iterator,
// and hands every decoded record to a Visitor: messages by id, then per
// client its session, inbound markers and outbound entries in sequence
// order, then retained messages. With Visitor.Backlog set it leaves the
// queues on disk: it seeks past the message range and, in each client
// range, reports the first outbound sequence and, after one SeekLT, the
// last, and after one SeekGE the backlog byte count, then seeks to the
// next client. Startup then costs O(sessions +
// inbound markers + retained messages + shared messages), whatever is
// queued. A record that does not decode is logged, counted
// (RecoveryStats.Corrupt), passed to Visitor.Corrupt and skipped; so, in
// the full walk, is an outbound entry whose message is missing or corrupt.
// Progress is reported every Options.RecoveryProgressEvery records.
//
// BenchmarkOpenRecover, 2-core VM shared with other work, Go 1.26, 64-byte
// payloads, 100 offline sessions:
//
//	                          backlog on disk      every entry visited
//	1,000,000 queued          21 ms                1.1 s
//	5,000,000 queued          13-35 ms             5.0-7.0 s
//	first open after writing 5,000,000: 0.4-1.4 s, nearly all of it
//	Pebble replaying its WAL tail (our part of open: 1-4 ms)
//
// # Reading a queue
//
// ReadOutbound(client, from, max, fn) reads one client's outbound entries
// with sequence >= from in order, at most max, each with its message
// (none for AwaitingPubcomp), and returns where to continue. Entries and
// messages come from one snapshot (Pebble: an iterator over the entries
// and a clone of it for the messages, read by increasing SeekGE, which
// Pebble turns into Next steps), so a message deleted by a commit running
// meanwhile is still read with the entry that the snapshot shows. It sees
// what is committed: batches still queued in the committer are not
// visible until their done callback has run. Entries are collected first
// and fn is called after the snapshot is released, so fn may call any
// store method. A message's topic and publisher strings are shared with
// the previous message when they are the same; each entry costs two
// allocations (the Message and its payload). BenchmarkReadOutbound (one
// queue of 200,000, 64-byte payloads, pages of 1,000, read from sstables
// through the default 8 MiB block cache): 1.0-1.4 million entries/s,
// 160 B and 2 allocations per entry; with a cache holding the whole queue
// 1.4-1.8 million/s. The Memory store sorts the client's keys on every
// call: fine for tests, not for large queues.
//
// DiskUsage reports the bytes the store takes (Pebble's metrics, with the
// current WAL counted at its live size) and the bytes free on its
// filesystem, in about 10 µs: cheap enough for a quota checked every
// second.
//
// ExpireSessions deletes sessions whose expiry passed while the broker was
// down; call it after opening and before Recover.
//
// # Reading order
//
// store.go (the Store interface and its Stats), options.go (modes and
// options), types.go (what is stored), keys.go and records.go (the key
// schema and record encodings above), batch.go (building a batch), then
// the shared core: core.go (its state, failure handling, Close), open.go
// (loading counts and the id allocator at open, the schema-1 migration),
// commit.go (Commit, the group committer, the ModeSync completer, the
// periodic syncer), elide.go (write avoidance), refs.go
// (reference counts), recover.go (Recover, ExpireSessions), read.go
// (ReadOutbound, DiskUsage), inspect.go (Usage, Inspect). The engines
// under the core: engine.go (the interface), pebble.go (Open, Pebble),
// memory.go (ModeNone).
package persist
