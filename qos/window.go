package qos

// State is where an outbound QoS 1/2 message stands in its flow.
type State uint8

// Outbound states.
const (
	AwaitPuback  State = iota + 1 // QoS 1 PUBLISH sent
	AwaitPubrec                   // QoS 2 PUBLISH sent
	AwaitPubcomp                  // QoS 2 PUBREC received, PUBREL sent
)

// Entry is one message in the inflight window.
type Entry[M any] struct {
	Msg      M
	PacketID uint16
	QoS      byte
	State    State
}

// Window is the outbound inflight window of one session: at most max QoS 1/2
// messages sent and not yet acknowledged, in send order. The caller chooses
// packet identifiers (see AddID); the window refuses one that is still in
// use [MQTT-2.2.1-3]. The zero value is not usable; set the size with
// SetMax. Storage grows on demand, so an idle session costs no more than the
// struct.
type Window[M any] struct {
	entries []Entry[M]
	max     int
}

// SetMax sets the window size (the smaller of the client's Receive Maximum
// and the broker's inflight limit). Shrinking below the number in flight
// keeps the entries; no new ones are admitted until fewer than n remain.
func (w *Window[M]) SetMax(n int) {
	if n < 1 {
		n = 1
	}
	if n > 65535 {
		n = 65535
	}
	w.max = n
}

// full reports whether no further message may be sent now.
func (w *Window[M]) full() bool { return len(w.entries) >= w.max }

// AddID puts msg in flight at qos (1 or 2) under the caller's packet id.
// The broker derives ids from a per-session sequence number so that a
// message re-sent after a crash carries the id it was first sent with (the
// client's QoS 2 dedupe then holds without persisting every send). ok is
// false when the window is full, qos is 0, id is 0 or id is still in use
// (the caller waits for that flow to finish).
func (w *Window[M]) AddID(msg M, qos byte, id uint16) (ok bool) {
	if w.full() || qos == 0 || qos > 2 || id == 0 || w.index(id) >= 0 {
		return false
	}
	st := AwaitPuback
	if qos == 2 {
		st = AwaitPubrec
	}
	w.entries = append(w.entries, Entry[M]{Msg: msg, PacketID: id, QoS: qos, State: st})
	return true
}

// Get returns the entry with id.
func (w *Window[M]) Get(id uint16) (e Entry[M], ok bool) {
	i := w.index(id)
	if i < 0 {
		return e, false
	}
	return w.entries[i], true
}

// Restore puts back an entry recovered from storage with its original packet
// id and state, bypassing the size limit (the window was that large when the
// entry was sent).
func (w *Window[M]) Restore(e Entry[M]) {
	w.entries = append(w.entries, e)
}

func (w *Window[M]) index(id uint16) int {
	for i := range w.entries {
		if w.entries[i].PacketID == id {
			return i
		}
	}
	return -1
}

func (w *Window[M]) remove(i int) M {
	m := w.entries[i].Msg
	copy(w.entries[i:], w.entries[i+1:])
	var zero Entry[M]
	w.entries[len(w.entries)-1] = zero
	w.entries = w.entries[:len(w.entries)-1]
	if len(w.entries) == 0 && cap(w.entries) > 16 {
		w.entries = nil // give a burst's storage back
	}
	return m
}

// Ack handles PUBACK for id: the QoS 1 message is done and returned. ok is
// false when no QoS 1 message with that id is in flight (a protocol error the
// caller may ignore or report).
func (w *Window[M]) Ack(id uint16) (msg M, ok bool) {
	i := w.index(id)
	if i < 0 || w.entries[i].State != AwaitPuback {
		return msg, false
	}
	return w.remove(i), true
}

// Received handles PUBREC for id: the QoS 2 message moves to AwaitPubcomp and
// the caller sends PUBREL. A PUBREC for a message already in AwaitPubcomp is
// answered with PUBREL again (ok true). ok is false for an unknown id.
func (w *Window[M]) Received(id uint16) (ok bool) {
	i := w.index(id)
	if i < 0 || w.entries[i].State == AwaitPuback {
		return false
	}
	w.entries[i].State = AwaitPubcomp
	return true
}

// Drop removes the message with id whatever its state (a 5.0 PUBREC with a
// failure reason code ends the flow). ok is false for an unknown id.
func (w *Window[M]) Drop(id uint16) (msg M, ok bool) {
	i := w.index(id)
	if i < 0 {
		return msg, false
	}
	return w.remove(i), true
}

// Complete handles PUBCOMP for id: the QoS 2 flow is done and the message
// returned. ok is false unless the message was in AwaitPubcomp.
func (w *Window[M]) Complete(id uint16) (msg M, ok bool) {
	i := w.index(id)
	if i < 0 || w.entries[i].State != AwaitPubcomp {
		return msg, false
	}
	return w.remove(i), true
}

// Entries returns the messages in flight in send order, for redelivery on
// reconnect. The slice is valid until the next call that changes w; the caller
// may set Entry fields it does not own (none) — it must treat it as read-only.
func (w *Window[M]) Entries() []Entry[M] { return w.entries }

// Len returns the number of messages in flight.
func (w *Window[M]) Len() int { return len(w.entries) }

// Reset forgets every message in flight (their state lives elsewhere, e.g.
// in a store, and is restored later); the window keeps its maximum.
func (w *Window[M]) Reset() {
	clear(w.entries)
	w.entries = w.entries[:0]
}
