package bench

// readLimit throttles one subscriber (Config.SubRate, SubStopAfter): a
// token bucket of PUBLISH packets it may process, refilled at rate per
// second up to burst, and an optional time after which it processes
// nothing at all. Like Schedule it has no clock: times are passed in (unix
// nanoseconds), so it can be tested without sleeping. Owned by the loop of
// its connection; not safe for concurrent use.
type readLimit struct {
	rate   float64 // packets per second; 0 = unlimited (only stopAt applies)
	burst  float64 // bucket size, at least one packet
	tokens float64
	last   int64 // when tokens were last refilled
	stopAt int64 // unix ns after which nothing is processed; 0 = never
	paused bool  // the loop stopped reading the socket
}

// newReadLimit returns a full bucket at now. The burst is 10 ms of rate
// (at least one packet): short enough that the read rate is even at the
// granularity a broker's flow control reacts to.
func newReadLimit(rate float64, now, stopAt int64) *readLimit {
	b := max(1, rate/100)
	return &readLimit{rate: rate, burst: b, tokens: b, last: now, stopAt: stopAt}
}

// take spends one token at now. When none is left it returns false and
// the time at which one will be (resume); resume is 0 when the subscriber
// has stopped for good.
func (r *readLimit) take(now int64) (ok bool, resume int64) {
	if r.stopAt > 0 && now >= r.stopAt {
		return false, 0
	}
	if r.rate <= 0 {
		return true, 0
	}
	if now > r.last {
		r.tokens = min(r.burst, r.tokens+float64(now-r.last)*r.rate/1e9)
		r.last = now
	}
	if r.tokens >= 1 {
		r.tokens--
		return true, 0
	}
	wait := int64((1 - r.tokens) * 1e9 / r.rate)
	return false, now + max(wait, 1)
}
