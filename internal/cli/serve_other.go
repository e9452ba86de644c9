//go:build !linux

package cli

import (
	"errors"
	"io"

	"github.com/closewait/closewait/report"
)

// openTransitions needs the eBPF tracer, which is Linux only.
func openTransitions(io.Writer) (report.TransitionSource, func(), error) {
	return nil, nil, errors.New("the eBPF tracer needs Linux")
}
