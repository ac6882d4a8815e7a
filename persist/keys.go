package persist

import (
	"encoding/binary"
	"fmt"
)

// Key prefixes (first key byte). Their order is the order Recover visits
// entities in: messages before the client ranges that reference them.
// Reference counts come last: only open reads them.
const (
	prefixMeta     byte = 0x01
	prefixMessage  byte = 0x02
	prefixClient   byte = 0x03
	prefixRetained byte = 0x04
	prefixRefs     byte = 0x05
)

// Kinds inside a client range (the byte after the client id). Their order
// is the per-client visiting order: session, then inbound markers, then
// outbound entries by sequence.
const (
	kindSession  byte = 0x01
	kindInbound  byte = 0x02
	kindOutbound byte = 0x03
	// kindBacklogBytes holds the bytes the server counts against the
	// client's backlog quota, so the count survives a restart without
	// reading the backlog. After the outbound entries: Recover finds it
	// with one seek past the last entry.
	kindBacklogBytes byte = 0x04
	// kindEnd is above every kind: clientPrefix+kindEnd is the exclusive
	// upper bound of a client's range.
	kindEnd byte = 0xFF
)

// Meta keys.
var (
	// metaIDCeiling holds an upper bound on every message id handed out so
	// far, so ids never go backwards across a restart.
	metaIDCeiling = []byte{prefixMeta, 'i', 'd'}
	// metaSchema holds the store's schema version; a store written by a
	// newer schema is refused at open rather than misread.
	metaSchema = []byte{prefixMeta, 's', 'c', 'h', 'e', 'm', 'a'}
	// metaLive holds the number of live message records, so Stats can
	// report it without a scan at open.
	metaLive = []byte{prefixMeta, 'l', 'i', 'v', 'e'}
)

// schemaVersion is the key-schema version this build writes and reads.
// Version 1 had no reference-count records (counts were rebuilt by a scan
// at every open); a version-1 store is migrated once when opened.
const schemaVersion = 2

// schemaNoRefs is the schema version without reference-count records.
const schemaNoRefs = 1

// appendClientPrefix appends 0x03 | u16 BE len | id: the start of a
// client's key range. The length prefix makes the prefix unambiguous: "ab"
// can never be mistaken for "a" followed by kind 'b'.
func appendClientPrefix(dst []byte, clientID string) []byte {
	dst = append(dst, prefixClient, byte(len(clientID)>>8), byte(len(clientID)))
	return append(dst, clientID...)
}

func appendSessionKey(dst []byte, clientID string) []byte {
	return append(appendClientPrefix(dst, clientID), kindSession)
}

func appendInboundKey(dst []byte, clientID string, packetID uint16) []byte {
	dst = append(appendClientPrefix(dst, clientID), kindInbound)
	return binary.BigEndian.AppendUint16(dst, packetID)
}

func appendOutboundKey(dst []byte, clientID string, seq uint64) []byte {
	dst = append(appendClientPrefix(dst, clientID), kindOutbound)
	return binary.BigEndian.AppendUint64(dst, seq)
}

func appendBacklogBytesKey(dst []byte, clientID string) []byte {
	return append(appendClientPrefix(dst, clientID), kindBacklogBytes)
}

func appendMessageKey(dst []byte, id uint64) []byte {
	return binary.BigEndian.AppendUint64(append(dst, prefixMessage), id)
}

// appendRefsKey appends 0x05 | id (u64 BE): the reference count of a
// message held by two or more outbound entries.
func appendRefsKey(dst []byte, id uint64) []byte {
	return binary.BigEndian.AppendUint64(append(dst, prefixRefs), id)
}

func appendRetainedKey(dst []byte, topic string) []byte {
	return append(append(dst, prefixRetained), topic...)
}

// clientBounds returns [lower, upper) covering every key of one client.
func clientBounds(clientID string) (lower, upper []byte) {
	lower = appendClientPrefix(nil, clientID)
	upper = append(append([]byte(nil), lower...), kindEnd)
	return lower, upper
}

// clientKey is a decoded key of a client range. ClientID aliases the key.
type clientKey struct {
	prefixLen int // length of 0x03 | len | id
	clientID  []byte
	kind      byte
	packetID  uint16 // kindInbound
	seq       uint64 // kindOutbound
}

// parseClientKey decodes a key that starts with prefixClient, strictly: a
// key with trailing or missing bytes is corrupt.
func parseClientKey(k []byte) (clientKey, error) {
	var ck clientKey
	if len(k) < 4 || k[0] != prefixClient {
		return ck, fmt.Errorf("%w: short client key", ErrCorrupt)
	}
	n := int(binary.BigEndian.Uint16(k[1:3]))
	if len(k) < 3+n+1 {
		return ck, fmt.Errorf("%w: client key shorter than its id length", ErrCorrupt)
	}
	ck.prefixLen = 3 + n
	ck.clientID = k[3 : 3+n]
	ck.kind = k[3+n]
	rest := k[3+n+1:]
	switch ck.kind {
	case kindSession, kindBacklogBytes:
		if len(rest) != 0 {
			return ck, fmt.Errorf("%w: kind 0x%02x key has %d trailing bytes", ErrCorrupt, ck.kind, len(rest))
		}
	case kindInbound:
		if len(rest) != 2 {
			return ck, fmt.Errorf("%w: inbound key suffix is %d bytes, want 2", ErrCorrupt, len(rest))
		}
		ck.packetID = binary.BigEndian.Uint16(rest)
	case kindOutbound:
		if len(rest) != 8 {
			return ck, fmt.Errorf("%w: outbound key suffix is %d bytes, want 8", ErrCorrupt, len(rest))
		}
		ck.seq = binary.BigEndian.Uint64(rest)
	default:
		return ck, fmt.Errorf("%w: unknown client key kind 0x%02x", ErrCorrupt, ck.kind)
	}
	return ck, nil
}

// parseMessageKey decodes 0x02 | u64 BE id.
func parseMessageKey(k []byte) (uint64, error) {
	if len(k) != 9 || k[0] != prefixMessage {
		return 0, fmt.Errorf("%w: message key is %d bytes, want 9", ErrCorrupt, len(k))
	}
	return binary.BigEndian.Uint64(k[1:]), nil
}

// parseRefsKey decodes 0x05 | u64 BE id.
func parseRefsKey(k []byte) (uint64, error) {
	if len(k) != 9 || k[0] != prefixRefs {
		return 0, fmt.Errorf("%w: reference-count key is %d bytes, want 9", ErrCorrupt, len(k))
	}
	return binary.BigEndian.Uint64(k[1:]), nil
}

// outboundBounds returns [lower, upper) covering a client's outbound
// entries from sequence from on.
func outboundBounds(clientID string, from uint64) (lower, upper []byte) {
	lower = appendOutboundKey(nil, clientID, from)
	upper = append(appendClientPrefix(nil, clientID), kindOutbound+1)
	return lower, upper
}
