package collector

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"time"
)

// Source names accepted by Options.Source.
const (
	SourceAuto    = "auto"
	SourceEBPF    = "ebpf"
	SourceNetlink = "netlink"
	SourceProcfs  = "procfs"
)

// Options configures one collection.
type Options struct {
	// Source picks the socket-table source; "" or "auto" takes the best
	// that works on this machine.
	Source string
	// States selects the TCP states to list; 0 means CLOSE_WAIT.
	States StateSet
	// Filter narrows the listing after the kernel's state filter.
	Filter Filter
	// ProcRoot is where procfs is mounted; "" means /proc.
	ProcRoot string
	// NoOwners skips owner resolution (sockets come back without Owners).
	NoOwners bool
	// Processes reads each owner's Process (command line, parent, uid,
	// unit).
	Processes bool
	// Containers reads, of each owner's Process, only its container (its
	// cgroup, then the CRI): what a table naming containers needs, at a
	// quarter of the reads of Processes.
	Containers bool
	// CRISockets are the container runtimes' CRI sockets asked for the
	// names of the pods and containers that owners run in (Processes,
	// Containers);
	// nil means DefaultCRISockets, looked for also under /proc/1/root (the
	// host's, from a container with the host's pid namespace).
	CRISockets []string
	// NetNS narrows the listing to these network namespaces: a name under
	// /run/netns, an inode number, or "host". Empty means every namespace
	// when root (Linux), else the caller's alone, with a warning.
	NetNS []string
	// TracerPinDir is where "closewait tracer install" pinned the tracer,
	// whose stamps give the ebpf source exact ages; "" means the default,
	// /sys/fs/bpf/closewait.
	TracerPinDir string
	// OneShot says the process collects once and exits (a listing, a
	// check): the sources then give their large garbage back to the OS
	// before allocating more, to keep the peak RSS down, where a process
	// that runs on would only map it again.
	OneShot bool

	timers bool // the keepalive timers are wanted: see netlinkFaster
}

// Filter narrows a listing. The zero Filter matches every socket.
type Filter struct {
	IPv4, IPv6 bool     // address families; both false means both
	Ports      []uint16 // local or remote port
	SPorts     []uint16 // local port
	DPorts     []uint16 // remote port
	PIDs       []int    // an owner's pid
	Comms      []string // an owner's command name, exact (longer than 15 bytes: the executable's)
	OlderThan  time.Duration
	// SrcNets and DstNets hold the local and the remote address (as ss's
	// src and dst); an IPv4-mapped address matches as IPv4.
	SrcNets, DstNets []netip.Prefix
	// ExcludePorts drops sockets with either port in it; ExcludeComms
	// drops sockets whose every holder has one of these names.
	ExcludePorts []uint16
	ExcludeComms []string

	sets [4]*portSet // Ports, SPorts, DPorts, ExcludePorts as bits, when long (normalized)
}

// ErrUnsupported is wrapped by errors from sources this OS or kernel lacks.
var ErrUnsupported = errors.New("not supported")

// source is one way of reading the socket table.
type source interface {
	name() string
	// dump reads the sockets in q.states. It sets Inbound on each socket.
	// When the source resolves owners itself it returns ownersDone.
	dump(ctx context.Context, q query) (dumpResult, error)
}

type query struct {
	states     StateSet
	filter     Filter
	procRoot   string
	owners     bool
	processes  bool   // read each owner's Process
	containers bool   // read only each owner's container
	pinDir     string // tracer pins for the ebpf source; "" default
	timers     bool   // keepalive timers, which only the ebpf source reads
	oneShot    bool   // Options.OneShot
	// countAll asks the source to count every socket by state as well,
	// if it can do so in the walk it makes anyway.
	countAll bool
	// cookies asks for every socket's cookie, which the poller names
	// sockets by; the ebpf source then walks iter/tcp, which makes them.
	cookies bool
	// netns are the network namespaces to list; none means the caller's.
	netns []netNamespace
	// nsSearch, while set, is still looking for every namespace, which
	// netns then holds once settleNetNS returns.
	nsSearch *netnsSearch
}

// settleNetNS waits for q.nsSearch, if it is set, and fills in q.netns.
func (q *query) settleNetNS() error {
	if q.nsSearch == nil {
		return nil
	}
	var err error
	q.netns, _, err = q.nsSearch.wait()
	q.nsSearch = nil
	return err
}

// withDefaults fills in what a zero field means: CLOSE_WAIT, /proc.
func (opts Options) withDefaults() Options {
	if opts.States == 0 {
		opts.States = StatesCloseWait
	}
	if opts.ProcRoot == "" {
		opts.ProcRoot = "/proc"
	}
	return opts
}

// query is what opts asks of a source.
func (opts Options) query(countAll bool) query {
	o := opts.withDefaults()
	return query{states: o.States, filter: o.Filter.normalized(), procRoot: o.ProcRoot, processes: o.Processes, containers: o.Containers, owners: !o.NoOwners, pinDir: o.TracerPinDir, countAll: countAll, timers: o.timers, oneShot: o.OneShot}
}

// firstSource dumps q with the first source that works of those name
// stands for, noting each fallback in warnings.
func firstSource(ctx context.Context, name string, q query, warnings *[]string) (source, dumpResult, error) {
	return firstSourceNoted(ctx, name, q, false, warnings, warnings)
}

// firstSourceNoted is firstSource with the fallbacks that lose nothing a
// listing shows (to netlink, which has owners and ages too) noted in
// quiet; a fallback to procfs, which knows no ages, goes to warnings.
// skipBest leaves the best of auto's sources out.
func firstSourceNoted(ctx context.Context, name string, q query, skipBest bool, warnings, quiet *[]string) (source, dumpResult, error) {
	candidates, err := sourcesFor(name)
	if err != nil {
		return nil, dumpResult{}, err
	}
	if skipBest && len(candidates) > 1 && (name == "" || name == SourceAuto) {
		candidates = candidates[1:]
	}
	for i, src := range candidates {
		if src.name() != SourceEBPF {
			if err := q.settleNetNS(); err != nil { // ebpf waits for it later
				return nil, dumpResult{}, err
			}
		}
		res, err := src.dump(ctx, q)
		if err == nil {
			return src, res, nil
		}
		if ctx.Err() != nil {
			return nil, dumpResult{}, ctx.Err()
		}
		if i == len(candidates)-1 {
			return nil, dumpResult{}, fmt.Errorf("%s source: %w", src.name(), err)
		}
		to := warnings
		if candidates[i+1].name() != SourceProcfs {
			to = quiet
		}
		*to = append(*to, fmt.Sprintf("%s source unavailable (%v): using %s", src.name(), err, candidates[i+1].name()))
	}
	return nil, dumpResult{}, fmt.Errorf("no source for %q", name) // sourcesFor returns at least one
}

type dumpResult struct {
	sockets []Socket
	// listeners are every listener of the table, whatever the states:
	// with ownersDone, their owners too.
	listeners  []listener
	ownersDone bool
	warnings   []string
	notes      []string // what cost only time: see Snapshot.Fallbacks
	// cgroupSets, when the source knows them, stand for each owner's set
	// of cgroups, by pid: owners with equal ones are in the same cgroups.
	cgroupSets map[int]uint64
	// counts, when the source counted (query.countAll), are every socket
	// by state, whatever the filter: [0] IPv4, [1] IPv6 (dual-stack too).
	counts *[2]StateCounts
	// fullWalks are the namespaces whose whole TCP hash the ebpf source
	// walked (iter/tcp), by inode.
	fullWalks []uint64
}

// Collect reads the socket table from the chosen source, resolves owners,
// classifies causes, applies the filter and sorts oldest first.
func Collect(ctx context.Context, opts Options) (*Snapshot, error) {
	snap, _, err := gather(ctx, opts, false, nil)
	return snap, err
}

// gather is Collect, which also returns the source's counts of every
// socket by state when countAll is set and the source could count. With
// tc, the dump that confirms closed sockets, if one is made, counts too.
func gather(ctx context.Context, opts Options, countAll bool, tc *tableCount) (*Snapshot, *[2]StateCounts, error) {
	q := opts.query(countAll)
	snap := &Snapshot{Time: time.Now()}
	snap.Host, _ = os.Hostname()
	var err error
	search := searchNetNS(q.procRoot, opts.NetNS, &snap.Warnings)
	defer search.wait()
	if search.every {
		q.nsSearch = search
	} else if q.netns, snap.NetNSNames, err = search.wait(); err != nil {
		return nil, nil, err
	}
	if opts.Source == "" || opts.Source == SourceAuto {
		snap.Choice = netlinkFaster(q)
	}
	src, res, err := firstSourceNoted(ctx, opts.Source, q, snap.Choice != "", &snap.Warnings, &snap.Fallbacks)
	if err != nil {
		return nil, nil, err
	}
	q.nsSearch = nil
	if q.netns, snap.NetNSNames, err = search.wait(); err != nil {
		return nil, nil, err
	}
	snap.Source, snap.nets = src.name(), q.netns
	snap.Warnings = append(snap.Warnings, res.warnings...)
	snap.Fallbacks = append(snap.Fallbacks, res.notes...)
	// Closed sockets are in no table: unless the source read them from
	// the fds (ebpf), the owner scan finds them.
	closedVia := ""
	if q.states.Has(StateClose) && !res.ownersDone && SeesClosed(snap.Source) {
		closedVia = snap.Source
	}
	// Drop what the filter rejects before the costly owner scan, so it
	// looks only for the sockets that will be shown.
	socks := keepSockets(res.sockets, func(s *Socket) bool {
		return q.states.Has(s.State) && q.filter.matchSocket(s)
	})
	snap.listeners = res.listeners
	if q.owners || closedVia != "" {
		mine, listeners := socks, res.listeners
		if !q.owners {
			mine, listeners = nil, nil // only the closed sockets
		}
		closed, warnings, err := findOwners(ctx, q.procRoot, mine, listeners, res.ownersDone, closedVia, q.netns, tc)
		if err != nil {
			return nil, nil, err
		}
		if q.oneShot && !res.ownersDone && len(mine) >= dumpGCMin {
			// The scan's garbage (its maps, the workers' matches) is free
			// before the causes and the sort's keys are allocated.
			runtime.GC()
		}
		snap.Warnings = append(snap.Warnings, warnings...)
		socks = append(socks, closed...)
		if full := q.processes || longComms(q.filter.Comms); q.owners && (full || q.containers) {
			snap.Warnings = append(snap.Warnings, readProcesses(ctx, q.procRoot, socks, full, res.cgroupSets, opts.CRISockets)...)
		}
	}
	// A CLOSE_WAIT socket has one to four causes: room for two each in one
	// block, not an allocation per socket.
	causes := make([]Cause, 2*len(socks))
	prefault(causes)
	out := keepSockets(socks, func(s *Socket) bool {
		if s.State == StateCloseWait && s.Causes == nil {
			s.Causes, causes = causes[:0:2], causes[2:]
		}
		Classify(s)
		return q.states.Has(s.State) && q.filter.Match(s)
	})
	SortByAge(out)
	snap.Sockets = out
	return snap, res.counts, nil
}

// findOwners sets the owners of socks, unless the source read them
// (ownersDone), and blames each socket in an accept queue on the holders
// of its listener. With closedVia, the name of a source that lists no
// closed sockets, the same scan of the fds finds them, and they are
// returned: see closedSockets, which counts for tc.
func findOwners(ctx context.Context, procRoot string, socks []Socket, listeners []listener, ownersDone bool, closedVia string, nets []netNamespace, tc *tableCount) ([]Socket, []string, error) {
	ls := newListenerIndex(listeners)
	var lowners map[uint64][]Owner
	var closed []Socket
	var warnings []string
	if !ownersDone || closedVia != "" {
		mine, extra := socks, ls.unknownInodes(socks)
		if ownersDone {
			mine, extra = nil, nil
		}
		var cands []closedFD
		var err error
		lowners, cands, warnings, err = resolveOwnersClosed(ctx, procRoot, mine, extra, closedVia != "", nets)
		if err != nil {
			return nil, nil, err
		}
		var more []string
		if closed, more, err = closedSockets(ctx, procRoot, closedVia, cands, nets, tc); err != nil {
			return nil, nil, err
		}
		warnings = append(warnings, more...)
	}
	ls.attribute(socks, lowners)
	return closed, warnings, nil
}

// SeesClosed reports whether the source lists sockets the kernel closed
// (CLOSE) while fds still hold them: the ebpf source reads them from the
// fds, netlink and procfs through /proc, for processes in the namespaces
// listed.
func SeesClosed(source string) bool {
	return source == SourceEBPF || source == SourceNetlink || source == SourceProcfs
}

// keepSockets keeps the sockets for which keep returns true, in order, in
// place. Sockets are large: none moves until one is dropped.
func keepSockets(socks []Socket, keep func(*Socket) bool) []Socket {
	n := 0
	for i := range socks {
		if !keep(&socks[i]) {
			continue
		}
		if n != i {
			socks[n] = socks[i]
		}
		n++
	}
	clear(socks[n:]) // let the dropped sockets' owners go
	return socks[:n]
}

// SourceNames lists the Options.Source values this OS takes: auto, then
// its sources best first.
func SourceNames() []string {
	names := []string{SourceAuto}
	for _, s := range platformSources() {
		names = append(names, s.name())
	}
	return names
}

// sourcesFor returns the sources to try, best first.
func sourcesFor(name string) ([]source, error) {
	all := platformSources()
	if name == "" || name == SourceAuto {
		if len(all) == 0 {
			return nil, fmt.Errorf("listing sockets is %w on this OS yet", ErrUnsupported)
		}
		return all, nil
	}
	for _, s := range all {
		if s.name() == name {
			return []source{s}, nil
		}
	}
	return nil, fmt.Errorf("source %q is %w on this OS", name, ErrUnsupported)
}

// addrOnly is f without its owner and age conditions: what a socket's
// addresses alone decide.
func (f Filter) addrOnly() Filter {
	return Filter{IPv4: f.IPv4, IPv6: f.IPv6, Ports: f.Ports, SPorts: f.SPorts, DPorts: f.DPorts,
		SrcNets: f.SrcNets, DstNets: f.DstNets, ExcludePorts: f.ExcludePorts, sets: f.sets}
}

// inKernel reports whether the kernel's per-state counts can stand for
// the filtered ones: no port or address conditions.
func (f *Filter) inKernel() bool {
	return len(f.Ports) == 0 && len(f.SPorts) == 0 && len(f.DPorts) == 0 && len(f.ExcludePorts) == 0 &&
		len(f.SrcNets) == 0 && len(f.DstNets) == 0
}

// Match reports whether s passes the filter.
func (f *Filter) Match(s *Socket) bool {
	if !f.matchSocket(s) {
		return false
	}
	holders := s.Holders()
	if len(f.PIDs) > 0 && !slices.ContainsFunc(holders, func(o Owner) bool { return slices.Contains(f.PIDs, o.PID) }) {
		return false
	}
	if len(f.ExcludeComms) > 0 && len(holders) > 0 && !slices.ContainsFunc(holders, func(o Owner) bool {
		return !slices.ContainsFunc(f.ExcludeComms, func(n string) bool { return commMatches(o, n) })
	}) {
		return false
	}
	if len(f.Comms) > 0 && !slices.ContainsFunc(holders, func(o Owner) bool {
		return slices.ContainsFunc(f.Comms, func(n string) bool { return commMatches(o, n) })
	}) {
		return false
	}
	return true
}

// matchSocket applies the parts of the filter that need no owners.
func (f *Filter) matchSocket(s *Socket) bool {
	if f.IPv4 != f.IPv6 {
		if (s.Family == FamilyIPv4) != f.IPv4 {
			return false
		}
	}
	if !f.portsMatch(s.Local.Port(), s.Remote.Port()) || !f.addrsMatch(s.Local.Addr(), s.Remote.Addr()) {
		return false
	}
	if f.OlderThan > 0 && (!s.AgeKnown || s.Age < f.OlderThan) {
		return false
	}
	return true
}

// portsMatch applies the port filters to a socket's local (sport) and
// remote (dport) ports; a listener's remote port is 0. portBytecode
// compiles the same test for the kernel.
func (f *Filter) portsMatch(sport, dport uint16) bool {
	if len(f.Ports) > 0 && !f.sets[0].has(f.Ports, sport) && !f.sets[0].has(f.Ports, dport) {
		return false
	}
	if len(f.SPorts) > 0 && !f.sets[1].has(f.SPorts, sport) {
		return false
	}
	if len(f.DPorts) > 0 && !f.sets[2].has(f.DPorts, dport) {
		return false
	}
	if len(f.ExcludePorts) > 0 && (f.sets[3].has(f.ExcludePorts, sport) || f.sets[3].has(f.ExcludePorts, dport)) {
		return false
	}
	return true
}

// addrsMatch applies SrcNets to the local and DstNets to the remote
// address.
func (f *Filter) addrsMatch(local, remote netip.Addr) bool {
	in := func(nets []netip.Prefix, a netip.Addr) bool {
		a = a.Unmap()
		return slices.ContainsFunc(nets, func(p netip.Prefix) bool { return p.Contains(a) })
	}
	return (len(f.SrcNets) == 0 || in(f.SrcNets, local)) && (len(f.DstNets) == 0 || in(f.DstNets, remote))
}

// portSet is a bit per port, for long port lists (ranges).
type portSet [1024]uint64

func (s *portSet) has(list []uint16, p uint16) bool {
	if s == nil {
		return slices.Contains(list, p)
	}
	return s[p/64]&(1<<(p%64)) != 0
}

// normalized returns f with a bit set for each long port list, so that a
// range of thousands of ports costs one lookup per socket.
func (f Filter) normalized() Filter {
	for i, l := range [][]uint16{f.Ports, f.SPorts, f.DPorts, f.ExcludePorts} {
		if len(l) > 8 && f.sets[i] == nil {
			s := new(portSet)
			for _, p := range l {
				s[p/64] |= 1 << (p % 64)
			}
			f.sets[i] = s
		}
	}
	return f
}

// Classify sets s.Causes from the socket's own fields. Only CLOSE_WAIT
// and CLOSE sockets get causes; the most telling comes first.
func Classify(s *Socket) {
	s.Causes = s.Causes[:0]
	if s.State == StateClose {
		s.Causes = append(s.Causes, CauseClosedNotReleased)
		return
	}
	if s.State != StateCloseWait {
		return
	}
	if s.Inode == 0 && !s.InodeUnknown && len(s.Owners) == 0 {
		s.Causes = append(s.Causes, CauseNotAccepted)
	}
	if distinctPIDs(s.Owners) > 1 {
		s.Causes = append(s.Causes, CauseInherited)
	}
	if s.Origin == OriginConnected {
		s.Causes = append(s.Causes, CausePooledClient)
	}
	switch {
	case s.QueuesUnknown: // no Recv-Q, no cause from it
	case s.RecvQ == 0:
		s.Causes = append(s.Causes, CauseEOFNotClosed)
	case s.RecvQ == 1:
		s.Causes = append(s.Causes, CauseFINNotRead)
	default:
		s.Causes = append(s.Causes, CauseUnreadData)
	}
}

func distinctPIDs(owners []Owner) int {
	n := 0
	for i, o := range owners {
		if !slices.ContainsFunc(owners[:i], func(p Owner) bool { return p.PID == o.PID }) {
			n++
		}
	}
	return n
}

// dumpGCMin is the number of sockets from which a listing collects the
// garbage of a step (a dump, an owner scan) before the next allocates: a
// small step's is not worth the collection, several ms of CPU on an idle
// host.
const dumpGCMin = 4096

// SortByAge orders sockets oldest first; sockets of unknown age go last.
// Ties are broken by address, so the order is the same on every run.
func SortByAge(socks []Socket) {
	n := len(socks)
	if n < 2 {
		return
	}
	// Sockets are large, and a sort moves each several times: sort where
	// each belongs, then move each socket once. The ebpf source lists
	// sockets by process and fd, mostly in the order they were accepted, so
	// its tables come in a few runs already in order: a merge sort of their
	// indices reads them almost in sequence. Other sources list them in hash
	// order, and comparisons jumping all over the sockets would miss the
	// cache: those sort small keys instead.
	runs := 1
	for i := 1; i < n; i++ {
		if compareByAge(&socks[i-1], &socks[i]) > 0 {
			runs++
		}
	}
	order := make([]int32, n)
	if runs <= n/16 {
		for i := range order {
			order[i] = int32(i)
		}
		mergeSort(order, make([]int32, n), func(a, b *int32) bool {
			return compareByAge(&socks[*a], &socks[*b]) < 0
		})
	} else {
		// In place: a merge buffer would double the keys' memory.
		keys := make([]ageKey, n)
		prefault(keys)
		for i := range socks {
			keys[i].set(&socks[i], i)
		}
		slices.SortFunc(keys, func(a, b ageKey) int {
			c := 0
			if a.zoned || b.zoned {
				c = compareByAge(&socks[a.idx], &socks[b.idx])
			} else {
				c = a.compare(&b)
			}
			if c == 0 {
				c = cmp.Compare(a.idx, b.idx) // equal keys: a stable order
			}
			return c
		})
		for i := range order {
			order[i] = keys[i].idx
		}
	}
	// order[i] is where the socket that belongs at i is now. Follow each
	// cycle of that permutation, marking places done as order[i] == i.
	for i := range order {
		if int(order[i]) == i {
			continue
		}
		tmp := socks[i]
		j := i
		for {
			k := int(order[j])
			order[j] = int32(j)
			if k == i {
				socks[j] = tmp
				break
			}
			socks[j] = socks[k]
			j = k
		}
	}
}

// mergeSort sorts s by less with a natural merge sort, which costs one pass
// over s per doubling of the runs s is already sorted in; a random order
// costs n log n. buf has room for len(s) elements.
func mergeSort[E any](s, buf []E, less func(a, b *E) bool) {
	const minRun = 24 // shorter runs are first extended by insertion
	n := len(s)
	var bounds []int // where each run starts, then n
	for i := 0; i < n; {
		j := i + 1
		if j < n && less(&s[j], &s[j-1]) {
			for j < n && less(&s[j], &s[j-1]) {
				j++
			}
			slices.Reverse(s[i:j]) // strictly descending: reversed, still stable
		} else {
			for j < n && !less(&s[j], &s[j-1]) {
				j++
			}
		}
		for end := min(i+minRun, n); j < end; j++ {
			for k := j; k > i && less(&s[k], &s[k-1]); k-- {
				s[k], s[k-1] = s[k-1], s[k]
			}
		}
		bounds = append(bounds, i)
		i = j
	}
	bounds = append(bounds, n)
	src, dst := s, buf[:n]
	for len(bounds) > 2 {
		next := bounds[:0]
		for r := 0; r+1 < len(bounds); r += 2 {
			lo, mid := bounds[r], bounds[r+1]
			next = append(next, lo)
			if r+2 == len(bounds) { // an odd run out: carried over
				copy(dst[lo:mid], src[lo:mid])
				continue
			}
			hi := bounds[r+2]
			a, b, o := lo, mid, lo
			for ; a < mid && b < hi; o++ {
				if less(&src[b], &src[a]) {
					dst[o] = src[b]
					b++
				} else {
					dst[o] = src[a]
					a++
				}
			}
			o += copy(dst[o:], src[a:mid])
			copy(dst[o:], src[b:hi])
		}
		bounds = append(next, n)
		src, dst = dst, src
	}
	if n > 0 && &src[0] != &s[0] {
		copy(s, src)
	}
}

// compareByAge is the order of SortByAge: known ages before unknown ones,
// older first, then local and remote address. Not a stable order: the keys
// tell any two sockets of one table apart.
func compareByAge(a, b *Socket) int {
	if a.AgeKnown != b.AgeKnown {
		if a.AgeKnown {
			return -1
		}
		return 1
	}
	if c := cmp.Compare(b.Age, a.Age); c != 0 {
		return c
	}
	if c := a.Local.Compare(b.Local); c != 0 {
		return c
	}
	return a.Remote.Compare(b.Remote)
}

// ageKey is a socket's place in compareByAge's order: words compared in
// turn.
type ageKey struct {
	w     [9]uint64
	zoned bool  // an address has a zone: compare the sockets
	idx   int32 // the socket's index
}

func (k *ageKey) set(s *Socket, i int) {
	l, r := s.Local.Addr(), s.Remote.Addr()
	lb, rb := l.As16(), r.As16() // ordered as netip orders them, after BitLen
	unknown := uint64(0)
	if !s.AgeKnown {
		unknown = 1
	}
	*k = ageKey{
		w: [9]uint64{
			unknown,
			^(uint64(s.Age) ^ 1<<63), // descending int64 as ascending uint64
			uint64(l.BitLen()),
			binary.BigEndian.Uint64(lb[:8]),
			binary.BigEndian.Uint64(lb[8:]),
			uint64(s.Local.Port())<<8 | uint64(r.BitLen()),
			binary.BigEndian.Uint64(rb[:8]),
			binary.BigEndian.Uint64(rb[8:]),
			uint64(s.Remote.Port()),
		},
		zoned: l.Zone() != "" || r.Zone() != "",
		idx:   int32(i),
	}
}

func (a *ageKey) compare(b *ageKey) int {
	for i := range a.w {
		if a.w[i] != b.w[i] {
			return cmp.Compare(a.w[i], b.w[i])
		}
	}
	return 0
}
