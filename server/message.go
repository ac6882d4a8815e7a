package server

import (
	"github.com/ternmq/tern/codec"
)

// message is one application message as the broker holds it: copied once
// out of the publisher's read buffer into a single allocation and shared,
// read-only, by every recipient session, the retained index and (later) the
// store. Nothing mutates a message after it is built, so no lock guards it
// and the garbage collector frees it when the last queue lets go.
type message struct {
	topic   []byte
	payload []byte
	// props holds the 5.0 properties forwarded to subscribers (payload
	// format, content type, response topic, correlation data, user
	// properties), deep-copied; nil when there are none.
	props *codec.Properties
	// expiresAt is the unix-nanosecond instant after which the message is
	// not delivered (5.0 Message Expiry Interval); 0 means never.
	expiresAt int64
	// from is the publishing session, for 5.0 No Local; nil for the broker.
	from *session
	// id is the message's store id once written (0: not stored); set by
	// the one goroutine that routes the message.
	id uint64
	// origin names the message cluster-wide (the publishing node and its
	// sequence, set by the cluster's Forward on the routing goroutine before
	// any delivery, or by RemoteDeliver); 0 outside a cluster. A session
	// moving between nodes is deduplicated by it (cluster_session.go).
	origin uint64
	// propBytes is what props holds, counted against queue and retained
	// byte limits like the payload.
	propBytes int32
	qos       byte
	retain    bool
}

// newMessage copies topic and payload into one buffer. props (may be nil)
// is deep-copied when it carries anything worth forwarding.
func newMessage(topic, payload []byte, qos byte, retain bool, props *codec.Properties, now int64, from *session) *message {
	buf := make([]byte, len(topic)+len(payload))
	n := copy(buf, topic)
	copy(buf[n:], payload)
	m := &message{topic: buf[:n:n], payload: buf[n:], qos: qos, retain: retain, from: from}
	if props != nil {
		m.props = forwardProps(props)
		m.propBytes = int32(propsSize(m.props))
		if props.Has(codec.PropMessageExpiry) {
			m.expiresAt = now + int64(props.MessageExpiry)*1e9
		}
	}
	return m
}

// forwardProps deep-copies the properties of a PUBLISH that are forwarded to
// subscribers [MQTT-3.3.2-4..-20] (not Topic Alias, which is per connection,
// nor Subscription Identifiers, which are per subscriber); it returns nil
// when there are none.
func forwardProps(p *codec.Properties) *codec.Properties {
	const fwd = 1<<codec.PropPayloadFormat | 1<<codec.PropMessageExpiry | 1<<codec.PropContentType |
		1<<codec.PropResponseTopic | 1<<codec.PropCorrelationData | 1<<codec.PropUserProperty
	if p.Present&fwd == 0 && len(p.User) == 0 {
		return nil
	}
	out := p.Clone()
	out.Present &= fwd
	out.TopicAlias, out.SubscriptionIDs = 0, nil
	if len(out.User) > 0 {
		out.Set(codec.PropUserProperty)
	}
	return &out
}

// size is what the message counts against queue and retained byte limits:
// every byte it holds, 5.0 properties included, plus a fixed overhead.
func (m *message) size() int { return len(m.topic) + len(m.payload) + int(m.propBytes) + 64 }

// propsSize is the memory the forwarded properties of a message hold.
func propsSize(p *codec.Properties) int {
	if p == nil {
		return 0
	}
	n := len(p.ContentType) + len(p.ResponseTopic) + len(p.CorrelationData) + 64
	for _, u := range p.User {
		n += len(u.Key) + len(u.Value) + 48 // two slice headers
	}
	return n
}

// outMsg is one delivery of a message to one session: the message, how it
// is to be flagged for that subscriber and the 5.0 subscription identifiers
// of the filters that matched.
type outMsg struct {
	m      *message
	subIDs []uint32 // 5.0 subscription identifiers when several filters matched; else nil
	seq    uint64   // per-session delivery sequence (QoS 1/2); packet id derives from it
	ticket *ticket  // batch that stored it; not sent before that batch is submitted
	share  string   // ShareName when it came through a $share group: redispatched if this session ends (share.go)
	subID  uint32   // the one 5.0 subscription identifier (no allocation per delivery); 0 = none
	retain bool     // RETAIN flag on the delivered PUBLISH
	stored bool     // an outbound entry for it is in the store
}
