package bench

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// clockTicks is USER_HZ, the unit of utime/stime in /proc/<pid>/stat. It is
// 100 on every Linux architecture Go supports.
const clockTicks = 100

// ProcSample is one reading of a process's CPU time and memory.
type ProcSample struct {
	CPUNanos int64 // user + system CPU time so far
	SysNanos int64 // of which system (kernel) time
	RSSBytes int64 // resident set size
}

// SampleProc reads /proc/<pid>/stat and /proc/<pid>/status.
func SampleProc(pid int) (ProcSample, error) {
	var s ProcSample
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, err
	}
	// The command name (field 2) may contain spaces and parentheses: fields
	// are counted from the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return s, fmt.Errorf("bench: unexpected /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// After ')': state(3) ppid(4) … utime(14) stime(15): index = field − 3.
	if len(f) < 13 {
		return s, fmt.Errorf("bench: short /proc/%d/stat", pid)
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	s.CPUNanos = (ut + st) * (1e9 / clockTicks)
	s.SysNanos = st * (1e9 / clockTicks)
	s.RSSBytes, err = procRSS(pid)
	return s, err
}

func procRSS(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "VmRSS:") {
			fs := strings.Fields(line)
			if len(fs) >= 2 {
				kb, err := strconv.ParseInt(fs[1], 10, 64)
				return kb * 1024, err
			}
		}
	}
	return 0, fmt.Errorf("bench: no VmRSS in /proc/%d/status", pid)
}

// SelfCPU returns this process's user + system CPU time in nanoseconds, from
// getrusage (finer than /proc's 10 ms ticks).
func SelfCPU() int64 {
	total, _ := selfCPU()
	return total
}

// selfCPU returns this process's user + system CPU time and the system
// (kernel) part of it, in nanoseconds.
func selfCPU() (total, sys int64) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano(), ru.Stime.Nano()
}

// SelfRSS returns this process's resident set size, or 0 if unknown.
func SelfRSS() int64 {
	n, _ := procRSS(os.Getpid())
	return n
}

// FindListenerPID returns the pid of the process listening on TCP port
// (any local address), by matching the socket inode of the LISTEN entry in
// /proc/net/tcp{,6} against the /proc/<pid>/fd links. It needs permission to
// read the other process's fd directory (same user or root).
func FindListenerPID(port int) (int, error) {
	inodes := map[string]bool{}
	for _, file := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(file)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			f := strings.Fields(line)
			// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
			if len(f) < 10 || f[3] != "0A" { // 0A = TCP_LISTEN
				continue
			}
			c := strings.LastIndexByte(f[1], ':')
			if c < 0 {
				continue
			}
			p, err := strconv.ParseInt(f[1][c+1:], 16, 32)
			if err == nil && int(p) == port {
				inodes["socket:["+f[9]+"]"] = true
			}
		}
	}
	if len(inodes) == 0 {
		return 0, fmt.Errorf("bench: nothing listens on TCP port %d", port)
	}
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, dir := range procs {
		pid, err := strconv.Atoi(filepath.Base(dir))
		if err != nil {
			continue
		}
		fds, err := os.ReadDir(dir + "/fd")
		if err != nil {
			continue
		}
		for _, fd := range fds {
			l, err := os.Readlink(dir + "/fd/" + fd.Name())
			if err == nil && inodes[l] {
				return pid, nil
			}
		}
	}
	return 0, fmt.Errorf("bench: found the listener on port %d but not its process (permissions?); pass --broker-pid", port)
}
