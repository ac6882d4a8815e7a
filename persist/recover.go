package persist

import (
	"errors"
	"fmt"
	"slices"
	"time"
)

// Reading everything back: Recover's walk of the whole key space, and
// ExpireSessions, which runs before it to drop sessions that expired while
// the broker was down.

// Visitor receives what Recover finds. Nil functions are skipped. Values
// passed are freshly allocated and may be retained. Reference counts are
// already rebuilt when Recover runs: do not AddRef recovered entries. Per
// client, continue outbound sequences after the highest one visited.
type Visitor struct {
	Message  func(id uint64, m *Message) error
	Session  func(clientID string, s *Session) error
	Inbound  func(clientID string, packetID uint16, in Inbound) error
	Outbound func(clientID string, seq uint64, o Outbound) error
	Retained func(m *Message) error
	// Corrupt is told about each skipped record (key is a copy).
	Corrupt func(key []byte, err error)
	// Progress is called every Options.RecoveryProgressEvery records.
	Progress func(RecoveryStats)
}

// RecoveryStats counts what Recover visited.
type RecoveryStats struct {
	Records  int64 // records read, all kinds
	Bytes    int64 // key and value bytes read
	Messages int64
	Sessions int64
	Inbound  int64
	Outbound int64
	Retained int64
	// Corrupt counts records skipped because they did not decode
	// (including outbound entries whose message is missing or corrupt).
	Corrupt  int64
	Duration time.Duration
}

// Recover visits everything stored; see Store.
func (c *core) Recover(v Visitor) (RecoveryStats, error) {
	start := time.Now()
	var st RecoveryStats
	every := int64(c.opts.RecoveryProgressEvery)
	// Messages that failed to decode: entries pointing at them are skipped too.
	badMsgs := map[uint64]bool{}
	var lastClient string
	clientString := func(b []byte) string {
		// Consecutive records share the client id: allocate it once.
		if string(b) != lastClient {
			lastClient = string(b)
		}
		return lastClient
	}
	corrupt := func(k []byte, err error) {
		st.Corrupt++
		c.log.Warn("persist: skipping record that does not decode", "key", fmt.Sprintf("%x", k), "err", err)
		if v.Corrupt != nil {
			v.Corrupt(append([]byte(nil), k...), err)
		}
	}
	visit := func(k, val []byte) error {
		st.Records++
		st.Bytes += int64(len(k) + len(val))
		if st.Records%every == 0 {
			st.Duration = time.Since(start)
			c.log.Info("persist: recovering", "records", st.Records, "bytes", st.Bytes, "elapsed", st.Duration)
			if v.Progress != nil {
				v.Progress(st)
			}
		}
		switch k[0] {
		case prefixMeta:
			return nil
		case prefixMessage:
			id, err := parseMessageKey(k)
			if err != nil {
				corrupt(k, err)
				return nil
			}
			m, err := decodeMessage(val, MaxPayloadLen)
			if err != nil {
				badMsgs[id] = true
				corrupt(k, err)
				return nil
			}
			st.Messages++
			if v.Message != nil {
				return v.Message(id, m)
			}
		case prefixClient:
			ck, err := parseClientKey(k)
			if err != nil {
				corrupt(k, err)
				return nil
			}
			switch ck.kind {
			case kindSession:
				s, err := decodeSession(val)
				if err != nil {
					corrupt(k, err)
					return nil
				}
				st.Sessions++
				if v.Session != nil {
					return v.Session(clientString(ck.clientID), s)
				}
			case kindInbound:
				in, err := decodeInbound(val)
				if err == nil && ck.packetID == 0 {
					err = fmt.Errorf("%w: inbound marker for packet id 0", ErrCorrupt)
				}
				if err != nil {
					corrupt(k, err)
					return nil
				}
				st.Inbound++
				if v.Inbound != nil {
					return v.Inbound(clientString(ck.clientID), ck.packetID, in)
				}
			case kindOutbound:
				o, err := decodeOutbound(val)
				if err == nil && o.MessageID != 0 && (badMsgs[o.MessageID] || !c.hasMessage(o.MessageID)) {
					err = fmt.Errorf("%w: message %d", ErrDanglingReference, o.MessageID)
				}
				if err != nil {
					corrupt(k, err)
					return nil
				}
				st.Outbound++
				if v.Outbound != nil {
					return v.Outbound(clientString(ck.clientID), ck.seq, o)
				}
			}
		case prefixRetained:
			m, err := decodeMessage(val, MaxPayloadLen)
			if err == nil && m.Topic != string(k[1:]) {
				err = fmt.Errorf("%w: retained record topic %q under key topic %q", ErrCorrupt, m.Topic, k[1:])
			}
			if err != nil {
				corrupt(k, err)
				return nil
			}
			st.Retained++
			if v.Retained != nil {
				return v.Retained(m)
			}
		default:
			corrupt(k, fmt.Errorf("%w: unknown key prefix 0x%02x", ErrCorrupt, k[0]))
		}
		return nil
	}
	err := c.scan(nil, nil, func(k, val []byte) error {
		if len(k) == 0 {
			corrupt(k, fmt.Errorf("%w: empty key", ErrCorrupt))
			return nil
		}
		return visit(k, val)
	})
	st.Duration = time.Since(start)
	if err == nil {
		c.log.Info("persist: recovered", "records", st.Records, "sessions", st.Sessions, "messages", st.Messages,
			"outbound", st.Outbound, "inbound", st.Inbound, "retained", st.Retained, "corrupt", st.Corrupt, "elapsed", st.Duration)
	}
	return st, err
}

// ExpireSessions deletes sessions whose expiry passed; see Store.
func (c *core) ExpireSessions(now time.Time) (int, error) {
	nowMs := now.UnixMilli()
	var expired []string
	err := c.eachClient(func(ck clientKey, v []byte) error {
		if ck.kind != kindSession {
			return nil
		}
		s, err := decodeSession(v)
		if err != nil || s.DisconnectedAt == 0 || s.ExpiryInterval == NoExpiry {
			return nil
		}
		if s.DisconnectedAt+int64(s.ExpiryInterval)*1000 <= nowMs {
			expired = append(expired, string(ck.clientID))
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	for chunk := range slices.Chunk(expired, 1000) {
		b := c.NewBatch()
		for _, id := range chunk {
			b.DeleteSession(id)
		}
		if err := c.CommitWait(b); err != nil {
			return 0, err
		}
	}
	return len(expired), nil
}

// eachClient calls fn with the first record of every client range (the
// session record when there is one), seeking past the rest of the range.
func (c *core) eachClient(fn func(ck clientKey, v []byte) error) (err error) {
	defer c.catchFatal(&err)
	it, err := c.eng.newIter([]byte{prefixClient}, []byte{prefixClient + 1})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, it.Close()) }()
	var seek []byte
	for ok := it.First(); ok; {
		k := it.Key()
		ck, perr := parseClientKey(k)
		if perr != nil && ck.prefixLen == 0 {
			ok = it.Next()
			continue
		}
		v, err := it.ValueAndErr()
		if err != nil {
			return err
		}
		if perr == nil {
			if err := fn(ck, v); err != nil {
				return err
			}
		}
		seek = append(append(seek[:0], k[:ck.prefixLen]...), kindEnd)
		ok = it.SeekGE(seek)
	}
	return it.Error()
}
