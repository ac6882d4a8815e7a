package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/ternmq/tern/bench"
)

// broker is the `tern serve` process under test. Only the tool's goroutine
// uses it.
type broker struct {
	bin, addr, data, config string
	cmd                     *exec.Cmd
	exited                  chan struct{}
}

// start runs the broker and waits until it accepts a TCP connection; it
// returns the time from process start to that moment.
func (b *broker) start() (time.Duration, error) {
	args := []string{"serve", "--listen", b.addr, "--data", b.data, "--log-level", "warn"}
	if b.config != "" {
		args = append(args, "--config", b.config)
	}
	cmd := exec.Command(b.bin, args...)
	logFile, err := os.OpenFile(filepath.Join(filepath.Dir(b.data), filepath.Base(b.data)+".log"),
		os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return 0, err
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return 0, err
	}
	b.cmd = cmd
	b.exited = make(chan struct{})
	go func() { _ = cmd.Wait(); logFile.Close(); close(b.exited) }()
	for time.Since(t0) < 5*time.Minute {
		if c, err := net.DialTimeout("tcp", b.addr, 100*time.Millisecond); err == nil {
			d := time.Since(t0)
			c.Close()
			return d, nil
		}
		select {
		case <-b.exited:
			return 0, fmt.Errorf("broker exited before accepting connections (see %s.log)", b.data)
		case <-time.After(2 * time.Millisecond):
		}
	}
	return 0, fmt.Errorf("broker not accepting on %s after 5 minutes", b.addr)
}

func (b *broker) pid() int {
	if b.cmd == nil || b.cmd.Process == nil {
		return 0
	}
	return b.cmd.Process.Pid
}

// rss is the broker's resident set size (0 if unknown).
func (b *broker) rss() int64 {
	s, err := bench.SampleProc(b.pid())
	if err != nil {
		return 0
	}
	return s.RSSBytes
}

// kill SIGKILLs the broker and waits for it to be gone.
func (b *broker) kill() {
	if b.cmd == nil {
		return
	}
	_ = b.cmd.Process.Signal(syscall.SIGKILL)
	<-b.exited
	b.cmd = nil
}

// stop ends the broker with SIGTERM (SIGKILL after 30 s).
func (b *broker) stop() {
	if b.cmd == nil {
		return
	}
	_ = b.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-b.exited:
	case <-time.After(30 * time.Second):
		_ = b.cmd.Process.Signal(syscall.SIGKILL)
		<-b.exited
	}
	b.cmd = nil
}
