// Package qos holds the per-session delivery state machines of MQTT: the
// outbound inflight window that keeps packet identifiers unique, the bounded
// queue behind it, and the inbound QoS 2 receiver that makes delivery
// exactly-once. The types do no I/O, read no clock and take no locks: the
// caller (the broker's session, under its own mutex) feeds them events and
// acts on what they return. They are generic over the message type so that
// they can be tested alone.
//
// # Outbound flow (broker → client)
//
//	             Push                      AddID (caller's id)
//	publisher ─────────▶ Queue ─────────▶ Window ─────▶ PUBLISH sent
//	                     (bounded:        (≤ Receive Maximum)
//	                      count, bytes)
//
//	QoS 1: AwaitPuback ──PUBACK──▶ removed (Ack)
//	QoS 2: AwaitPubrec ──PUBREC──▶ AwaitPubcomp (PUBREL sent) ──PUBCOMP──▶ removed
//
// QoS 0 messages never enter the Window. When a persistent session
// reconnects, every Window entry is re-sent in order: PUBLISH with DUP for
// AwaitPuback/AwaitPubrec, PUBREL for AwaitPubcomp [MQTT-4.4.0-1].
//
// # Inbound flow (client → broker), QoS 2
//
//	PUBLISH id ──▶ Inbound.Receive: new → route + PUBREC; already held → PUBREC only
//	PUBREL  id ──▶ Inbound.Release → PUBCOMP (also for an unknown id [MQTT-4.3.3-11])
//
// A PUBLISH re-sent with the same packet id before PUBREL is therefore not
// routed twice.
package qos
