package collector

import (
	"net/netip"
	"slices"
)

// listener is a listening socket as a source saw it: where it listens,
// and its inode, which names the processes holding it.
type listener struct {
	local netip.AddrPort
	inode uint64
	// owners are the holders, when the source read them (ownersKnown).
	owners      []Owner
	ownersKnown bool
}

// listenKey is a listening address: the zero Addr for a wildcard, and
// IPv4-mapped addresses in their IPv4 form, so that a dual-stack
// listener matches its IPv4 clients' sockets.
type listenKey struct {
	addr netip.Addr
	port uint16
}

func keyOf(a netip.AddrPort, wildcard bool) listenKey {
	addr := a.Addr().Unmap()
	if wildcard || addr.IsUnspecified() {
		addr = netip.Addr{}
	}
	return listenKey{addr, a.Port()}
}

// listenerIndex finds the listeners a local address belongs to.
type listenerIndex struct {
	ls  []listener
	idx map[listenKey][]int
}

func newListenerIndex(ls []listener) *listenerIndex {
	x := &listenerIndex{ls: ls, idx: make(map[listenKey][]int, len(ls))}
	for i, l := range ls {
		k := keyOf(l.local, false)
		x.idx[k] = append(x.idx[k], i)
	}
	return x
}

// match returns the listeners on local: those on its exact address, else
// the wildcard ones on its port, as the kernel's lookup prefers. Several
// with SO_REUSEPORT.
func (x *listenerIndex) match(local netip.AddrPort) []int {
	if m := x.idx[keyOf(local, false)]; len(m) > 0 {
		return m
	}
	return x.idx[keyOf(local, true)]
}

// markInbound sets Inbound on every socket whose local address and port
// belong to one of the listeners, and the Origin the source left unknown.
func markInbound(socks []Socket, ls []listener, procRoot string) {
	x := newListenerIndex(ls)
	eph := readEphemeralPorts(procRoot)
	for i := range socks {
		socks[i].Inbound = len(x.match(socks[i].Local)) > 0
		inferOrigin(&socks[i], eph)
	}
}

// portRange is net.ipv4.ip_local_port_range; the zero value (unreadable)
// contains no port.
type portRange struct{ lo, hi uint16 }

func (r portRange) contains(p uint16) bool { return r.lo != 0 && p >= r.lo && p <= r.hi }

// inferOrigin sets an unknown Origin from what every source sees: a
// listener on the local address means accepted; no listener and an
// ephemeral local port, connected. A drained server's port outside the
// range stays unknown rather than guessed.
func inferOrigin(s *Socket, eph portRange) {
	switch {
	case s.Origin != OriginUnknown || s.State == StateListen:
	case s.Inbound:
		s.Origin = OriginAccepted
	case eph.contains(s.Local.Port()):
		s.Origin = OriginConnected
	}
}

// queued reports whether s waits in a listener's accept queue: a
// connection with no struct socket yet. Orphans (closed by their
// application: FIN_WAIT, LAST_ACK, ...) and time-wait sockets have none
// either, but are not queued.
func queued(s *Socket) bool {
	if s.Inode != 0 || s.InodeUnknown || !s.Inbound {
		return false
	}
	switch s.State {
	case StateEstablished, StateCloseWait, StateSynRecv:
		return true
	}
	return false
}

// listenerInodes returns the inodes of the listeners that queued sockets
// among socks wait on and whose owners the source did not read.
func (x *listenerIndex) unknownInodes(socks []Socket) []uint64 {
	var out []uint64
	for i := range socks {
		if !queued(&socks[i]) {
			continue
		}
		for _, j := range x.match(socks[i].Local) {
			if l := &x.ls[j]; !l.ownersKnown && l.inode != 0 && !slices.Contains(out, l.inode) {
				out = append(out, l.inode)
			}
		}
	}
	return out
}

// attribute sets Listener on every queued socket: the holders of the
// listeners it waits on, taken from owners (by inode) where the source did
// not read them.
func (x *listenerIndex) attribute(socks []Socket, owners map[uint64][]Owner) {
	for i := range socks {
		if s := &socks[i]; queued(s) {
			s.Listener = x.holders(s.Local, owners)
		}
	}
}

// holders returns the holders of the listeners on local, in pid and fd
// order, taken from owners (by inode) where the source did not read them.
func (x *listenerIndex) holders(local netip.AddrPort, owners map[uint64][]Owner) []Owner {
	var holders []Owner
	for _, j := range x.match(local) {
		l := &x.ls[j]
		o := l.owners
		if !l.ownersKnown {
			o = owners[l.inode]
		}
		for _, h := range o {
			if !slices.Contains(holders, h) {
				holders = append(holders, h)
			}
		}
	}
	sortOwners(holders)
	return holders
}
