//go:build !unix

package harness

import "os/exec"

func setProcessGroup(*exec.Cmd) {}

// terminate kills outright: there is no SIGTERM to send here.
func terminate(cmd *exec.Cmd) { cmd.Process.Kill() }
func kill(cmd *exec.Cmd)      { cmd.Process.Kill() }
