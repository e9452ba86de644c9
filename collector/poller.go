package collector

import (
	"cmp"
	"context"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"time"
)

// SocketID names one socket across collections and sources. The kernel's
// socket cookie is unique for the life of the system, so when a source reads
// it, it alone names the socket; otherwise the inode and both addresses do.
type SocketID struct {
	Cookie        uint64
	Inode         uint64
	Local, Remote netip.AddrPort
	NetNS         uint64 // the same addresses in two namespaces are two sockets
}

// ID returns the socket's identity.
func (s *Socket) ID() SocketID {
	if s.Cookie != 0 {
		return SocketID{Cookie: s.Cookie}
	}
	return SocketID{Inode: s.Inode, Local: s.Local, Remote: s.Remote, NetNS: s.NetNS}
}

// Changes is what a poll found different from the poll before it.
type Changes struct {
	Host     string
	Time     time.Time
	Source   string
	Warnings []string
	// Full is set when Sockets holds every socket (the first poll, and
	// each full refresh): the receiver should replace what it has.
	Full bool
	// Sockets are the sockets that are new, changed (Recv-Q, owners,
	// causes) or newly pass the filter, with ages as of Time. They share
	// their Owners and Causes slices with the poller: read-only.
	Sockets []Socket
	// Gone lists the sockets that left, or no longer pass the filter.
	Gone []SocketID
}

// Poller collects again and again, for views that refresh (closewait
// watch), and reports what changed. Its cache holds every socket it has
// seen, owners and causes included, so a poll costs a read of the socket
// table and work for what is new:
//
//   - With the netlink or ebpf source, a poll after the first dumps over
//     sock_diag without tcp_info (a known socket's age grows with the
//     clock) and decodes only the cookie, inode and queues of known
//     sockets; new ones get their tcp_info from one exact lookup each.
//   - A new socket's first owner is probed for in the processes that
//     already hold known ones (or listen for them), reading only fd
//     numbers above those known (a leaking process's next fd). Every
//     holder comes from a search through every process, which is limited
//     to a small share of the time: until it runs the socket shows the
//     owners probed, or none.
//   - The fd tables of the processes that hold known sockets, or listen
//     for sockets in an accept queue, are followed: their size at every
//     call, a listing within a small share of time. A known socket whose
//     fd was closed, or whose process exited, is searched for again
//     (another process may hold it); one in an accept queue whose
//     listener's process changed is looked up, and once accepted learnt
//     again with its fd.
//
// What this cannot see (a process forking and so sharing a known socket
// while keeping its own copy, an fd passed over a unix socket, an fd
// number closed and reused between two listings, a command renamed by
// exec) is caught by a full collection every few minutes. A Poller is not
// safe for concurrent use.
type Poller struct {
	opts    Options
	pre     Filter // opts.Filter without what needs owners or ages
	host    string
	refresh time.Duration

	misses uint32 // dumps a socket may be missing from before it is gone

	src  source
	lean leanDumper // nil unless the source has a cheaper re-read
	// netnsNames name the namespaces of the last poll (Snapshot.NetNSNames).
	netnsNames map[uint64]string
	gen        uint32 // polls: a socket not seen in the current one is gone
	round      uint32 // calls: marks what one call has put on changed
	refreshed  time.Time

	// The cache, by cookie when the source reads cookies (a map keyed by
	// an integer is several times faster, and it is looked up once per
	// socket per poll), else by the whole SocketID.
	byCookie map[uint64]*cachedSocket
	byID     map[SocketID]*cachedSocket
	owned    map[int]*ownedFDs       // known sockets' fds by process
	inbound  map[netip.AddrPort]bool // local address -> Inbound, for Complete
	pending  int                     // cached sockets whose owners are not searched everywhere yet
	changed  []*cachedSocket         // in this poll
	budget   budget

	listeners *listenerIndex         // the last dump's listeners
	lowners   map[uint64][]Owner     // listeners' holders by inode, once read
	queued    map[*cachedSocket]bool // sockets in an accept queue
	fdCounts  map[int]int            // mirrors: open fds of holders and listeners' holders
	listing   budget                 // for listings of fd tables whose size did not change
}

// cachedSocket is what the poller knows of a socket. Its age was measured
// at seen.
type cachedSocket struct {
	sock    Socket
	seen    time.Time
	gen     uint32 // last poll that saw the socket
	mark    uint32 // round in which it was put on the changed list
	tried   uint32 // round in which its owners were last searched for
	visible bool   // passed the whole filter when last reported
	pending bool   // owners not searched in every process yet
	checked bool   // in an accept queue as of a dump or lookup, not an event
}

// ownedFDs are the fds of known sockets in one process: a scan of the
// process's fds skips them, and its next fd is likely above the highest.
type ownedFDs struct {
	fds     map[int32]int // fd -> sockets through it (a socket once per fd)
	maxFD   int32
	comm    string
	lastNew time.Time // last time a new socket was found here
}

// leanDumper re-reads the socket table cheaply.
type leanDumper interface {
	// dump reads the sockets in the states, and of the ports, it was made
	// for. For each it calls known with the fields a poll compares; the
	// sockets known does not know come back whole, Inbound set, ages
	// unknown. The listeners it saw come back too.
	dump(ctx context.Context, known func(leanKey) bool) ([]Socket, []listener, error)
	// ages fills the age fields of the given sockets.
	ages(ctx context.Context, socks []*Socket) error
	// lookup reads one socket, in whatever state; ok is false when it is
	// gone.
	lookup(s *Socket) (got Socket, ok bool, err error)
	close()
}

// leanKey is what a lean dump decodes of a socket it might know.
type leanKey struct {
	cookie, inode uint64
	state         State
	recvQ, sendQ  uint32
}

// pollerRefresh is how often a Poller collects in full: owners found again
// from scratch, ages from tcp_info again.
const pollerRefresh = 3 * time.Minute

// leanLookupMax bounds the per-socket tcp_info lookups of one poll; past it
// a full dump is cheaper.
const leanLookupMax = 1000

// searchShare is the share of wall time that searches for owners through
// every process may take: a busy host keeps opening sockets in processes
// the poller has not met, and each such search reads every fd there is.
const searchShare = 0.02

// listingShare is the share of wall time for listing the fd tables of
// holders whose number of fds did not change: one fd closed and another
// opened leave it the same.
const listingShare = 0.01

// NewPoller returns a Poller for opts. Nothing is read until the first Poll,
// which picks the source as Collect does.
func NewPoller(opts Options) *Poller {
	opts = opts.withDefaults()
	p := &Poller{
		opts: opts, pre: opts.Filter.addrOnly(), refresh: pollerRefresh,
		byCookie: map[uint64]*cachedSocket{}, byID: map[SocketID]*cachedSocket{},
		owned: map[int]*ownedFDs{}, inbound: map[netip.AddrPort]bool{},
		budget:  budget{share: searchShare},
		lowners: map[uint64][]Owner{}, queued: map[*cachedSocket]bool{}, fdCounts: map[int]int{},
		listing: budget{share: listingShare},
	}
	p.host, _ = os.Hostname()
	return p
}

// TolerateMisses keeps a socket missing from up to n consecutive polls
// before reporting it gone. A dump of the kernel's socket table is not a
// snapshot: while sockets come and go it can skip live ones, which would
// otherwise flicker out and back in as new. A view (watch) tolerates one;
// a measurement of when sockets leave (the harness) tolerates none, the
// default.
func (p *Poller) TolerateMisses(n int) { p.misses = uint32(max(n, 0)) }

// Source returns the name of the source in use, "" before the first Poll.
func (p *Poller) Source() string {
	if p.src == nil {
		return ""
	}
	return p.src.name()
}

// Close releases what the poller keeps open between polls.
func (p *Poller) Close() error {
	if p.lean != nil {
		p.lean.close()
	}
	return nil
}

// Snapshot returns every socket the poller knows that passes the filter,
// with ages as of now, as of the last poll.
func (p *Poller) Snapshot() *Snapshot {
	now := time.Now()
	snap := &Snapshot{Host: p.host, Time: now, Source: p.Source(), NetNSNames: p.netnsNames}
	p.each(func(c *cachedSocket) {
		if c.visible {
			snap.Sockets = append(snap.Sockets, c.at(now))
		}
	})
	return snap
}

// Poll collects like Collect, reusing what earlier polls learned: it is
// PollChanges followed by Snapshot. The sockets come in no particular
// order, and share their Owners and Causes slices with the poller's cache:
// treat them as read-only.
func (p *Poller) Poll(ctx context.Context) (*Snapshot, error) {
	ch, err := p.PollChanges(ctx)
	if err != nil {
		return nil, err
	}
	snap := p.Snapshot()
	snap.Time, snap.Warnings = ch.Time, ch.Warnings
	return snap, nil
}

// PollChanges reads the socket table and returns what changed since the
// last poll. The first poll, and one every few minutes, is full.
func (p *Poller) PollChanges(ctx context.Context) (*Changes, error) {
	now := time.Now()
	ch := &Changes{Host: p.host, Time: now, Source: p.Source()}
	refresh := p.src == nil || now.Sub(p.refreshed) >= p.refresh
	p.gen++
	p.round++
	p.changed = p.changed[:0]
	var fresh []Socket
	// Other namespaces than the caller's need the sources' full dumps:
	// the lean re-read knows only its own.
	var nsWarnings []string
	netns, names, err := resolveNetNS(p.opts.withDefaults().ProcRoot, p.opts.NetNS, &nsWarnings)
	if err != nil {
		return nil, err
	}
	p.netnsNames = names
	if p.src == nil {
		ch.Warnings = append(ch.Warnings, nsWarnings...)
	}
	full := refresh || p.lean == nil || netns != nil
	if !full {
		var err error
		var ls []listener
		if fresh, ls, err = p.lean.dump(ctx, p.knownLean); err != nil {
			return nil, err
		}
		p.listeners = newListenerIndex(ls)
		fresh = p.preFilter(fresh)
		if len(fresh) > leanLookupMax {
			full = true // one dump with tcp_info beats a lookup per socket
		} else if err := p.lean.ages(ctx, ptrs(fresh)); err != nil {
			return nil, err
		}
	}
	ownersDone := false
	if full {
		q := p.opts.query(false)
		q.netns, q.cookies = netns, true
		res, err := p.dumpFull(ctx, q, &ch.Warnings)
		if err != nil {
			return nil, err
		}
		ch.Source = p.src.name()
		ownersDone = res.ownersDone
		if refresh {
			p.reset() // learn owners and comms again from scratch
			p.refreshed = now
			ch.Full = true
		}
		p.setListeners(res.listeners)
		fresh = p.matchFull(p.preFilter(res.sockets), now, ownersDone)
	}
	ch.Gone = p.evict()
	if refresh {
		// The first search is the price of starting, and a refresh is
		// rare: it must find every owner, and it does not delay the
		// searches for what comes next.
		p.budget.next = time.Time{}
	}
	if err := p.learn(ctx, fresh, now, ownersDone, true, ch); err != nil {
		return nil, err
	}
	if refresh {
		p.budget.next = time.Time{}
	}
	// The dump has seen what was accepted: no lookups.
	if err := p.followUp(ctx, now, ch, false); err != nil {
		return nil, err
	}
	p.report(ch, now)
	return ch, nil
}

// Refresh brings owners up to date between polls; a view fed by events
// calls it every interval. It re-reads the owners of sockets whose holders
// closed them or exited, looks up the sockets in an accept queue whose
// listener's process changed its fd table (accepted, they get their
// owners), and searches every process for owners not complete yet, if the
// share of time for searches allows.
func (p *Poller) Refresh(ctx context.Context) (*Changes, error) {
	now := time.Now()
	ch := &Changes{Host: p.host, Time: now, Source: p.Source()}
	p.round++
	p.changed = p.changed[:0]
	if err := p.followUp(ctx, now, ch, true); err != nil {
		return nil, err
	}
	p.report(ch, now)
	return ch, nil
}

// followUp is what every call does after its own work: it checks the fd
// tables, searches for pending owners and blames queued sockets on their
// listeners' holders.
func (p *Poller) followUp(ctx context.Context, now time.Time, ch *Changes, lookQueued bool) error {
	if p.opts.NoOwners {
		return nil
	}
	if err := p.checkHolders(ctx, now, ch, lookQueued); err != nil {
		return err
	}
	if err := p.retryPending(ctx, now, ch); err != nil {
		return err
	}
	return p.attribute(ctx, ch)
}

// Complete fills the owners and causes of sockets learned elsewhere, such
// as from the tracer's events, remembers them, and returns those that pass
// the filter. Owners are looked up only for sockets the poller does not
// know. Inbound is taken from known sockets on the same local address, and
// is true for an address never seen: most CLOSE_WAIT leaks are on servers,
// and the next Poll reads the listeners.
func (p *Poller) Complete(ctx context.Context, socks []Socket) (*Changes, error) {
	now := time.Now()
	ch := &Changes{Host: p.host, Time: now, Source: p.Source()}
	p.round++
	p.changed = p.changed[:0]
	var fresh []Socket
	eph := readEphemeralPorts(p.opts.ProcRoot)
	for _, s := range p.preFilter(socks) {
		// An event from before an accept names no inode: the cache,
		// which has one, is newer.
		if c := p.lookup(&s); c != nil && (c.sock.Inode == s.Inode || s.Inode == 0) {
			// Known: the event brings an exact age.
			if s.AgeKnown && (s.AgeExact || !c.sock.AgeKnown) {
				c.sock.Age, c.sock.AgeKnown, c.sock.AgeExact, c.sock.AgeMax = s.Age, true, s.AgeExact, s.AgeMax
				c.seen = now
			}
			p.touch(c)
			continue
		}
		in, ok := p.inbound[s.Local]
		s.Inbound = in || !ok
		inferOrigin(&s, eph)
		fresh = append(fresh, s)
	}
	if err := p.learn(ctx, fresh, now, false, false, ch); err != nil {
		return nil, err
	}
	if err := p.attribute(ctx, ch); err != nil {
		return nil, err
	}
	p.report(ch, now)
	return ch, nil
}

// Forget drops sockets from the cache without reporting them: the caller
// knows they left (the tracer said so). A poll would have dropped them.
func (p *Poller) Forget(ids []SocketID) {
	for _, id := range ids {
		var c *cachedSocket
		if id.Cookie != 0 {
			c = p.byCookie[id.Cookie]
		} else {
			c = p.byID[id]
		}
		if c != nil {
			p.drop(c)
		}
	}
}

// knownLean handles one socket of a lean dump: a known one is marked seen,
// and put on the changed list when its queues or state moved.
func (p *Poller) knownLean(k leanKey) bool {
	c := p.byCookie[k.cookie]
	if c == nil || c.sock.Inode != k.inode {
		return false // new, or accepted since: it has an fd now
	}
	c.gen = p.gen
	if c.sock.RecvQ != k.recvQ || c.sock.State != k.state {
		c.sock.RecvQ, c.sock.State = k.recvQ, k.state
		p.reclassify(c)
	}
	c.sock.SendQ = k.sendQ
	return true
}

// matchFull handles a full dump: known sockets are marked seen and updated,
// the others returned, in place: at a refresh that is every socket, and a
// copy would double the dump.
func (p *Poller) matchFull(socks []Socket, now time.Time, ownersDone bool) []Socket {
	fresh := socks[:0]
	for i := range socks {
		s := &socks[i]
		c := p.lookup(s)
		if c == nil || c.sock.Inode != s.Inode {
			fresh = append(fresh, *s)
			continue
		}
		c.gen = p.gen
		if s.AgeKnown {
			c.sock.Age, c.sock.AgeKnown, c.sock.AgeExact, c.sock.AgeMax = s.Age, true, s.AgeExact, s.AgeMax
			c.seen = now
		}
		c.sock.SendQ, c.sock.Timer, c.sock.TimerLeft, c.sock.Keepalive = s.SendQ, s.Timer, s.TimerLeft, s.Keepalive
		moved := c.sock.RecvQ != s.RecvQ || c.sock.State != s.State || c.sock.Inbound != s.Inbound
		if ownersDone && !slices.Equal(c.sock.Owners, s.Owners) {
			p.setOwners(c, s.Owners)
			moved = true
		}
		if moved {
			c.sock.RecvQ, c.sock.State, c.sock.Inbound = s.RecvQ, s.State, s.Inbound
			p.reclassify(c)
		}
	}
	return fresh
}

// preFilter keeps, in place, the sockets in the wanted states that pass
// the filter's parts that need neither owners nor ages.
func (p *Poller) preFilter(socks []Socket) []Socket {
	out := socks[:0]
	for i := range socks {
		if p.opts.States.Has(socks[i].State) && p.pre.Match(&socks[i]) {
			out = append(out, socks[i])
		}
	}
	return out
}

// learn finds the owners of new sockets (unless the source gave them),
// classifies and caches them. dumped says they come from the table, not
// from events, which may be older than an accept.
func (p *Poller) learn(ctx context.Context, fresh []Socket, now time.Time, ownersDone, dumped bool, ch *Changes) error {
	if len(fresh) == 0 {
		return nil
	}
	var entries []*cachedSocket
	for i := range fresh {
		s := &fresh[i]
		c := &cachedSocket{sock: *s, seen: now, gen: p.gen, checked: dumped}
		if old := p.lookup(s); old != nil {
			p.drop(old) // the same socket, accepted since: same ID
		}
		if !p.opts.NoOwners && s.Inode != 0 && (!ownersDone || len(s.Owners) == 0) {
			c.sock.Owners, c.pending = nil, true
			p.pending++
		}
		p.store(c)
		entries = append(entries, c)
	}
	if err := p.resolve(ctx, entries, now, ch); err != nil {
		return err
	}
	for _, c := range entries {
		if !queued(&c.sock) {
			c.sock.Listener = nil // it was kept as a hint
		}
		p.index(c)
		c.sock.Causes = nil
		Classify(&c.sock)
		p.touch(c)
	}
	return nil
}

// retryPending searches again for the owners of sockets that still wait.
func (p *Poller) retryPending(ctx context.Context, now time.Time, ch *Changes) error {
	if p.pending == 0 || !p.budget.allow(now) {
		return nil
	}
	var waiting []*cachedSocket
	p.each(func(c *cachedSocket) {
		if c.pending && c.tried != p.round {
			waiting = append(waiting, c)
		}
	})
	if len(waiting) == 0 {
		return nil
	}
	before := make([][]Owner, len(waiting))
	for i, c := range waiting {
		before[i] = c.sock.Owners
		p.unindex(c)
	}
	err := p.resolve(ctx, waiting, now, ch)
	for i, c := range waiting {
		p.index(c)
		if !slices.Equal(before[i], c.sock.Owners) {
			p.reclassify(c)
		}
	}
	return err
}

// resolve fills the owners of the pending entries among entries, which
// are not indexed: first by probing the fds above the known ones in the
// processes that grew last (and in the processes listening for entries
// that were queued), then, within the time share, by a search through
// every process, which finds every holder. Entries not searched
// everywhere stay pending, with the owners probed.
func (p *Poller) resolve(ctx context.Context, entries []*cachedSocket, now time.Time, ch *Changes) error {
	want := map[uint64][]Owner{}
	for _, c := range entries {
		if c.pending {
			c.tried = p.round
			want[c.sock.Inode] = nil
		}
	}
	if len(want) == 0 {
		return nil
	}
	hints := p.hintPIDs(entries)
	probeFDs(p.opts.ProcRoot, hints[:min(len(hints), probePIDs)], p.owned, want)
	complete := false
	if p.budget.allow(now) {
		start := time.Now()
		rest := make([]Socket, 0, len(want))
		for ino := range want {
			rest = append(rest, Socket{Inode: ino})
		}
		_, warnings, err := resolveOwners(ctx, p.opts.ProcRoot, rest, nil)
		if err != nil {
			return err
		}
		ch.Warnings = append(ch.Warnings, warnings...)
		for _, s := range rest {
			want[s.Inode] = s.Owners
		}
		complete = true
		p.budget.spend(start, time.Now())
	}
	for _, c := range entries {
		if !c.pending {
			continue
		}
		owners := want[c.sock.Inode]
		if complete {
			c.pending = false
			p.pending--
		} else {
			// What the probe found adds to what the socket had.
			owners = append(slices.Clone(c.sock.Owners), owners...)
		}
		sortOwners(owners)
		c.sock.Owners = slices.Compact(owners)
		for _, o := range owners {
			if f := p.owned[o.PID]; f != nil {
				f.lastNew = now
			}
		}
	}
	return nil
}

// probePIDs bounds the processes the cheap probe tries, the latest to
// grow first: the leak is usually in one or two of them.
const probePIDs = 32

// hintPIDs lists the processes to probe for entries' owners: those
// listening for the ones that were queued (one of them accepted it), then
// those holding known sockets, the one that grew last first.
func (p *Poller) hintPIDs(entries []*cachedSocket) []int {
	var pids []int
	for _, c := range entries {
		for _, o := range c.sock.Listener {
			if c.pending && !slices.Contains(pids, o.PID) {
				pids = append(pids, o.PID)
			}
		}
	}
	listening := len(pids)
	for pid := range p.owned {
		if !slices.Contains(pids[:listening], pid) {
			pids = append(pids, pid)
		}
	}
	slices.SortFunc(pids[listening:], func(a, b int) int {
		fa, fb := p.owned[a], p.owned[b]
		return cmp.Or(fb.lastNew.Compare(fa.lastNew), cmp.Compare(len(fb.fds), len(fa.fds)), cmp.Compare(a, b))
	})
	return pids
}

// checkHolders follows the fd tables of the processes that hold known
// sockets, and of those listening for queued ones: by their size every
// call, and by a listing of each within a share of time. The known
// sockets' fds that are closed, or whose process exited, lose that owner,
// and the sockets are searched for again: another process may hold them
// (a handoff to a child). With lookQueued, the queued sockets whose
// listener's processes changed size (or that came from events, or all of
// them when the tables were listed) are looked up: accepted, they are
// learnt again with their inode.
func (p *Poller) checkHolders(ctx context.Context, now time.Time, ch *Changes, lookQueued bool) error {
	changed := map[int]bool{}
	seen := map[int]bool{}
	look := func(pid int) {
		if seen[pid] {
			return
		}
		seen[pid] = true
		n := fdCount(p.opts.ProcRoot, pid)
		if old, ok := p.fdCounts[pid]; (ok && old != n) || n < 0 {
			changed[pid] = true
		}
		p.fdCounts[pid] = n
	}
	for pid := range p.owned {
		look(pid)
	}
	for c := range p.queued {
		for _, o := range c.sock.Listener {
			look(o.PID)
		}
	}
	for pid := range p.fdCounts {
		if !seen[pid] {
			delete(p.fdCounts, pid)
		}
	}

	type pidFD struct {
		pid int
		fd  int32
	}
	closed := map[pidFD]bool{}
	list := func(pid int) {
		if f := p.owned[pid]; f != nil {
			for _, fd := range closedFDs(p.opts.ProcRoot, pid, f.fds) {
				closed[pidFD{pid, fd}] = true
			}
		}
	}
	listed := p.listing.allow(now)
	if listed {
		// The lookups of every queued socket below count too.
		start := time.Now()
		defer func() { p.listing.spend(start, time.Now()) }()
		for pid := range p.owned {
			list(pid)
		}
	} else {
		for pid := range changed {
			if p.fdCounts[pid] < 0 {
				list(pid) // exited: every fd is closed
			}
		}
	}
	isClosed := func(o Owner) bool { return closed[pidFD{o.PID, int32(o.FD)}] }
	var lost, queued []*cachedSocket
	if len(closed) > 0 {
		p.each(func(c *cachedSocket) {
			if slices.ContainsFunc(c.sock.Owners, isClosed) {
				lost = append(lost, c)
			}
		})
	}
	if lookQueued {
		for c := range p.queued {
			if !c.checked || listed ||
				slices.ContainsFunc(c.sock.Listener, func(o Owner) bool { return changed[o.PID] }) {
				queued = append(queued, c)
			}
		}
	}
	if len(lost) == 0 && len(queued) == 0 {
		return nil
	}
	cur, err := p.current(ctx, append(slices.Clone(lost), queued...))
	if err != nil {
		return err
	}
	for _, c := range lost {
		if k, ok := cur[c]; cur != nil && (!ok || !p.opts.States.Has(k.state)) {
			ch.Gone = p.remove(c, ch.Gone) // closed by its last holder
			continue
		}
		p.setOwners(c, slices.DeleteFunc(slices.Clone(c.sock.Owners), isClosed))
		if !c.pending {
			c.pending = true
			p.pending++
		}
		p.reclassify(c)
	}
	var accepted []Socket
	for _, c := range queued {
		k, ok := cur[c]
		switch {
		case cur == nil:
		case !ok || !p.opts.States.Has(k.state):
			ch.Gone = p.remove(c, ch.Gone)
		case k.inode != 0:
			s := c.at(now)
			s.Inode, s.State, s.RecvQ, s.SendQ, s.Owners, s.Causes = k.inode, k.state, k.recvQ, k.sendQ, nil, nil
			accepted = append(accepted, s)
		default:
			c.checked = true
		}
	}
	return p.learn(ctx, accepted, now, false, true, ch)
}

// current reads what the kernel has now of each of cs: one lookup each,
// or one dump of the table when they are many. Sockets gone, or no longer
// in the states dumped, are missing from the map. It is nil when the
// source cannot tell.
func (p *Poller) current(ctx context.Context, cs []*cachedSocket) (map[*cachedSocket]leanKey, error) {
	if p.lean == nil || len(cs) == 0 {
		return nil, nil
	}
	out := make(map[*cachedSocket]leanKey, len(cs))
	if len(cs) <= leanLookupMax {
		for _, c := range cs {
			got, ok, err := p.lean.lookup(&c.sock)
			if err != nil {
				return nil, err
			}
			if ok {
				out[c] = leanKey{cookie: got.Cookie, inode: got.Inode, state: got.State, recvQ: got.RecvQ, sendQ: got.SendQ}
			}
		}
		return out, nil
	}
	want := make(map[uint64]*cachedSocket, len(cs))
	for _, c := range cs {
		want[c.sock.Cookie] = c
	}
	_, _, err := p.lean.dump(ctx, func(k leanKey) bool {
		if c := want[k.cookie]; c != nil {
			out[c] = k
		}
		return true // decode nothing
	})
	return out, err
}

// setListeners keeps the listeners of a full dump, and their holders when
// the source read them.
func (p *Poller) setListeners(ls []listener) {
	p.listeners = newListenerIndex(ls)
	for _, l := range ls {
		if l.ownersKnown {
			p.lowners[l.inode] = l.owners
		}
	}
}

// attribute blames each queued socket on the holders of the listeners it
// waits on, searching every process for the holders of listeners not met
// before.
func (p *Poller) attribute(ctx context.Context, ch *Changes) error {
	if len(p.queued) == 0 || p.listeners == nil || p.opts.NoOwners {
		return nil
	}
	var unknown []uint64
	for c := range p.queued {
		for _, j := range p.listeners.match(c.sock.NetNS, c.sock.Local) {
			l := &p.listeners.ls[j]
			if _, ok := p.lowners[l.inode]; !ok && !l.ownersKnown && l.inode != 0 && !slices.Contains(unknown, l.inode) {
				unknown = append(unknown, l.inode)
			}
		}
	}
	if len(unknown) > 0 {
		owners, warnings, err := resolveOwners(ctx, p.opts.ProcRoot, nil, unknown)
		if err != nil {
			return err
		}
		ch.Warnings = append(ch.Warnings, warnings...)
		for _, ino := range unknown {
			p.lowners[ino] = owners[ino] // nil: none we may see
		}
	}
	for c := range p.queued {
		if h := p.listeners.holders(c.sock.NetNS, c.sock.Local, p.lowners); !slices.Equal(h, c.sock.Listener) {
			c.sock.Listener = h
			p.touch(c)
		}
	}
	return nil
}

// report puts the changed sockets that pass the whole filter into ch, and
// those that stopped passing it into ch.Gone. A full report lists every
// visible socket.
func (p *Poller) report(ch *Changes, now time.Time) {
	check := p.changed
	if p.opts.Filter.OlderThan > 0 {
		// Sockets pass by growing old: look at every hidden one.
		p.each(func(c *cachedSocket) {
			if !c.visible && c.mark != p.round {
				check = append(check, c)
			}
		})
	}
	for _, c := range check {
		if p.lookup(&c.sock) != c {
			continue // dropped since it changed
		}
		s := c.at(now)
		vis := p.opts.Filter.Match(&s)
		switch {
		case vis && !ch.Full:
			ch.Sockets = append(ch.Sockets, s)
		case !vis && c.visible:
			ch.Gone = append(ch.Gone, s.ID())
		}
		c.visible = vis
	}
	if ch.Full {
		ch.Gone = nil
		n := 0
		p.each(func(c *cachedSocket) {
			if c.visible {
				n++
			}
		})
		ch.Sockets = make([]Socket, 0, n) // no garbage of appends at 45k
		p.each(func(c *cachedSocket) {
			if c.visible {
				ch.Sockets = append(ch.Sockets, c.at(now))
			}
		})
		return
	}
	if len(ch.Gone) > 0 && len(ch.Sockets) > 0 {
		// A socket accepted since the last poll is evicted and learnt
		// again under the same cookie: it is not gone.
		present := map[SocketID]bool{}
		for i := range ch.Sockets {
			present[ch.Sockets[i].ID()] = true
		}
		ch.Gone = slices.DeleteFunc(ch.Gone, func(id SocketID) bool { return present[id] })
	}
}

// at returns the socket with its ages as of now.
func (c *cachedSocket) at(now time.Time) Socket {
	s := c.sock
	if s.AgeKnown {
		grown := now.Sub(c.seen)
		s.Age += grown
		if s.AgeMax != 0 {
			s.AgeMax += grown
		}
	}
	return s
}

// touch puts c on this call's changed list, once.
func (p *Poller) touch(c *cachedSocket) {
	if c.mark != p.round {
		c.mark = p.round
		p.changed = append(p.changed, c)
	}
}

// reclassify recomputes the causes after a change and reports the socket.
func (p *Poller) reclassify(c *cachedSocket) {
	c.sock.Causes = nil // a new slice: earlier reports share the old one
	Classify(&c.sock)
	p.touch(c)
}

// dumpFull reads the table with the chosen source, picking it on the first
// call the way Collect does.
func (p *Poller) dumpFull(ctx context.Context, q query, warnings *[]string) (dumpResult, error) {
	if p.src != nil {
		res, err := p.src.dump(ctx, q)
		if err != nil {
			return dumpResult{}, fmt.Errorf("%s source: %w", p.src.name(), err)
		}
		*warnings = append(*warnings, res.warnings...)
		return res, nil
	}
	src, res, err := firstSource(ctx, p.opts.Source, q, warnings)
	if err != nil {
		return dumpResult{}, err
	}
	p.src = src
	p.lean = newLeanDumper(src, p.opts.ProcRoot, p.opts.States, p.pre)
	*warnings = append(*warnings, res.warnings...)
	return res, nil
}

func (p *Poller) lookup(s *Socket) *cachedSocket {
	if s.Cookie != 0 {
		return p.byCookie[s.Cookie]
	}
	return p.byID[s.ID()]
}

func (p *Poller) store(c *cachedSocket) {
	if c.sock.Cookie != 0 {
		p.byCookie[c.sock.Cookie] = c
		return
	}
	p.byID[c.sock.ID()] = c
}

// each calls fn for every cached socket.
func (p *Poller) each(fn func(*cachedSocket)) {
	for _, c := range p.byCookie {
		fn(c)
	}
	for _, c := range p.byID {
		fn(c)
	}
}

// evict forgets the sockets the last polls did not see (see
// TolerateMisses) and returns those that had been reported.
func (p *Poller) evict() []SocketID {
	var gone []SocketID
	for k, c := range p.byCookie {
		if p.gen-c.gen > p.misses {
			delete(p.byCookie, k)
			gone = p.forget(c, gone)
		}
	}
	for k, c := range p.byID {
		if p.gen-c.gen > p.misses {
			delete(p.byID, k)
			gone = p.forget(c, gone)
		}
	}
	return gone
}

// drop removes one cached socket.
func (p *Poller) drop(c *cachedSocket) { p.remove(c, nil) }

// remove removes one cached socket, adding it to gone if it was reported.
func (p *Poller) remove(c *cachedSocket, gone []SocketID) []SocketID {
	if c.sock.Cookie != 0 {
		delete(p.byCookie, c.sock.Cookie)
	} else {
		delete(p.byID, c.sock.ID())
	}
	return p.forget(c, gone)
}

func (p *Poller) forget(c *cachedSocket, gone []SocketID) []SocketID {
	p.unindex(c)
	if c.pending {
		p.pending--
	}
	if c.visible {
		gone = append(gone, c.sock.ID())
	}
	return gone
}

// reset empties the cache.
func (p *Poller) reset() {
	clear(p.byCookie)
	clear(p.byID)
	clear(p.owned)
	clear(p.inbound)
	clear(p.lowners)
	clear(p.queued)
	p.pending = 0
}

// setOwners replaces the owners of a cached socket, keeping the indexes.
func (p *Poller) setOwners(c *cachedSocket, owners []Owner) {
	p.unindex(c)
	c.sock.Owners = owners
	p.index(c)
}

// index records c's owners' fds, its local address, and whether it waits
// in an accept queue.
func (p *Poller) index(c *cachedSocket) {
	p.inbound[c.sock.Local] = c.sock.Inbound
	if queued(&c.sock) {
		p.queued[c] = true
	}
	owners := c.sock.Owners
	for _, o := range owners {
		f := p.owned[o.PID]
		if f == nil {
			f = &ownedFDs{fds: map[int32]int{}, maxFD: -1}
			p.owned[o.PID] = f
		}
		f.comm = o.Comm
		f.fds[int32(o.FD)]++
		f.maxFD = max(f.maxFD, int32(o.FD))
	}
}

func (p *Poller) unindex(c *cachedSocket) {
	delete(p.queued, c)
	for _, o := range c.sock.Owners {
		f := p.owned[o.PID]
		if f == nil {
			continue
		}
		fd := int32(o.FD)
		if f.fds[fd]--; f.fds[fd] <= 0 {
			delete(f.fds, fd)
		}
		if len(f.fds) == 0 {
			delete(p.owned, o.PID)
			continue
		}
		if fd == f.maxFD {
			f.maxFD = -1
			for fd := range f.fds {
				f.maxFD = max(f.maxFD, fd)
			}
		}
	}
}

func ptrs(socks []Socket) []*Socket {
	out := make([]*Socket, len(socks))
	for i := range socks {
		out[i] = &socks[i]
	}
	return out
}

// budget limits a kind of work to a share of wall time: after work that
// took d, the next may start d/share later.
type budget struct {
	share float64
	next  time.Time
}

func (b *budget) allow(now time.Time) bool { return !now.Before(b.next) }

func (b *budget) spend(start, end time.Time) {
	b.next = end.Add(time.Duration(float64(end.Sub(start)) / b.share))
}
