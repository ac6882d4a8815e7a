package server

// wheel is a per-loop timing wheel with one-second slots for connection
// deadlines (connect timeout, keepalive). A connection sits in exactly one
// slot; activity does not move it (that would cost work per packet): when
// its slot comes due the loop checks the real deadline and either closes the
// connection or puts it back in the slot of its current deadline. Each
// connection therefore costs O(1) per keepalive period, whatever the number
// of connections. Deadlines further out than the wheel spans are parked in
// the last slot and re-examined then.
type wheel struct {
	slots [][]*client
	now   int64 // the second the wheel has advanced to
}

const wheelSlots = 512

func newWheel(now int64) *wheel {
	return &wheel{slots: make([][]*client, wheelSlots), now: now}
}

// add schedules c to be examined at second at.
func (w *wheel) add(c *client, at int64) {
	if at <= w.now {
		at = w.now + 1
	}
	if at-w.now >= wheelSlots {
		at = w.now + wheelSlots - 1
	}
	i := at % wheelSlots
	w.slots[i] = append(w.slots[i], c)
}

// advance moves the wheel to second now, calling due for every client whose
// slot passed. due returns the next second to examine c at, or 0 to forget it.
func (w *wheel) advance(now int64, due func(c *client, now int64) int64) {
	for w.now < now {
		w.now++
		i := w.now % wheelSlots
		list := w.slots[i]
		w.slots[i] = nil
		for _, c := range list {
			if next := due(c, now); next > 0 {
				w.add(c, next)
			}
		}
		if cap(list) <= 1024 && w.slots[i] == nil {
			w.slots[i] = list[:0] // reuse the storage
			clear(list[:cap(list)])
		}
	}
}
