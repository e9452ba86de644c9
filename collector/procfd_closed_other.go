//go:build !linux

package collector

import "context"

// resolveOwnersClosed is resolveOwners: only Linux finds closed sockets
// through fds.
func resolveOwnersClosed(ctx context.Context, procRoot string, socks []Socket, extra []uint64, _ bool, _ []netNamespace) (map[uint64][]Owner, []closedFD, []string, error) {
	owners, warnings, err := resolveOwners(ctx, procRoot, socks, extra)
	return owners, nil, warnings, err
}

// closedFD is a socket fd: none off Linux.
type closedFD struct{}

// closedSockets has nothing to confirm off Linux.
func closedSockets(context.Context, string, string, []closedFD, []netNamespace, *tableCount) ([]Socket, []string, error) {
	return nil, nil, nil
}
