package persist

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sync"
)

// Reading one session's queue while the broker runs (ReadOutbound), and
// the cheap usage numbers quotas need (DiskUsage).

// readEntry is one entry ReadOutbound collected for its callback.
type readEntry struct {
	seq uint64
	o   Outbound
	m   *Message
	bad error // the entry or its message does not decode, or the message is missing
}

// readPool holds the slices ReadOutbound collects entries in; slices
// above readPoolMax entries are not kept.
var readPool = sync.Pool{New: func() any { s := make([]readEntry, 0, 256); return &s }}

const readPoolMax = 4096

// ReadOutbound reads one client's outbound entries in sequence order; see
// Store.
func (c *core) ReadOutbound(clientID string, fromSeq uint64, max int, fn func(seq uint64, o Outbound, m *Message, bad error) error) (next uint64, n int, err error) {
	if err := checkClientID(clientID); err != nil {
		return fromSeq, 0, err
	}
	if max <= 0 {
		return fromSeq, 0, nil
	}
	c.mu.Lock()
	closed := c.mu.closed
	c.mu.Unlock()
	if closed {
		return fromSeq, 0, ErrClosed
	}
	bp := readPool.Get().(*[]readEntry)
	entries, next, err := c.collectOutbound(clientID, fromSeq, max, (*bp)[:0])
	if err == nil {
		for i := range entries {
			e := &entries[i]
			if ferr := fn(e.seq, e.o, e.m, e.bad); ferr != nil {
				next, err = e.seq, ferr
				break
			}
			n++
		}
	}
	if cap(entries) <= readPoolMax {
		clear(entries)
		*bp = entries[:0]
		readPool.Put(bp)
	}
	return next, n, err
}

// collectOutbound reads up to limit entries of clientID from seq from on,
// with their messages, from one view of the engine, appending them to out.
// next is one past the last entry read. An entry that does not decode, or
// whose message is missing or does not decode, is collected with bad set
// (and o zero, or m nil): its sequence must reach the caller, which would
// otherwise take the hole for a batch not applied yet and wait for it.
func (c *core) collectOutbound(clientID string, from uint64, limit int, out []readEntry) (_ []readEntry, next uint64, err error) {
	next = from
	defer c.catchFatal(&err)
	v, err := c.eng.newView()
	if err != nil {
		return out, next, err
	}
	defer func() { err = errors.Join(err, v.close()) }()
	lo, hi := outboundBounds(clientID, from)
	it, err := v.iter(lo, hi)
	if err != nil {
		return out, next, err
	}
	defer func() { err = errors.Join(err, it.Close()) }()
	seqAt := len(hi) // prefix | kind, then the sequence
	var key []byte
	var in interner
	var corrupt, dangling uint64
	for ok := it.First(); ok && len(out) < limit; ok = it.Next() {
		k := it.Key()
		if len(k) != seqAt+8 {
			corrupt++
			if len(k) > seqAt+8 { // sorts after the sequence it starts with
				next = max(next, binary.BigEndian.Uint64(k[seqAt:])+1)
			}
			continue
		}
		seq := binary.BigEndian.Uint64(k[seqAt:])
		next = seq + 1
		if seq == math.MaxUint64 {
			next = seq // the last sequence there is; reading from it again returns it
		}
		val, err := it.ValueAndErr()
		if err != nil {
			return out, next, err
		}
		o, err := decodeOutbound(val)
		if err != nil {
			corrupt++
			out = append(out, readEntry{seq: seq, bad: err})
			continue
		}
		var m *Message
		if o.State != AwaitingPubcomp {
			key = appendMessageKey(key[:0], o.MessageID)
			mv, found, err := v.get(key)
			if err != nil {
				return out, next, err
			}
			if !found {
				dangling++
				out = append(out, readEntry{seq: seq, o: o, bad: fmt.Errorf("%w: message %d", ErrDanglingReference, o.MessageID)})
				continue
			}
			if m, err = decodeMessageInterned(mv, MaxPayloadLen, &in); err != nil {
				dangling++
				out = append(out, readEntry{seq: seq, o: o, bad: fmt.Errorf("message %d: %w", o.MessageID, err)})
				continue
			}
		}
		out = append(out, readEntry{seq: seq, o: o, m: m})
	}
	if corrupt+dangling > 0 {
		c.corruptRead.Add(corrupt)
		c.danglingRead.Add(dangling)
		c.log.Warn("persist: read outbound entries that do not decode or whose message is missing",
			"client", clientID, "corrupt", corrupt, "dangling", dangling)
	}
	return out, next, it.Error()
}

// DiskUsage returns the bytes the store takes and the bytes free; see Store.
func (c *core) DiskUsage() (storeBytes, freeBytes uint64, err error) {
	c.mu.Lock()
	closed := c.mu.closed
	c.mu.Unlock()
	if closed {
		return 0, 0, ErrClosed
	}
	defer c.catchFatal(&err)
	return c.eng.space()
}
