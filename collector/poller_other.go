//go:build !linux

package collector

import "context"

// newLeanDumper has nothing cheaper to offer off Linux: every poll is full.
func newLeanDumper(source, string, StateSet, Filter) leanDumper { return nil }

func probeFDs(_ string, _ []int, _ map[int]*ownedFDs, want map[uint64][]Owner) int { return len(want) }

func scanKnownPIDs(_ context.Context, _ string, _ []int, _ map[int]*ownedFDs, want map[uint64][]Owner) int {
	return len(want)
}

func pidAlive(string, int) bool { return true }
