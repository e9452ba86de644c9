//go:build darwin

package collector

import "context"

// AgesKnown says whether a source of this OS knows how long a socket has
// been in CLOSE_WAIT (--older-than needs it).
const AgesKnown = false

// platformSources: gopsutil, which runs lsof, is the one macOS source.
func platformSources() []source { return []source{gopsutilSource{fdKnown: true}} }

// resolveOwners is never needed: lsof names the owners with the sockets.
func resolveOwners(context.Context, string, []Socket, []uint64) (map[uint64][]Owner, []string, error) {
	return nil, nil, nil
}
