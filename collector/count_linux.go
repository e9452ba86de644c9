package collector

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// countStates adds to counts the TCP sockets in states that pass the
// address filters (families, ports), by state, over sock_diag. It asks for
// no tcp_info and reads only the fixed header of each message, and the
// kernel drops what the port filter rejects (portBytecode), so it costs the
// kernel's walk of the tables and little else: the cheap way for an
// exporter to count the states it does not list.
// A walk per namespace of nss (the caller's alone when nil); one gone
// meanwhile is skipped.
func countStates(ctx context.Context, states StateSet, f Filter, counts StateCounts, nss []netNamespace) error {
	if nss == nil {
		return countStatesIn(ctx, states, f, counts, nil, nil)
	}
	for _, ns := range nss {
		if err := countStatesIn(ctx, states, f, counts, &ns, nil); err != nil && (ns.own || !gone(err)) {
			return err
		}
	}
	return nil
}

// countStatesIn is countStates in one namespace; nil is the caller's.
// With seen, its dumps ask for every socket in a table (every state,
// bound-only sockets too, both families, no port bytecode) and call seen
// with the inode of each, while counting the same sockets as without.
func countStatesIn(ctx context.Context, states StateSet, f Filter, counts StateCounts, ns *netNamespace, seen func(ino uint64)) error {
	var c *netlink.Conn
	var stop func()
	err := withinNetNS(ns, func() (err error) {
		c, stop, err = dialSockDiag(ctx)
		return err
	})
	if err != nil {
		return err
	}
	defer stop()
	ask, bc := states, portBytecode(&f)
	if seen != nil {
		ask, bc = StatesAll|1<<tcpBoundInactive, nil
	}
	for _, af := range []uint8{unix.AF_INET, unix.AF_INET6} {
		// Dual-stack sockets are AF_INET6, as Socket.Family has them.
		counted := states
		if f.IPv4 != f.IPv6 && (af == unix.AF_INET) != f.IPv4 {
			if seen == nil {
				continue
			}
			counted = 0 // seen, not counted
		}
		part := StateCounts{}
		// An interrupted dump's inodes stay seen: they were in a table.
		dump := func() error {
			clear(part)
			return countFamily(c, inetDiagRequest(af, ask, false, bc, nil), counted, &f, part, seen)
		}
		err := retryDump(ctx, dump)
		if bc != nil && errors.Is(err, unix.EINVAL) {
			bc = nil // a kernel without port comparisons: filter here alone
			err = retryDump(ctx, dump)
		}
		if err != nil {
			return fmt.Errorf("counting sockets: %w", err)
		}
		for st, n := range part {
			counts[st] += n
		}
	}
	return nil
}

// countFamily runs one dump and counts what it returns, calling seen
// (unless nil) with the inode of every socket. The states and ports are
// checked again here: the kernel's filter is an optimisation, this one is
// the definition.
func countFamily(c *netlink.Conn, req []byte, states StateSet, f *Filter, counts StateCounts, seen func(ino uint64)) error {
	return dumpEach(c, req, func(m netlink.Message) error {
		b := m.Data
		if seen != nil {
			seen(uint64(binary.NativeEndian.Uint32(b[68:72]))) // idiag_inode
		}
		st := State(b[1])
		if !states.Has(st) {
			return nil
		}
		// Ports are in network byte order (struct inet_diag_sockid).
		sport, dport := binary.BigEndian.Uint16(b[4:6]), binary.BigEndian.Uint16(b[6:8])
		if st == StateListen {
			dport = 0 // as the decoder leaves Remote empty for listeners
		}
		if f.portsMatch(sport, dport) && f.addrsMatch(diagAddr(b[0], b[8:24]), diagAddr(b[0], b[24:40])) {
			counts[st]++
		}
		return nil
	})
}

// diagAddr is an inet_diag_sockid address of family af.
func diagAddr(af uint8, b []byte) netip.Addr {
	if af == unix.AF_INET {
		return netip.AddrFrom4([4]byte(b[:4]))
	}
	return netip.AddrFrom16([16]byte(b[:16]))
}
