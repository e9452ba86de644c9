//go:build !linux

package cli

import (
	"errors"
	"io"

	"github.com/closewait/closewait/internal/exporter"
)

// openTransitions needs the eBPF tracer, which is Linux only.
func openTransitions(io.Writer) (exporter.TransitionSource, func(), error) {
	return nil, nil, errors.New("the eBPF tracer needs Linux")
}
