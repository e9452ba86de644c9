//go:build !linux

package cli

import (
	"context"
	"errors"
	"io"
)

func traceLoop(context.Context, traceOptions, io.Writer, io.Writer) error {
	return errors.New("trace: BPF needs Linux")
}
