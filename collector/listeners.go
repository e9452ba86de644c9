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
	netns uint64 // as Socket.NetNS
	// owners are the holders, when the source read them (ownersKnown).
	owners      []Owner
	ownersKnown bool
}

// listenKey is a listening address: the zero Addr for a wildcard, and
// IPv4-mapped addresses in their IPv4 form, so that a dual-stack
// listener matches its IPv4 clients' sockets.
type listenKey struct {
	netns uint64
	addr  netip.Addr
	port  uint16
}

func keyOf(netns uint64, a netip.AddrPort, wildcard bool) listenKey {
	addr := a.Addr().Unmap()
	if wildcard || addr.IsUnspecified() {
		addr = netip.Addr{}
	}
	return listenKey{netns, addr, a.Port()}
}

// listenerIndex finds the listeners a local address belongs to.
type listenerIndex struct {
	ls  []listener
	idx map[listenKey][]int
}

func newListenerIndex(ls []listener) *listenerIndex {
	x := &listenerIndex{ls: ls, idx: make(map[listenKey][]int, len(ls))}
	for i, l := range ls {
		k := keyOf(l.netns, l.local, false)
		x.idx[k] = append(x.idx[k], i)
	}
	return x
}

// match returns the listeners on local in network namespace netns: those
// on its exact address, else the wildcard ones on its port, as the
// kernel's lookup prefers. Several with SO_REUSEPORT.
func (x *listenerIndex) match(netns uint64, local netip.AddrPort) []int {
	if m := x.idx[keyOf(netns, local, false)]; len(m) > 0 {
		return m
	}
	return x.idx[keyOf(netns, local, true)]
}

// markInbound sets Inbound on every socket whose local address and port
// belong to one of the listeners of its namespace, and the Origin the
// source left unknown, from the ephemeral port range of procRoot's
// namespace.
func markInbound(socks []Socket, ls []listener, procRoot string) {
	eph := readEphemeralPorts(procRoot)
	markInboundNS(socks, ls, func(uint64) portRange { return eph })
}

// markInboundNS is markInbound with each namespace's ephemeral port range
// from eph.
func markInboundNS(socks []Socket, ls []listener, eph func(netns uint64) portRange) {
	x := newListenerIndex(ls)
	for i := range socks {
		s := &socks[i]
		s.Inbound = len(x.match(s.NetNS, s.Local)) > 0
		inferOrigin(s, eph(s.NetNS))
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
		for _, j := range x.match(socks[i].NetNS, socks[i].Local) {
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
			s.Listener = x.holders(s.NetNS, s.Local, owners)
		}
	}
}

// holders returns the holders of the listeners on local, in pid and fd
// order, taken from owners (by inode) where the source did not read them.
func (x *listenerIndex) holders(netns uint64, local netip.AddrPort, owners map[uint64][]Owner) []Owner {
	var holders []Owner
	for _, j := range x.match(netns, local) {
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

// setNetNS sets the namespace of sockets and listeners read from one.
func setNetNS(socks []Socket, ls []listener, netns uint64) {
	for i := range socks {
		socks[i].NetNS = netns
	}
	for i := range ls {
		ls[i].netns = netns
	}
}
