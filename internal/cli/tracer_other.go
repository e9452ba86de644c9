//go:build !linux

package cli

import (
	"context"
	"errors"
	"io"

	"github.com/closewait/closewait/watch"
)

// errTracerLinuxOnly answers tracer off Linux: one line, exit status 2.
var errTracerLinuxOnly = &exitError{code: 2, err: errors.New("tracer is Linux-only: it attaches eBPF programs to the kernel")}

func tracerAction(context.Context, tracerOptions, io.Writer) error {
	return errTracerLinuxOnly
}

// tracerState: no tracer off Linux, and nothing to say of it.
func tracerState(string) watch.TracerState { return watch.TracerUnknown }
