package harness

import "syscall"

// setDeathSignal kills the server if closewait dies without stopping it.
func setDeathSignal(a *syscall.SysProcAttr) { a.Pdeathsig = syscall.SIGKILL }
