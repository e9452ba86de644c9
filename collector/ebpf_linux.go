package collector

import (
	"cmp"
	"context"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/closewait/closewait/ebpf"
)

// ebpfSource reads sockets and their owners with BPF iterators: the state
// filter and the fd-to-socket mapping run in the kernel, so there is no
// /proc scan. With the tracer installed, CLOSE_WAIT ages are exact.
type ebpfSource struct{}

func (ebpfSource) name() string { return SourceEBPF }

func (ebpfSource) dump(ctx context.Context, q query) (dumpResult, error) {
	it, err := ebpf.LoadIterators(ebpf.IterOptions{States: uint32(q.states), PinDir: q.pinDir, CountStates: q.countAll})
	if err != nil {
		return dumpResult{}, err
	}
	defer it.Close()

	// The two walks take about as long as each other and share nothing
	// until the join: run them on two cores. The fds' records are kept
	// raw, so the sockets are built once in a slice of the right size.
	var files *ebpf.Records
	var other []ebpf.Record // listeners and sockets without a file: few
	var hasFile []uint64    // sockets with a file: iter/task_file reports them
	var wg sync.WaitGroup
	var filesErr, tcpErr error
	wg.Go(func() { files, filesErr = it.ReadFiles() })
	wg.Go(func() {
		tcpErr = it.TCP(func(r *ebpf.Record) {
			if r.Flags&ebpf.RecHasFile != 0 {
				hasFile = append(hasFile, r.Cookie)
			} else {
				other = append(other, *r)
			}
		})
	})
	wg.Wait()
	if filesErr != nil {
		return dumpResult{}, filesErr
	}
	if tcpErr != nil {
		return dumpResult{}, tcpErr
	}
	if err := ctx.Err(); err != nil {
		return dumpResult{}, err
	}
	j := newRecordJoin(files.Len() + len(other))
	if err := j.addFiles(files); err != nil {
		return dumpResult{}, err
	}
	files = nil
	for i := range other {
		j.addOther(&other[i])
	}
	if slices.ContainsFunc(hasFile, func(c uint64) bool { _, ok := j.index[c]; return !ok }) {
		// A socket with a file that no fd of any task names (or one that
		// came between the walks): read it whole now that iter/task_file
		// has marked what it reported.
		err := it.TCPUnowned(func(r *ebpf.Record) {
			if r.Flags&ebpf.RecListener == 0 { // listeners came in the first pass
				j.addOther(r)
			}
		})
		if err != nil {
			return dumpResult{}, err
		}
	}
	j.joinMPTCP()
	socks := j.sockets()
	markInbound(socks, j.listeners)
	res := dumpResult{sockets: socks, ownersDone: true, warnings: it.Warnings()}
	if c, ok := it.StateCounts(); ok {
		res.counts = &[2]StateCounts{}
		for af := range c {
			res.counts[af] = make(StateCounts, len(AllStates))
			for _, st := range AllStates {
				res.counts[af][st] = int(c[af][st])
			}
		}
	}
	return res, nil
}

// block is how many owners or keepalive settings are allocated at once.
const block = 1024

// recordJoin builds sockets from iterator records, joined on the cookie:
// iter/task_file sends a socket once per fd holding it, iter/tcp the
// listeners and the sockets no fd holds.
type recordJoin struct {
	socks     []Socket
	index     map[uint64]int32 // cookie -> socks index
	listeners []netip.AddrPort
	mptcp     map[uint64][]Owner // inode of an MPTCP socket -> its fds
	builder
}

// newRecordJoin sizes the join for about n sockets: the records' count is
// an upper bound, as a socket inherited by several processes comes once
// per fd.
func newRecordJoin(n int) *recordJoin {
	return &recordJoin{
		socks:   make([]Socket, 0, n),
		index:   make(map[uint64]int32, n),
		builder: builder{comms: map[uint32]string{}},
	}
}

// builder fills sockets from records, allocating what they point to in
// blocks. Each goroutine building sockets has its own.
type builder struct {
	comms  map[uint32]string // tgid -> comm, so names are not allocated per fd
	kas    []Keepalive       // allocated in blocks, not one per socket
	owners []Owner           // likewise: most sockets have one owner
	mptcp  []mptcpFD
}

// mptcpFD is an fd holding an MPTCP socket, by the socket's inode.
type mptcpFD struct {
	inode uint64
	owner Owner
}

// addFiles adds the records of iter/task_file. Each record i first fills
// socks[i], on two cores: this is most of the join's work, much of it
// the first writes to the sockets' memory. Then, in order, the fds of one
// socket become one socket with several owners, and MPTCP fds, which are
// not sockets of their own, leave their place.
func (j *recordJoin) addFiles(files *ebpf.Records) error {
	n := files.Len()
	j.socks = j.socks[:n]
	other := builder{comms: map[uint32]string{}}
	var errs [2]error
	var wg sync.WaitGroup
	for part, b := range []*builder{&j.builder, &other} {
		wg.Go(func() {
			errs[part] = files.Range(part*n/2, (part+1)*n/2, func(i int, r *ebpf.Record) {
				b.owned(&j.socks[i], r)
			})
		})
	}
	wg.Wait()
	if err := cmp.Or(errs[0], errs[1]); err != nil {
		return err
	}
	for _, fd := range append(j.builder.mptcp, other.mptcp...) {
		if j.mptcp == nil {
			j.mptcp = map[uint64][]Owner{}
		}
		j.mptcp[fd.inode] = append(j.mptcp[fd.inode], fd.owner)
	}
	k := 0
	for i := range j.socks {
		s := &j.socks[i]
		if s.Cookie == 0 {
			continue // an MPTCP fd
		}
		if first, ok := j.index[s.Cookie]; ok {
			j.socks[first].Owners = append(j.socks[first].Owners, s.Owners...)
			continue
		}
		if k != i {
			j.socks[k] = *s
		}
		j.index[s.Cookie] = int32(k)
		k++
	}
	clear(j.socks[k:])
	j.socks = j.socks[:k]
	return nil
}

// owned fills s from a record of iter/task_file, with its one owner; an
// MPTCP fd leaves s zero.
func (b *builder) owned(s *Socket, r *ebpf.Record) {
	if r.Flags&ebpf.RecMPTCP != 0 {
		b.mptcp = append(b.mptcp, mptcpFD{r.Inode, Owner{PID: int(r.TGID), Comm: r.CommString(), FD: int(r.FD)}})
		return
	}
	b.fill(s, r)
	comm, ok := b.comms[r.TGID]
	if !ok || !ebpf.SameComm(comm, r.Comm[:]) {
		comm = r.CommString()
		b.comms[r.TGID] = comm
	}
	// A one-element slice of a shared block; append copies it away if a
	// second owner comes.
	if len(b.owners) == cap(b.owners) {
		b.owners = make([]Owner, 0, block)
	}
	b.owners = append(b.owners, Owner{PID: int(r.TGID), Comm: comm, FD: int(r.FD)})
	s.Owners = b.owners[len(b.owners)-1 : len(b.owners) : len(b.owners)]
}

// fill fills s from r, keepalive settings included.
func (b *builder) fill(s *Socket, r *ebpf.Record) {
	socketFromRecord(r, s)
	if r.Flags&ebpf.RecAges != 0 {
		if len(b.kas) == cap(b.kas) {
			b.kas = make([]Keepalive, 0, block)
		}
		b.kas = append(b.kas, Keepalive{
			Enabled:     r.Flags&ebpf.RecKeepOpen != 0,
			Idle:        r.KeepaliveIdle,
			Interval:    r.KeepaliveInterval,
			Probes:      int(r.KeepaliveProbes),
			UserTimeout: r.UserTimeout,
		})
		s.Keepalive = &b.kas[len(b.kas)-1]
	}
}

func (j *recordJoin) addOther(r *ebpf.Record) {
	if r.Flags&ebpf.RecListener != 0 {
		j.listeners = append(j.listeners, r.Local)
	}
	// A listener comes from iter/tcp whatever the states asked for, and
	// with its fd from iter/task_file when listening was asked for.
	if _, ok := j.index[r.Cookie]; ok || r.Cookie == 0 || r.Flags&ebpf.RecHasFile != 0 {
		return
	}
	j.socks = append(j.socks, Socket{})
	j.fill(&j.socks[len(j.socks)-1], r)
	j.index[r.Cookie] = int32(len(j.socks) - 1)
}

// joinMPTCP gives the TCP subflows of MPTCP sockets (Go listeners are
// MPTCP by default) the owners of the MPTCP socket's fd, which shares
// their inode, as the /proc fd scan does.
func (j *recordJoin) joinMPTCP() {
	if len(j.mptcp) == 0 {
		return
	}
	for i := range j.socks {
		if s := &j.socks[i]; s.Inode != 0 && len(s.Owners) == 0 {
			s.Owners = slices.Clone(j.mptcp[s.Inode])
		}
	}
}

// sockets returns the joined sockets, owners in pid and fd order.
func (j *recordJoin) sockets() []Socket {
	for i := range j.socks {
		if o := j.socks[i].Owners; len(o) > 1 {
			sortOwners(o)
		}
	}
	return j.socks
}

// socketFromRecord fills s from an iterator record, the way the netlink
// source fills it from inet_diag: listeners have no remote address, ages
// only for CLOSE_WAIT. A tracer stamp makes the age exact.
func socketFromRecord(r *ebpf.Record, s *Socket) {
	*s = Socket{
		Family: FamilyIPv4,
		State:  State(r.State),
		Local:  r.Local,
		RecvQ:  r.RecvQ,
		SendQ:  r.SendQ,
		Inode:  r.Inode,
		Cookie: r.Cookie,
		UID:    r.UID,
		NetNS:  uint64(r.NetNS),
		Timer:  timerName(r.Timer),
	}
	if r.Family == 10 {
		s.Family = FamilyIPv6
	}
	if s.State != StateListen {
		s.Remote = r.Remote
	}
	if s.Timer != "" {
		s.TimerLeft = r.TimerLeft
	}
	if s.State != StateCloseWait {
		return
	}
	switch {
	case r.Flags&ebpf.RecStamp != 0:
		s.Age, s.AgeKnown, s.AgeExact, s.AgeMax = r.CloseWaitAge, true, true, r.CloseWaitAge
	case r.Flags&ebpf.RecAges != 0:
		ageBounds(s, r.LastAckRecv, r.LastDataRecv)
	}
}

// ageBounds sets a CLOSE_WAIT socket's age from tcp_info's last_ack_recv
// (a lower bound) and last_data_recv (an upper bound; equal, exact), as
// both the netlink source (setAges) and this one read them.
func ageBounds(s *Socket, lastAck, lastData time.Duration) {
	s.Age, s.AgeKnown = lastAck, true
	switch {
	case lastData == lastAck:
		s.AgeExact, s.AgeMax = true, lastData
	case lastData > lastAck:
		s.AgeMax = lastData
	}
}
