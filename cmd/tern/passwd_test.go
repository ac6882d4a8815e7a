//go:build linux

package main

import (
	"bytes"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// openPTY opens a pseudo-terminal pair (Linux /dev/ptmx).
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	// Non-blocking, so the runtime poller serves it and read deadlines work.
	fd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Skipf("no pty: %v", err)
	}
	m := os.NewFile(uintptr(fd), "/dev/ptmx")
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	s, err := os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close(); s.Close() })
	return m, s
}

// On a terminal, tern passwd asks twice and the terminal does not echo
// what is typed.
func TestPasswdPromptsWithoutEcho(t *testing.T) {
	master, slave := openPTY(t)
	type result struct {
		pw  string
		err error
	}
	done := make(chan result, 1)
	var prompt bytes.Buffer
	go func() {
		pw, err := readPassword(slave, &prompt)
		done <- result{pw, err}
	}()
	time.Sleep(100 * time.Millisecond) // echo is turned off before the line is typed
	if _, err := master.WriteString("s3cret-typed\n"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if _, err := master.WriteString("s3cret-typed\n"); err != nil {
		t.Fatal(err)
	}
	var r result
	select {
	case r = <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("readPassword did not return")
	}
	if r.err != nil || r.pw != "s3cret-typed" {
		t.Fatalf("got %q, %v", r.pw, r.err)
	}
	if !strings.Contains(prompt.String(), "Password: ") || !strings.Contains(prompt.String(), "Password again: ") {
		t.Errorf("prompts: %q", prompt.String())
	}
	// Whatever the terminal echoed is readable on the master side.
	_ = master.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	buf := make([]byte, 4096)
	n, _ := master.Read(buf)
	if bytes.Contains(buf[:n], []byte("s3cret")) {
		t.Errorf("the terminal echoed the password: %q", buf[:n])
	}
}

// Not a terminal: the first line of standard input; an empty one is an error.
func TestPasswdReadsStdinWhenNotATerminal(t *testing.T) {
	for in, want := range map[string]string{"abc\nignored\n": "abc", "x y\r\n": "x y", "\n": "", "": ""} {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		_, _ = w.WriteString(in)
		w.Close()
		pw, err := readPassword(r, &bytes.Buffer{})
		r.Close()
		if pw != want || (want == "") != (err != nil) {
			t.Errorf("%q: got %q, %v; want %q", in, pw, err, want)
		}
	}
}
