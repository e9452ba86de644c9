package collector

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// leanNetlink is the poller's cheap way to re-read the table: a kept
// sock_diag socket and dumps without tcp_info. Known sockets do not need
// tcp_info again (their age only grows while they stay in the state), and
// leaving it out spares the kernel work and the bytes to decode. New
// sockets get theirs from one exact lookup each.
//
// It talks to the kernel with plain blocking syscalls: a dump is produced
// while the reader waits in recvfrom, so there is nothing for Go's network
// poller to wait for, and going through it cost a goroutine wake-up per
// datagram, a large share of a poll's user time.
type leanNetlink struct {
	fd       int // -1 when closed
	seq      uint32
	rx       []byte
	netns    uint64
	procRoot string
	plan     diagPlan
}

func newLeanDumper(src source, procRoot string, states StateSet, f Filter) leanDumper {
	switch src.name() {
	case SourceNetlink, SourceEBPF:
		// The BPF iterator's socket cookies are sock_diag's: its full
		// collections and these lean re-reads name the same sockets.
		return &leanNetlink{fd: -1, netns: netnsInode(procRoot), procRoot: procRoot, plan: newDiagPlan(states, &f)}
	}
	return nil
}

func (d *leanNetlink) close() {
	if d.fd >= 0 {
		unix.Close(d.fd)
		d.fd = -1
	}
}

func (d *leanNetlink) open() error {
	if d.fd >= 0 {
		return nil
	}
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return fmt.Errorf("opening sock_diag: %w", err)
	}
	// A stuck kernel must not hang the watch: no dump takes this long.
	tv := unix.NsecToTimeval((5 * time.Second).Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return fmt.Errorf("opening sock_diag: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return fmt.Errorf("opening sock_diag: %w", err)
	}
	d.fd = fd
	if d.rx == nil {
		d.rx = make([]byte, 64<<10) // the kernel fills dump datagrams up to 32 KiB
	}
	return nil
}

// request sends one sock_diag request and returns its sequence number.
func (d *leanNetlink) request(body []byte, dump bool) (uint32, error) {
	d.seq++
	flags := uint16(unix.NLM_F_REQUEST)
	if dump {
		flags |= unix.NLM_F_DUMP
	}
	msg := make([]byte, unix.NLMSG_HDRLEN+len(body))
	binary.NativeEndian.PutUint32(msg[0:], uint32(len(msg)))
	binary.NativeEndian.PutUint16(msg[4:], sockDiagByFamily)
	binary.NativeEndian.PutUint16(msg[6:], flags)
	binary.NativeEndian.PutUint32(msg[8:], d.seq)
	copy(msg[unix.NLMSG_HDRLEN:], body)
	return d.seq, unix.Sendto(d.fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
}

// receive reads the replies to request seq and calls fn with each message
// body, until the dump's NLMSG_DONE (or, with dump false, one message).
func (d *leanNetlink) receive(seq uint32, dump bool, fn func(m netlink.Message) error) error {
	var failed error
	for {
		n, _, err := unix.Recvfrom(d.fd, d.rx, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		b := d.rx[:n]
		for len(b) >= unix.NLMSG_HDRLEN {
			l := int(binary.NativeEndian.Uint32(b[0:]))
			if l < unix.NLMSG_HDRLEN || l > len(b) {
				return fmt.Errorf("malformed netlink message of %d bytes", l)
			}
			m := netlink.Message{
				Header: netlink.Header{
					Length:   uint32(l),
					Type:     netlink.HeaderType(binary.NativeEndian.Uint16(b[4:])),
					Flags:    netlink.HeaderFlags(binary.NativeEndian.Uint16(b[6:])),
					Sequence: binary.NativeEndian.Uint32(b[8:]),
				},
				Data: b[unix.NLMSG_HDRLEN:l],
			}
			b = b[min(nlmsgAlign(l), len(b)):]
			if m.Header.Sequence != seq {
				continue // a late reply to an abandoned request
			}
			switch m.Header.Type {
			case netlink.Done:
				return failed
			case netlink.Error:
				if len(m.Data) >= 4 {
					if errno := -int32(binary.NativeEndian.Uint32(m.Data)); errno != 0 {
						return unix.Errno(errno)
					}
				}
				return failed
			}
			if failed == nil {
				failed = fn(m)
			}
			if !dump {
				return failed
			}
		}
	}
}

func nlmsgAlign(n int) int { return (n + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1) }

// dump reads the sockets of the plan without tcp_info, the port filter
// applied in the kernel. Each message's identity and queues are read
// straight from the bytes and handed to known; only the sockets it does not
// know are decoded whole. The listeners come along to mark those Inbound,
// and are returned.
func (d *leanNetlink) dump(ctx context.Context, known func(leanKey) bool) ([]Socket, []listener, error) {
	if err := d.open(); err != nil {
		return nil, nil, err
	}
	var fresh []Socket
	var listeners []listener
	for _, af := range []uint8{unix.AF_INET, unix.AF_INET6} {
		if err := ctx.Err(); err != nil {
			return nil, nil, err
		}
		n, nl := len(fresh), len(listeners)
		dump := func() error {
			// Seen marks stay after an interrupted dump: a socket seen in
			// it does exist. Only the new ones are read again.
			fresh, listeners = fresh[:n], listeners[:nl]
			var err error
			fresh, listeners, err = d.dumpFamily(af, known, fresh, listeners)
			return err
		}
		err := retryDump(ctx, dump)
		if d.plan.bytecodeRejected(err) {
			d.plan = d.plan.unfiltered() // for good: the kernel stays the same
			err = retryDump(ctx, dump)
		}
		if err != nil {
			d.close() // the socket may hold the rest of a reply
			return nil, nil, fmt.Errorf("dumping sockets: %w", err)
		}
	}
	setNetNS(fresh, listeners, d.netns)
	markInbound(fresh, listeners, d.procRoot)
	return fresh, listeners, nil
}

// dumpFamily runs the plan's dumps of one family: the filtered one, and
// the listeners' own when the plan has it.
func (d *leanNetlink) dumpFamily(af uint8, known func(leanKey) bool, fresh []Socket, listeners []listener) ([]Socket, []listener, error) {
	fresh, listeners, err := d.dumpOnce(inetDiagRequest(af, d.plan.states, false, d.plan.bc, nil), d.plan.want, known, fresh, listeners)
	if err != nil || !d.plan.listenersApart {
		return fresh, listeners, err
	}
	return d.dumpOnce(inetDiagRequest(af, StateSet(0).With(StateListen), false, nil, nil), 0, known, fresh, listeners)
}

// dumpOnce runs one dump request, keeping the sockets in want that known
// does not know and noting every listener.
func (d *leanNetlink) dumpOnce(req []byte, want StateSet, known func(leanKey) bool, fresh []Socket, listeners []listener) ([]Socket, []listener, error) {
	seq, err := d.request(req, true)
	if err != nil {
		return fresh, listeners, err
	}
	err = d.receive(seq, true, func(m netlink.Message) error {
		if err := checkDiagMsg(m); err != nil {
			return err
		}
		b := m.Data
		st := State(b[1])
		if want.Has(st) && known(leanKey{
			cookie: uint64(binary.NativeEndian.Uint32(b[44:48])) | uint64(binary.NativeEndian.Uint32(b[48:52]))<<32,
			state:  st,
			recvQ:  binary.NativeEndian.Uint32(b[56:60]),
			sendQ:  binary.NativeEndian.Uint32(b[60:64]),
			inode:  uint64(binary.NativeEndian.Uint32(b[68:72])),
		}) {
			return nil
		}
		// The attributes the kernel adds anyway are not needed here.
		m.Data = b[:sizeofInetDiagMsg]
		s, err := parseInetDiagMsg(m, nil)
		if err != nil {
			return err
		}
		if s.State == StateListen {
			listeners = append(listeners, listener{local: s.Local, inode: s.Inode})
		}
		if want.Has(s.State) {
			fresh = append(fresh, s)
		}
		return nil
	})
	return fresh, listeners, err
}

// ages fills the age fields of each socket from its own tcp_info, asked
// for by address, port and cookie. A socket that is gone meanwhile keeps
// an unknown age; the next poll drops it.
func (d *leanNetlink) ages(ctx context.Context, socks []*Socket) error {
	for _, s := range socks {
		if err := ctx.Err(); err != nil {
			return err
		}
		got, ok, err := d.lookup(s)
		if err != nil {
			return err
		}
		if ok {
			s.Age, s.AgeKnown, s.AgeExact, s.AgeMax = got.Age, got.AgeKnown, got.AgeExact, got.AgeMax
		}
	}
	return nil
}

// lookup reads one socket as the kernel has it now, in whatever state,
// named by its addresses and cookie; ok is false when it is gone.
func (d *leanNetlink) lookup(s *Socket) (got Socket, ok bool, err error) {
	if err := d.open(); err != nil {
		return got, false, err
	}
	seq, err := d.request(inetDiagLookup(s), false)
	if err != nil {
		d.close()
		return got, false, fmt.Errorf("looking up a socket: %w", err)
	}
	err = d.receive(seq, false, func(m netlink.Message) error {
		if g, err := parseInetDiagMsg(m, nil); err == nil && g.Cookie == s.Cookie {
			got, ok = g, true
		}
		return nil
	})
	if err != nil && !errors.Is(err, unix.ENOENT) {
		d.close()
		return got, false, fmt.Errorf("looking up a socket: %w", err)
	}
	return got, ok, nil
}

// inetDiagLookup builds an inet_diag_req_v2 naming one socket exactly, with
// its tcp_info asked for.
func inetDiagLookup(s *Socket) []byte {
	af := uint8(unix.AF_INET)
	if s.Family == FamilyIPv6 {
		af = unix.AF_INET6
	}
	b := inetDiagRequest(af, StatesAll, true, nil, nil)
	// struct inet_diag_sockid starts at offset 8: sport, dport (network
	// order), src[16], dst[16], if, cookie[2].
	binary.BigEndian.PutUint16(b[8:], s.Local.Port())
	binary.BigEndian.PutUint16(b[10:], s.Remote.Port())
	putAddr(b[12:28], s.Local.Addr(), af)
	putAddr(b[28:44], s.Remote.Addr(), af)
	binary.NativeEndian.PutUint32(b[48:], uint32(s.Cookie))
	binary.NativeEndian.PutUint32(b[52:], uint32(s.Cookie>>32))
	return b
}

func putAddr(dst []byte, a netip.Addr, af uint8) {
	if af == unix.AF_INET {
		v4 := a.Unmap().As4()
		copy(dst, v4[:])
		return
	}
	v6 := a.As16()
	copy(dst, v6[:])
}

// probeFDs reads the links of the fds a process's next socket likely
// got: the unknown numbers below its highest known fd, when they are few
// (a leaking process's table is mostly its leak), and those just above it
// (the next free fd); in a process holding none yet, from fd 0. So the
// newest sockets of a leak are found without listing a table of thousands
// of fds. Above the highest, a run of unused numbers ends the probe. It returns how many wanted inodes are left.
func probeFDs(procRoot string, pids []int, owned map[int]*ownedFDs, want map[uint64][]Owner) int {
	const (
		gap   = 8   // unused fd numbers in a row that end the probe
		holes = 512 // unknown numbers below the highest known fd worth trying
	)
	left := countLeft(want)
	link := make([]byte, 64)
	var name []byte
	for _, pid := range pids {
		if left == 0 {
			break
		}
		f := owned[pid]
		if f == nil {
			// A listener's process, about to accept: its table from 0.
			f = &ownedFDs{maxFD: -1, comm: readComm(procRoot, pid)}
		}
		dfd, err := unix.Open(procRoot+"/"+strconv.Itoa(pid)+"/fd", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			continue
		}
		fd := f.maxFD + 1
		if int(f.maxFD)+1-len(f.fds) <= holes {
			fd = 0
		}
		for misses := 0; misses < gap && left > 0 && fd < f.maxFD+1+4096; fd++ {
			if f.fds[fd] > 0 {
				continue
			}
			n, err := readFDLink(dfd, fd, &name, link)
			if err != nil {
				if fd > f.maxFD {
					misses++
				}
				continue
			}
			misses = 0
			left -= match(want, link[:n], Owner{PID: pid, Comm: f.comm, FD: int(fd)})
		}
		unix.Close(dfd)
	}
	return left
}

// match adds o to the owners of the socket the link names, if wanted, and
// returns 1 when that socket had no owner yet.
func match(want map[uint64][]Owner, link []byte, o Owner) int {
	ino, ok := socketInode(link)
	if !ok {
		return 0
	}
	owners, ok := want[ino]
	if !ok {
		return 0
	}
	want[ino] = append(owners, o)
	if len(owners) == 0 {
		return 1
	}
	return 0
}

func countLeft(want map[uint64][]Owner) int {
	n := 0
	for _, o := range want {
		if len(o) == 0 {
			n++
		}
	}
	return n
}

// fdCount returns how many fds pid has open, -1 when it is gone: the size
// of its fd directory since Linux 6.2 (a stat), else its entries counted.
func fdCount(procRoot string, pid int) int {
	dir := procRoot + "/" + strconv.Itoa(pid) + "/fd"
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return -1
	}
	if st.Size > 0 {
		return int(st.Size)
	}
	n, err := countDirents(dir)
	if err != nil {
		return -1
	}
	return n
}

// closedFDs returns those of fds that pid no longer has open: all of them
// when it is gone. A number closed and opened again looks still open.
func closedFDs(procRoot string, pid int, fds map[int32]int) []int32 {
	dfd, err := unix.Open(procRoot+"/"+strconv.Itoa(pid)+"/fd", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	var open map[int32]bool
	if err == nil {
		open = make(map[int32]bool, len(fds))
		listFDs(dfd, make([]byte, 32<<10), func(fd int32, _ []byte) bool {
			// Our own listing's fd may have a closed number.
			if fds[fd] > 0 && (pid != os.Getpid() || fd != int32(dfd)) {
				open[fd] = true
			}
			return true
		})
		unix.Close(dfd)
	}
	var closed []int32
	for fd := range fds {
		if !open[fd] {
			closed = append(closed, fd)
		}
	}
	return closed
}
