//go:build !linux

package main

import "os/exec"

// setDeathSignal has no portable equivalent outside Linux; there the
// harness relies on its own cleanup (deferred kills and the registry).
func setDeathSignal(cmd *exec.Cmd) {}
