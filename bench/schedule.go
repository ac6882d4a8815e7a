package bench

// Schedule is the open-loop send schedule of one publisher: message k is due
// at Start + k·Interval whatever happened to message k−1. The event loop asks
// for the next due time, sends while it has passed, and stamps each message
// with its intended time (not the time the write happened), so a broker or
// harness that stalls shows up as latency instead of silently lowering the
// offered load — the cure for coordinated omission.
//
// A Schedule has no clock: times are passed in (unix nanoseconds), which is
// what makes it testable. Not safe for concurrent use (its loop owns it).
type Schedule struct {
	Start    int64  // intended time of message 0, unix ns
	Interval int64  // ns between messages; ≤ 0 means "never send"
	Limit    uint64 // number of messages to send in all; 0 = unbounded
	next     uint64 // index of the next message to send
	stopped  bool
}

// NewSchedule returns the schedule of a publisher sending rate messages per
// second from start, offset by phase ∈ [0,1) of an interval so that many
// publishers with the same rate spread their sends instead of bursting
// together. A rate ≤ 0 never sends.
func NewSchedule(start int64, rate float64, phase float64) Schedule {
	if rate <= 0 {
		return Schedule{Start: start}
	}
	iv := int64(1e9 / rate)
	if iv < 1 {
		iv = 1
	}
	return Schedule{Start: start + int64(phase*float64(iv)), Interval: iv}
}

// Next returns the index and intended time of the next message; ok is false
// when the schedule is exhausted or never sends.
func (s *Schedule) Next() (seq uint64, at int64, ok bool) {
	if s.stopped || s.Interval <= 0 || (s.Limit > 0 && s.next >= s.Limit) {
		return 0, 0, false
	}
	return s.next, s.Start + int64(s.next)*s.Interval, true
}

// Due reports how many messages are due at now (intended time ≤ now), capped
// at max; max ≤ 0 means no cap. It does not consume them.
func (s *Schedule) Due(now int64, max int) int {
	seq, at, ok := s.Next()
	if !ok || at > now {
		return 0
	}
	n := uint64((now-at)/s.Interval) + 1
	if s.Limit > 0 && seq+n > s.Limit {
		n = s.Limit - seq
	}
	if max > 0 && n > uint64(max) {
		return max
	}
	return int(n)
}

// Advance consumes the next message (after it was sent, or deliberately
// skipped: its sequence number is spent either way).
func (s *Schedule) Advance() { s.next++ }

// Sent returns how many messages were consumed (sent or skipped).
func (s *Schedule) Sent() uint64 { return s.next }

// Stop makes the schedule send nothing more.
func (s *Schedule) Stop() { s.stopped = true }
