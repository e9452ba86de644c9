package collector

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"syscall"

	gnet "github.com/shirou/gopsutil/v4/net"
)

// SourceGopsutil is the portable source: gopsutil's net.Connections, the
// only one on macOS and the fallback on Windows.
const SourceGopsutil = "gopsutil"

// gopsutilSource lists TCP sockets through gopsutil v4 (GetExtendedTcpTable
// owner-PID tables on Windows, lsof on macOS). It gives state, addresses
// and the owner's PID; no queues, inode or age.
type gopsutilSource struct {
	// fdKnown: ConnectionStat.Fd is a real descriptor (lsof gives one;
	// Windows does not, and gopsutil leaves 0 there).
	fdKnown bool
}

func (gopsutilSource) name() string { return SourceGopsutil }

func (g gopsutilSource) dump(ctx context.Context, q query) (dumpResult, error) {
	conns, err := gnet.ConnectionsWithContext(ctx, "tcp")
	if err != nil {
		return dumpResult{}, err
	}
	res, pids := g.fromConnections(conns, q)
	if q.owners {
		nameOwners(ctx, res.sockets, pids)
	}
	return res, nil
}

// fromConnections turns gopsutil's connections into the sockets q asks
// for and every listener; pids are the owners' processes to name.
func (g gopsutilSource) fromConnections(conns []gnet.ConnectionStat, q query) (dumpResult, []int) {
	var res dumpResult
	var pids []int
	// lsof lists a socket once per fd holding it: one Socket for them all.
	type tuple struct{ local, remote netip.AddrPort }
	seen := map[tuple]int{}
	var counted map[tuple]bool
	if q.countAll {
		res.counts = &[2]StateCounts{{}, {}}
		counted = map[tuple]bool{}
	}
	for _, c := range conns {
		s, ok := g.socketOf(c)
		if !ok {
			continue
		}
		if k := (tuple{s.Local, s.Remote}); res.counts != nil && (s.State == StateListen || !counted[k]) {
			counted[k] = true
			af := 0 // [0] IPv4, [1] IPv6
			if s.Family == FamilyIPv6 {
				af = 1
			}
			res.counts[af][s.State]++
		}
		if s.State == StateListen {
			res.listeners = append(res.listeners, listener{local: s.Local, owners: s.Owners, ownersKnown: true})
		}
		if !q.states.Has(s.State) || !q.filter.matchSocket(&s) {
			continue
		}
		for _, o := range s.Owners {
			pids = append(pids, o.PID)
		}
		k := tuple{s.Local, s.Remote}
		if i, ok := seen[k]; ok && s.State != StateListen {
			res.sockets[i].Owners = append(res.sockets[i].Owners, s.Owners...)
			continue
		}
		seen[k] = len(res.sockets)
		res.sockets = append(res.sockets, s)
	}
	markInbound(res.sockets, res.listeners, q.procRoot)
	for i := range res.sockets {
		if q.owners {
			sortOwners(res.sockets[i].Owners)
		} else {
			res.sockets[i].Owners = nil
		}
	}
	res.ownersDone = true
	return res, pids
}

// socketOf converts one gopsutil connection; ok is false for what is not
// a TCP socket with a known state.
func (g gopsutilSource) socketOf(c gnet.ConnectionStat) (Socket, bool) {
	st, ok := parseStatus(c.Status)
	if !ok || c.Type != syscall.SOCK_STREAM {
		return Socket{}, false
	}
	s := Socket{State: st, QueuesUnknown: true, InodeUnknown: true, UIDUnknown: len(c.Uids) == 0}
	if len(c.Uids) > 0 {
		s.UID = uint32(c.Uids[0])
	}
	var err error
	if s.Local, err = addrPort(c.Laddr, c.Family); err != nil {
		return Socket{}, false
	}
	if s.Remote, err = addrPort(c.Raddr, c.Family); err != nil {
		return Socket{}, false
	}
	if st == StateListen {
		s.Remote = netip.AddrPort{}
	}
	s.Family = FamilyIPv4
	if c.Family == syscall.AF_INET6 {
		s.Family = FamilyIPv6
	}
	if c.Pid > 0 {
		fd := -1
		if g.fdKnown {
			fd = int(c.Fd)
		}
		s.Owners = []Owner{{PID: int(c.Pid), FD: fd}}
	}
	return s, true
}

// addrPort parses gopsutil's address. lsof's "*" (a wildcard listener) is
// the unspecified address; with no port either (a listener's remote end)
// it is the zero AddrPort, which reports print as "*".
func addrPort(a gnet.Addr, family uint32) (netip.AddrPort, error) {
	if a.IP == "" || a.IP == "*" {
		if a.Port == 0 {
			return netip.AddrPort{}, nil
		}
		if family == syscall.AF_INET6 {
			return netip.AddrPortFrom(netip.IPv6Unspecified(), uint16(a.Port)), nil
		}
		return netip.AddrPortFrom(netip.IPv4Unspecified(), uint16(a.Port)), nil
	}
	ip, err := netip.ParseAddr(a.IP)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("address %q: %w", a.IP, err)
	}
	return netip.AddrPortFrom(ip, uint16(a.Port)), nil
}

// parseStatus reads a state as gopsutil spells it on each OS: "CLOSE_WAIT"
// everywhere, "FIN_WAIT_1" or "FIN_WAIT1", "SYN_RECEIVED" or "SYN_RECV",
// "CLOSED" or "CLOSE", Windows' "DELETE".
func parseStatus(status string) (State, bool) {
	switch strings.ReplaceAll(strings.ToUpper(status), "_", "") {
	case "ESTABLISHED":
		return StateEstablished, true
	case "SYNSENT":
		return StateSynSent, true
	case "SYNRECV", "SYNRECEIVED":
		return StateSynRecv, true
	case "FINWAIT1":
		return StateFinWait1, true
	case "FINWAIT2":
		return StateFinWait2, true
	case "TIMEWAIT":
		return StateTimeWait, true
	case "CLOSE", "CLOSED", "DELETE":
		return StateClose, true
	case "CLOSEWAIT":
		return StateCloseWait, true
	case "LASTACK":
		return StateLastAck, true
	case "LISTEN":
		return StateListen, true
	case "CLOSING":
		return StateClosing, true
	}
	return 0, false
}
