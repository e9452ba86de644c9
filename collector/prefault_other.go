//go:build !linux

package collector

// prefault is Linux's; elsewhere pages fault in as written.
func prefault[E any]([]E) {}

// prefaultHuge is Linux's.
func prefaultHuge[E any]([]E) {}
