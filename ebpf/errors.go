package ebpf

import (
	"errors"
	"fmt"
	"io"
)

// Error is a failure to load or attach BPF programs. Its message is a short
// reason fit for one line ("not root", "verifier refused dump_tcp", ...);
// formatted with %+v it adds the cause, including the whole verifier log.
type Error struct {
	Reason string
	Err    error
}

func (e *Error) Error() string { return e.Reason }

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Format prints the reason; %+v adds the cause with its details.
func (e *Error) Format(f fmt.State, verb rune) {
	if verb != 'v' || !f.Flag('+') || e.Err == nil {
		io.WriteString(f, e.Reason)
		return
	}
	fmt.Fprintf(f, "%s: %v", e.Reason, e.Err)
	// fmt's wrapping errors drop the + flag: find the innermost cause
	// that formats itself (cilium/ebpf's VerifierError prints its log).
	var detailed fmt.Formatter
	for err := e.Err; err != nil; err = errors.Unwrap(err) {
		if ff, ok := err.(fmt.Formatter); ok {
			detailed = ff
		}
	}
	if detailed != nil {
		fmt.Fprintf(f, "\n%+v", detailed)
	}
}

// ErrPermission is wrapped by errors from a process that may not load BPF.
var ErrPermission = errors.New("permission denied")

// RefuseEnv names the environment variable that makes the verifier refuse
// programs on purpose: a comma list of program names (dump_task_file,
// dump_tcp, on_set_state, ...). Tests use it to prove that one refusal
// turns off only what needs that program, in this process or in a
// closewait binary they run.
const RefuseEnv = "CLOSEWAIT_BPF_REFUSE"
