package listenutil

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestRateLogLetsOneThroughAndCountsTheRest(t *testing.T) {
	var buf bytes.Buffer
	l := slog.New(slog.NewTextHandler(&buf, nil))
	var r RateLog
	for range 5 {
		r.Log(l, slog.LevelInfo, "refused")
	}
	if n := strings.Count(buf.String(), "refused"); n != 1 {
		t.Fatalf("%d lines through, want 1:\n%s", n, buf.String())
	}
	r.next = time.Now() // the period is over
	r.Log(l, slog.LevelInfo, "refused")
	if !strings.Contains(buf.String(), "suppressed_since_last=4") {
		t.Fatalf("held-back count not reported:\n%s", buf.String())
	}
}

func TestBackoffDoublesToOneSecond(t *testing.T) {
	d := Backoff(0)
	if d != 5*time.Millisecond {
		t.Fatalf("first pause %v", d)
	}
	for range 20 {
		d = Backoff(d)
	}
	if d != time.Second {
		t.Fatalf("pause grew to %v, want the 1 s cap", d)
	}
}

func TestSleepEndsAtDone(t *testing.T) {
	done := make(chan struct{})
	close(done)
	if Sleep(done, time.Hour) {
		t.Fatal("Sleep ignored done")
	}
	if !Sleep(make(chan struct{}), time.Millisecond) {
		t.Fatal("Sleep returned false without done")
	}
}
