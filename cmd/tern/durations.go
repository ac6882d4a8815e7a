package main

import (
	"bytes"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Durations in the configuration file are Go durations ("500ms", "10s",
// "5m", "2h") plus days: "7d", "1d12h", "1.5d". Go's time.ParseDuration
// stops at hours, and session expiry and retention are naturally said in
// days. The options keep time.Duration fields (embedders set them from
// Go), so the file is read twice: once as a YAML node tree, walked next to
// the Options type to find every value that lands in a time.Duration;
// those written with days are rewritten in place, in the file's bytes, as
// hours; then the bytes are decoded as before, so line numbers in every
// other error stay the file's own.

// parseDuration is time.ParseDuration plus a leading day component.
func parseDuration(s string) (time.Duration, error) {
	if d, err := time.ParseDuration(s); err == nil {
		return d, nil
	}
	body, sign := s, time.Duration(1)
	if rest, ok := strings.CutPrefix(body, "-"); ok {
		body, sign = rest, -1
	} else {
		body = strings.TrimPrefix(body, "+")
	}
	days, rest, ok := strings.Cut(body, "d")
	if !ok || days == "" {
		return 0, fmt.Errorf("%q is not a duration: use a number and a unit, e.g. 500ms, 10s, 5m, 2h, 7d", s)
	}
	n, err := strconv.ParseFloat(days, 64)
	const maxDays = float64(1<<63-1) / float64(24*time.Hour)
	if err != nil || n < 0 || n > maxDays || strings.ContainsAny(days, "eE_xX") {
		return 0, fmt.Errorf("%q is not a duration: use a number and a unit, e.g. 500ms, 10s, 5m, 2h, 7d", s)
	}
	d := time.Duration(n * float64(24*time.Hour))
	if rest != "" {
		r, err := time.ParseDuration(rest)
		if err != nil || r < 0 {
			return 0, fmt.Errorf("%q is not a duration: use a number and a unit, e.g. 500ms, 10s, 5m, 2h, 7d", s)
		}
		if d > time.Duration(1<<63-1)-r {
			return 0, fmt.Errorf("%q is too long a duration", s)
		}
		d += r
	}
	return sign * d, nil
}

var durationType = reflect.TypeFor[time.Duration]()

// durationFix is one value to rewrite: at line and column (1-based, the
// scalar's first character, its quote if quoted), old becomes new.
type durationFix struct {
	line, col int
	old, new  string
}

// expandDurations returns src with every day-duration of a time.Duration
// field of t rewritten as hours, or an error naming the key and line of a
// value that is no duration at all.
func expandDurations(src []byte, t reflect.Type) ([]byte, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(src, &doc); err != nil {
		return src, nil // the real decode reports it, with its own words
	}
	var fixes []durationFix
	var errs []string
	walkDurations(&doc, t, "", func(n *yaml.Node, key string) {
		if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
			return
		}
		if _, err := time.ParseDuration(n.Value); err == nil {
			return
		}
		if n.Tag == "!!int" {
			return // nanoseconds, as yaml.v3 has always read them
		}
		d, err := parseDuration(n.Value)
		if err != nil {
			errs = append(errs, fmt.Sprintf("line %d: %s: %v", n.Line, key, err))
			return
		}
		fixes = append(fixes, durationFix{n.Line, n.Column, n.Value, d.String()})
	})
	if len(errs) > 0 {
		return nil, fmt.Errorf("%s", strings.Join(errs, "\n"))
	}
	if len(fixes) == 0 {
		return src, nil
	}
	lines := bytes.SplitAfter(src, []byte("\n"))
	for _, f := range fixes {
		if f.line < 1 || f.line > len(lines) {
			continue
		}
		ln := lines[f.line-1]
		at := f.col - 1
		if at < 0 || at > len(ln) {
			continue
		}
		if at < len(ln) && (ln[at] == '"' || ln[at] == '\'') {
			at++
		}
		if !bytes.HasPrefix(ln[at:], []byte(f.old)) {
			continue // not written plainly (a multi-line scalar): the decode reports it
		}
		out := make([]byte, 0, len(ln)+len(f.new))
		out = append(append(append(out, ln[:at]...), f.new...), ln[at+len(f.old):]...)
		lines[f.line-1] = out
	}
	return bytes.Join(lines, nil), nil
}

// walkDurations calls fn for every node n decoding into a time.Duration
// of t, with its key path ("limits.x", "websocket_listeners[0].idle_timeout").
func walkDurations(n *yaml.Node, t reflect.Type, key string, fn func(n *yaml.Node, key string)) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			walkDurations(c, t, key, fn)
		}
		return
	case yaml.AliasNode:
		return // anchors are walked where they are defined
	}
	if t == durationType {
		fn(n, key)
		return
	}
	switch {
	case t.Kind() == reflect.Struct && n.Kind == yaml.MappingNode:
		fields := map[string]reflect.Type{}
		collectFields(t, fields)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i].Value
			if ft, ok := fields[k]; ok {
				walkDurations(n.Content[i+1], ft, joinKey(key, k), fn)
			}
		}
	case (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) && n.Kind == yaml.SequenceNode:
		for i, c := range n.Content {
			walkDurations(c, t.Elem(), fmt.Sprintf("%s[%d]", key, i), fn)
		}
	case t.Kind() == reflect.Map && n.Kind == yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			walkDurations(n.Content[i+1], t.Elem(), joinKey(key, n.Content[i].Value), fn)
		}
	}
}

// collectFields maps the yaml keys of struct t (inline structs flattened)
// to their types.
func collectFields(t reflect.Type, into map[string]reflect.Type) {
	for i := range t.NumField() {
		f := t.Field(i)
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" || (!f.IsExported() && !f.Anonymous) {
			continue
		}
		if strings.Contains(opts, "inline") || (f.Anonymous && name == "" && f.Type.Kind() == reflect.Struct) {
			collectFields(f.Type, into)
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name) // yaml.v3's default key
		}
		into[name] = f.Type
	}
}

func joinKey(prefix, k string) string {
	if prefix == "" {
		return k
	}
	return prefix + "." + k
}
