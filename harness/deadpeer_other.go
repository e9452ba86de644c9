//go:build !linux

package harness

import (
	"errors"
	"fmt"

	"github.com/closewait/closewait/collector"
)

// dropper makes a peer vanish; it needs Linux nftables.
type dropper struct{}

// newDropper fails; on Windows the error names the system keepalive
// defaults, what a server there relies on to notice a vanished peer.
func newDropper() (*dropper, error) {
	if note := collector.KeepaliveDefaultsNote(); note != "" {
		return nil, fmt.Errorf("dropping a peer's packets needs Linux nftables: %w (%s)", errors.ErrUnsupported, note)
	}
	return nil, fmt.Errorf("dropping a peer's packets needs Linux nftables: %w", errors.ErrUnsupported)
}

func (*dropper) drop([]flow) error { return errors.ErrUnsupported }
func (*dropper) clear() error      { return nil }
func (*dropper) close() error      { return nil }
