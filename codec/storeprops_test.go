package codec

import (
	"bytes"
	"testing"
)

func TestPublishPropertiesRoundTrip(t *testing.T) {
	var p Properties
	p.PayloadFormat = 1
	p.Set(PropPayloadFormat)
	p.MessageExpiry = 60
	p.Set(PropMessageExpiry)
	p.ContentType = []byte("application/json")
	p.Set(PropContentType)
	p.User = []UserProperty{{Key: []byte("a"), Value: []byte("1")}, {Key: []byte("a"), Value: []byte("2")}}
	b := AppendPublishProperties(nil, &p)
	var q Properties
	if err := DecodePublishProperties(b, &q); err != nil {
		t.Fatal(err)
	}
	if q.PayloadFormat != 1 || q.MessageExpiry != 60 || !bytes.Equal(q.ContentType, p.ContentType) ||
		len(q.User) != 2 || string(q.User[1].Value) != "2" {
		t.Fatalf("round trip: %+v", q)
	}
	if err := DecodePublishProperties(append(b, 0), &q); err == nil {
		t.Fatal("trailing byte accepted")
	}
}
