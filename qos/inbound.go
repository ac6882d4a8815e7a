package qos

// Inbound tracks the QoS 2 PUBLISH packets a client sent that the broker has
// answered with PUBREC and for which PUBREL has not yet arrived. It is
// bounded: a client that leaves more than Max flows open is misbehaving
// (5.0: the broker's Receive Maximum; 3.1.1: a configured cap).
type Inbound struct {
	ids []uint16
	Max int // 0 = 65535
}

// Len returns the number of flows awaiting PUBREL.
func (in *Inbound) Len() int { return len(in.ids) }

// Receive records a QoS 2 PUBLISH with id. isNew is true when the message
// must be routed (first time seen); false for a re-sent duplicate, which
// must only be answered with PUBREC again. full is true when the id is new
// but the bound is reached: the caller must not route it and should
// disconnect (5.0: Receive Maximum exceeded, 0x93).
func (in *Inbound) Receive(id uint16) (isNew, full bool) {
	for _, x := range in.ids {
		if x == id {
			return false, false
		}
	}
	max := in.Max
	if max <= 0 {
		max = 65535
	}
	if len(in.ids) >= max {
		return false, true
	}
	in.ids = append(in.ids, id)
	return true, false
}

// Has reports whether id awaits PUBREL.
func (in *Inbound) Has(id uint16) bool {
	for _, x := range in.ids {
		if x == id {
			return true
		}
	}
	return false
}

// Release handles PUBREL for id and reports whether it was known. The caller
// answers PUBCOMP either way [MQTT-4.3.3-11].
func (in *Inbound) Release(id uint16) bool {
	for i, x := range in.ids {
		if x == id {
			in.ids[i] = in.ids[len(in.ids)-1]
			in.ids = in.ids[:len(in.ids)-1]
			if len(in.ids) == 0 {
				in.ids = nil
			}
			return true
		}
	}
	return false
}

// IDs returns the packet ids awaiting PUBREL (a copy), for a session that
// moves to another node.
func (in *Inbound) IDs() []uint16 { return append([]uint16(nil), in.ids...) }
