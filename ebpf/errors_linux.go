package ebpf

import (
	"errors"
	"os"
	"strings"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

const vmlinuxBTF = "/sys/kernel/btf/vmlinux"

// Capability numbers (linux/capability.h).
const (
	capSysAdmin = 21
	capPerfmon  = 38
	capBPF      = 39
)

// preflight fails fast, before parsing any object, for the common reasons
// BPF cannot work here, so that auto mode falls back in microseconds.
func preflight() error {
	if !canLoadBPF() {
		return &Error{Reason: "not root (BPF needs CAP_BPF and CAP_PERFMON)", Err: ErrPermission}
	}
	if _, err := os.Stat(vmlinuxBTF); err != nil {
		return &Error{Reason: "no kernel BTF (" + vmlinuxBTF + ")", Err: err}
	}
	return nil
}

// canLoadBPF reports whether the effective capabilities allow loading
// tracing programs: CAP_SYS_ADMIN, or CAP_BPF with CAP_PERFMON.
func canLoadBPF() bool {
	if os.Geteuid() == 0 {
		return true
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return false
	}
	has := func(c uint) bool { return data[c/32].Effective&(1<<(c%32)) != 0 }
	return has(capSysAdmin) || (has(capBPF) && has(capPerfmon))
}

// loadError turns a load failure into an Error with a short reason.
func loadError(what string, err error) error {
	var ve *ebpf.VerifierError
	switch {
	case errors.As(err, &ve):
		reason := "verifier refused " + what
		if line := verifierLine(ve.Log); line != "" {
			reason += ": " + line
		}
		return &Error{Reason: reason, Err: err}
	case errors.Is(err, ebpf.ErrNotSupported):
		return &Error{Reason: what + " not supported by this kernel", Err: err}
	case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES):
		return &Error{Reason: "permission denied loading " + what, Err: errors.Join(ErrPermission, err)}
	}
	return &Error{Reason: "loading " + what + ": " + firstLine(err.Error()), Err: err}
}

// verifierLine returns the line of a verifier log that says why: the last
// one, less the statistics the verifier prints after it.
func verifierLine(log []string) string {
	for i := len(log) - 1; i >= 0; i-- {
		line := strings.TrimSpace(log[i])
		if line == "" || strings.HasPrefix(line, "processed ") || strings.HasPrefix(line, "verification time") ||
			strings.HasPrefix(line, "stack depth") {
			continue
		}
		return line
	}
	return ""
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
