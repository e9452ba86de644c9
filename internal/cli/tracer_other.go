//go:build !linux

package cli

import (
	"context"
	"errors"
	"io"
)

func tracerAction(context.Context, tracerOptions, io.Writer) error {
	return errors.New("tracer: BPF needs Linux")
}
