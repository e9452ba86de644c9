package collector

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"runtime/debug"
	"slices"
	"time"

	"github.com/closewait/closewait/ebpf"
	"golang.org/x/sys/unix"
)

// ebpfSource reads sockets and their owners with BPF iterators: the state
// filter and the fd-to-socket mapping run in the kernel, so there is no
// /proc scan. iter/task_file sees every socket an fd holds, in every
// namespace, in one walk; iter/tcp, which walks the TCP hash that all
// namespaces share once per namespace, runs only where something else
// may be: see needWalk. With the tracer installed, CLOSE_WAIT ages are
// exact.
type ebpfSource struct{}

func (ebpfSource) name() string { return SourceEBPF }

func (ebpfSource) dump(ctx context.Context, q query) (dumpResult, error) {
	walk := q.netns
	if walk == nil {
		walk = []netNamespace{{own: true}}
	}
	own := slices.IndexFunc(walk, func(ns netNamespace) bool { return ns.own })
	// A walk that likely follows iter/task_file starts beside it, and
	// one that surely does needs iter/task_file to mark what it sent.
	beside := own >= 0 && likelyWalk(q.procRoot)
	// While q.nsSearch looks for every namespace, iter/task_file walks
	// them all, also those it will not find (no process, no mount in
	// /run/netns, a socket alone keeps them).
	opts := ebpf.IterOptions{States: uint32(q.states), PinDir: q.pinDir, CountStates: q.countAll, AllNetNS: q.netns != nil || q.nsSearch != nil, EmitFiled: q.cookies,
		Unmarked: !beside && !alwaysWalk(q), OneShot: q.oneShot}
	if len(q.netns) == 1 {
		opts.NetNS = uint32(q.netns[0].inode) // filtered in the kernel
	}
	it, err := ebpf.LoadIterators(opts)
	if err != nil {
		return dumpResult{}, err
	}
	defer it.Close()

	j := newRecordJoin(q)
	owned := it.FilesErr() == nil
	j.dedupe = owned
	var walked netnsWalk
	var short map[netNamespace][2]uint32
	if owned {
		// iter/tcp after iter/task_file: it leaves out what
		// iter/task_file marked sent. Where this namespace will likely need its
		// walk, it starts at once on the other core, and what it sends
		// that iter/task_file also sends is dropped later.
		var early *earlyWalk
		if beside {
			early = startWalk(ctx, it, q, walk[own])
			defer early.stop()
		}
		reserve := j.reserve
		if q.oneShot && !it.Pinned() {
			reserve = func(n int) {
				// The loaders' garbage (BTF, CO-RE: 5-8 MiB) goes back
				// to the OS before the sockets take its place, rather
				// than stay in the peak RSS beside them. The walk's
				// records are outside the heap, which is small now.
				if n >= dumpGCMin {
					debug.FreeOSMemory()
				}
				j.reserve(n)
			}
		}
		// Split on two cores, unless the walk of iter/tcp takes the other.
		if err := it.FilesSized(early == nil && ebpf.SplitWalk(), reserve, j.addFile); err != nil {
			return dumpResult{}, err
		}
		if err := ctx.Err(); err != nil {
			return dumpResult{}, err
		}
		if walk, err = q.settledWalk(walk); err != nil {
			return dumpResult{}, err
		}
		held, ok := it.Held()
		walk, short = j.needWalk(q, walk, held, ok)
		if early != nil && slices.ContainsFunc(walk, func(ns netNamespace) bool { return ns.own }) {
			walk = slices.DeleteFunc(walk, func(ns netNamespace) bool { return ns.own })
			var err error
			if walked, err = early.wait(); err != nil {
				return dumpResult{}, err
			}
			j.merge(early.j)
			if unseen := j.resolveFiled(); len(unseen) > 0 {
				// Sockets with files that no fd iter/task_file saw holds:
				// walk again, now that it marked all it sent, for them.
				// Its counts, of sockets counted already, are dropped.
				if _, err := walkTCP(ctx, it, q, []netNamespace{early.ns}, func(r *ebpf.Record) {
					if r.XFlags&ebpf.RecXFiled != 0 && unseen[r.Inode] {
						j.addSocket(r)
					}
				}); err != nil {
					return dumpResult{}, err
				}
			}
		}
	}
	if walk, err = q.settledWalk(walk); err != nil {
		return dumpResult{}, err
	}
	walk = j.dropListenersOnly(ctx, it, walk, short)
	rest, err := walkTCP(ctx, it, q, walk, j.addSocket)
	if err != nil {
		return dumpResult{}, err
	}
	walked.merge(rest)
	if err := ctx.Err(); err != nil {
		return dumpResult{}, err
	}
	return j.result(it, walked, owned), nil
}

// settledWalk returns walk, the namespaces to walk, or, if q.nsSearch
// was still looking for every namespace, those it found.
func (q *query) settledWalk(walk []netNamespace) ([]netNamespace, error) {
	if q.nsSearch == nil {
		return walk, nil
	}
	if err := q.settleNetNS(); err != nil || q.netns == nil {
		return walk, err // nil: the caller's alone
	}
	return q.netns, nil
}

// result is the dump of what j gathered.
func (j *recordJoin) result(it *ebpf.Iterators, walked netnsWalk, owned bool) dumpResult {
	socks := j.sockets()
	markInboundNS(socks, j.listeners, walked.ephemeral)
	res := dumpResult{sockets: socks, listeners: j.listeners, ownersDone: owned, warnings: append(it.Warnings(), walked.warnings...),
		notes: it.Notes(), fullWalks: slices.Sorted(maps.Keys(walked.eph)), cgroupSets: j.sets}
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
	return res
}

// netnsWalk is what walkTCP saw of the namespaces it walked.
type netnsWalk struct {
	eph      map[uint64]portRange // each one's ephemeral port range
	counts   ebpf.StateCounts     // summed over them, when counted
	counted  bool
	warnings []string
}

func (w *netnsWalk) ephemeral(netns uint64) portRange { return w.eph[netns] }

// merge adds what o saw; the zero netnsWalk takes o whole.
func (w *netnsWalk) merge(o netnsWalk) {
	if w.eph == nil {
		*w = o
		return
	}
	maps.Copy(w.eph, o.eph)
	for af := range o.counts {
		for st := range o.counts[af] {
			w.counts[af][st] += o.counts[af][st]
		}
	}
	w.counted = w.counted && o.counted
	w.warnings = append(w.warnings, o.warnings...)
}

// errNoTCP says a namespace has no TCP socket to walk.
var errNoTCP = errors.New("no TCP sockets")

// walkTCP runs iter/tcp in each of nss, one after the other: each walk
// makes its instance in its namespace. A namespace gone meanwhile is
// skipped, and one that fails otherwise is a warning, unless it is the
// caller's.
func walkTCP(ctx context.Context, it *ebpf.Iterators, q query, nss []netNamespace, fn func(*ebpf.Record)) (netnsWalk, error) {
	w := netnsWalk{eph: map[uint64]portRange{}, counted: q.countAll}
	for _, ns := range nss {
		if err := ctx.Err(); err != nil {
			return w, err
		}
		var eph portRange
		var netns uint64
		err := it.TCPIn(ctx, func(open func() error) error {
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

// earlyWalk is a walk of iter/tcp in one namespace, run while
// iter/task_file walks.
type earlyWalk struct {
	ns     netNamespace
	j      *recordJoin
	walked netnsWalk
	err    error
	done   chan struct{}
	cancel context.CancelFunc
}

func startWalk(ctx context.Context, it *ebpf.Iterators, q query, ns netNamespace) *earlyWalk {
	w := &earlyWalk{ns: ns, j: newRecordJoin(q), done: make(chan struct{})}
	w.j.dedupe, w.j.lite = true, true
	ctx, w.cancel = context.WithCancel(ctx)
	go func() {
		defer close(w.done)
		w.walked, w.err = walkTCP(ctx, it, q, []netNamespace{ns}, w.j.addSocket)
	}()
	return w
}

// wait returns what the walk saw, once it is done.
func (w *earlyWalk) wait() (netnsWalk, error) {
	<-w.done
	return w.walked, w.err
}

// stop ends the walk, if it still runs, and waits for it.
func (w *earlyWalk) stop() {
	w.cancel()
	<-w.done
}

// likelyWalk reports whether the caller's namespace will likely need its
// walk of iter/tcp: orphans exist (sockstat counts them over every
// namespace), or tasks outside this pid namespace may hold sockets that
// iter/task_file cannot see.
func likelyWalk(procRoot string) bool {
	if n, ok := sockstatField(procRoot+"/thread-self/net/sockstat", "TCP:", "orphan"); !ok || n > 0 {
		return true
	}
	var st unix.Stat_t
	return unix.Stat(procRoot+"/thread-self/ns/pid", &st) != nil || st.Ino != initPIDNSInode
}

// initPIDNSInode is the initial pid namespace's inode (PROC_PID_INIT_INO),
// fixed since Linux 3.8.
const initPIDNSInode = 0xEFFFFFFC

// orphanStates are the states a socket can be in with no fd: after its
// application closed it, or as a time-wait or request socket. A listing
// of any of them walks every namespace.
const orphanStates = 1<<StateFinWait1 | 1<<StateFinWait2 | 1<<StateClosing | 1<<StateLastAck |
	1<<StateTimeWait | 1<<StateSynRecv

// needWalk returns the namespaces of nss that iter/tcp must walk after
// iter/task_file: every one when the listing counts every socket, needs
// cookies (iter/task_file has a socket's cookie only once something made
// one), asks for states that sockets with no fd are in, or the counts of
// the fds' sockets are unknown. Otherwise those where the kernel counts more
// hashed TCP sockets (sockstat's inuse) than fds hold: accept queues,
// orphans on their way out, kernel and MPTCP subflow sockets, by how many
// in each family (short), which may be listeners alone: see
// dropListenersOnly. And, for a listing of listeners, those with MPTCP
// listeners, whose TCP sockets only iter/tcp reports.
func (j *recordJoin) needWalk(q query, nss []netNamespace, held ebpf.HeldCounts, heldOK bool) (walk []netNamespace, short map[netNamespace][2]uint32) {
	if alwaysWalk(q) || !heldOK {
		return nss, nil
	}
	// The sockets whose files have other references, and the TCP sockets
	// of MPTCP listeners, were counted here, once each.
	all := maps.Clone(held)
	for _, f := range j.shared {
		n := all[f.netns]
		n[f.af]++
		all[f.netns] = n
	}
	short = map[netNamespace][2]uint32{}
	for _, ns := range nss {
		inode := ns.inode
		if ns.own {
			inode = netnsInode(q.procRoot)
		}
		if q.states.Has(StateListen) && slices.ContainsFunc(j.mptcpListen, func(l nsInode) bool { return l.netns == inode }) {
			walk = append(walk, ns)
			continue
		}
		in, ok := nsTCPInUse(q.procRoot, &ns)
		if n := all[uint32(inode)]; !ok || n != in {
			walk = append(walk, ns)
			if ok && in[0] >= n[0] && in[1] >= n[1] {
				short[ns] = [2]uint32{in[0] - n[0], in[1] - n[1]}
			}
		}
	}
	return walk, short
}

// alwaysWalk reports whether a listing of q walks iter/tcp in every
// namespace, whatever iter/task_file finds: see needWalk.
func alwaysWalk(q query) bool {
	return q.countAll || q.cookies || uint64(q.states)&orphanStates != 0
}

// dropListenersOnly takes out of nss the namespaces whose hashed TCP
// sockets that no fd holds (short) are all listeners, which a walk of the
// listening hash alone finds, in far less time than the whole walk: such
// as a kernel's listener, or one held by a task of another pid namespace.
// Those listeners go into j.
func (j *recordJoin) dropListenersOnly(ctx context.Context, it *ebpf.Iterators, nss []netNamespace, short map[netNamespace][2]uint32) []netNamespace {
	var walk []netNamespace
	for _, ns := range nss {
		if want, ok := short[ns]; !ok || !j.listenersOnly(ctx, it, ns, want) {
			walk = append(walk, ns)
		}
	}
	return walk
}

// listenersOnly walks the listening hash of ns, and reports whether the
// listeners it sends, but the TCP sockets of MPTCP listeners (counted
// already) and those iter/task_file sent (unmarked), are as many as want,
// by family; if so, they go into j.
func (j *recordJoin) listenersOnly(ctx context.Context, it *ebpf.Iterators, ns netNamespace, want [2]uint32) bool {
	var recs []ebpf.Record
	var got [2]uint32
	sent := map[nsInode]bool{}
	for _, l := range j.listeners {
		sent[nsInode{l.netns, l.inode}] = true
	}
	err := it.ListenersIn(ctx, func(open func() error) error { return withinNetNS(&ns, open) }, func(r *ebpf.Record) {
		recs = append(recs, *r)
		if !sent[nsInode{uint64(r.NetNS), r.Inode}] {
			got[familyIndex(r.Family)]++
		}
	})
	if err != nil || got != want {
		return false
	}
	for i := range recs {
		j.addSocket(&recs[i])
	}
	return true
}

// familyIndex is the index of an address family in counts by family: 0
// IPv4, 1 IPv6.
func familyIndex(family uint8) int {
	if family == unix.AF_INET6 {
		return 1
	}
	return 0
}

// block is how many owners or keepalive settings are allocated at once.
const block = 1024

// recordJoin builds sockets from iterator records: iter/task_file's, one
// per fd (a socket held by several fds once, with all its owners), then
// iter/tcp's of sockets no fd holds, with the tracer's stamps of those
// iter/task_file sent.
type recordJoin struct {
	q         query
	only      map[uint64]bool // the namespaces listed; nil: all iter/task_file sees
	chunks    [][]Socket      // in chunks: never copied while they come
	n         int
	listeners []listener
	kas       []Keepalive // allocated in blocks, not one per socket
	comms     map[uint32]string
	sets      map[int]uint64 // cgroup sets by pid: see dumpResult.cgroupSets
	owners    []Owner        // most sockets have one owner: allocated in blocks
	// shared are the sockets whose files have other references than one
	// fd, by inode: where the socket is (chunk, index; -1 when only
	// counted), and its namespace and family for the counts.
	shared map[uint64]sharedFile
	mptcp  map[uint64][]Owner // MPTCP fds' owners, by inode: the subflows' owners
	// mptcpListen are the MPTCP listeners iter/task_file sent: their TCP
	// sockets are the kernel's, which only iter/tcp reports.
	mptcpListen []nsInode
	// filed are iter/tcp's sockets that have a file, when iter/task_file
	// ran: most are its sockets too.
	filed  []Socket
	dedupe bool
	// lite keeps only filedStamps of those (but listeners), for a walk
	// beside iter/task_file, which sends about half of its sockets again.
	lite      bool
	filedLite []filedStamp
}

// filedStamp is what a walk beside iter/task_file keeps of a socket with a
// file: enough to give iter/task_file's record of it the cookie and the
// stamp, or to find that it sent none.
type filedStamp struct {
	inode, cookie uint64
	state         State
	age           time.Duration
	stamped       bool
}

type nsInode struct{ netns, inode uint64 }

type sharedFile struct {
	chunk, i int
	netns    uint32
	af       int
}

func newRecordJoin(q query) *recordJoin {
	j := &recordJoin{q: q, comms: map[uint32]string{}, shared: map[uint64]sharedFile{}, sets: map[int]uint64{}}
	if q.netns != nil {
		j.only = make(map[uint64]bool, len(q.netns))
		for _, ns := range q.netns {
			j.only[ns.inode] = true
		}
	}
	return j
}

// addFile adds a record of iter/task_file.
func (j *recordJoin) addFile(r *ebpf.Record) {
	if j.only != nil && !j.only[uint64(r.NetNS)] {
		return
	}
	af := familyIndex(r.Family)
	if r.Flags&ebpf.RecMPTCP != 0 {
		if j.mptcp == nil {
			j.mptcp = map[uint64][]Owner{}
		}
		j.mptcp[r.Inode] = append(j.mptcp[r.Inode], j.owner(r))
		// An MPTCP listener listens through one TCP socket of the
		// kernel's: count it, and match accepted sockets to it. Go
		// listens with MPTCP where it can.
		if State(r.State) == StateListen {
			if _, ok := j.shared[r.Inode]; !ok {
				j.shared[r.Inode] = sharedFile{chunk: -1, netns: r.NetNS, af: af}
				j.listeners = append(j.listeners, listener{local: r.Local, inode: r.Inode, netns: uint64(r.NetNS), ownersKnown: true})
				j.mptcpListen = append(j.mptcpListen, nsInode{uint64(r.NetNS), r.Inode})
			}
		}
		return
	}
	if r.XFlags&ebpf.RecXShared != 0 {
		if f, ok := j.shared[r.Inode]; ok {
			if f.chunk >= 0 { // another fd of a socket already listed
				s := &j.chunks[f.chunk][f.i]
				s.Owners = append(s.Owners, j.owner(r))
			} else if r.XFlags&ebpf.RecXCount == 0 {
				j.shared[r.Inode] = j.add(r, af)
			}
			return
		}
		if r.XFlags&ebpf.RecXCount != 0 {
			j.shared[r.Inode] = sharedFile{chunk: -1, netns: r.NetNS, af: af}
			return
		}
		j.shared[r.Inode] = j.add(r, af)
		return
	}
	j.add(r, af)
}

// add adds the socket of an owned record.
func (j *recordJoin) add(r *ebpf.Record, af int) sharedFile {
	// A socket never connected (no peer port) is CLOSE too, but no
	// connection was dropped: it is no leak of this kind.
	if State(r.State) == StateClose && r.Remote.Port() == 0 {
		return sharedFile{chunk: -1, netns: r.NetNS, af: af}
	}
	s := j.next()
	j.fill(s, r)
	if len(j.owners) == cap(j.owners) {
		j.owners = make([]Owner, 0, block)
		prefault(j.owners)
	}
	j.owners = append(j.owners, j.owner(r))
	s.Owners = j.owners[len(j.owners)-1 : len(j.owners) : len(j.owners)]
	if r.Flags&ebpf.RecListener != 0 {
		j.listeners = append(j.listeners, listener{local: r.Local, inode: r.Inode, netns: uint64(r.NetNS), owners: s.Owners, ownersKnown: true})
	}
	return sharedFile{chunk: len(j.chunks) - 1, i: len(j.chunks[len(j.chunks)-1]) - 1, netns: r.NetNS, af: af}
}

// owner returns the owner a record of iter/task_file names, its command
// name allocated once per process.
func (j *recordJoin) owner(r *ebpf.Record) Owner {
	comm, ok := j.comms[r.TGID]
	if !ok || !ebpf.SameComm(comm, r.Comm[:]) {
		comm = r.CommString()
		j.comms[r.TGID] = comm
		j.sets[int(r.TGID)] = r.Cgroups
	}
	return Owner{PID: int(r.TGID), Comm: comm, FD: int(r.FD)}
}

// reserve makes the first chunk hold n sockets and a few more, such as
// listeners that no fd holds, which a walk of iter/tcp adds: sockets then
// returns it without a copy, unless more come.
func (j *recordJoin) reserve(n int) {
	if n > 0 && len(j.chunks) == 0 {
		j.chunks = append(j.chunks, make([]Socket, 0, n+n/32+64))
		if j.q.oneShot {
			prefaultHuge(j.chunks[0])
		} else {
			prefault(j.chunks[0])
		}
	}
}

// next returns a new socket at the end of the chunks.
func (j *recordJoin) next() *Socket {
	if len(j.chunks) == 0 || len(j.chunks[len(j.chunks)-1]) == cap(j.chunks[len(j.chunks)-1]) {
		j.chunks = append(j.chunks, make([]Socket, 0, joinChunk))
		prefault(j.chunks[len(j.chunks)-1])
	}
	c := &j.chunks[len(j.chunks)-1]
	*c = append(*c, Socket{})
	j.n++
	return &(*c)[len(*c)-1]
}

const joinChunk = 512

// addSocket adds a record of iter/tcp (an MPTCP subflow's owners are its
// MPTCP socket's).
func (j *recordJoin) addSocket(r *ebpf.Record) {
	if j.lite && r.XFlags&ebpf.RecXFiled != 0 && r.Flags&ebpf.RecListener == 0 {
		f := filedStamp{inode: r.Inode, cookie: r.Cookie, state: State(r.State)}
		if r.Flags&ebpf.RecStamp != 0 && f.state == StateCloseWait {
			f.age, f.stamped = r.CloseWaitAge, true
		}
		j.filedLite = append(j.filedLite, f)
		return
	}
	if j.dedupe && r.XFlags&ebpf.RecXFiled != 0 {
		j.filed = append(j.filed, Socket{})
		j.fill(&j.filed[len(j.filed)-1], r)
		return
	}
	if r.Flags&ebpf.RecListener != 0 && !slices.Contains(j.mptcpListen, nsInode{uint64(r.NetNS), r.Inode}) {
		j.listeners = append(j.listeners, listener{local: r.Local, inode: r.Inode, netns: uint64(r.NetNS), ownersKnown: true})
	}
	s := j.next()
	j.fill(s, r)
}

// merge adds the sockets of o, a walk of iter/tcp.
func (j *recordJoin) merge(o *recordJoin) {
	for _, c := range o.chunks { // into the room reserved, if it holds them
		for i := range c {
			*j.next() = c[i]
		}
	}
	for _, l := range o.listeners { // an MPTCP listener's TCP socket: j has the listener
		if !slices.Contains(j.mptcpListen, nsInode{l.netns, l.inode}) {
			j.listeners = append(j.listeners, l)
		}
	}
	j.filed = append(j.filed, o.filed...)
	j.filedLite = append(j.filedLite, o.filedLite...)
}

// resolveFiled joins what walks of iter/tcp sent of sockets with a file to
// iter/task_file's records of them, which get the walk's cookie and the
// tracer's stamp. A whole socket no fd iter/task_file saw holds (a file
// in flight, a task of another pid namespace) is added; the inodes of
// such sockets that the walk beside iter/task_file sent only as
// filedStamps are returned, for a walk that sends them whole.
func (j *recordJoin) resolveFiled() (unseen map[uint64]bool) {
	if len(j.filed) == 0 && len(j.filedLite) == 0 {
		return nil
	}
	// iter/task_file's sockets of the inodes the walks sent: a map the
	// size of what they sent, often a few listeners.
	owned := make(map[uint64]*Socket, len(j.filed)+len(j.filedLite))
	for _, f := range j.filed {
		owned[f.Inode] = nil
	}
	for _, f := range j.filedLite {
		owned[f.inode] = nil
	}
	for _, c := range j.chunks {
		for i := range c {
			if s := &c[i]; s.Inode != 0 && len(s.Owners) > 0 {
				if _, ok := owned[s.Inode]; ok {
					owned[s.Inode] = s
				}
			}
		}
	}
	join := func(s *Socket, cookie uint64, age time.Duration, stamped bool, state State) {
		if s.Cookie == 0 {
			s.Cookie = cookie // made by the walk
		}
		if stamped && !s.AgeExact && s.State == state {
			s.Age, s.AgeKnown, s.AgeExact, s.AgeMax = age, true, true, age
		}
	}
	for _, f := range j.filed {
		if s := owned[f.Inode]; s != nil {
			join(s, f.Cookie, f.Age, f.AgeExact && f.AgeKnown, f.State)
			continue
		}
		*j.next() = f // chunks grow without moving what owned points at
		if f.State == StateListen {
			j.listeners = append(j.listeners, listener{local: f.Local, inode: f.Inode, netns: f.NetNS, ownersKnown: true})
		}
	}
	for _, f := range j.filedLite {
		if s := owned[f.inode]; s != nil {
			join(s, f.cookie, f.age, f.stamped, f.state)
			continue
		}
		if unseen == nil {
			unseen = map[uint64]bool{}
		}
		unseen[f.inode] = true
	}
	j.filed, j.filedLite = nil, nil
	return unseen
}

// fill fills s from r, keepalive settings included.
func (j *recordJoin) fill(s *Socket, r *ebpf.Record) {
	socketFromRecord(r, s)
	if r.Flags&ebpf.RecAges != 0 {
		if len(j.kas) == cap(j.kas) {
			j.kas = make([]Keepalive, 0, block)
			prefault(j.kas)
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

// sockets returns the sockets, owners in pid and fd order. Of a socket
// both iterators sent, iter/task_file's record stays, with the cookie and
// the tracer's stamp that iter/tcp read.
func (j *recordJoin) sockets() []Socket {
	j.resolveFiled()
	var socks []Socket
	if len(j.chunks) == 1 {
		socks = j.chunks[0] // reserved, or small
	} else {
		socks = make([]Socket, 0, j.n)
		for _, c := range j.chunks {
			socks = append(socks, c...)
		}
	}
	j.chunks = nil
	for i := range socks {
		s := &socks[i]
		if len(s.Owners) == 0 && s.Inode != 0 && j.mptcp != nil {
			s.Owners = j.mptcp[s.Inode] // an MPTCP subflow: its MPTCP socket's
		}
		if len(s.Owners) > 1 {
			sortOwners(s.Owners)
		}
	}
	for i := range j.listeners {
		if l := &j.listeners[i]; len(l.owners) == 0 && l.inode != 0 && j.mptcp != nil {
			l.owners = j.mptcp[l.inode]
		}
	}
	return socks
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
	s.Unanswered = max(r.Retransmits, r.ProbesOut)
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

// smallHost is the open files (fs.file-nr) below which auto lists through
// the netlink source where no iterators are pinned. Its /proc scan costs
// 3-5 µs an open file more than the iterators' walk, and loading the
// programs 35 ms: netlink was quicker at 6,500 open files, ebpf at 12,500
// (the bench's crossover suite, BENCHMARKS.md).
var smallHost = 8000

// netlinkFaster says why auto takes the netlink source, which shows as
// much, rather than load the ebpf programs on this host, or "". Only the
// ebpf source reads keepalive timers and the closed sockets of every
// namespace; pinned iterators cost nothing to load; a refusal forced
// (ebpf.RefuseEnv, for tests) asks for the fallback from ebpf.
func netlinkFaster(q query) string {
	if q.timers || q.states.Has(StateClose) || os.Getenv(ebpf.RefuseEnv) != "" || ebpf.HasPinnedIterators(q.pinDir) {
		return ""
	}
	n, ok := ebpf.OpenFiles(q.procRoot)
	if !ok || n >= smallHost {
		return ""
	}
	return fmt.Sprintf("auto took the netlink source: the fds of %d open files (fewer than %d) take less time to scan than the ebpf programs to load, and none are pinned (closewait tracer install pins them)", n, smallHost)
}
