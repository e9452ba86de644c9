package collector

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strconv"
	"unsafe"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// A TCP socket the kernel has closed (CLOSE) is in no socket table, so
// the netlink and procfs sources find it through the fds that hold it.
// The owner scan, which reads every fd anyway, notes the socket fds whose
// inode the listing did not want. closedSockets then drops those whose
// inode is in a table of a dump of every state made after the scan: a
// socket opened after the listing's dump was in a table or in CLOSE by
// then. Of the rest, it keeps the TCP sockets (the sockfs xattr
// system.sockprotoname); unix, UDP and other sockets are in no TCP table
// either. Checking the xattr last costs a syscall per socket fd outside
// every TCP table, not per socket fd.
//
// A TCP socket never connected (socket() before connect() or listen())
// is in CLOSE and in no table too: peekClosed tells it apart where it may
// read the socket. The addresses, queues and sk_err of a closed socket
// are in no table and not in tcp_info: unknown here, where the ebpf
// source reads them from the socket.

// closedFD is a socket fd whose inode the listing did not want.
type closedFD struct {
	ino     uint64
	pid, fd int32
	netns   uint64 // of the process
}

// sockProtoName is the sockfs xattr naming a socket's protocol.
var sockProtoName = []byte("system.sockprotoname\x00")

// listedNetNS returns the network namespace of pid, and whether it is one
// whose tables are read: only there does "in no table" mean closed. (When
// ours is unknown, 0, every process.)
func (sc *ownerScan) listedNetNS(pid int) (uint64, bool) {
	if sc.nets[0] {
		return 0, true
	}
	var st unix.Stat_t
	if err := unix.Stat(sc.procRoot+"/"+strconv.Itoa(pid)+"/ns/net", &st); err != nil || !sc.nets[st.Ino] {
		sc.otherNet.Add(1)
		return 0, false
	}
	return st.Ino, true
}

// closedSockets returns a CLOSE socket for each inode of cands that is in
// no TCP table of a dump of every state made now in its holder's namespace
// (one of nss; nil: the caller's), by sock_diag, or /proc/net/tcp for the
// procfs source or without sock_diag, and that is TCP, holders in pid and
// fd order. Where peekClosed can read the socket it drops those never
// connected and sets the uid. With tc (CollectCounted), the dumps that
// count tc's states are those dumps (confirmCounting). It sorts cands.
func closedSockets(ctx context.Context, procRoot, source string, cands []closedFD, nss []netNamespace, tc *tableCount) ([]Socket, []string, error) {
	if len(cands) == 0 {
		return nil, nil, nil
	}
	// Each namespace's candidates in a run, each run in inode order, for
	// a binary search per socket dumped.
	slices.SortFunc(cands, func(a, b closedFD) int {
		return cmp.Or(cmp.Compare(a.netns, b.netns), cmp.Compare(a.ino, b.ino))
	})
	// listed[i]: cands[i] is in a table, or its namespace is gone: not
	// closed.
	listed := make([]bool, len(cands))
	counted := false
	if tc != nil && source != SourceProcfs {
		err := confirmCounting(ctx, procRoot, tc, cands, nss, listed)
		if err != nil && (ctx.Err() != nil || !errors.Is(err, ErrUnsupported)) {
			return nil, nil, fmt.Errorf("confirming closed sockets: %w", err)
		}
		counted = err == nil // else, without sock_diag, CollectCounted counts apart
	}
	if !counted {
		if err := confirmByTables(ctx, procRoot, source, cands, candRuns(cands, nss), nss, listed); err != nil {
			return nil, nil, fmt.Errorf("confirming closed sockets: %w", err)
		}
	}
	byIno := map[uint64][]Owner{}
	netnsOf := map[uint64]uint64{}
	for i, c := range cands {
		if !listed[i] {
			byIno[c.ino] = append(byIno[c.ino], Owner{PID: int(c.pid), FD: int(c.fd)})
			netnsOf[c.ino] = c.netns
		}
	}
	own := netnsInode(procRoot)
	comms := map[int]string{}
	var socks []Socket
	var peekErr error
	for ino, owners := range byIno {
		sortOwners(owners)
		o := owners[0]
		fam, ok := tcpFamily(procRoot, o.PID, o.FD)
		if !ok {
			continue
		}
		netns := netnsOf[ino]
		if netns == 0 {
			netns = own
		}
		s := Socket{Family: fam, State: StateClose, Inode: ino, NetNS: netns,
			QueuesUnknown: true, UIDUnknown: true, SockErrUnknown: true}
		p, err := peekClosed(o.PID, o.FD, ino)
		switch {
		case err != nil:
			peekErr = err
		case !p.closed:
			continue
		default:
			s.UID, s.UIDUnknown = p.uid, false
		}
		for i := range owners {
			pid := owners[i].PID
			comm, ok := comms[pid]
			if !ok {
				comm = readComm(procRoot, pid)
				comms[pid] = comm
			}
			owners[i].Comm = comm
		}
		s.Owners = owners
		socks = append(socks, s)
	}
	// By holder: the map's order would change from run to run.
	slices.SortFunc(socks, func(a, b Socket) int {
		return cmp.Or(cmp.Compare(a.Owners[0].PID, b.Owners[0].PID), cmp.Compare(a.Owners[0].FD, b.Owners[0].FD))
	})
	var warnings []string
	if peekErr != nil {
		warnings = append(warnings, fmt.Sprintf("reading closed sockets (%v): sockets never connected may be listed as closed", peekErr))
	}
	return socks, warnings, nil
}

// candRun is a run of the sorted candidates of one namespace: nss[ns], or
// the caller's with -1.
type candRun struct {
	lo, hi int
	ns     int
}

// candRuns cuts the sorted cands into runs of one namespace each.
func candRuns(cands []closedFD, nss []netNamespace) []candRun {
	var runs []candRun
	for lo := 0; lo < len(cands); {
		hi := lo + 1
		for hi < len(cands) && cands[hi].netns == cands[lo].netns {
			hi++
		}
		ns := slices.IndexFunc(nss, func(n netNamespace) bool { return n.inode == cands[lo].netns })
		runs = append(runs, candRun{lo, hi, ns})
		lo = hi
	}
	return runs
}

// confirmByTables marks in listed the candidates of runs that are in a
// table of a dump of every state made now in their namespace (tableInodes),
// or all of a namespace gone meanwhile: one dump per namespace.
func confirmByTables(ctx context.Context, procRoot, source string, cands []closedFD, runs []candRun, nss []netNamespace, listed []bool) error {
	for i, r := range runs {
		if slices.ContainsFunc(runs[:i], func(p candRun) bool { return p.ns == r.ns }) {
			continue // dumped for an earlier run
		}
		var ns *netNamespace
		if r.ns >= 0 {
			ns = &nss[r.ns]
		}
		var inos map[uint64]bool
		err := withinNetNS(ns, func() (err error) {
			inos, err = tableInodes(ctx, procRoot, source)
			return err
		})
		if err != nil {
			if ns != nil && !ns.own && gone(err) {
				inos = nil // gone with its sockets: nothing to list there
			} else {
				return err
			}
		}
		for _, q := range runs[i:] {
			if q.ns != r.ns {
				continue
			}
			for j := q.lo; j < q.hi; j++ {
				listed[j] = inos == nil || inos[cands[j].ino]
			}
		}
	}
	return nil
}

// confirmCounting is countStates of tc's states and filter into tc.counts,
// whose dumps, of every state, also mark in listed the candidates in a
// table, or all of a namespace gone meanwhile: one walk of the tables
// serves both. The candidates are sorted in runs (candRuns).
func confirmCounting(ctx context.Context, procRoot string, tc *tableCount, cands []closedFD, nss []netNamespace, listed []bool) error {
	m := candMarks{cands: cands, runs: candRuns(cands, nss), listed: listed}
	// Runs after the fd scan: a candidate in no table has closed by now; sockets opened since are no candidates.
	counts := StateCounts{}
	if nss == nil {
		if err := countStatesIn(ctx, tc.states, tc.filter, counts, nil, m.seenIn(-1)); err != nil {
			return err
		}
		tc.counts = counts
		return nil
	}
	for i := range nss {
		ns := &nss[i]
		err := countStatesIn(ctx, tc.states, tc.filter, counts, ns, m.seenIn(i))
		if err != nil && (ns.own || !gone(err)) {
			return err
		}
		if err != nil {
			m.markAll(i) // gone with its sockets: nothing to list there
		}
	}
	// Candidates in none of nss: none, as the scan looks in those alone.
	if err := confirmByTables(ctx, procRoot, SourceNetlink, cands, m.runsOf(-1), nss, listed); err != nil {
		return err
	}
	tc.counts = counts
	return nil
}

// candMarks marks in listed the candidates (sorted, cut in runs) that a
// dump finds in a table.
type candMarks struct {
	cands  []closedFD
	runs   []candRun
	listed []bool
}

// runsOf returns the runs of namespace ns (an index in nss, -1 the
// caller's).
func (m *candMarks) runsOf(ns int) []candRun {
	var out []candRun
	for _, r := range m.runs {
		if r.ns == ns {
			out = append(out, r)
		}
	}
	return out
}

// seenIn returns the seen function of a dump in namespace ns: a binary
// search of its runs for each inode; nil, for a plain count, when it has
// no candidates.
func (m *candMarks) seenIn(ns int) func(ino uint64) {
	runs := m.runsOf(ns)
	if len(runs) == 0 {
		return nil
	}
	return func(ino uint64) {
		for _, r := range runs {
			run := m.cands[r.lo:r.hi]
			i, ok := slices.BinarySearchFunc(run, ino, func(c closedFD, ino uint64) int { return cmp.Compare(c.ino, ino) })
			for ; ok && i < len(run) && run[i].ino == ino; i++ {
				m.listed[r.lo+i] = true
			}
		}
	}
}

// markAll marks every candidate of namespace ns.
func (m *candMarks) markAll(ns int) {
	for _, r := range m.runsOf(ns) {
		for j := r.lo; j < r.hi; j++ {
			m.listed[j] = true
		}
	}
}

// tcpFamily reads the sockfs name of the socket pid holds at fd: TCP or
// TCPv6 give its family, anything else (UNIX, UDP...) ok false. The name
// is the protocol of the socket accept() was called on: a TCP socket
// accepted on an MPTCP listener (Go's default since 1.24) is named MPTCP,
// so MPTCP counts too, and peekClosed tells the two apart.
func tcpFamily(procRoot string, pid, fd int) (Family, bool) {
	path := []byte(procRoot + "/" + strconv.Itoa(pid) + "/fd/" + strconv.Itoa(fd) + "\x00")
	var buf [16]byte
	n, _, errno := unix.Syscall6(unix.SYS_GETXATTR, uintptr(unsafe.Pointer(&path[0])),
		uintptr(unsafe.Pointer(&sockProtoName[0])), uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)), 0, 0)
	if errno != 0 {
		return 0, false // closed meanwhile, or no such xattr
	}
	switch string(bytes.TrimRight(buf[:n], "\x00")) {
	case "TCP", "MPTCP":
		return FamilyIPv4, true
	case "TCPv6", "MPTCPv6":
		return FamilyIPv6, true
	}
	return 0, false
}

// peeked is what peekClosed read of a socket.
type peeked struct {
	closed bool // in CLOSE after a connection
	uid    uint32
}

// peekClosed reads the socket fd of pid holds through a duplicate of the
// fd (pidfd_getfd: Linux 5.6, and ptrace rights over pid). A socket in
// CLOSE that never sent or received a segment was never connected: no
// dropped connection. An fd that holds another socket by now is not
// closed either.
func peekClosed(pid, fd int, ino uint64) (peeked, error) {
	pfd, err := unix.PidfdOpen(pid, 0)
	if errors.Is(err, unix.ESRCH) {
		return peeked{}, nil // exited
	}
	if err != nil {
		return peeked{}, fmt.Errorf("pidfd_open: %w", err)
	}
	defer unix.Close(pfd)
	dup, err := unix.PidfdGetfd(pfd, fd, 0)
	if errors.Is(err, unix.EBADF) || errors.Is(err, unix.ESRCH) {
		return peeked{}, nil // closed, or the process exited
	}
	if err != nil {
		return peeked{}, fmt.Errorf("pidfd_getfd: %w", err)
	}
	defer unix.Close(dup)
	var st unix.Stat_t
	if err := unix.Fstat(dup, &st); err != nil || st.Ino != ino {
		return peeked{}, nil
	}
	if proto, err := unix.GetsockoptInt(dup, unix.SOL_SOCKET, unix.SO_PROTOCOL); err != nil || proto != unix.IPPROTO_TCP {
		return peeked{}, nil // MPTCP: its subflows, in the tables, decide, as for the ebpf source
	}
	info, err := unix.GetsockoptTCPInfo(dup, unix.IPPROTO_TCP, unix.TCP_INFO)
	if err != nil {
		return peeked{}, fmt.Errorf("tcp_info: %w", err)
	}
	return peeked{closed: State(info.State) == StateClose && (info.Segs_out > 0 || info.Segs_in > 0), uid: st.Uid}, nil
}

// tcpBoundInactive is TCP_BOUND_INACTIVE, a state only sock_diag requests
// know: since Linux 6.6 it dumps sockets bound and not yet listening or
// connected, which are in CLOSE too. Older kernels ignore the bit.
const tcpBoundInactive = 13

// tableInodes returns the inode of every TCP socket of every state in the
// calling thread's network namespace.
func tableInodes(ctx context.Context, procRoot, source string) (map[uint64]bool, error) {
	if source != SourceProcfs {
		inos, err := diagInodes(ctx)
		if err == nil || !errors.Is(err, ErrUnsupported) {
			return inos, err
		}
	}
	inos := map[uint64]bool{}
	for _, t := range []struct {
		file string
		fam  Family
	}{{"tcp", FamilyIPv4}, {"tcp6", FamilyIPv6}} {
		path := procNetDir(procRoot) + t.file
		f, err := os.Open(path)
		if err != nil {
			if t.fam == FamilyIPv6 && errors.Is(err, fs.ErrNotExist) {
				continue // IPv6 disabled
			}
			return nil, err
		}
		socks, _, err := parseProcNetTCP(f, t.fam, StatesAll)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", path, err)
		}
		for i := range socks {
			inos[socks[i].Inode] = true
		}
	}
	return inos, nil
}

// diagInodes is tableInodes over sock_diag: every state, bound-only
// sockets too, and no tcp_info.
func diagInodes(ctx context.Context) (map[uint64]bool, error) {
	c, stop, err := dialSockDiag(ctx)
	if err != nil {
		return nil, err
	}
	defer stop()
	inos := map[uint64]bool{}
	all := StatesAll | 1<<tcpBoundInactive
	for _, af := range []uint8{unix.AF_INET, unix.AF_INET6} {
		// An interrupted dump's inodes stay: they were in a table.
		err := retryDump(ctx, func() error {
			return dumpEach(c, inetDiagRequest(af, all, false, nil, nil), func(m netlink.Message) error {
				inos[uint64(binary.NativeEndian.Uint32(m.Data[68:72]))] = true
				return nil
			})
		})
		if err != nil {
			return nil, fmt.Errorf("dumping every TCP socket: %w", err)
		}
	}
	return inos, nil
}
