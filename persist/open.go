package persist

import (
	"errors"
	"fmt"
	"slices"
)

// Opening a store: before the committer starts, the in-memory state that
// is never read from disk on the hot path is loaded: the id allocator and
// the counts of shared messages. Neither needs a scan of what is queued.
// A store without count records (schema 1, or none at all) is migrated by
// one full scan, once.

// migrateChunk bounds the operations of one write during a migration, so
// migrating millions of messages does not build one huge batch.
const migrateChunk = 1 << 16

// load restores the in-memory state at open: the schema check, the id
// allocator, the live-message count and the counts of shared messages. It
// runs before start, alone, so it fills committer state without locks.
func (c *core) load() (err error) {
	defer c.catchFatal(&err)
	var schema, ceiling, live uint64
	var haveSchema, haveLive bool
	err = c.scan([]byte{prefixMeta}, []byte{prefixMeta + 1}, func(k, v []byte) error {
		switch string(k) {
		case string(metaSchema):
			n, err := decodeMetaU64(v)
			if err != nil {
				return fmt.Errorf("persist: schema record: %w", err)
			}
			schema, haveSchema = n, true
		case string(metaIDCeiling):
			n, err := decodeMetaU64(v)
			if err != nil {
				// Only a bound: the highest message key still bounds the ids.
				c.log.Warn("persist: id ceiling record unreadable; using message keys", "err", err)
				return nil
			}
			ceiling = n
		case string(metaLive):
			n, err := decodeMetaU64(v)
			if err != nil {
				c.log.Warn("persist: live-message count unreadable; it restarts at zero", "err", err)
				return nil
			}
			live, haveLive = n, true
		}
		return nil
	})
	if err != nil {
		return err
	}
	if haveSchema && schema != schemaVersion && schema != schemaNoRefs {
		return fmt.Errorf("persist: store schema version %d, this build reads %d: %w", schema, schemaVersion, ErrUnknownVersion)
	}
	maxID, err := c.highestMessageID()
	if err != nil {
		return err
	}
	c.nextID.Store(max(ceiling, maxID+1, 1))
	c.ceiling = ceiling
	if !haveSchema || schema == schemaNoRefs || c.opts.RepairReferences {
		c.migrated = haveSchema || c.opts.RepairReferences
		return c.rebuildRefs()
	}
	if err := c.loadRefs(); err != nil {
		if !errors.Is(err, ErrCorrupt) {
			return err
		}
		// A count that cannot be read could be too low, and a count too
		// low deletes a message still queued: recount everything.
		c.log.Warn("persist: reference-count record unreadable; rebuilding every count", "err", err)
		c.migrated = true
		return c.rebuildRefs()
	}
	if haveLive {
		c.live, c.liveWritten = int64(live), int64(live)
	}
	c.sharedN.Store(int64(len(c.shared)))
	c.liveN.Store(c.live)
	return nil
}

// highestMessageID returns the highest message key's id (0 if none): one
// seek, so ids stay above every stored one even if the ceiling is stale.
func (c *core) highestMessageID() (id uint64, err error) {
	it, err := c.eng.newIter([]byte{prefixMessage}, []byte{prefixMessage + 1})
	if err != nil {
		return 0, err
	}
	defer func() { err = errors.Join(err, it.Close()) }()
	for ok := it.Last(); ok; ok = it.Prev() {
		if id, perr := parseMessageKey(it.Key()); perr == nil {
			return id, nil
		}
	}
	return 0, it.Error()
}

// loadRefs reads every count record into c.shared.
func (c *core) loadRefs() error {
	return c.scan([]byte{prefixRefs}, []byte{prefixRefs + 1}, func(k, v []byte) error {
		id, err := parseRefsKey(k)
		if err != nil {
			return err
		}
		n, err := decodeRefs(v)
		if err != nil {
			return fmt.Errorf("message %d: %w", id, err)
		}
		c.shared[id] = n
		return nil
	})
}

// rebuildRefs recounts every reference by a full scan and rewrites the
// count records, the live-message count and the schema record (last, so
// an interrupted migration runs again at the next open). Message records
// that nothing references are deleted; entries whose message is missing
// are counted. Memory: 12 bytes per message record, for the scan only.
func (c *core) rebuildRefs() error {
	var ids []uint64 // message keys arrive in id order
	err := c.scan([]byte{prefixMessage}, []byte{prefixMessage + 1}, func(k, _ []byte) error {
		if id, err := parseMessageKey(k); err == nil {
			ids = append(ids, id)
		}
		return nil
	})
	if err != nil {
		return err
	}
	counts := make([]uint32, len(ids))
	err = c.scan([]byte{prefixClient}, []byte{prefixClient + 1}, func(k, v []byte) error {
		ck, err := parseClientKey(k)
		if err != nil || ck.kind != kindOutbound {
			return nil
		}
		o, err := decodeOutbound(v)
		if err != nil || o.MessageID == 0 {
			return nil
		}
		if i, ok := slices.BinarySearch(ids, o.MessageID); ok {
			counts[i]++
		} else {
			c.danglingAtOpen++
		}
		return nil
	})
	if err != nil {
		return err
	}
	sync := c.opts.Mode != ModeNone
	w := c.eng.newWriter()
	defer func() { w.release() }()
	flush := func() error {
		if err := c.eng.apply(w, false); err != nil {
			return err
		}
		w.release()
		w = c.eng.newWriter()
		return nil
	}
	// Stale count records go first; the ones written after the range
	// deletion in the same write survive it. Until the last write the
	// schema record says 1, so a repair interrupted after the deletion
	// starts over instead of trusting the counts written so far.
	w.delRange([]byte{prefixRefs}, []byte{prefixRefs + 1})
	w.set(metaSchema, appendMetaU64(nil, schemaNoRefs))
	var live int64
	for i, id := range ids {
		switch n := counts[i]; {
		case n == 0:
			c.orphans++
			w.del(appendMessageKey(nil, id))
		case n >= 2:
			c.shared[id] = n
			w.set(appendRefsKey(nil, id), appendRefs(nil, n))
		}
		if counts[i] > 0 {
			live++
		}
		if w.count() >= migrateChunk {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	c.live, c.liveWritten = live, live
	w.set(metaLive, appendMetaU64(nil, uint64(live)))
	w.set(metaSchema, appendMetaU64(nil, schemaVersion))
	if err := c.eng.apply(w, sync); err != nil {
		return err
	}
	c.sharedN.Store(int64(len(c.shared)))
	c.liveN.Store(c.live)
	if c.migrated {
		c.log.Info("persist: reference counts rebuilt", "messages", len(ids), "shared", len(c.shared),
			"orphans_deleted", c.orphans, "dangling_entries", c.danglingAtOpen)
	}
	if c.orphans > 0 {
		c.log.Warn("persist: deleted unreferenced message records", "count", c.orphans)
	}
	if c.danglingAtOpen > 0 {
		c.log.Warn("persist: outbound entries reference missing messages; reading skips them", "count", c.danglingAtOpen)
	}
	return nil
}
