//go:build !linux

package collector

import "context"

// platformSources lists no sources yet: only Linux is supported for now.
func platformSources() []source { return nil }

func resolveOwners(context.Context, string, []Socket, []uint64) (map[uint64][]Owner, []string, error) {
	return nil, nil, nil
}
