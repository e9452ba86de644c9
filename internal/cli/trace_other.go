//go:build !linux

package cli

import (
	"context"
	"errors"
	"io"
)

// errTraceLinuxOnly answers trace off Linux: one line, exit status 2.
var errTraceLinuxOnly = &exitError{code: 2, err: errors.New("trace is Linux-only: it reads the kernel's TCP state changes through eBPF")}

func traceLoop(context.Context, traceOptions, io.Writer, io.Writer) error {
	return errTraceLinuxOnly
}
