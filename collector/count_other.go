//go:build !linux

package collector

import "context"

// countStates counts with a second listing, without owners: the Windows
// and macOS tables have no cheaper count. CollectCounted needs it only
// with port filters; otherwise the listing counts in its own walk.
func countStates(ctx context.Context, states StateSet, f Filter, counts StateCounts, _ []netNamespace) error {
	snap, err := Collect(ctx, Options{States: states, Filter: f, NoOwners: true})
	if err != nil {
		return err
	}
	for i := range snap.Sockets {
		counts[snap.Sockets[i].State]++
	}
	return nil
}
