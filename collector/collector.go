package collector

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
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
	// TracerPinDir is where "closewait tracer install" pinned the tracer,
	// whose stamps give the ebpf source exact ages; "" means the default,
	// /sys/fs/bpf/closewait.
	TracerPinDir string
}

// Filter narrows a listing. The zero Filter matches every socket.
type Filter struct {
	IPv4, IPv6 bool     // address families; both false means both
	Ports      []uint16 // local or remote port
	SPorts     []uint16 // local port
	DPorts     []uint16 // remote port
	PIDs       []int    // an owner's pid
	Comms      []string // an owner's command name, exact
	OlderThan  time.Duration
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
	states   StateSet
	filter   Filter
	procRoot string
	owners   bool
	pinDir   string // tracer pins for the ebpf source; "" default
}

type dumpResult struct {
	sockets    []Socket
	ownersDone bool
	warnings   []string
}

// Collect reads the socket table from the chosen source, resolves owners,
// classifies causes, applies the filter and sorts oldest first.
func Collect(ctx context.Context, opts Options) (*Snapshot, error) {
	q := query{states: opts.States, filter: opts.Filter, procRoot: opts.ProcRoot, owners: !opts.NoOwners, pinDir: opts.TracerPinDir}
	if q.states == 0 {
		q.states = StatesCloseWait
	}
	if q.procRoot == "" {
		q.procRoot = "/proc"
	}
	candidates, err := sourcesFor(opts.Source)
	if err != nil {
		return nil, err
	}
	snap := &Snapshot{Time: time.Now()}
	snap.Host, _ = os.Hostname()
	var res dumpResult
	for i, src := range candidates {
		res, err = src.dump(ctx, q)
		if err == nil {
			snap.Source = src.name()
			break
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if i == len(candidates)-1 {
			return nil, fmt.Errorf("%s source: %w", src.name(), err)
		}
		snap.Warnf("%s source unavailable (%v): using %s", src.name(), err, candidates[i+1].name())
	}
	snap.Warnings = append(snap.Warnings, res.warnings...)
	// Drop what the filter rejects before the costly owner scan, so it
	// looks only for the sockets that will be shown.
	socks := res.sockets[:0]
	for i := range res.sockets {
		if s := &res.sockets[i]; q.states.Has(s.State) && q.filter.matchSocket(s) {
			socks = append(socks, *s)
		}
	}
	if q.owners && !res.ownersDone {
		warnings, err := resolveOwners(ctx, q.procRoot, socks, q.filter.PIDs)
		if err != nil {
			return nil, err
		}
		snap.Warnings = append(snap.Warnings, warnings...)
	}
	out := socks[:0]
	for i := range socks {
		s := &socks[i]
		Classify(s)
		if q.states.Has(s.State) && q.filter.Match(s) {
			out = append(out, *s)
		}
	}
	SortByAge(out)
	snap.Sockets = out
	return snap, nil
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

// Match reports whether s passes the filter.
func (f *Filter) Match(s *Socket) bool {
	if !f.matchSocket(s) {
		return false
	}
	if len(f.PIDs) > 0 && !slices.ContainsFunc(s.Owners, func(o Owner) bool { return slices.Contains(f.PIDs, o.PID) }) {
		return false
	}
	if len(f.Comms) > 0 && !slices.ContainsFunc(s.Owners, func(o Owner) bool { return slices.Contains(f.Comms, o.Comm) }) {
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
	if len(f.Ports) > 0 && !slices.Contains(f.Ports, s.Local.Port()) && !slices.Contains(f.Ports, s.Remote.Port()) {
		return false
	}
	if len(f.SPorts) > 0 && !slices.Contains(f.SPorts, s.Local.Port()) {
		return false
	}
	if len(f.DPorts) > 0 && !slices.Contains(f.DPorts, s.Remote.Port()) {
		return false
	}
	if f.OlderThan > 0 && (!s.AgeKnown || s.Age < f.OlderThan) {
		return false
	}
	return true
}

// Classify sets s.Causes from the socket's own fields. Only CLOSE_WAIT
// sockets get causes; the most telling comes first.
func Classify(s *Socket) {
	s.Causes = s.Causes[:0]
	if s.State != StateCloseWait {
		return
	}
	if s.Inode == 0 && len(s.Owners) == 0 {
		s.Causes = append(s.Causes, CauseNotAccepted)
	}
	if distinctPIDs(s.Owners) > 1 {
		s.Causes = append(s.Causes, CauseInherited)
	}
	if !s.Inbound {
		s.Causes = append(s.Causes, CausePooledClient)
	}
	switch {
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

// SortByAge orders sockets oldest first; sockets of unknown age go last.
// Ties are broken by address, so the order is the same on every run.
func SortByAge(socks []Socket) {
	// Not a stable sort: the keys tell any two sockets of one table apart,
	// and a stable sort moves these large structs far more often.
	slices.SortFunc(socks, func(a, b Socket) int {
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
	})
}

// markInbound sets Inbound on every socket whose local address and port
// belong to one of the listeners. A wildcard listener matches any local
// address; IPv4-mapped IPv6 addresses match their IPv4 form.
func markInbound(socks []Socket, listeners []netip.AddrPort) {
	type key struct {
		addr netip.Addr
		port uint16
	}
	set := make(map[key]bool, len(listeners))
	for _, l := range listeners {
		a := l.Addr().Unmap()
		if a.IsUnspecified() {
			a = netip.Addr{}
		}
		set[key{a, l.Port()}] = true
	}
	for i := range socks {
		s := &socks[i]
		p := s.Local.Port()
		s.Inbound = set[key{netip.Addr{}, p}] || set[key{s.Local.Addr().Unmap(), p}]
	}
}
