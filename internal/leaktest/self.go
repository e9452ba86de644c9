package leaktest

import (
	"os"
	"strings"
	"testing"
)

// SelfComm returns this process's command name as the kernel reports it
// (/proc/self/comm): what closewait shows as its COMMAND.
func SelfComm(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/comm")
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// CountFDs returns how many fds this process has open, for checks that
// something leaks none.
func CountFDs(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}
