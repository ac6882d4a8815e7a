package cluster

import (
	"encoding/binary"
	"errors"
	"time"

	"github.com/ternmq/tern/codec"
	"github.com/ternmq/tern/server"
)

// A NATS message on m.<node>.<shard> is a batch: frames of (uvarint length,
// message). Confirmations on ack.<node> are the confirming node's name
// (uvarint length + bytes) then (uvarint sequence, ok byte) pairs.
//
// The wire format of a forwarded or retained message, between nodes of one
// version of Tern (the first byte is the format's version):
//
//	version  1 byte (wireVersion)
//	flags    1 byte: QoS (bits 0-1), retain (2), properties (3), expiry (4)
//	seq      uvarint: the publisher node's sequence for a confirmation, 0 for none
//	expiry   uvarint milliseconds left (flag 4)
//	topic    uvarint length + bytes
//	groups   uvarint count, each uvarint length + bytes ($share groups served by the receiver)
//	props    (flag 3) uvarint Present mask, payload format byte, content
//	         type, response topic, correlation data (each length + bytes),
//	         uvarint count of user properties, each key and value
//	payload  the rest
const wireVersion = 1

const (
	flagRetain = 1 << 2
	flagProps  = 1 << 3
	flagExpiry = 1 << 4
)

var errWire = errors.New("malformed cluster message")

// appendMessage encodes m for the wire.
func appendMessage(b []byte, m *server.ClusterMessage, seq uint64, groups []string, now int64) []byte {
	flags := m.QoS & 3
	if m.Retain {
		flags |= flagRetain
	}
	if m.Props != nil {
		flags |= flagProps
	}
	if m.ExpiresAt != 0 {
		flags |= flagExpiry
	}
	b = append(b, wireVersion, flags)
	b = binary.AppendUvarint(b, seq)
	if m.ExpiresAt != 0 {
		left := (m.ExpiresAt - now) / 1e6
		b = binary.AppendUvarint(b, uint64(max(left, 0)))
	}
	b = appendBytes(b, m.Topic)
	b = binary.AppendUvarint(b, uint64(len(groups)))
	for _, g := range groups {
		b = appendBytes(b, []byte(g))
	}
	if p := m.Props; p != nil {
		b = binary.AppendUvarint(b, p.Present)
		b = append(b, p.PayloadFormat)
		b = appendBytes(b, p.ContentType)
		b = appendBytes(b, p.ResponseTopic)
		b = appendBytes(b, p.CorrelationData)
		b = binary.AppendUvarint(b, uint64(len(p.User)))
		for _, u := range p.User {
			b = appendBytes(b, u.Key)
			b = appendBytes(b, u.Value)
		}
	}
	return append(b, m.Payload...)
}

func appendBytes(b, s []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// reader decodes the wire format; the first error sticks.
type reader struct {
	b   []byte
	err error
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = errWire
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) byte() byte {
	if r.err != nil || len(r.b) == 0 {
		r.err = errWire
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

func (r *reader) bytes() []byte {
	n := r.uvarint()
	if r.err != nil || n > uint64(len(r.b)) {
		r.err = errWire
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

// decoded is a message read off the wire; its slices view the buffer.
type decoded struct {
	m      server.ClusterMessage
	props  codec.Properties
	seq    uint64
	groups []string
}

// decodeMessage reads a message encoded by appendMessage. Never panics on
// bad input: a peer of another version or a corrupted frame is an error.
func decodeMessage(b []byte, now int64, d *decoded) error {
	r := reader{b: b}
	if r.byte() != wireVersion {
		return errWire
	}
	flags := r.byte()
	*d = decoded{groups: d.groups[:0]}
	d.m.QoS = flags & 3
	if d.m.QoS == 3 {
		return errWire
	}
	d.m.Retain = flags&flagRetain != 0
	d.seq = r.uvarint()
	if flags&flagExpiry != 0 {
		left := r.uvarint()
		d.m.ExpiresAt = now + int64(min(left, uint64(time.Duration(1<<62)/time.Millisecond)))*1e6
	}
	d.m.Topic = r.bytes()
	ng := r.uvarint()
	if ng > uint64(len(r.b)) {
		return errWire
	}
	for range ng {
		d.groups = append(d.groups, string(r.bytes()))
	}
	if flags&flagProps != 0 {
		p := &d.props
		p.Present = r.uvarint()
		p.PayloadFormat = r.byte()
		p.ContentType = r.bytes()
		p.ResponseTopic = r.bytes()
		p.CorrelationData = r.bytes()
		nu := r.uvarint()
		if nu > uint64(len(r.b)) {
			return errWire
		}
		for range nu {
			p.User = append(p.User, codec.UserProperty{Key: r.bytes(), Value: r.bytes()})
		}
		d.m.Props = p
	}
	if r.err != nil {
		return r.err
	}
	d.m.Payload = r.b
	return nil
}
