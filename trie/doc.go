// Package trie owns MQTT topics: validation of topic names and filters, the
// subscription index that maps a published topic to its subscribers, the
// retained-message index, and $share groups. It imports nothing of Tern's.
//
// # Topics and filters
//
// A topic name is a '/'-separated list of levels; levels may be empty
// ("a//b", "/x"). A filter adds two wildcards that must occupy a whole level:
// '+' matches exactly one level, '#' (last level only) matches any number of
// levels including none, so "sport/#" also matches "sport". A filter whose
// first level is a wildcard does not match a topic starting with '$'
// ($SYS/…) [MQTT-4.7.2-1]. "$share/<group>/<filter>" subscribes as a member
// of a shared group: each matching message goes to one member of the group.
//
// # The subscription trie
//
// One node per filter level. Literal children sit in a per-node table;
// the '+' and '#' children have their own pointers, so matching a level is
// one table lookup plus two pointer loads:
//
//	Trie
//	├─ shards[hash("devices") % 32].root ── kids ──► "devices"
//	│                                                  └─ kids ──► "42"
//	│                                                                └─ plus ──► "+"
//	│                                                                              └─ kids ──► "temp"  val ──► subSet
//	└─ wild.root   (filters starting with '+' or '#')
//	     ├─ plus ──► "+" …
//	     └─ hash ──► "#"  val ──► subSet
//
// The first level picks a shard; each shard has its own writer mutex. A
// Match looks up the topic's first level in its shard and also walks the
// wildcard shard (unless the topic starts with '$').
//
// # Concurrency: readers take no lock
//
// Match, Retained.Get and Retained.Match never lock. Every pointer a reader
// follows is an atomic.Pointer, and what it points to is either immutable
// once published or changes only in ways a reader tolerates:
//
//   - a node's child table is an array of atomic pointers that writers fill
//     and clear slot by slot; growing or shrinking builds a new table and
//     swaps it in (see table);
//   - a node's subscriptions are an immutable subSet: a writer builds a new
//     one and swaps it in. To keep that cheap for 100,000 subscribers on one
//     filter, a subSet is chunked: a write copies one 128-entry chunk and the
//     chunk-pointer array, not the whole list (see subSet);
//   - a shared group's member list is a subSet too; its round-robin cursor is
//     an atomic counter.
//
// So a Match sees each node as of some instant during the call: never a torn
// Sub, never a half-built list. Removed nodes are left to the garbage
// collector, which is what makes the lock-free reads safe without epochs or
// hazard pointers.
//
// # Memory
//
// A node is 48 bytes; a subSet head 64 bytes plus 32 per subscription (for
// a pointer-sized subscriber); a child costs one slot in its parent's table:
// 8 bytes in a small table (≤ 8 children, header and slots in one object),
// 12 in a hashed one (pointer + tag), which is ¼ to ¾ full. Node names are
// substrings of the subscribed filter string, so the trie keeps that string
// and nothing else of the caller's. For 1M distinct "devices/<n>/+/temp"
// filters, one subscriber each, BenchmarkMemoryPerSubscription measures
// about 340 bytes per subscription, filter string included.
package trie
