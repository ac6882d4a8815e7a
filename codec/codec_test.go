package codec

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/golden/*.bin and the fuzz seed corpora from goldenPackets")

// equalPacket compares two decoded packets field by field, treating a nil
// slice and an empty one as equal (a decoded empty field may be either).
func equalPacket(a, b any) bool { return equalValue(reflect.ValueOf(a), reflect.ValueOf(b)) }

func equalValue(a, b reflect.Value) bool {
	if !a.IsValid() || !b.IsValid() {
		return a.IsValid() == b.IsValid()
	}
	if a.Type() != b.Type() {
		return false
	}
	switch a.Kind() {
	case reflect.Pointer, reflect.Interface:
		if a.IsNil() || b.IsNil() {
			return a.IsNil() == b.IsNil()
		}
		return equalValue(a.Elem(), b.Elem())
	case reflect.Slice:
		if a.Len() != b.Len() {
			return false
		}
		for i := 0; i < a.Len(); i++ {
			if !equalValue(a.Index(i), b.Index(i)) {
				return false
			}
		}
		return true
	case reflect.Struct:
		for i := 0; i < a.NumField(); i++ {
			if !equalValue(a.Field(i), b.Field(i)) {
				return false
			}
		}
		return true
	}
	return a.Equal(b)
}

// show prints a packet with byte slices as quoted strings.
func show(v any) string {
	var sb strings.Builder
	showValue(&sb, reflect.ValueOf(v))
	return sb.String()
}

func showValue(sb *strings.Builder, v reflect.Value) {
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if v.IsNil() {
			sb.WriteString("nil")
			return
		}
		sb.WriteString("&")
		showValue(sb, v.Elem())
	case reflect.Slice:
		if v.Type().Elem().Kind() == reflect.Uint8 {
			fmt.Fprintf(sb, "%q", v.Bytes())
			return
		}
		sb.WriteString("[")
		for i := 0; i < v.Len(); i++ {
			if i > 0 {
				sb.WriteString(" ")
			}
			showValue(sb, v.Index(i))
		}
		sb.WriteString("]")
	case reflect.Struct:
		sb.WriteString(v.Type().Name() + "{")
		first := true
		for i := 0; i < v.NumField(); i++ {
			f := v.Field(i)
			if f.IsZero() {
				continue
			}
			if !first {
				sb.WriteString(" ")
			}
			first = false
			sb.WriteString(v.Type().Field(i).Name + ":")
			showValue(sb, f)
		}
		sb.WriteString("}")
	default:
		fmt.Fprintf(sb, "%v", v.Interface())
	}
}

// decodeWhole frames and decodes one whole packet.
func decodeWhole(data []byte, version byte) (any, error) {
	h, body, n, err := ReadPacket(data, 0)
	if err != nil {
		return nil, err
	}
	if n != len(data) {
		return nil, fmt.Errorf("framed %d of %d bytes", n, len(data))
	}
	return DecodePacket(h, body, version)
}

// sizeOf calls the packet's Size method, or returns -1 if it has none.
func sizeOf(pkt any, version byte) int {
	switch p := pkt.(type) {
	case *Connect:
		return p.Size()
	case *Connack:
		return p.Size(version)
	case *Publish:
		return p.Size(version)
	case *Ack:
		return p.Size(version)
	case *Subscribe:
		return p.Size(version)
	case *Suback:
		return p.Size(version)
	case *Unsubscribe:
		return p.Size(version)
	case *Unsuback:
		return p.Size(version)
	case *Disconnect:
		return p.Size(version)
	case *Auth:
		return p.Size()
	}
	return -1
}

func TestGolden(t *testing.T) {
	seen := map[string]bool{}
	for _, g := range goldenPackets {
		t.Run(g.name, func(t *testing.T) {
			if seen[g.name] {
				t.Fatalf("duplicate golden name %q", g.name)
			}
			seen[g.name] = true

			got, err := decodeWhole(g.bytes, g.version)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if !equalPacket(got, g.value) {
				t.Errorf("decode mismatch\n got: %s\nwant: %s", show(got), show(g.value))
			}

			enc := AppendPacket(nil, g.value, g.version)
			if !bytes.Equal(enc, g.bytes) {
				t.Errorf("encode mismatch\n got: % x\nwant: % x", enc, g.bytes)
			}
			if n := sizeOf(g.value, g.version); n >= 0 && n != len(g.bytes) {
				t.Errorf("Size = %d, want %d", n, len(g.bytes))
			}
			// Appending after existing content must not disturb it.
			prefix := []byte("prefix")
			enc2 := AppendPacket(append([]byte(nil), prefix...), g.value, g.version)
			if !bytes.HasPrefix(enc2, prefix) || !bytes.Equal(enc2[len(prefix):], g.bytes) {
				t.Errorf("append after prefix: % x", enc2)
			}
		})
	}
	if *update {
		writeGoldenFiles(t)
		writeSeedCorpora(t)
	}
}

// TestGoldenFiles checks the committed testdata/golden/*.bin match the table.
func TestGoldenFiles(t *testing.T) {
	for _, g := range goldenPackets {
		data, err := os.ReadFile(filepath.Join("testdata", "golden", g.name+".bin"))
		if err != nil {
			t.Errorf("%s: %v (run go test ./codec -run TestGolden -update)", g.name, err)
			continue
		}
		if !bytes.Equal(data, g.bytes) {
			t.Errorf("%s: testdata file is stale (run go test ./codec -run TestGolden -update)", g.name)
		}
	}
}

// TestGoldenDecodeReuse decodes every golden packet into a struct that
// already holds another packet of the same type: Decode must reset all of
// the previous content.
func TestGoldenDecodeReuse(t *testing.T) {
	for _, prev := range goldenPackets {
		for _, g := range goldenPackets {
			if reflect.TypeOf(prev.value) != reflect.TypeOf(g.value) {
				continue
			}
			h0, body0, _, _ := ReadPacket(prev.bytes, 0)
			h, body, _, _ := ReadPacket(g.bytes, 0)
			var got any
			var err error
			switch p := reflect.New(reflect.TypeOf(g.value).Elem()).Interface().(type) {
			case *Connect:
				_ = p.Decode(h0, body0)
				err, got = p.Decode(h, body), p
			case *Connack:
				_ = p.Decode(h0, body0, prev.version)
				err, got = p.Decode(h, body, g.version), p
			case *Publish:
				_ = p.Decode(h0, body0, prev.version)
				err, got = p.Decode(h, body, g.version), p
			case *Ack:
				_ = p.Decode(h0, body0, prev.version)
				err, got = p.Decode(h, body, g.version), p
			case *Subscribe:
				_ = p.Decode(h0, body0, prev.version)
				err, got = p.Decode(h, body, g.version), p
			case *Suback:
				_ = p.Decode(h0, body0, prev.version)
				err, got = p.Decode(h, body, g.version), p
			case *Unsubscribe:
				_ = p.Decode(h0, body0, prev.version)
				err, got = p.Decode(h, body, g.version), p
			case *Unsuback:
				_ = p.Decode(h0, body0, prev.version)
				err, got = p.Decode(h, body, g.version), p
			case *Disconnect:
				_ = p.Decode(h0, body0, prev.version)
				err, got = p.Decode(h, body, g.version), p
			case *Auth:
				_ = p.Decode(h0, body0, prev.version)
				err, got = p.Decode(h, body, g.version), p
			default:
				continue
			}
			if err != nil {
				t.Errorf("%s after %s: %v", g.name, prev.name, err)
				continue
			}
			if !equalPacket(got, g.value) {
				t.Errorf("%s after %s:\n got: %s\nwant: %s", g.name, prev.name, show(got), show(g.value))
			}
		}
	}
}

func writeGoldenFiles(t *testing.T) {
	dir := filepath.Join("testdata", "golden")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	old, _ := filepath.Glob(filepath.Join(dir, "*.bin"))
	for _, f := range old {
		os.Remove(f)
	}
	for _, g := range goldenPackets {
		if err := os.WriteFile(filepath.Join(dir, g.name+".bin"), g.bytes, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// writeSeedCorpora writes the seed corpora of the fuzz targets in the
// `go test fuzz v1` format, one file per golden packet (and per stream for
// FuzzReadPacket). Files are named by content hash, as go test does.
func writeSeedCorpora(t *testing.T) {
	// Only the seed-* files are ours: crashers found by the fuzzer keep
	// their go-generated names and stay.
	old, _ := filepath.Glob(filepath.Join("testdata", "fuzz", "*", "seed-*"))
	for _, f := range old {
		os.Remove(f)
	}
	write := func(target string, args ...any) {
		var sb strings.Builder
		sb.WriteString("go test fuzz v1\n")
		for _, a := range args {
			switch v := a.(type) {
			case []byte:
				fmt.Fprintf(&sb, "[]byte(%q)\n", v)
			case byte:
				fmt.Fprintf(&sb, "byte(%q)\n", v)
			case int64:
				fmt.Fprintf(&sb, "int64(%d)\n", v)
			}
		}
		dir := filepath.Join("testdata", "fuzz", target)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		name := fmt.Sprintf("seed-%x", sha256.Sum256([]byte(sb.String())))[:21]
		if err := os.WriteFile(filepath.Join(dir, name), []byte(sb.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var stream []byte
	for i, g := range goldenPackets {
		write("FuzzDecode", g.bytes, g.version)
		if g.version == Version5 {
			if p := goldenProps(g.value); p != nil {
				h, body, _, _ := ReadPacket(g.bytes, 0)
				if b, ctx, ok := propsBytes(h, body, g.value); ok {
					write("FuzzProperties", b, byte(ctx))
				}
			}
		}
		stream = append(stream, g.bytes...)
		if i%8 == 7 {
			write("FuzzReadPacket", stream, int64(i))
			stream = nil
		}
	}
	for _, m := range malformedPackets {
		write("FuzzDecode", m.bytes, m.version)
	}
}

// goldenProps returns the main property list of a packet value, if any.
func goldenProps(v any) *Properties {
	switch p := v.(type) {
	case *Connect:
		return &p.Props
	case *Connack:
		return &p.Props
	case *Publish:
		return &p.Props
	case *Ack:
		return &p.Props
	case *Subscribe:
		return &p.Props
	case *Suback:
		return &p.Props
	case *Unsubscribe:
		return &p.Props
	case *Unsuback:
		return &p.Props
	case *Disconnect:
		return &p.Props
	case *Auth:
		return &p.Props
	}
	return nil
}

// propsBytes re-encodes the main property list of a golden value (without
// its length prefix) for the FuzzProperties seeds.
func propsBytes(h FixedHeader, body []byte, v any) ([]byte, propCtx, bool) {
	ctx, ok := ctxOf(v)
	if !ok {
		return nil, 0, false
	}
	p := goldenProps(v)
	n := p.size(ctx)
	out := p.appendTo(nil, ctx, n)
	_, k := readVarint(out)
	return out[k:], ctx, true
}

func ctxOf(v any) (propCtx, bool) {
	switch v.(type) {
	case *Connect:
		return ctxConnect, true
	case *Connack:
		return ctxConnack, true
	case *Publish:
		return ctxPublish, true
	case *Ack:
		return ctxAck, true
	case *Subscribe:
		return ctxSubscribe, true
	case *Suback:
		return ctxSuback, true
	case *Unsubscribe:
		return ctxUnsubscribe, true
	case *Unsuback:
		return ctxUnsuback, true
	case *Disconnect:
		return ctxDisconnect, true
	case *Auth:
		return ctxAuth, true
	}
	return 0, false
}

// asError unwraps a codec *Error.
func asError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return nil
}
