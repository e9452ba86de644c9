//go:build !linux

package collector

import "context"

// platformSources lists no sources yet: only Linux is supported for now.
func platformSources() []source { return nil }

func resolveOwners(context.Context, string, []Socket) ([]string, error) { return nil, nil }
