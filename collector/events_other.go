//go:build !linux

package collector

import (
	"context"
	"errors"
	"io"
)

// EventsSupported says whether this build has the tracer's event stream.
const EventsSupported = false

// Events is the tracer's event stream, which needs Linux.
type Events struct{}

// OpenEvents fails: the tracer needs Linux.
func OpenEvents(EventOptions) (*Events, error) {
	return nil, errors.New("the eBPF tracer needs Linux")
}

// Mode is the kernel hook; there is none here.
func (*Events) Mode() string { return "" }

// OwnersErr is nil.
func (*Events) OwnersErr() error { return nil }

// Lost is 0.
func (*Events) Lost() uint64 { return 0 }

// Bad is 0.
func (*Events) Bad() uint64 { return 0 }

// Close does nothing.
func (*Events) Close() error { return nil }

// Next ends at once.
func (*Events) Next(context.Context) ([]Event, error) { return nil, io.EOF }
