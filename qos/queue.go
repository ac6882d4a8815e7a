package qos

// Item is one message waiting in a Queue.
type Item[M any] struct {
	Msg  M
	QoS  byte // QoS it will be delivered at
	Size int  // bytes counted against the queue's byte limit
}

// Policy says which message a full Queue gives up.
type Policy uint8

// Queue-full policies. Whatever the policy, QoS 0 messages are dropped
// before any QoS 1/2 message.
const (
	DropNewest Policy = iota // refuse the incoming message (the default: nothing already accepted is lost)
	DropOldest               // drop the oldest queued message to make room
)

// Queue is a bounded FIFO of messages waiting for a free inflight slot or for
// the session's client to come back. It is a ring buffer that grows on demand
// up to MaxCount items and MaxBytes bytes, and shrinks when it empties, so an
// idle session costs nothing but the struct.
type Queue[M any] struct {
	buf      []Item[M]
	head, n  int
	bytes    int
	qos0     int // QoS 0 items held, so a full queue knows whether one can be dropped
	MaxCount int // 0 = unbounded (not recommended)
	MaxBytes int // 0 = unbounded
}

// Len returns the number of queued messages.
func (q *Queue[M]) Len() int { return q.n }

// Bytes returns the bytes the queued messages count against MaxBytes.
func (q *Queue[M]) Bytes() int { return q.bytes }

func (q *Queue[M]) fits(size int) bool {
	return (q.MaxCount <= 0 || q.n < q.MaxCount) && (q.MaxBytes <= 0 || q.bytes+size <= q.MaxBytes)
}

// Push appends it. When the queue is full, a QoS 0 message is dropped first
// (the oldest QoS 0 queued, or it itself when it is QoS 0); otherwise policy
// decides. It returns the message dropped, if any, and whether it was
// queued.
func (q *Queue[M]) Push(it Item[M], policy Policy) (dropped Item[M], hasDropped, queued bool) {
	for !q.fits(it.Size) {
		if it.QoS == 0 {
			return it, true, false
		}
		if q.n == 0 { // a single item larger than MaxBytes
			return it, true, false
		}
		if q.qos0 > 0 {
			dropped = q.removeFirstQoS0()
			hasDropped = true
			continue
		}
		if policy == DropOldest {
			dropped, _ = q.Pop()
			hasDropped = true
			continue
		}
		return it, true, false
	}
	if q.n == len(q.buf) {
		q.grow()
	}
	q.buf[(q.head+q.n)%len(q.buf)] = it
	q.n++
	q.bytes += it.Size
	if it.QoS == 0 {
		q.qos0++
	}
	return dropped, hasDropped, true
}

func (q *Queue[M]) grow() {
	size := 2 * len(q.buf)
	if size == 0 {
		size = 4
	}
	if q.MaxCount > 0 && size > q.MaxCount {
		size = q.MaxCount
	}
	nb := make([]Item[M], size)
	for i := 0; i < q.n; i++ {
		nb[i] = q.buf[(q.head+i)%len(q.buf)]
	}
	q.buf, q.head = nb, 0
}

// Peek returns the oldest message without removing it.
func (q *Queue[M]) Peek() (it Item[M], ok bool) {
	if q.n == 0 {
		return it, false
	}
	return q.buf[q.head], true
}

// Pop removes and returns the oldest message.
func (q *Queue[M]) Pop() (it Item[M], ok bool) {
	if q.n == 0 {
		return it, false
	}
	it = q.buf[q.head]
	var zero Item[M]
	q.buf[q.head] = zero
	q.head = (q.head + 1) % len(q.buf)
	q.n--
	q.bytes -= it.Size
	if it.QoS == 0 {
		q.qos0--
	}
	if q.n == 0 {
		q.head = 0
		if len(q.buf) > 64 {
			q.buf = nil // give a burst's storage back
		}
	}
	return it, true
}

func (q *Queue[M]) removeFirstQoS0() Item[M] {
	for i := 0; i < q.n; i++ {
		idx := (q.head + i) % len(q.buf)
		if q.buf[idx].QoS != 0 {
			continue
		}
		it := q.buf[idx]
		for j := i; j > 0; j-- { // close the gap from the front: order of the rest is kept
			q.buf[(q.head+j)%len(q.buf)] = q.buf[(q.head+j-1)%len(q.buf)]
		}
		var zero Item[M]
		q.buf[q.head] = zero
		q.head = (q.head + 1) % len(q.buf)
		q.n--
		q.bytes -= it.Size
		q.qos0--
		return it
	}
	var zero Item[M]
	return zero
}
