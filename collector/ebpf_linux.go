package collector

import (
	"cmp"
	"context"
	"errors"
	"fmt"
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
	it, err := ebpf.LoadIterators(ebpf.IterOptions{States: uint32(q.states), PinDir: q.pinDir, CountStates: q.countAll, AllNetNS: q.netns != nil})
	if err != nil {
		return dumpResult{}, err
	}
	defer it.Close()

	// The two walks take about as long as each other and share nothing
	// until the join: run them on two cores.
	j := recordJoin{owners: ownerSet{byInode: map[uint64][]Owner{}, comms: map[uint32]string{}}}
	var wg sync.WaitGroup
	var filesErr, tcpErr error
	owned := it.FilesErr() == nil
	if owned {
		wg.Go(func() { filesErr = it.Files(j.owners.add) })
	}
	var walked netnsWalk
	wg.Go(func() { walked, tcpErr = walkTCP(ctx, it, q, j.addSocket) })
	wg.Wait()
	if err := cmp.Or(filesErr, tcpErr); err != nil {
		return dumpResult{}, err
	}
	if err := ctx.Err(); err != nil {
		return dumpResult{}, err
	}
	socks := j.sockets(q.states)
	if q.netns != nil {
		// iter/task_file saw every namespace: keep the closed sockets of
		// those walked.
		socks = keepSockets(socks, func(s *Socket) bool { return s.State != StateClose || walked.has(s.NetNS) })
	}
	markInboundNS(socks, j.listeners, walked.ephemeral)
	if owned {
		for i := range j.listeners {
			l := &j.listeners[i]
			l.owners, l.ownersKnown = j.owners.byInode[l.inode], true
		}
	}
	res := dumpResult{sockets: socks, listeners: j.listeners, ownersDone: owned, warnings: append(it.Warnings(), walked.warnings...)}
	if !owned {
		res.warnings = append(res.warnings, fmt.Sprintf("%v: owners come from /proc", it.FilesErr()))
	}
	if walked.counted {
		res.counts = &[2]StateCounts{}
		for af := range walked.counts {
			res.counts[af] = make(StateCounts, len(AllStates))
			for _, st := range AllStates {
				res.counts[af][st] = int(walked.counts[af][st])
			}
		}
	}
	return res, nil
}

// netnsWalk is what walkTCP saw of the namespaces it walked.
type netnsWalk struct {
	eph      map[uint64]portRange // each one's ephemeral port range
	counts   ebpf.StateCounts     // summed over them, when counted
	counted  bool
	warnings []string
}

func (w *netnsWalk) has(netns uint64) bool { _, ok := w.eph[netns]; return ok }

func (w *netnsWalk) ephemeral(netns uint64) portRange { return w.eph[netns] }

// errNoTCP says a namespace has no TCP socket to walk.
var errNoTCP = errors.New("no TCP sockets")

// walkTCP runs iter/tcp in each namespace of q (the caller's when it names
// none), one after the other: each walk makes its instance in its
// namespace. A namespace gone meanwhile is skipped, and one that fails
// otherwise is a warning, unless it is the caller's.
func walkTCP(ctx context.Context, it *ebpf.Iterators, q query, fn func(*ebpf.Record)) (netnsWalk, error) {
	w := netnsWalk{eph: map[uint64]portRange{}, counted: q.countAll}
	nss := q.netns
	if nss == nil {
		nss = []netNamespace{{own: true}}
	}
	for _, ns := range nss {
		if err := ctx.Err(); err != nil {
			return w, err
		}
		var eph portRange
		var netns uint64
		err := it.TCPIn(func(open func() error) error {
			return withinNetNS(&ns, func() error {
				if v4, v6 := tcpInUse(q.procRoot, q.states); !ns.own && !v4 && !v6 {
					return errNoTCP
				}
				eph, netns = readEphemeralPorts(q.procRoot), netnsInode(q.procRoot)
				return open()
			})
		}, fn)
		if err != nil {
			switch {
			case ns.own:
				return w, err
			case errors.Is(err, errNoTCP):
				w.eph[ns.inode] = portRange{} // listed: its closed sockets too
			case !gone(err):
				w.warnings = append(w.warnings, fmt.Sprintf("network namespace %s not listed: %v", ns.label(), err))
			}
			continue
		}
		w.eph[netns] = eph
		c, ok := it.StateCounts()
		w.counted = w.counted && ok
		for af := range c {
			for st := range c[af] {
				w.counts[af][st] += c[af][st]
			}
		}
	}
	return w, nil
}

// block is how many owners or keepalive settings are allocated at once.
const block = 1024

// recordJoin builds sockets from iterator records: iter/tcp's records are
// the sockets, iter/task_file's their owners, joined on the inode.
type recordJoin struct {
	chunks    [][]Socket // iter/tcp's sockets, in chunks: never copied while they come
	n         int
	listeners []listener
	kas       []Keepalive // allocated in blocks, not one per socket
	owners    ownerSet
}

const joinChunk = 512

// addSocket adds a record of iter/tcp.
func (j *recordJoin) addSocket(r *ebpf.Record) {
	if r.Flags&ebpf.RecListener != 0 {
		j.listeners = append(j.listeners, listener{local: r.Local, inode: r.Inode, netns: uint64(r.NetNS)})
	}
	if len(j.chunks) == 0 || len(j.chunks[len(j.chunks)-1]) == joinChunk {
		j.chunks = append(j.chunks, make([]Socket, 0, joinChunk))
	}
	c := &j.chunks[len(j.chunks)-1]
	*c = append(*c, Socket{})
	j.fill(&(*c)[len(*c)-1], r)
	j.n++
}

// fill fills s from r, keepalive settings included.
func (j *recordJoin) fill(s *Socket, r *ebpf.Record) {
	socketFromRecord(r, s)
	if r.Flags&ebpf.RecAges != 0 {
		if len(j.kas) == cap(j.kas) {
			j.kas = make([]Keepalive, 0, block)
		}
		j.kas = append(j.kas, Keepalive{
			Enabled:     r.Flags&ebpf.RecKeepOpen != 0,
			Idle:        r.KeepaliveIdle,
			Interval:    r.KeepaliveInterval,
			Probes:      int(r.KeepaliveProbes),
			UserTimeout: r.UserTimeout,
			Own:         r.KeepaliveOwn, // same bits as ebpf.KeepaliveOwn*
		})
		s.Keepalive = &j.kas[len(j.kas)-1]
	}
}

// sockets returns the sockets in states with their owners, owners in pid
// and fd order. A socket the kernel has closed (CLOSE) is in no table:
// only its owner records tell of it. Other owner records that no socket
// of iter/tcp matches name sockets that changed state between the walks.
func (j *recordJoin) sockets(states StateSet) []Socket {
	socks := make([]Socket, 0, j.n)
	for i, c := range j.chunks {
		socks = append(socks, c...)
		j.chunks[i] = nil
	}
	for i := range socks {
		s := &socks[i]
		if s.Inode == 0 {
			continue
		}
		if o := j.owners.byInode[s.Inode]; len(o) > 0 {
			s.Owners = o
			if len(o) > 1 {
				sortOwners(o)
			}
		}
	}
	if states.Has(StateClose) && len(j.owners.closed) > 0 {
		seen := make(map[uint64]bool, len(socks))
		for i := range socks {
			seen[socks[i].Inode] = true
		}
		for _, r := range j.owners.closed {
			if seen[r.Inode] {
				continue
			}
			seen[r.Inode] = true
			socks = append(socks, Socket{})
			s := &socks[len(socks)-1]
			socketFromRecord(&r, s)
			s.Owners = j.owners.byInode[r.Inode]
			sortOwners(s.Owners)
		}
	}
	return socks
}

// ownerSet gathers iter/task_file's owner records by inode.
type ownerSet struct {
	byInode map[uint64][]Owner
	comms   map[uint32]string // tgid -> comm, so names are not allocated per fd
	block   []Owner           // most sockets have one owner: allocated in blocks
	closed  []ebpf.Record     // sockets in CLOSE, in no table
}

// add adds one owner record.
func (o *ownerSet) add(r *ebpf.Record) {
	comm, ok := o.comms[r.TGID]
	if !ok || !ebpf.SameComm(comm, r.Comm[:]) {
		comm = r.CommString()
		o.comms[r.TGID] = comm
	}
	owner := Owner{PID: int(r.TGID), Comm: comm, FD: int(r.FD)}
	if prev, ok := o.byInode[r.Inode]; ok {
		o.byInode[r.Inode] = append(prev, owner) // copies away from the block
		return
	}
	if len(o.block) == cap(o.block) {
		o.block = make([]Owner, 0, block)
	}
	o.block = append(o.block, owner)
	o.byInode[r.Inode] = o.block[len(o.block)-1 : len(o.block) : len(o.block)]
	// A socket never connected (no peer port) is CLOSE too, but no
	// connection was dropped: it is no leak of this kind.
	if State(r.State) == StateClose && r.Flags&ebpf.RecMPTCP == 0 && r.Remote.Port() != 0 {
		o.closed = append(o.closed, *r)
	}
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
		// A reset or timeout leaves its errno; a clean close leaves none.
		SockErr: r.SockErr,
	}
	if r.Flags&ebpf.RecAges != 0 {
		s.Idle, s.IdleKnown = min(r.LastAckRecv, r.LastDataRecv), true
	}
	if r.Flags&ebpf.RecOwned == 0 {
		s.Unanswered = max(r.Retransmits, r.ProbesOut)
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
	switch {
	case r.Flags&ebpf.RecChild != 0:
		s.Origin = OriginAccepted
	case r.Flags&ebpf.RecConnected != 0:
		s.Origin = OriginConnected
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
