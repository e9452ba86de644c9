//go:build !linux

package harness

import (
	"errors"
	"fmt"
)

// dropper makes a peer vanish; it needs Linux nftables.
type dropper struct{}

func newDropper() (*dropper, error) {
	return nil, fmt.Errorf("dropping a peer's packets needs Linux nftables: %w", errors.ErrUnsupported)
}

func (*dropper) drop([]flow) error { return errors.ErrUnsupported }
func (*dropper) clear() error      { return nil }
func (*dropper) close() error      { return nil }
