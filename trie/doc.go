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
// One node per filter level. A node's children, the '+' and '#' ones
// included, hang off its one kids pointer, which points at the child itself
// when there is only one and at a table otherwise; a hashed table (many
// children) keeps '+' and '#' in fields of their own, so matching a level is
// one probe plus two pointer loads:
//
//	Trie
//	├─ shards[hash("devices") % 32].root ── kids ──► "devices"
//	│                                                  └─ kids ──► hashed table ──► "42"
//	│                                                                                └─ kids ──► "+"
//	│                                                                                             └─ kids ──► "temp"  val ──► Sub
//	└─ wild.root   (filters starting with '+' or '#')
//	     └─ kids ──► small table ──► "+" …
//	                             └─► "#"  val ──► subSet
//
// A node's value is a lone entry when one ordinary subscriber has the
// filter (the usual case in a fleet: one device, one command topic) and a
// subSet once there are more or there is a shared group. The lone entry is
// a Sub without its Group (always "" there): half a Sub's size.
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
//     and clear slot by slot; going from one child to a table and back,
//     growing or shrinking builds the new form and swaps it in with one
//     atomic store, and a reader tells the forms apart from the object
//     itself, never from a second field (see node.kidsOf and table);
//   - a node's subscriptions are an immutable lone entry or subSet, told
//     apart by the entry's set flag (see nodeVal): a writer builds a new one and swaps
//     it in. To keep that cheap for 100,000 subscribers on one filter, a
//     subSet is chunked: a write copies one 64-entry chunk and the
//     chunk-pointer arrays, not the whole list (see subSet);
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
// Sizes on 64-bit platforms, for a pointer-sized subscriber:
//
//	node                      32 B   kids, val, name
//	lone subscription         16 B   one entry (a Sub without Group), the whole value of its node
//	subSet                    80 B   head, plus 32 B per Sub (2+ subscribers, or groups)
//	only child                 0 B   the parent's kids points at it
//	small table (2…9 kids)   8 B + 8 B per slot, one object (24…80 B)
//	hashed table (10+ kids)    9 B per slot (pointer + 1-byte tag), ⅛ to ¾ full
//
// Node names are substrings of the subscribed filter string, so the trie
// keeps that string and nothing else of the caller's. A fleet filter
// "devices/<id>/cmd" with one subscriber costs its slot in the "devices"
// table, two nodes and a lone entry: about 99 bytes plus the string
// (BenchmarkMemoryFleet/cmd measures 123 in all for 1M such filters; 139
// with a 32-byte lone Sub). For 1M distinct "devices/<n>/+/temp" filters,
// one subscriber each, BenchmarkMemoryPerSubscription measures about 155
// bytes per subscription, filter string included (171 with a 32-byte lone
// Sub, 337 with the earlier 48-byte nodes, a table for every child and a
// subSet for every subscriber).
package trie
