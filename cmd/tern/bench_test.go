package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// Flag mistakes are refused (non-zero exit) with a message naming the
// flag, before any client connects.
func TestBenchFlagErrors(t *testing.T) {
	cases := []struct {
		name string
		run  func(out, errOut *bytes.Buffer) int
		want string
	}{
		{"tls-option-without-tls", func(o, e *bytes.Buffer) int {
			return benchRun(context.Background(), "run", []string{"--cafile", "ca.pem"}, o, e)
		}, "need --tls"},
		{"unknown-curve", func(o, e *bytes.Buffer) int {
			return benchRun(context.Background(), "conn", []string{"--broker", "127.0.0.1:1", "--tls", "--tls-curves", "X448", "--conns", "1"}, o, e)
		}, "X448"},
		{"negative-parallel", func(o, e *bytes.Buffer) int {
			return benchRun(context.Background(), "conn", []string{"--parallel", "-1"}, o, e)
		}, "parallel"},
		{"closed-loop-sweep", func(o, e *bytes.Buffer) int {
			return benchSweep(context.Background(), []string{"--broker", "127.0.0.1:1", "--closed-loop"}, o, e)
		}, "closed-loop"},
		{"sweep-factor", func(o, e *bytes.Buffer) int {
			return benchSweep(context.Background(), []string{"--broker", "127.0.0.1:1", "--factor", "1"}, o, e)
		}, "factor"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := tc.run(&out, &errOut)
			if code == 0 || !strings.Contains(errOut.String(), tc.want) {
				t.Fatalf("exit %d, stderr %q: want a refusal naming %q", code, errOut.String(), tc.want)
			}
		})
	}
}
