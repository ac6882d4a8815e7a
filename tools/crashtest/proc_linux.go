package main

import (
	"os/exec"
	"syscall"
)

// setDeathSignal asks the kernel to SIGKILL the broker if the harness dies
// first (a crash, or `go test` killing a timed-out test binary), so no
// `tern` outlives its run. Strictly the signal follows the OS thread that
// forked the child; the Go runtime does not retire threads of goroutines
// that never locked one, so in practice it follows the process.
func setDeathSignal(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
