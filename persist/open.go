package persist

import (
	"fmt"
	"slices"
)

// Opening a store: before the committer starts, the in-memory state that
// is never read from disk on the hot path is rebuilt from it.

// load rebuilds the in-memory state from the engine at open: the schema
// check, the id allocator and the reference counts. Message records left
// without a reference are deleted. It runs before start, alone, so it
// fills c.mu.refs without taking the lock.
func (c *core) load() (err error) {
	defer c.catchFatal(&err)
	var schema, ceiling uint64
	var haveSchema bool
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
				// Only a bound: the message keys below still bound the ids.
				c.log.Warn("persist: id ceiling record unreadable; using message keys", "err", err)
				return nil
			}
			ceiling = n
		}
		return nil
	})
	if err != nil {
		return err
	}
	if haveSchema && schema != schemaVersion {
		return fmt.Errorf("persist: store schema version %d, this build reads %d: %w", schema, schemaVersion, ErrUnknownVersion)
	}
	refs := c.mu.refs
	var maxID uint64
	err = c.scan([]byte{prefixMessage}, []byte{prefixMessage + 1}, func(k, _ []byte) error {
		id, err := parseMessageKey(k)
		if err != nil {
			return nil // Recover reports it
		}
		refs[id] = 0
		maxID = max(maxID, id)
		return nil
	})
	if err != nil {
		return err
	}
	err = c.scan([]byte{prefixClient}, []byte{prefixClient + 1}, func(k, v []byte) error {
		ck, err := parseClientKey(k)
		if err != nil || ck.kind != kindOutbound {
			return nil
		}
		o, err := decodeOutbound(v)
		if err != nil || o.MessageID == 0 {
			return nil
		}
		if _, ok := refs[o.MessageID]; ok {
			refs[o.MessageID]++
		} else {
			c.danglingAtOpen++
		}
		return nil
	})
	if err != nil {
		return err
	}
	var orphans []uint64
	for id, n := range refs {
		if n == 0 {
			orphans = append(orphans, id)
			delete(refs, id)
		}
	}
	slices.Sort(orphans)
	c.orphans = len(orphans)
	c.nextID.Store(max(ceiling, maxID+1, 1))
	c.ceiling = ceiling
	if len(orphans) > 0 || !haveSchema {
		w := c.eng.newWriter()
		defer w.release()
		for _, id := range orphans {
			w.del(appendMessageKey(nil, id))
		}
		w.set(metaSchema, appendMetaU64(nil, schemaVersion))
		if err := c.eng.apply(w, c.opts.Mode != ModeNone); err != nil {
			return err
		}
	}
	if len(orphans) > 0 {
		c.log.Warn("persist: deleted unreferenced message records", "count", len(orphans))
	}
	if c.danglingAtOpen > 0 {
		c.log.Warn("persist: outbound entries reference missing messages; recovery skips them", "count", c.danglingAtOpen)
	}
	return nil
}
