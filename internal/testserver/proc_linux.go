package testserver

import "syscall"

// procAttr kills a server when the test process dies before its cleanup
// (a timeout, a closed pipe): no servers are left running.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
