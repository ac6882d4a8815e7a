package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// buildTern compiles ./cmd/tern of the module the current directory belongs
// to into dir and returns the binary's path.
func buildTern(dir string) (string, error) {
	bin := filepath.Join(dir, "tern")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/ternmq/tern/cmd/tern").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build ./cmd/tern: %v\n%s", err, out)
	}
	return bin, nil
}

// advertisesDurability runs `tern serve --help` and reports whether the
// broker has a --durability flag, the sign that acknowledgements wait for
// the store. Without it a crash loses everything, by design.
func advertisesDurability(bin string) (bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "serve", "--help").CombinedOutput()
	if err != nil && len(out) == 0 {
		return false, fmt.Errorf("%s serve --help: %v", bin, err)
	}
	// The flag package prints "-durability"; a hand-written usage may say
	// "--durability". Both contain this.
	return strings.Contains(string(out), "-durability"), nil
}

// freeAddr returns a loopback address with a port that was free a moment
// ago. The same address is reused for the restart, as a device fleet would.
func freeAddr() (string, error) {
	if portFrom > 0 {
		// -ports: the next free port of the range, round robin, so a port
		// just left by a killed broker is not reused at once.
		for range portTo - portFrom + 1 {
			p := portFrom + int(portNext.Add(1)-1)%(portTo-portFrom+1)
			l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
			if err == nil {
				addr := l.Addr().String()
				return addr, l.Close()
			}
		}
		return "", fmt.Errorf("no free port in %d-%d", portFrom, portTo)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	addr := l.Addr().String()
	return addr, l.Close()
}

// The -ports range (0: any free port); portNext rotates through it.
var (
	portFrom, portTo int
	portNext         atomic.Uint32
)

// broker is one `tern serve` subprocess.
type broker struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has been reaped
	out  *tailBuffer   // its stdout and stderr, last few KiB
}

// startBroker starts `tern serve` on addr with its data in dataDir and waits
// until ready (the clients' endpoint: addr itself, or a TLS listener named
// in extra) accepts connections, bounded by startTimeout. extra is appended
// to the command line (e.g. --durability sync).
func startBroker(reg *registry, bin, dataDir, addr string, extra []string, ready endpoint) (*broker, error) {
	args := append([]string{"serve", "--data", dataDir, "--listen", addr, "--log-level", "warn"}, extra...)
	b := &broker{cmd: exec.Command(bin, args...), done: make(chan struct{}), out: &tailBuffer{max: 16 << 10}}
	b.cmd.Stdout = b.out
	b.cmd.Stderr = b.out
	setDeathSignal(b.cmd)
	if err := b.cmd.Start(); err != nil {
		return nil, err
	}
	reg.add(b)
	go func() {
		_ = b.cmd.Wait()
		close(b.done)
	}()
	const startTimeout = 15 * time.Second // generous: recovery of a store happens before listening
	deadline := time.Now().Add(startTimeout)
	for {
		select {
		case <-b.done:
			return nil, fmt.Errorf("tern exited during startup (%v); output:\n%s", b.cmd.ProcessState, b.out)
		default:
		}
		conn, err := ready.dial()
		if err == nil {
			_ = conn.Close()
			return b, nil
		}
		if time.Now().After(deadline) {
			b.kill()
			return nil, fmt.Errorf("tern did not listen on %s within %v; output:\n%s", ready.addr, startTimeout, b.out)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// kill sends SIGKILL (no chance to flush anything: that is the test) and
// waits for the process to be reaped, so its files and port are released.
// Safe to call more than once and after the process has exited.
func (b *broker) kill() {
	select {
	case <-b.done:
		return
	default:
	}
	_ = b.cmd.Process.Kill() // SIGKILL on Unix
	select {
	case <-b.done:
	case <-time.After(10 * time.Second):
	}
}

// exited reports whether the process has ended on its own.
func (b *broker) exited() bool {
	select {
	case <-b.done:
		return true
	default:
		return false
	}
}

// registry remembers every broker started so that an interrupted run or a
// failed test can kill them all: the harness must never leave orphans.
type registry struct {
	mu   sync.Mutex
	live []*broker
}

func (r *registry) add(b *broker) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.live = append(r.live, b)
}

// killAll SIGKILLs every broker this registry started that is still running.
func (r *registry) killAll() {
	r.mu.Lock()
	live := r.live
	r.live = nil
	r.mu.Unlock()
	for _, b := range live {
		b.kill()
	}
}

// tailBuffer is an io.Writer that keeps the last max bytes written.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf bytes.Buffer
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf.Write(p)
	if over := t.buf.Len() - t.max; over > 0 {
		t.buf.Next(over)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.buf.String()
}

// removeAll deletes a per-cycle data directory; failures only warrant a note.
func removeAll(dir string) {
	if err := os.RemoveAll(dir); err != nil {
		fmt.Fprintf(os.Stderr, "crashtest: %v\n", err)
	}
}

// scrapeCounter reads one counter from the broker's /metrics at admin, or
// returns -1.
func scrapeCounter(admin, name string) int {
	client := http.Client{Timeout: time.Second}
	resp, err := client.Get("http://" + admin + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 && f[0] == name {
			v, err := strconv.ParseFloat(f[1], 64)
			if err != nil {
				return -1
			}
			return int(v)
		}
	}
	return -1
}
