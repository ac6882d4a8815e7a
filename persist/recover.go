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
// already restored when Recover runs: do not AddRef recovered entries. Per
// client, continue outbound sequences after the highest one visited (or
// reported by Backlog).
type Visitor struct {
	Message func(id uint64, m *Message) error
	Session func(clientID string, s *Session) error
	Inbound func(clientID string, packetID uint16, in Inbound) error
	// Outbound receives every outbound entry; its message was passed to
	// Message before (entries whose message is missing or corrupt are
	// skipped and counted as corrupt).
	Outbound func(clientID string, seq uint64, o Outbound) error
	Retained func(m *Message) error
	// Backlog, when set, makes Recover leave the queues on disk: message
	// records and outbound entries are neither read nor decoded (Message
	// and Outbound must be nil), and for each client with outbound entries
	// Backlog receives the lowest and highest sequence stored (two seeks
	// per client; sequences in between may have gaps) and the last count
	// written by Batch.PutBacklogBytes (0 if none: one more seek). Read
	// the entries with Store.ReadOutbound. Startup then costs
	// O(sessions + inbound markers + retained messages), whatever is
	// queued.
	Backlog func(clientID string, first, last, bytes uint64) error
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
	// Backlogs counts the clients reported to Visitor.Backlog.
	Backlogs int64
	// Corrupt counts records skipped because they did not decode
	// (including outbound entries whose message is missing or corrupt).
	Corrupt  int64
	Duration time.Duration
}

// recovery is the state of one Recover walk.
type recovery struct {
	c     *core
	v     *Visitor
	st    RecoveryStats
	start time.Time
	every int64
	// ids are the message records that decoded, in id order (full walk
	// only): an outbound entry pointing elsewhere is dangling.
	ids        []uint64
	lastClient string
}

// clientString returns b as a string, allocating only when it differs
// from the previous client id (consecutive records share it).
func (r *recovery) clientString(b []byte) string {
	if string(b) != r.lastClient {
		r.lastClient = string(b)
	}
	return r.lastClient
}

func (r *recovery) corrupt(k []byte, err error) {
	r.st.Corrupt++
	r.c.log.Warn("persist: skipping record that does not decode", "key", fmt.Sprintf("%x", k), "err", err)
	if r.v.Corrupt != nil {
		r.v.Corrupt(append([]byte(nil), k...), err)
	}
}

// count accounts for one record read and reports progress.
func (r *recovery) count(k, val []byte) {
	r.st.Records++
	r.st.Bytes += int64(len(k) + len(val))
	if r.st.Records%r.every == 0 {
		r.st.Duration = time.Since(r.start)
		r.c.log.Info("persist: recovering", "records", r.st.Records, "bytes", r.st.Bytes, "elapsed", r.st.Duration)
		if r.v.Progress != nil {
			r.v.Progress(r.st)
		}
	}
}

// Recover visits what is stored; see Store.
func (c *core) Recover(v Visitor) (RecoveryStats, error) {
	r := &recovery{c: c, v: &v, start: time.Now(), every: int64(c.opts.RecoveryProgressEvery)}
	if v.Backlog != nil && (v.Message != nil || v.Outbound != nil) {
		return r.st, fmt.Errorf("%w: Visitor.Backlog with Message or Outbound", ErrInvalid)
	}
	err := r.walk()
	r.st.Duration = time.Since(r.start)
	if err == nil {
		c.log.Info("persist: recovered", "records", r.st.Records, "sessions", r.st.Sessions, "messages", r.st.Messages,
			"outbound", r.st.Outbound, "backlogs", r.st.Backlogs, "inbound", r.st.Inbound, "retained", r.st.Retained,
			"corrupt", r.st.Corrupt, "elapsed", r.st.Duration)
	}
	return r.st, err
}

// walk reads the key space in order with one iterator, seeking past what
// the visitor does not want: the message range and each client's outbound
// range in backlog mode, the count records always (open read them).
func (r *recovery) walk() (err error) {
	c := r.c
	defer c.catchFatal(&err)
	it, err := c.eng.newIter(nil, nil)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, it.Close()) }()
	backlog := r.v.Backlog != nil
	var seek []byte
	for ok := it.First(); ok; {
		k := it.Key()
		switch {
		case len(k) == 0:
			r.corrupt(k, fmt.Errorf("%w: empty key", ErrCorrupt))
		case k[0] == prefixMessage && backlog:
			ok = it.SeekGE([]byte{prefixClient})
			continue
		case k[0] == prefixRefs:
			ok = it.SeekGE([]byte{prefixRefs + 1})
			continue
		case k[0] == prefixClient && backlog:
			ck, perr := parseClientKey(k)
			if perr == nil && ck.kind == kindOutbound {
				seek = append(append(seek[:0], k[:ck.prefixLen]...), kindEnd)
				if err := r.backlog(it, ck); err != nil {
					return err
				}
				ok = it.SeekGE(seek)
				continue
			}
			fallthrough
		default:
			val, err := it.ValueAndErr()
			if err != nil {
				return err
			}
			if err := r.visit(k, val); err != nil {
				return err
			}
		}
		ok = it.Next()
	}
	return it.Error()
}

// backlog reports the sequence bounds of the client whose first outbound
// entry the iterator is positioned at, leaving it positioned anywhere in
// the client's range.
func (r *recovery) backlog(it iterator, first clientKey) error {
	client := r.clientString(first.clientID) // copied before the iterator moves
	r.count(it.Key(), nil)
	lastSeq := first.seq
	hi := append(appendClientPrefix(nil, client), kindOutbound+1)
	// Backwards from the end of the outbound range; the first entry stops
	// the walk at the latest.
	for ok := it.SeekLT(hi); ok; ok = it.Prev() {
		ck, err := parseClientKey(it.Key())
		if err != nil {
			r.corrupt(it.Key(), err)
			continue
		}
		if ck.kind == kindOutbound && ck.seq != first.seq {
			lastSeq = ck.seq
			r.count(it.Key(), nil)
		}
		break
	}
	if err := it.Error(); err != nil {
		return err
	}
	var bytes uint64
	key := appendBacklogBytesKey(hi[:0:0], client)
	if it.SeekGE(key) && string(it.Key()) == string(key) {
		val, err := it.ValueAndErr()
		if err != nil {
			return err
		}
		r.count(key, val)
		if bytes, err = decodeBacklogBytes(val); err != nil {
			r.corrupt(key, err)
			bytes = 0
		}
	}
	if err := it.Error(); err != nil {
		return err
	}
	r.st.Backlogs++
	return r.v.Backlog(client, first.seq, lastSeq, bytes)
}

// visit decodes one record and hands it to the visitor.
func (r *recovery) visit(k, val []byte) error {
	v := r.v
	r.count(k, val)
	switch k[0] {
	case prefixMeta:
		return nil
	case prefixMessage:
		id, err := parseMessageKey(k)
		if err != nil {
			r.corrupt(k, err)
			return nil
		}
		m, err := decodeMessage(val, MaxPayloadLen)
		if err != nil {
			r.corrupt(k, err)
			return nil
		}
		r.ids = append(r.ids, id)
		r.st.Messages++
		if v.Message != nil {
			return v.Message(id, m)
		}
	case prefixClient:
		ck, err := parseClientKey(k)
		if err != nil {
			r.corrupt(k, err)
			return nil
		}
		switch ck.kind {
		case kindSession:
			s, err := decodeSession(val)
			if err != nil {
				r.corrupt(k, err)
				return nil
			}
			r.st.Sessions++
			if v.Session != nil {
				return v.Session(r.clientString(ck.clientID), s)
			}
		case kindInbound:
			in, err := decodeInbound(val)
			if err == nil && ck.packetID == 0 {
				err = fmt.Errorf("%w: inbound marker for packet id 0", ErrCorrupt)
			}
			if err != nil {
				r.corrupt(k, err)
				return nil
			}
			r.st.Inbound++
			if v.Inbound != nil {
				return v.Inbound(r.clientString(ck.clientID), ck.packetID, in)
			}
		case kindBacklogBytes:
			// Reported with the backlog bounds (backlog mode); without
			// outbound entries there is no backlog to count.
			if _, err := decodeBacklogBytes(val); err != nil {
				r.corrupt(k, err)
			}
		case kindOutbound:
			o, err := decodeOutbound(val)
			if err == nil && o.MessageID != 0 {
				if _, found := slices.BinarySearch(r.ids, o.MessageID); !found {
					err = fmt.Errorf("%w: message %d", ErrDanglingReference, o.MessageID)
				}
			}
			if err != nil {
				r.corrupt(k, err)
				return nil
			}
			r.st.Outbound++
			if v.Outbound != nil {
				return v.Outbound(r.clientString(ck.clientID), ck.seq, o)
			}
		}
	case prefixRetained:
		m, err := decodeMessage(val, MaxPayloadLen)
		if err == nil && m.Topic != string(k[1:]) {
			err = fmt.Errorf("%w: retained record topic %q under key topic %q", ErrCorrupt, m.Topic, k[1:])
		}
		if err != nil {
			r.corrupt(k, err)
			return nil
		}
		r.st.Retained++
		if v.Retained != nil {
			return v.Retained(m)
		}
	default:
		r.corrupt(k, fmt.Errorf("%w: unknown key prefix 0x%02x", ErrCorrupt, k[0]))
	}
	return nil
}

// ExpireSessions deletes sessions whose expiry passed; see Store.
func (c *core) ExpireSessions(now time.Time, keep func(clientID string, s *Session) bool) (int, error) {
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
		if s.DisconnectedAt+int64(s.ExpiryInterval)*1000 <= nowMs && (keep == nil || !keep(string(ck.clientID), s)) {
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
