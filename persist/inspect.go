package persist

import (
	"fmt"
	"slices"
)

// EntityUsage is a count of records and their key plus value bytes.
type EntityUsage struct {
	Count int64
	Bytes int64
}

func (u *EntityUsage) add(k, v []byte) {
	u.Count++
	u.Bytes += int64(len(k) + len(v))
}

// Usage is what `tern store inspect` prints for the whole store.
type Usage struct {
	Sessions EntityUsage
	Messages EntityUsage
	Outbound EntityUsage
	Inbound  EntityUsage
	Retained EntityUsage
	Meta     EntityUsage
	// Refs are the reference-count records of shared messages.
	Refs EntityUsage
	// BacklogCounts are the per-client backlog byte counts
	// (Batch.PutBacklogBytes).
	BacklogCounts EntityUsage
	// Corrupt counts keys that do not parse (values are not decoded
	// here, except outbound entries', for the two counts below).
	Corrupt EntityUsage
	// OrphanMessages counts message records no outbound entry references
	// (Options.RepairReferences deletes them at open).
	OrphanMessages int64
	// DanglingEntries counts outbound entries whose message record is
	// missing (ReadOutbound and Recover skip them).
	DanglingEntries int64
	// DiskBytes is the space all of Pebble's files take (0 for Memory):
	// live and obsolete sstables, WAL files (including ones kept for
	// recycling), MANIFEST and OPTIONS.
	DiskBytes int64
	// TableBytes is the live sstable (and blob file) bytes: the data after
	// Pebble's block compression, without WAL.
	TableBytes int64
	// WALBytes is the bytes in WAL files, live or kept for reuse.
	WALBytes int64
}

// Usage scans the whole store; see Store. Finding orphans and dangling
// entries holds 8 bytes per message record and per referenced id while it
// runs.
func (c *core) Usage() (Usage, error) {
	var u Usage
	var ids, refs []uint64 // message records (in id order), referenced ids
	err := c.scan(nil, nil, func(k, v []byte) error {
		if len(k) == 0 {
			u.Corrupt.add(k, v)
			return nil
		}
		switch k[0] {
		case prefixMeta:
			u.Meta.add(k, v)
		case prefixMessage:
			u.Messages.add(k, v)
			if id, err := parseMessageKey(k); err == nil {
				ids = append(ids, id)
			}
		case prefixRetained:
			u.Retained.add(k, v)
		case prefixRefs:
			u.Refs.add(k, v)
		case prefixClient:
			ck, err := parseClientKey(k)
			switch {
			case err != nil:
				u.Corrupt.add(k, v)
			case ck.kind == kindSession:
				u.Sessions.add(k, v)
			case ck.kind == kindInbound:
				u.Inbound.add(k, v)
			case ck.kind == kindBacklogBytes:
				u.BacklogCounts.add(k, v)
			default:
				u.Outbound.add(k, v)
				if o, err := decodeOutbound(v); err == nil && o.MessageID != 0 {
					refs = append(refs, o.MessageID)
				}
			}
		default:
			u.Corrupt.add(k, v)
		}
		return nil
	})
	if err != nil {
		return Usage{}, err
	}
	slices.Sort(refs)
	for i, j := 0, 0; i < len(ids) || j < len(refs); {
		switch {
		case j == len(refs) || (i < len(ids) && ids[i] < refs[j]):
			u.OrphanMessages++
			i++
		case i == len(ids) || refs[j] < ids[i]:
			u.DanglingEntries++
			j++
		default: // referenced: skip every reference to it
			for id := ids[i]; j < len(refs) && refs[j] == id; j++ {
			}
			i++
		}
	}
	d := c.eng.diskUsage()
	u.DiskBytes, u.TableBytes, u.WALBytes = d.total, d.tables, d.wal
	return u, nil
}

// ClientInfo describes one client's range for `tern store inspect`.
type ClientInfo struct {
	ClientID string
	// Session is nil when the client has no (decodable) session record.
	Session  *Session
	Inbound  EntityUsage
	Outbound EntityUsage
	// FirstSeq and LastSeq bound the outbound sequence numbers (0 if none).
	FirstSeq, LastSeq uint64
	// States counts outbound entries, indexed by OutState.
	States [4]int64
	// BacklogBytes is the last count written by Batch.PutBacklogBytes.
	BacklogBytes uint64
	// Corrupt counts records in the range that do not decode.
	Corrupt int64
}

// Inspect scans one client's range; see Store.
func (c *core) Inspect(clientID string) (ClientInfo, error) {
	ci := ClientInfo{ClientID: clientID}
	if err := checkClientID(clientID); err != nil {
		return ci, err
	}
	lo, hi := clientBounds(clientID)
	err := c.scan(lo, hi, func(k, v []byte) error {
		ck, err := parseClientKey(k)
		if err != nil {
			ci.Corrupt++
			return nil
		}
		switch ck.kind {
		case kindSession:
			s, err := decodeSession(v)
			if err != nil {
				ci.Corrupt++
				return nil
			}
			ci.Session = s
		case kindInbound:
			if _, err := decodeInbound(v); err != nil {
				ci.Corrupt++
				return nil
			}
			ci.Inbound.add(k, v)
		case kindOutbound:
			o, err := decodeOutbound(v)
			if err != nil {
				ci.Corrupt++
				return nil
			}
			ci.Outbound.add(k, v)
			ci.States[o.State]++
			if ci.FirstSeq == 0 && ci.Outbound.Count == 1 {
				ci.FirstSeq = ck.seq
			}
			ci.LastSeq = ck.seq
		case kindBacklogBytes:
			n, err := decodeBacklogBytes(v)
			if err != nil {
				ci.Corrupt++
				return nil
			}
			ci.BacklogBytes = n
		}
		return nil
	})
	if err != nil {
		return ci, fmt.Errorf("persist: inspect %q: %w", clientID, err)
	}
	return ci, nil
}
