package vmtest

import (
	"fmt"
	"strings"
)

// ConfigPath is where the guest's init reads its [Config].
const ConfigPath = "/vmtest/config.json"

// GuestEnv is set to "1" for every test binary run in a guest: a test
// that skips where the host cannot give it what it needs (raising
// RLIMIT_NOFILE, say) fails instead in a guest, which can.
const GuestEnv = "CLOSEWAIT_VMTEST_GUEST"

// Config tells the guest's init what to load and what to run.
type Config struct {
	Modules []string // kernel module files, dependencies first
	Env     []string // environment of every test binary
	Tests   []Test
}

// Test is one test binary to run in the guest.
type Test struct {
	Name string   // the package as the host named it, for the log
	Dir  string   // working directory: the package's testdata is copied there
	Path string   // the binary
	Args []string // -test.* flags
}

// Lines the guest prints on its console for the host to read.
const (
	KernelPrefix = "VMTEST-KERNEL " // followed by uname's release, version and machine
	ResultPrefix = "VMTEST-RESULT " // followed by Pass or Fail
	Pass         = "pass"
	Fail         = "fail"
)

// Status is what the host learned from the guest's console.
type Status struct {
	Kernel string // uname of the guest, empty until printed
	Result string // Pass, Fail, or empty when the guest never said
}

// Scan reads one console line into s. Serial consoles end lines with \r\n,
// and kernel messages may share a line with the init's output, so the
// marker is searched for anywhere in the line.
func (s *Status) Scan(line string) {
	line = strings.TrimRight(line, "\r\n")
	if i := strings.Index(line, KernelPrefix); i >= 0 {
		s.Kernel = strings.TrimSpace(line[i+len(KernelPrefix):])
	}
	if i := strings.Index(line, ResultPrefix); i >= 0 {
		switch r := strings.TrimSpace(line[i+len(ResultPrefix):]); r {
		case Pass, Fail:
			s.Result = r
		default:
			s.Result = Fail
		}
	}
}

// KernelLine is the line the guest prints about its kernel.
func KernelLine(release, version, machine string) string {
	return fmt.Sprintf("%s%s %s %s", KernelPrefix, release, version, machine)
}
