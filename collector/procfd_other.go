//go:build !linux

package collector

import "fmt"

// ReadFDUsage is not supported off Linux yet.
func ReadFDUsage(procRoot string, pid int) (FDUsage, error) {
	return FDUsage{}, fmt.Errorf("reading fd usage is %w on this OS yet", ErrUnsupported)
}

// netlinkFaster is Linux's; elsewhere auto always takes the best source.
func netlinkFaster(query) string { return "" }
