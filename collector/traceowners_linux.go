package collector

import (
	"context"

	"github.com/closewait/closewait/ebpf"
)

// ProcOwnerIndex answers "who holds this socket" for trace events from
// scans of every process's fd table under /proc, for kernels that refuse
// the BPF iterator (iterOwners). It knows sockets by inode, so events
// of the classic tracepoint, which carry none, get no owners.
type ProcOwnerIndex struct {
	procRoot  string
	cur, prev map[uint64][]ebpf.Owner
	scanned   uint64 // CLOCK_MONOTONIC at the start of the last scan
}

// NewProcOwnerIndex takes a first scan of procRoot ("" means /proc).
func NewProcOwnerIndex(procRoot string) (*ProcOwnerIndex, error) {
	if procRoot == "" {
		procRoot = "/proc"
	}
	x := &ProcOwnerIndex{procRoot: procRoot}
	if err := x.Scan(); err != nil {
		return nil, err
	}
	return x, nil
}

// Scan takes a new snapshot.
func (x *ProcOwnerIndex) Scan() error {
	start := ebpf.Monotonic()
	owners, _, err := scanOwners(context.Background(), x.procRoot, nil)
	if err != nil {
		return err
	}
	next := make(map[uint64][]ebpf.Owner, len(owners))
	for ino, held := range owners {
		eo := make([]ebpf.Owner, len(held))
		for i, o := range held {
			eo[i] = ebpf.Owner{PID: o.PID, Comm: o.Comm, FD: o.FD}
		}
		next[ino] = eo
	}
	x.prev, x.cur, x.scanned = x.cur, next, start
	return nil
}

// Lookup returns the owners the snapshots know for the event's socket.
func (x *ProcOwnerIndex) Lookup(e *ebpf.Event) ([]ebpf.Owner, bool) {
	if e.Inode == 0 {
		return nil, false
	}
	if o, ok := x.cur[e.Inode]; ok {
		return o, true
	}
	o, ok := x.prev[e.Inode]
	return o, ok
}

// Stale reports whether a new scan could find owners the index lacks for e.
func (x *ProcOwnerIndex) Stale(e *ebpf.Event) bool {
	_, ok := x.Lookup(e)
	return !ok && e.Inode != 0 && e.Time >= x.scanned && mayHaveFD(e)
}

// Close releases nothing; it completes the owner index's method set.
func (x *ProcOwnerIndex) Close() error { return nil }
