package collector

import (
	"net/netip"
	"slices"

	"github.com/closewait/closewait/ebpf"
)

// iterOwners answers "who holds this socket" for trace events. The task
// current when a socket changes state is usually not its owner (the
// change runs in softirq), so owners come from iter/task_file snapshots:
// one at start, and a new one when an event names a socket the last
// snapshot did not know and that changed state after that snapshot began.
// A socket leaving CLOSE_WAIT has usually lost its fd already, so its
// owner is the one remembered from the snapshots; the previous snapshot is
// kept for a socket closed while a new one ran.
type iterOwners struct {
	it        *ebpf.Iterators
	byTuple   bool // classic tracepoint events have no cookie
	cur, prev map[ownerKey][]ebpf.Owner
	scanned   uint64            // CLOCK_MONOTONIC at the start of the last snapshot
	comms     map[uint32]string // by tgid, as of the last snapshot
}

// ownerKey names a socket: by inode, or by cookie when an event has no
// inode, or by its addresses for the classic tracepoint's events.
type ownerKey struct {
	inode, cookie uint64
	local, remote netip.AddrPort
}

// newIterOwners loads iter/task_file for every TCP state and takes the
// first snapshot. byTuple keys sockets by their addresses instead of their
// cookie, for ModeTracepoint events.
func newIterOwners(byTuple, allNetNS bool) (*iterOwners, error) {
	it, err := ebpf.LoadIterators(ebpf.IterOptions{States: ^uint32(0), OwnersOnly: true, AllNetNS: allNetNS})
	if err != nil {
		return nil, err
	}
	x := &iterOwners{it: it, byTuple: byTuple, comms: map[uint32]string{}}
	if err := x.Scan(); err != nil {
		it.Close()
		return nil, err
	}
	return x, nil
}

func (x *iterOwners) key(inode, cookie uint64, local, remote netip.AddrPort) ownerKey {
	switch {
	case x.byTuple:
		return ownerKey{local: local, remote: remote}
	case inode != 0:
		return ownerKey{inode: inode}
	}
	return ownerKey{cookie: cookie}
}

// Scan takes a new snapshot.
func (x *iterOwners) Scan() error {
	start := ebpf.Monotonic()
	next := make(map[ownerKey][]ebpf.Owner, len(x.cur))
	// Only the live processes' names are kept: a long trace on a host
	// that starts many processes must not grow without end.
	comms := make(map[uint32]string, len(x.comms))
	err := x.it.Files(func(r *ebpf.Record) {
		comm, ok := comms[r.TGID]
		if !ok {
			comm, ok = x.comms[r.TGID]
			if !ok || !ebpf.SameComm(comm, r.Comm[:]) {
				comm = r.CommString()
			}
			comms[r.TGID] = comm
		}
		o := ebpf.Owner{PID: int(r.TGID), Comm: comm, FD: int(r.FD)}
		add := func(k ownerKey) {
			if !slices.Contains(next[k], o) {
				next[k] = append(next[k], o)
			}
		}
		add(x.key(r.Inode, r.Cookie, r.Local, r.Remote))
		if !x.byTuple && r.Cookie != 0 {
			// For events without an inode: the record has the cookie
			// only if the kernel made one before.
			add(ownerKey{cookie: r.Cookie})
		}
	})
	if err != nil {
		return err
	}
	x.prev, x.cur, x.scanned, x.comms = x.cur, next, start, comms
	return nil
}

// Lookup returns the owners the snapshots know for the event's socket.
func (x *iterOwners) Lookup(e *ebpf.Event) ([]ebpf.Owner, bool) {
	k := x.key(e.Inode, e.Cookie, e.Local, e.Remote)
	if o, ok := x.cur[k]; ok {
		return o, true
	}
	o, ok := x.prev[k]
	return o, ok
}

// Stale reports whether a new snapshot could find owners the index lacks
// for e: the socket is unknown, changed state after the last snapshot
// began, and may still be held by an fd.
func (x *iterOwners) Stale(e *ebpf.Event) bool {
	_, ok := x.Lookup(e)
	return !ok && e.Time >= x.scanned && mayHaveFD(e)
}

// mayHaveFD reports whether the socket of e may be held by an fd after
// the transition: not when it is gone, not yet accepted, or closed by its
// application.
func mayHaveFD(e *ebpf.Event) bool {
	classic := e.Flags&ebpf.EvClassic != 0
	if !classic && e.Inode == 0 {
		return false // no file: not accepted yet, or closed already
	}
	switch State(e.NewState) {
	case StateTimeWait, StateListen, StateSynRecv, StateNewSynRecv:
		return false // gone, or not yet accepted
	case StateClose:
		// With a file, the socket may have been reset under an fd that
		// is still open (a leak whose peer gave up). The classic
		// tracepoint cannot tell that from a closed one.
		return !classic
	}
	// Leaving CLOSE_WAIT for LAST_ACK is close() (or shutdown(), rarer):
	// the fd is gone.
	return !(State(e.OldState) == StateCloseWait && State(e.NewState) == StateLastAck)
}

// Close releases the iterator.
func (x *iterOwners) Close() error { return x.it.Close() }
