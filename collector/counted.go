package collector

import (
	"context"
	"errors"
	"fmt"
	"slices"
)

// StateCounts counts sockets per TCP state.
type StateCounts map[State]int

// CollectCounted is Collect for exporters: the snapshot of the sockets in
// opts.States (CLOSE_WAIT by default) with owners, exactly as a listing
// gets it, plus a count of every TCP socket by state.
//
// The other states are only counted. The eBPF source counts them in the
// kernel, in the walk of the TCP tables its listing makes anyway, so a
// scrape costs one listing. Otherwise, or with port filters (the kernel
// counts whole families), a second dump counts them: sock_diag without
// tcp_info, reading only each message's fixed header (countStates), or
// /proc/net/tcp when the listing had to use procfs or sock_diag is missing.
// When the listing looks for closed sockets (CLOSE) through /proc, the dump
// of every state that confirms them after the fd scan is that count too
// (tableCount).
// (A single dump of every state would cost more: the eBPF source maps
// owners for every state it is asked for, and the netlink source decodes
// tcp_info for each.) The counts and the listing are not one atomic view:
// a socket that changes state meanwhile may be counted in both states or
// in neither.
//
// With the procfs source, which reads every socket whatever its state, one
// read serves both: see collectCountedProcfs.
//
// Counts of the states in opts.States are the snapshot's sockets, so they
// honour the whole filter; counts of the other states honour the address
// filters only (families, ports), as owners are not looked up for them.
func CollectCounted(ctx context.Context, opts Options) (*Snapshot, StateCounts, error) {
	if opts.Source == SourceProcfs {
		return collectCountedProcfs(ctx, opts)
	}
	f := opts.Filter
	listed := opts.withDefaults().States
	rest := StatesAll &^ listed
	addr := opts.Filter.addrOnly()
	var tc *tableCount
	if rest != 0 {
		tc = &tableCount{states: rest, filter: addr}
	}
	snap, all, err := gather(ctx, opts, f.inKernel(), tc)
	if err != nil {
		return nil, nil, err
	}
	counts := newStateCounts()
	for i := range snap.Sockets {
		counts[snap.Sockets[i].State]++
	}
	if rest == 0 {
		return snap, counts, nil
	}
	if all != nil {
		for af, part := range all {
			if f.IPv4 != f.IPv6 && (af == 0) != f.IPv4 {
				continue // [0] is IPv4
			}
			for st, n := range part {
				if rest.Has(st) {
					counts[st] += n
				}
			}
		}
		return snap, counts, nil
	}
	if tc.counts != nil { // counted by the dump that confirmed closed sockets
		for st, n := range tc.counts {
			counts[st] += n
		}
		return snap, counts, nil
	}
	if snap.Source != SourceProcfs {
		part := StateCounts{}
		err := countStates(ctx, rest, addr, part, snap.nets)
		if err == nil {
			for st, n := range part {
				counts[st] += n
			}
			return snap, counts, nil
		}
		if ctx.Err() != nil || !errors.Is(err, ErrUnsupported) {
			return nil, nil, err
		}
	}
	// Without sock_diag: /proc/net/tcp, through a listing without owners.
	co := opts
	co.Source = SourceProcfs
	co.States = rest
	co.NoOwners = true
	co.Filter = addr
	others, err := Collect(ctx, co)
	if err != nil {
		return nil, nil, fmt.Errorf("counting the other states: %w", err)
	}
	for i := range others.Sockets {
		counts[others.Sockets[i].State]++
	}
	return snap, counts, nil
}

// collectCountedProcfs is CollectCounted for the procfs source. The kernel
// prints every socket into /proc/net/tcp whatever the states asked for, so
// reading it once for all states costs the same as a listing: the sockets
// come without owners, and owners are then looked up for the listed states
// only, as Collect would.
func collectCountedProcfs(ctx context.Context, opts Options) (*Snapshot, StateCounts, error) {
	opts = opts.withDefaults()
	listed := opts.States
	wide := opts
	// CLOSE sockets are in no table: the owner scan below finds them.
	wide.States = StatesAll &^ setOf(StateClose)
	wide.NoOwners = true
	wide.Filter = opts.Filter.addrOnly()
	snap, err := Collect(ctx, wide)
	if err != nil {
		return nil, nil, err
	}
	counts := newStateCounts()
	kept := snap.Sockets[:0]
	for _, s := range snap.Sockets {
		if listed.Has(s.State) {
			kept = append(kept, s)
		} else {
			counts[s.State]++
		}
	}
	closedVia := ""
	if listed.Has(StateClose) {
		closedVia = SourceProcfs
	}
	if !opts.NoOwners || closedVia != "" {
		mine, listeners := kept, snap.listeners
		if opts.NoOwners {
			mine, listeners = nil, nil
		}
		closed, warnings, err := findOwners(ctx, opts.ProcRoot, mine, listeners, false, closedVia, snap.nets, nil)
		if err != nil {
			return nil, nil, err
		}
		snap.Warnings = append(snap.Warnings, warnings...)
		kept = append(kept, closed...)
	}
	out := kept[:0]
	for i := range kept {
		s := &kept[i]
		Classify(s) // again, now that owners are known
		if opts.Filter.Match(s) {
			out = append(out, *s)
			counts[s.State]++
		}
	}
	snap.Sockets = slices.Clip(out) // Collect sorted them; filtering keeps the order
	return snap, counts, nil
}

// tableCount asks the dump of every state that confirms closed sockets
// (closedSockets, over sock_diag) to count the sockets in states that pass
// filter as well, as countStates would: a scrape then walks the tables
// once for both, not twice.
type tableCount struct {
	states StateSet
	filter Filter      // address conditions only
	counts StateCounts // nil until a dump counted
}

// newStateCounts returns counts with every state present, so that a zero
// is a zero and not a gap.
func newStateCounts() StateCounts {
	counts := make(StateCounts, len(AllStates))
	for _, st := range AllStates {
		counts[st] = 0
	}
	return counts
}
