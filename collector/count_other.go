//go:build !linux

package collector

import (
	"context"
	"fmt"
)

// countStates has no cheap counter outside Linux; CollectCounted falls
// back to a listing without owners.
func countStates(context.Context, StateSet, Filter, StateCounts) error {
	return fmt.Errorf("counting sockets is %w on this OS", ErrUnsupported)
}
