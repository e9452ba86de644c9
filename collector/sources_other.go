//go:build !linux && !windows && !darwin

package collector

import "context"

// platformSources lists no sources: this OS has none yet.
func platformSources() []source { return nil }

func resolveOwners(context.Context, string, []Socket, []uint64) (map[uint64][]Owner, []string, error) {
	return nil, nil, nil
}
