//go:build unix

package testserver

import (
	"fmt"
	"syscall"
	"testing"
)

// ClosedAddr returns a loopback HOST:PORT that refuses connections for
// the rest of the test: a socket is bound there and never listens. A
// port merely closed a moment ago can be taken by anyone meanwhile; a
// bound one cannot, and connect() does not pick it as an ephemeral port.
func ClosedAddr(t testing.TB) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	syscall.CloseOnExec(fd) // servers the test starts must not hold it
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
}
