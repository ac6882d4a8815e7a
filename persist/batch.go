package persist

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"
)

// Operation kinds in a Batch's buffer.
const (
	opSet          byte = 1
	opDelete       byte = 2
	opDeleteClient byte = 3 // key is a client prefix; resolved by the committer
	// opPutIfGone is an AddRefOrPut message write, decided at submission:
	// rewritten to opSet if the message was deleted, else to opSkip.
	opPutIfGone byte = 4
	opSkip      byte = 5
	// opInsert is a set of a key the caller guarantees is not stored
	// (InsertOutbound): written like opSet, but a group that inserts and
	// then deletes the key writes neither (elide.go).
	opInsert byte = 6
)

// condPut is one AddRefOrPut: the message id and the offset of its op.
type condPut struct {
	id  uint64
	off int
}

// refOp is one AddRef (+1) or Release (-1) recorded by a Batch.
type refOp struct {
	id  uint64
	add bool
}

// Batch is a set of writes that Commit applies atomically: all or none of
// them survive a crash. Build it on one goroutine; the methods are not safe
// for concurrent use. After Commit the batch belongs to the store: do not
// touch it again.
//
// Keys and records are encoded (and large payloads compressed) inside the
// Batch methods, on the caller's goroutine, so that the single committer
// goroutine only copies bytes.
//
// The methods never panic on bad input: the first invalid argument is kept
// (see Err), later calls are ignored, and Commit fails the whole batch with
// that error without writing anything.
type Batch struct {
	c     *core
	buf   []byte // ops: kind | u32 LE key len | key | u32 LE value len | value
	ops   int
	puts  []uint64 // message ids created by PutMessage
	refs  []refOp
	conds []condPut
	// deletesClient: the batch holds a DeleteSession, which the committer
	// resolves against what earlier batches wrote.
	deletesClient bool
	// foreignRef: the batch holds an AddRef of a message it did not put,
	// which the committer checks exists (elide.go: such a group is not
	// elided). Decided in AddRef, where the id was almost always put just
	// before, instead of searching puts for every AddRef at commit.
	foreignRef bool
	err        error
	done       func(error)
}

// Err returns the first invalid-argument error recorded by the batch.
func (b *Batch) Err() error { return b.err }

// Len returns the number of operations in the batch.
func (b *Batch) Len() int { return b.ops }

// Size returns the encoded size of the batch in bytes.
func (b *Batch) Size() int { return len(b.buf) }

func (b *Batch) reset() {
	b.buf = b.buf[:0]
	b.ops = 0
	b.puts = b.puts[:0]
	b.refs = b.refs[:0]
	b.conds = b.conds[:0]
	b.deletesClient, b.foreignRef = false, false
	b.err = nil
	b.done = nil
}

func (b *Batch) invalid(err error) {
	if b.err == nil {
		b.err = err
	}
}

// beginOp appends an op header with a placeholder key length and returns
// the offset of that length.
func (b *Batch) beginOp(kind byte) int {
	b.ops++
	b.buf = append(b.buf, kind, 0, 0, 0, 0)
	return len(b.buf) - 4
}

// patchLen writes the length of everything after the 4-byte slot at.
func (b *Batch) patchLen(at int) {
	binary.LittleEndian.PutUint32(b.buf[at:], uint32(len(b.buf)-at-4))
}

// beginValue appends a placeholder value length, closing the key.
func (b *Batch) beginValue(keyAt int) int {
	b.patchLen(keyAt)
	b.buf = append(b.buf, 0, 0, 0, 0)
	return len(b.buf) - 4
}

func (b *Batch) endOp(valueAt int) { b.patchLen(valueAt) }

func (b *Batch) deleteKey(kind byte, key func([]byte) []byte) {
	at := b.beginOp(kind)
	b.buf = key(b.buf)
	b.endOp(b.beginValue(at))
}

// nextOp decodes the op at the head of ops. The buffer was written by the
// Batch methods of this process, so it is trusted.
func nextOp(ops []byte) (kind byte, key, value, rest []byte) {
	kind = ops[0]
	kl := binary.LittleEndian.Uint32(ops[1:5])
	key = ops[5 : 5+kl]
	ops = ops[5+kl:]
	vl := binary.LittleEndian.Uint32(ops[:4])
	value = ops[4 : 4+vl]
	return kind, key, value, ops[4+vl:]
}

func checkClientID(clientID string) error {
	if len(clientID) > MaxStringLen {
		return fmt.Errorf("%w: client id length %d", ErrInvalid, len(clientID))
	}
	return nil
}

// PutSession writes (or replaces) the session record of clientID.
func (b *Batch) PutSession(clientID string, s *Session) {
	if b.err != nil {
		return
	}
	if err := checkClientID(clientID); err != nil {
		b.invalid(err)
		return
	}
	if err := validateSession(s); err != nil {
		b.invalid(err)
		return
	}
	at := b.beginOp(opSet)
	b.buf = appendSessionKey(b.buf, clientID)
	vat := b.beginValue(at)
	b.buf = appendSession(b.buf, s)
	b.endOp(vat)
}

// DeleteSession deletes everything stored for clientID — the session
// record, every outbound entry and inbound marker — and releases the
// message reference of every outbound entry that exists when the batch is
// applied (including entries written earlier in this batch or by batches
// committed before it). Do not Release those references yourself.
func (b *Batch) DeleteSession(clientID string) {
	if b.err != nil {
		return
	}
	if err := checkClientID(clientID); err != nil {
		b.invalid(err)
		return
	}
	b.deleteKey(opDeleteClient, func(dst []byte) []byte { return appendClientPrefix(dst, clientID) })
	b.deletesClient = true
}

// PutMessage writes m once under a new message id and returns the id. The
// message starts with no references: add one with AddRef, in this same
// batch, for every outbound entry that points at it. A message that has no
// reference when the batch is committed is not kept (it is deleted in the
// same batch), so a message is never leaked. Later batches may AddRef an
// id while it still has references (or use AddRefOrPut). Returns 0 if m is
// invalid.
//
// m is encoded before PutMessage returns; the caller may reuse it.
func (b *Batch) PutMessage(m *Message) uint64 {
	if b.err != nil {
		return 0
	}
	if err := validateMessage(m); err != nil {
		b.invalid(err)
		return 0
	}
	id := b.c.nextID.Add(1) - 1
	at := b.beginOp(opSet)
	b.buf = appendMessageKey(b.buf, id)
	vat := b.beginValue(at)
	b.buf = appendMessage(b.buf, m, b.c.opts.CompressThreshold)
	b.endOp(vat)
	b.puts = append(b.puts, id)
	return id
}

// AddRef adds one reference to message id (an outbound entry now points
// at it). The id must have been created by PutMessage in this batch or
// still hold a reference; otherwise the call is ignored and counted in
// Stats.RefErrors (see AddRefOrPut). An AddRef of a message put by an
// earlier batch and held by a single entry costs the committer a point
// read (such a message has no count to look up: see the package doc).
func (b *Batch) AddRef(id uint64) {
	if b.err != nil {
		return
	}
	if id == 0 {
		b.invalid(fmt.Errorf("%w: AddRef of message id 0", ErrInvalid))
		return
	}
	if n := len(b.puts); n == 0 || b.puts[n-1] != id {
		if _, own := slices.BinarySearch(b.puts, id); !own {
			b.foreignRef = true
		}
	}
	b.refs = append(b.refs, refOp{id: id, add: true})
}

// AddRefOrPut adds one reference to message id like AddRef, for a message
// stored by an earlier batch that may since have lost its last reference
// (and been deleted): then m is written again under the same id, so the
// new reference never dangles. The choice is made by the committer, in
// commit order: a message with two or more references is known from its
// count; otherwise the committer reads whether the record exists (one
// point read, usually from the memtable or block cache). m is encoded at
// once (the caller may reuse it); use plain AddRef when id is known to be
// referenced, e.g. within the batch that put it.
func (b *Batch) AddRefOrPut(id uint64, m *Message) {
	if b.err != nil {
		return
	}
	if id == 0 {
		b.invalid(fmt.Errorf("%w: AddRefOrPut of message id 0", ErrInvalid))
		return
	}
	if err := validateMessage(m); err != nil {
		b.invalid(err)
		return
	}
	off := len(b.buf)
	at := b.beginOp(opPutIfGone)
	b.buf = appendMessageKey(b.buf, id)
	vat := b.beginValue(at)
	b.buf = appendMessage(b.buf, m, b.c.opts.CompressThreshold)
	b.endOp(vat)
	b.conds = append(b.conds, condPut{id: id, off: off})
}

// Release drops one reference to message id. When the last reference goes,
// the message record is deleted in this batch. Release exactly the
// references you added: the store does not count messages held by a single
// entry, so it cannot detect a second Release of one (it would delete a
// record that is already gone, harmlessly, and Stats.LiveMessages would
// drift) — only a Release of a message put in this batch without a
// reference is caught (Stats.RefErrors).
func (b *Batch) Release(id uint64) {
	if b.err != nil {
		return
	}
	if id == 0 {
		b.invalid(fmt.Errorf("%w: Release of message id 0", ErrInvalid))
		return
	}
	b.refs = append(b.refs, refOp{id: id})
}

// PutOutbound writes (or replaces) outbound entry seq of clientID. Entries
// are delivered in seq order; the caller allocates seq, increasing per
// client (after a restart, above the highest recovered one). Changing an entry's state re-puts it; the
// reference count is not touched (use AddRef/Release when the entry starts
// or stops pointing at a message).
func (b *Batch) PutOutbound(clientID string, seq uint64, o Outbound) {
	b.putOutbound(opSet, clientID, seq, o)
}

func (b *Batch) putOutbound(kind byte, clientID string, seq uint64, o Outbound) {
	if b.err != nil {
		return
	}
	if err := checkClientID(clientID); err != nil {
		b.invalid(err)
		return
	}
	if err := o.validate(); err != nil {
		b.invalid(fmt.Errorf("%w: outbound: %v", ErrInvalid, err))
		return
	}
	at := b.beginOp(kind)
	b.buf = appendOutboundKey(b.buf, clientID, seq)
	vat := b.beginValue(at)
	b.buf = appendOutbound(b.buf, o)
	b.endOp(vat)
}

// InsertOutbound is PutOutbound for an entry that is not stored yet: seq
// is new for clientID (the server's next sequence number for a new
// delivery). It lets the committer write nothing at all when the same
// group also deletes the entry (the delivery was acknowledged within one
// group; see "Write avoidance" in the package doc). Inserting a seq that
// is stored is a caller bug: a deletion in the same group would then not
// be written, and the old entry would survive it.
func (b *Batch) InsertOutbound(clientID string, seq uint64, o Outbound) {
	b.putOutbound(opInsert, clientID, seq, o)
}

// DeleteOutbound deletes outbound entry seq of clientID. Release its
// message in the same batch.
func (b *Batch) DeleteOutbound(clientID string, seq uint64) {
	if b.err != nil {
		return
	}
	if err := checkClientID(clientID); err != nil {
		b.invalid(err)
		return
	}
	b.deleteKey(opDelete, func(dst []byte) []byte { return appendOutboundKey(dst, clientID, seq) })
}

// PutBacklogBytes records n, the bytes the caller counts against
// clientID's backlog quota, for Recover to report with the backlog bounds
// (Visitor.Backlog). A blind write of the whole value: the caller decides
// how often (the server writes it when it moved by a granule, so the value
// recovered is within a granule of its count, plus what batches of other
// goroutines reorder). DeleteSession removes it with the client's range.
func (b *Batch) PutBacklogBytes(clientID string, n uint64) {
	if b.err != nil {
		return
	}
	if err := checkClientID(clientID); err != nil {
		b.invalid(err)
		return
	}
	if n > math.MaxInt64 {
		b.invalid(fmt.Errorf("%w: backlog byte count %d", ErrInvalid, n))
		return
	}
	at := b.beginOp(opSet)
	b.buf = appendBacklogBytesKey(b.buf, clientID)
	vat := b.beginValue(at)
	b.buf = appendBacklogBytes(b.buf, n)
	b.endOp(vat)
}

// PutInbound records that a QoS 2 PUBLISH with packetID was received from
// clientID and PUBREC sent [MQTT-4.3.3-10].
func (b *Batch) PutInbound(clientID string, packetID uint16, in Inbound) {
	if b.err != nil {
		return
	}
	if err := checkClientID(clientID); err != nil {
		b.invalid(err)
		return
	}
	if packetID == 0 || in.ReceivedAt < 0 {
		b.invalid(fmt.Errorf("%w: inbound packet id %d, time %d", ErrInvalid, packetID, in.ReceivedAt)) // [MQTT-2.2.1-3]
		return
	}
	at := b.beginOp(opSet)
	b.buf = appendInboundKey(b.buf, clientID, packetID)
	vat := b.beginValue(at)
	b.buf = appendInbound(b.buf, in)
	b.endOp(vat)
}

// DeleteInbound deletes the marker once PUBREL arrived (PUBCOMP is sent
// after the batch commits).
func (b *Batch) DeleteInbound(clientID string, packetID uint16) {
	if b.err != nil {
		return
	}
	if err := checkClientID(clientID); err != nil {
		b.invalid(err)
		return
	}
	b.deleteKey(opDelete, func(dst []byte) []byte { return appendInboundKey(dst, clientID, packetID) })
}

// PutRetained stores m as the retained message of m.Topic, replacing the
// previous one. Retained messages are stored inline under their topic, so
// a replaced or cleared retained message leaves nothing behind.
func (b *Batch) PutRetained(m *Message) {
	if b.err != nil {
		return
	}
	if err := validateMessage(m); err != nil {
		b.invalid(err)
		return
	}
	at := b.beginOp(opSet)
	b.buf = appendRetainedKey(b.buf, m.Topic)
	vat := b.beginValue(at)
	b.buf = appendMessage(b.buf, m, b.c.opts.CompressThreshold)
	b.endOp(vat)
}

// DeleteRetained clears the retained message of topic.
func (b *Batch) DeleteRetained(topic string) {
	if b.err != nil {
		return
	}
	if len(topic) == 0 || len(topic) > MaxStringLen {
		b.invalid(fmt.Errorf("%w: topic length %d", ErrInvalid, len(topic)))
		return
	}
	b.deleteKey(opDelete, func(dst []byte) []byte { return appendRetainedKey(dst, topic) })
}
