// Command benchcompare regenerates the results section of BENCHMARKS.md:
// it installs mosquitto (apt) if missing, builds tern and tools/mochi,
// starts Tern, mosquitto and mochi-mqtt on loopback ports, runs the standard
// scenarios through `tern bench compare` (interleaved rounds, medians, ratios
// to Tern) and rewrites the text between
//
//	<!-- bench-compare:start --> and <!-- bench-compare:end -->
//
// leaving the rest of BENCHMARKS.md alone. Run from the repository root:
//
//	go run ./tools/benchcompare [--rounds 3] [--duration 10s] [--only p2p-qos0,idle]
package main

import (
	"bytes"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"
)

const (
	startMarker = "<!-- bench-compare:start -->"
	endMarker   = "<!-- bench-compare:end -->"
)

// scenario is one standard row group of BENCHMARKS.md.
type scenario struct {
	name string
	args []string // after "--" of tern bench compare
}

func scenarios(dur, warm string, idle int) []scenario {
	run := func(extra ...string) []string {
		return append([]string{"run", "--duration", dur, "--warmup", warm, "--size", "64"}, extra...)
	}
	return []scenario{
		{"p2p-qos0", run("--scenario", "p2p", "--pubs", "100", "--subs", "100", "--qos", "0", "--rate", "100")},
		{"p2p-qos1", run("--scenario", "p2p", "--pubs", "100", "--subs", "100", "--qos", "1", "--rate", "100")},
		{"p2p-qos2", run("--scenario", "p2p", "--pubs", "100", "--subs", "100", "--qos", "2", "--rate", "100")},
		{"fan-out", run("--scenario", "fan-out", "--pubs", "1", "--subs", "1000", "--qos", "0", "--rate", "10")},
		{"fan-in", run("--scenario", "fan-in", "--pubs", "1000", "--subs", "1", "--qos", "0", "--rate", "10")},
		{"fan-in-shared", run("--scenario", "shared", "--pubs", "1000", "--subs", "10", "--qos", "0", "--rate", "10")},
		{"persistent-qos1", run("--scenario", "p2p", "--pubs", "100", "--subs", "100", "--qos", "1", "--rate", "100", "--persistent")},
		{"idle", []string{"conn", "--conns", fmt.Sprint(idle), "--connect-rate", "5000", "--duration", "5s",
			"--source", "127.0.0.2-127.0.0.9", "--connect-timeout", "20s"}},
	}
}

type broker struct {
	name, addr string
	cmd        *exec.Cmd
}

func main() {
	rounds := flag.Int("rounds", 3, "interleaved rounds per broker")
	dur := flag.Duration("duration", 10*time.Second, "duration of each run")
	warm := flag.Duration("warmup", 2*time.Second, "warm-up of each run")
	idle := flag.Int("idle-conns", 19000, "connections of the idle scenario (each process may hold 20,000 descriptors)")
	only := flag.String("only", "", "comma-separated scenario names to run (default all)")
	out := flag.String("out", "BENCHMARKS.md", "file whose bench-compare section is regenerated")
	basePort := flag.Int("port", 18830, "first loopback port (tern; mosquitto +1, mochi +2)")
	flag.Parse()

	must(ensureMosquitto())
	must(os.MkdirAll("bin", 0o755))
	must(run("", "go", "build", "-o", "bin/tern", "./cmd/tern"))
	must(run("tools/mochi", "go", "build", "-o", "../../bin/mochi", "."))

	tmp, err := os.MkdirTemp("", "benchcompare")
	must(err)
	defer os.RemoveAll(tmp)
	mosqConf := filepath.Join(tmp, "mosquitto.conf")
	must(os.WriteFile(mosqConf, []byte(fmt.Sprintf(
		"listener %d 127.0.0.1\nallow_anonymous true\nmax_connections -1\npersistence false\nlog_dest none\n", *basePort+1)), 0o644))

	brokers := []*broker{
		{name: "tern", addr: fmt.Sprintf("127.0.0.1:%d", *basePort)},
		{name: "mosquitto", addr: fmt.Sprintf("127.0.0.1:%d", *basePort+1)},
		{name: "mochi", addr: fmt.Sprintf("127.0.0.1:%d", *basePort+2)},
	}
	mosq, _ := exec.LookPath("mosquitto")
	if mosq == "" {
		mosq = "/usr/sbin/mosquitto"
	}
	cmds := map[string]string{
		"tern":      fmt.Sprintf("exec bin/tern serve --listen %s --data %s --log-level error", brokers[0].addr, filepath.Join(tmp, "tern-data")),
		"mosquitto": fmt.Sprintf("exec %s -c %s", mosq, mosqConf),
		"mochi":     fmt.Sprintf("exec bin/mochi --listen %s", brokers[2].addr),
	}
	var live []*broker
	for _, b := range brokers {
		// Raise the descriptor limit where allowed: the idle scenario needs
		// ~19k connections per broker.
		c := exec.Command("bash", "-c", "ulimit -n 20000 2>/dev/null || ulimit -n $(ulimit -Hn); "+cmds[b.name])
		c.Stdout, c.Stderr = os.Stderr, os.Stderr
		c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := c.Start(); err != nil {
			fmt.Fprintf(os.Stderr, "benchcompare: %s did not start: %v (left out)\n", b.name, err)
			continue
		}
		b.cmd = c
		if !waitListening(b.addr, 10*time.Second) {
			fmt.Fprintf(os.Stderr, "benchcompare: %s is not listening on %s (left out)\n", b.name, b.addr)
			stop(b)
			continue
		}
		live = append(live, b)
	}
	defer func() {
		for _, b := range live {
			stop(b)
		}
	}()
	if len(live) == 0 {
		fmt.Fprintln(os.Stderr, "benchcompare: no broker started")
		os.Exit(1)
	}

	want := map[string]bool{}
	for _, s := range strings.Split(*only, ",") {
		if s != "" {
			want[s] = true
		}
	}
	var section bytes.Buffer
	fmt.Fprintf(&section, "\n## Results (generated by `make bench-compare`)\n\n")
	fmt.Fprintf(&section, "- date: %s\n- machine: %s, %d CPUs, kernel %s\n- Go: %s; commit: %s\n- brokers: %s\n",
		time.Now().UTC().Format("2006-01-02 15:04 UTC"), cpuModel(), runtime.NumCPU(), strings.TrimSpace(output("uname", "-r")),
		runtime.Version(), strings.TrimSpace(output("git", "describe", "--always", "--dirty")), brokerVersions(live, mosq))
	fmt.Fprintf(&section, "- each row: median of %d interleaved rounds (A B C A B C …); ratios are to the first broker; the harness's own CPU is shown so a saturated harness is visible (%d%% = one core)\n", *rounds, 100)
	fmt.Fprintf(&section, "- harness, brokers and the host OS share the same %d CPUs: treat absolute numbers as this machine's, ratios as the result\n\n", runtime.NumCPU())
	for _, sc := range scenarios(dur.String(), warm.String(), *idle) {
		if len(want) > 0 && !want[sc.name] {
			continue
		}
		args := []string{"bench", "compare", "--rounds", fmt.Sprint(*rounds)}
		for _, b := range live {
			args = append(args, "--broker", b.name+"="+b.addr)
		}
		md := filepath.Join(tmp, sc.name+".md")
		args = append(args, "--markdown", md, "--")
		args = append(args, sc.args...)
		fmt.Fprintf(os.Stderr, "== %s: bin/tern %s\n", sc.name, strings.Join(args, " "))
		if err := run("", "bin/tern", args...); err != nil {
			fmt.Fprintf(os.Stderr, "benchcompare: %s: %v\n", sc.name, err)
		}
		table, err := os.ReadFile(md)
		fmt.Fprintf(&section, "### %s\n\n", sc.name)
		if err != nil {
			fmt.Fprintf(&section, "_failed: %v_\n\n", err)
			continue
		}
		section.Write(table)
		fmt.Fprintf(&section, "\n<sub>`tern %s`</sub>\n\n", strings.Join(args[:len(args)-len(sc.args)-3], " ")+" -- "+strings.Join(sc.args, " "))
	}
	must(splice(*out, section.String()))
	fmt.Fprintf(os.Stderr, "benchcompare: wrote the results section of %s\n", *out)
}

// splice replaces the text between the markers of file (creating the file
// with a heading and the markers if it does not exist).
func splice(file, body string) error {
	old, err := os.ReadFile(file)
	if os.IsNotExist(err) {
		old = []byte("# Benchmarks\n\n" + startMarker + "\n" + endMarker + "\n")
	} else if err != nil {
		return err
	}
	s := string(old)
	i, j := strings.Index(s, startMarker), strings.Index(s, endMarker)
	if i < 0 || j < i {
		s = strings.TrimRight(s, "\n") + "\n\n" + startMarker + "\n" + endMarker + "\n"
		i, j = strings.Index(s, startMarker), strings.Index(s, endMarker)
	}
	s = s[:i+len(startMarker)] + "\n" + body + s[j:]
	return os.WriteFile(file, []byte(s), 0o644)
}

func ensureMosquitto() error {
	if _, err := exec.LookPath("mosquitto"); err == nil {
		return nil
	}
	if _, err := os.Stat("/usr/sbin/mosquitto"); err == nil {
		return nil
	}
	fmt.Fprintln(os.Stderr, "benchcompare: installing mosquitto (apt-get)")
	if err := run("", "apt-get", "install", "-y", "mosquitto"); err != nil {
		if err := run("", "apt-get", "update"); err != nil {
			return err
		}
		return run("", "apt-get", "install", "-y", "mosquitto")
	}
	return nil
}

func run(dir, name string, args ...string) error {
	c := exec.Command(name, args...)
	c.Dir = dir
	c.Stdout, c.Stderr = os.Stderr, os.Stderr
	return c.Run()
}

func output(name string, args ...string) string {
	b, _ := exec.Command(name, args...).Output()
	return string(b)
}

func waitListening(addr string, d time.Duration) bool {
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return true
		}
	}
	return false
}

func stop(b *broker) {
	if b.cmd == nil || b.cmd.Process == nil {
		return
	}
	syscall.Kill(-b.cmd.Process.Pid, syscall.SIGTERM)
	done := make(chan struct{})
	go func() { b.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		syscall.Kill(-b.cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
}

func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "model name") {
			if _, v, ok := strings.Cut(l, ":"); ok {
				return strings.TrimSpace(v)
			}
		}
	}
	return runtime.GOARCH
}

func brokerVersions(live []*broker, mosq string) string {
	var parts []string
	for _, b := range live {
		switch b.name {
		case "mosquitto":
			v := strings.TrimSpace(strings.Split(output(mosq, "-h"), "\n")[0])
			parts = append(parts, v)
		case "mochi":
			parts = append(parts, "mochi-mqtt "+strings.TrimSpace(output("go", "list", "-C", "tools/mochi", "-m", "-f", "{{.Version}}", "github.com/mochi-mqtt/server/v2")))
		case "tern":
			parts = append(parts, strings.TrimSpace(output("bin/tern", "version")))
		}
	}
	return strings.Join(parts, "; ")
}

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchcompare:", err)
		os.Exit(1)
	}
}
