package qos

import "testing"

func TestWindowQoS1Flow(t *testing.T) {
	var w Window[string]
	w.SetMax(2)
	if !w.AddID("a", 1, 1) || !w.AddID("b", 1, 2) {
		t.Fatal("AddID refused a free id in a window with room")
	}
	if w.AddID("c", 1, 3) || !w.full() {
		t.Fatal("window of 2 accepted a third message")
	}
	if m, ok := w.Ack(2); !ok || m != "b" {
		t.Fatalf("ack out of order: %q %v", m, ok)
	}
	if _, ok := w.Ack(2); ok {
		t.Fatal("second PUBACK for the same id accepted")
	}
	if _, ok := w.Complete(1); ok {
		t.Fatal("PUBCOMP accepted for a QoS 1 message")
	}
	if _, ok := w.Ack(1); !ok {
		t.Fatal("PUBACK for the QoS 1 message in flight refused")
	}
	if len(w.Entries()) != 0 {
		t.Fatalf("entries left: %+v", w.Entries())
	}
}

func TestWindowQoS2Flow(t *testing.T) {
	var w Window[int]
	w.SetMax(10)
	const id = 7
	w.AddID(7, 2, id)
	if _, ok := w.Complete(id); ok {
		t.Fatal("PUBCOMP before PUBREC accepted")
	}
	if _, ok := w.Ack(id); ok {
		t.Fatal("PUBACK accepted for a QoS 2 message")
	}
	if !w.Received(id) {
		t.Fatal("PUBREC must be answered with PUBREL")
	}
	if !w.Received(id) {
		t.Fatal("a repeated PUBREC must be answered with PUBREL again")
	}
	if w.Entries()[0].State != AwaitPubcomp {
		t.Fatalf("state %v", w.Entries()[0].State)
	}
	if m, ok := w.Complete(id); !ok || m != 7 || len(w.Entries()) != 0 {
		t.Fatalf("complete: %v %v entries %d", m, ok, len(w.Entries()))
	}
	if w.Received(999) {
		t.Fatal("PUBREC for unknown id accepted")
	}
}

// A packet id in use is never given to a second message [MQTT-2.2.1-3]:
// AddID refuses it, including ids restored from storage, until its flow ends.
func TestWindowRefusesIDInUse_MQTT_2_2_1_3(t *testing.T) {
	var w Window[int]
	w.SetMax(3)
	w.Restore(Entry[int]{Msg: 1, PacketID: 65535, QoS: 1, State: AwaitPuback})
	w.Restore(Entry[int]{Msg: 2, PacketID: 1, QoS: 2, State: AwaitPubcomp})
	if w.AddID(3, 1, 65535) || w.AddID(3, 2, 1) {
		t.Fatal("AddID reused a packet id still in flight")
	}
	if !w.AddID(3, 1, 2) {
		t.Fatal("AddID refused a free id")
	}
	if _, ok := w.Complete(1); !ok {
		t.Fatal("PUBCOMP for the restored QoS 2 flow refused")
	}
	if !w.AddID(4, 1, 1) {
		t.Fatal("id 1 is free again once its flow completed")
	}
}

func TestWindowDrop(t *testing.T) {
	var w Window[string]
	w.SetMax(2)
	w.AddID("a", 2, 5)
	if _, ok := w.Drop(6); ok {
		t.Fatal("Drop of an unknown id succeeded")
	}
	if m, ok := w.Drop(5); !ok || m != "a" || len(w.Entries()) != 0 {
		t.Fatalf("Drop: %q %v, %d left", m, ok, len(w.Entries()))
	}
}

func TestQueueBoundsAndPolicy(t *testing.T) {
	q := Queue[string]{MaxCount: 3, MaxBytes: 100}
	push := func(m string, qos byte, size int, p Policy) (string, bool, bool) {
		d, hd, ok := q.Push(Item[string]{Msg: m, QoS: qos, Size: size}, p)
		return d.Msg, hd, ok
	}
	push("a", 1, 10, DropNewest)
	push("z", 0, 10, DropNewest)
	push("b", 1, 10, DropNewest)
	// Full by count: the QoS 0 message goes first, order of the rest kept.
	if d, hd, ok := push("c", 1, 10, DropNewest); !ok || !hd || d != "z" {
		t.Fatalf("dropped %q %v queued %v", d, hd, ok)
	}
	// Full, no QoS 0 left: DropNewest refuses the new one.
	if d, hd, ok := push("d", 2, 10, DropNewest); ok || !hd || d != "d" {
		t.Fatalf("dropnewest: %q %v %v", d, hd, ok)
	}
	// DropOldest makes room.
	if d, _, ok := push("e", 1, 10, DropOldest); !ok || d != "a" {
		t.Fatalf("dropoldest: %q %v", d, ok)
	}
	var got []string
	for {
		it, ok := q.Pop()
		if !ok {
			break
		}
		got = append(got, it.Msg)
	}
	if want := []string{"b", "c", "e"}; len(got) != 3 || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
		t.Fatalf("order %v want %v", got, want)
	}
	if q.bytes != 0 || q.Len() != 0 {
		t.Fatalf("bytes %d len %d after draining", q.bytes, q.Len())
	}
	// Byte bound.
	q2 := Queue[int]{MaxBytes: 25}
	q2.Push(Item[int]{Msg: 1, QoS: 1, Size: 20}, DropNewest)
	if _, _, ok := q2.Push(Item[int]{Msg: 2, QoS: 1, Size: 10}, DropNewest); ok {
		t.Fatal("byte bound not enforced")
	}
	if _, _, ok := q2.Push(Item[int]{Msg: 3, QoS: 1, Size: 100}, DropOldest); ok {
		t.Fatal("an item larger than MaxBytes was queued")
	}
}

func TestQueueWrapsAndGrows(t *testing.T) {
	q := Queue[int]{MaxCount: 1000}
	next, want := 0, 0
	for round := 0; round < 50; round++ {
		for i := 0; i < 7; i++ {
			q.Push(Item[int]{Msg: next, QoS: 1, Size: 1}, DropNewest)
			next++
		}
		for i := 0; i < 5; i++ {
			it, _ := q.Pop()
			if it.Msg != want {
				t.Fatalf("got %d want %d", it.Msg, want)
			}
			want++
		}
	}
	if q.Len() != next-want {
		t.Fatalf("len %d want %d", q.Len(), next-want)
	}
}

// A re-sent QoS 2 PUBLISH with the same id before PUBREL is not routed again;
// PUBREL for an unknown id is still answered [MQTT-4.3.3-11].
func TestInboundDedupe_MQTT_4_3_3_11(t *testing.T) {
	in := Inbound{Max: 2}
	if isNew, full := in.Receive(5); !isNew || full {
		t.Fatal("first receive must be new")
	}
	if isNew, _ := in.Receive(5); isNew {
		t.Fatal("duplicate before PUBREL routed twice")
	}
	in.Receive(6)
	if _, full := in.Receive(7); !full {
		t.Fatal("bound not enforced")
	}
	if !in.Release(5) || in.Release(5) {
		t.Fatal("release")
	}
	if isNew, _ := in.Receive(5); !isNew {
		t.Fatal("after PUBREL the id may be reused for a new message")
	}
}

func TestWindowAddID(t *testing.T) {
	var w Window[string]
	w.SetMax(2)
	if !w.AddID("a", 2, 7) {
		t.Fatal("AddID refused a free id")
	}
	if w.AddID("b", 1, 7) {
		t.Fatal("AddID accepted an id in use")
	}
	if w.AddID("b", 1, 0) || w.AddID("b", 0, 8) {
		t.Fatal("AddID accepted id 0 or QoS 0")
	}
	if e, ok := w.Get(7); !ok || e.Msg != "a" || e.State != AwaitPubrec {
		t.Fatalf("Get: %+v %v", e, ok)
	}
	w.AddID("c", 1, 9)
	if w.AddID("d", 1, 10) {
		t.Fatal("window of 2 took a third")
	}
}

func TestQueueBytesAndWindowReset(t *testing.T) {
	var q Queue[int]
	q.Push(Item[int]{Msg: 1, QoS: 1, Size: 10}, DropNewest)
	q.Push(Item[int]{Msg: 2, QoS: 0, Size: 5}, DropNewest)
	if q.Bytes() != 15 {
		t.Fatalf("bytes %d", q.Bytes())
	}
	q.Pop()
	if q.Bytes() != 5 {
		t.Fatalf("bytes after pop %d", q.Bytes())
	}
	var w Window[int]
	w.SetMax(4)
	w.AddID(1, 1, 1)
	w.AddID(2, 2, 2)
	if w.Len() != 2 {
		t.Fatalf("len %d", w.Len())
	}
	w.Reset()
	if w.Len() != 0 || !w.AddID(3, 1, 1) {
		t.Fatal("reset window not reusable")
	}
}
