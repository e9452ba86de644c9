package collector

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"runtime/debug"
	"sync"
	"time"

	"github.com/closewait/closewait/ebpf"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// dumpAttempts bounds the tries of a dump the kernel marks interrupted.
const dumpAttempts = 4

// netlinkSource dumps TCP sockets over NETLINK_SOCK_DIAG, with the state
// filter applied in the kernel, and leaves owners to resolveOwners.
type netlinkSource struct{}

func (netlinkSource) name() string { return SourceNetlink }

func (netlinkSource) dump(ctx context.Context, q query) (dumpResult, error) {
	plan := newDiagPlan(q.states, &q.filter)
	var warnings []string
	if q.states.Has(StateCloseWait) {
		// An installed tracer's stamps make CLOSE_WAIT ages exact.
		st, warn := ebpf.OpenStamps(q.pinDir)
		if warn != "" {
			warnings = append(warnings, warn)
		}
		if st != nil {
			defer st.Close()
			plan.stamps = &diagStamps{fd: st.FD(), id: st.ID()}
		}
	}
	res, err := dumpEachNetNS(ctx, q, func(ns *netNamespace) (dumpResult, error) {
		return netlinkDumpNetNS(ctx, q, plan, ns)
	})
	res.warnings = append(warnings, res.warnings...)
	if err != nil {
		return dumpResult{}, err
	}
	// The chunks, as large as the sockets, are garbage now. Collected
	// here, they do not add to the peak while the owner scan and the sort
	// allocate; a one-shot process gives their pages back to the OS.
	switch n := len(res.sockets) + len(res.listeners); {
	case n >= releaseMin && q.oneShot:
		debug.FreeOSMemory()
	case n >= dumpGCMin:
		runtime.GC()
	}
	return res, nil
}

// releaseMin is the size of a dump, in sockets, from which a one-shot
// process (see Options.OneShot) gives the pages of its garbage back to
// the OS before and after copying the sockets out of their chunks: 6 MiB
// off the peak at 45k sockets; at 11k nothing measurable, for 4-11% more
// time.
const releaseMin = 16384

// netlinkDumpNetNS dumps the sockets of one namespace; nil is the
// caller's.
func netlinkDumpNetNS(ctx context.Context, q query, plan diagPlan, ns *netNamespace) (dumpResult, error) {
	// Each dump walks the whole TCP hash, whatever its family, so the two
	// run side by side, each on its own netlink socket, opened in the
	// namespace: a sock_diag socket dumps the namespace it was made in.
	fams := []struct {
		af   uint8
		name string
	}{{unix.AF_INET, "AF_INET"}, {unix.AF_INET6, "AF_INET6"}}
	conns := make([]*netlink.Conn, len(fams))
	var stops []func()
	defer func() {
		for _, stop := range stops {
			stop()
		}
	}()
	var eph portRange
	var netns uint64
	err := withinNetNS(ns, func() error {
		want := familiesToWalk(ns, q)
		for i := range conns {
			if !want[i] {
				continue // no socket of this family to find: no walk
			}
			c, stop, err := dialSockDiag(ctx)
			if err != nil {
				return err
			}
			conns[i], stops = c, append(stops, stop)
		}
		eph, netns = readEphemeralPorts(q.procRoot), netnsInode(q.procRoot)
		return nil
	})
	if err != nil {
		return dumpResult{}, err
	}
	results := make([]diagDump, len(fams))
	errs := make([]error, len(fams))
	var wg sync.WaitGroup
	for i, fam := range fams {
		if conns[i] == nil {
			continue
		}
		wg.Go(func() {
			if err := results[i].run(ctx, conns[i], fam.af, plan); err != nil {
				errs[i] = fmt.Errorf("dumping %s: %w", fam.name, err)
			}
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return dumpResult{}, err
	}
	if err := errors.Join(errs...); err != nil {
		return dumpResult{}, err
	}

	n := 0
	for _, r := range results {
		n += r.n
	}
	if n >= releaseMin && q.oneShot {
		// The datagrams, more than the sockets, are garbage: their pages
		// go back before the sockets' slice needs new ones.
		debug.FreeOSMemory()
	}
	socks := make([]Socket, 0, n)
	prefault(socks)
	var listeners []listener
	for i := range results {
		r := &results[i]
		for j, c := range r.chunks {
			socks = append(socks, c...)
			r.chunks[j] = nil
		}
		listeners = append(listeners, r.listeners...)
	}
	setNetNS(socks, listeners, netns)
	markInboundNS(socks, listeners, func(uint64) portRange { return eph })
	return dumpResult{sockets: socks, listeners: listeners}, nil
}

// diagPlan is what the dumps of one read of the table ask the kernel for.
// Listeners always come along, so markInbound can tell our own outbound
// connections apart; they are dropped unless asked for.
type diagPlan struct {
	states StateSet // asked for in the main dump
	want   StateSet // kept of what it returns
	bc     []byte   // the port filter as inet_diag bytecode; nil for none
	// listenersApart asks for the listeners in a dump of their own,
	// without the bytecode.
	listenersApart bool
	stamps         *diagStamps // the tracer's stamps, nil for none
}

// newDiagPlan plans the dumps of the sockets in want that pass f's port
// filter, which the kernel applies (the caller still applies the whole
// filter: the bytecode only spares the kernel and us the sockets it would
// drop anyway).
//
// The bytecode cannot test a socket's state, yet markInbound needs the
// listener on each kept socket's local port. With SPorts alone the filter
// keeps exactly those listeners. Ports and DPorts keep sockets for their
// remote port too, whose local port's listener the filter drops, so the
// listeners are then dumped apart, unfiltered: the kernel finds them in
// its small listening hash, without walking the established one.
func newDiagPlan(want StateSet, f *Filter) diagPlan {
	p := diagPlan{states: want.With(StateListen), want: want, bc: portBytecode(f)}
	if p.bc != nil && (len(f.Ports) > 0 || len(f.DPorts) > 0) {
		p.states, p.listenersApart = want, true
	}
	return p
}

// unfiltered is the plan without bytecode, for a kernel that rejects it.
func (p diagPlan) unfiltered() diagPlan {
	return diagPlan{states: p.want.With(StateListen), want: p.want, stamps: p.stamps}
}

// bytecodeRejected reports whether the kernel refused the plan's bytecode
// (one older than its port comparisons): the dump is then worth trying
// again without it.
func (p diagPlan) bytecodeRejected(err error) bool {
	return p.bc != nil && errors.Is(err, unix.EINVAL)
}

// stampsRejected reports whether the kernel refused to send the tracer's
// stamps (before 5.2, or without CAP_BPF): worth trying without them.
func (p diagPlan) stampsRejected(err error) bool {
	return p.stamps != nil && (errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EPERM) || errors.Is(err, unix.EOPNOTSUPP))
}

// diagDump is what one family's dump decoded. Sockets go into fixed-size
// chunks, copied once into the result, rather than one growing slice that
// would copy these large structs again and again.
type diagDump struct {
	chunks    [][]Socket
	n         int
	listeners []listener
}

const diagChunkSize = 512

func (d *diagDump) add(s Socket) {
	if len(d.chunks) == 0 || len(d.chunks[len(d.chunks)-1]) == diagChunkSize {
		d.chunks = append(d.chunks, make([]Socket, 0, diagChunkSize))
		prefault(d.chunks[len(d.chunks)-1])
	}
	last := &d.chunks[len(d.chunks)-1]
	*last = append(*last, s)
	d.n++
}

func (d *diagDump) reset() { *d = diagDump{} }

// run dumps one family on its own netlink socket c, again when the kernel
// marks the dump interrupted.
func (d *diagDump) run(ctx context.Context, c *netlink.Conn, af uint8, plan diagPlan) error {
	dump := func() error {
		d.reset()
		if err := d.once(c, inetDiagRequest(af, plan.states, true, plan.bc, plan.stamps), plan.want, plan.stamps); err != nil {
			return err
		}
		if plan.listenersApart {
			return d.once(c, inetDiagRequest(af, StateSet(0).With(StateListen), false, nil, nil), 0, nil)
		}
		return nil
	}
	err := retryDump(ctx, dump)
	if plan.stampsRejected(err) {
		plan.stamps = nil
		err = retryDump(ctx, dump)
	}
	if plan.bytecodeRejected(err) {
		plan = plan.unfiltered()
		err = retryDump(ctx, dump)
	}
	return err
}

// once runs one dump, keeping the sockets in want and noting every
// listener. It streams the reply rather than collecting it, so memory
// stays at one datagram plus the decoded sockets.
func (d *diagDump) once(c *netlink.Conn, req []byte, want StateSet, stamps *diagStamps) error {
	return dumpEach(c, req, func(m netlink.Message) error { return d.take(m, want, stamps) })
}

// take decodes one message of a dump, keeping the socket if its state is
// in want and noting it if it is a listener. Malformed input gives an
// error, never a panic.
func (d *diagDump) take(m netlink.Message, want StateSet, stamps *diagStamps) error {
	s, err := parseInetDiagMsg(m, stamps)
	if err != nil {
		return err
	}
	if s.State == StateListen {
		d.listeners = append(d.listeners, listener{local: s.Local, inode: s.Inode})
	}
	if want.Has(s.State) {
		d.add(s)
	}
	return nil
}

// dialSockDiag opens a sock_diag socket whose reads end when ctx does.
// The returned stop closes it.
func dialSockDiag(ctx context.Context) (*netlink.Conn, func(), error) {
	c, err := netlink.Dial(unix.NETLINK_SOCK_DIAG, &netlink.Config{
		// A fixed, large receive buffer lets the kernel fill datagrams up
		// to its 32 KiB cap and spares a peek per datagram.
		MessageBufferSize: 64 << 10,
	})
	if err != nil {
		if errors.Is(err, unix.EPROTONOSUPPORT) || errors.Is(err, unix.EAFNOSUPPORT) {
			err = fmt.Errorf("sock_diag is %w by this kernel: %w", ErrUnsupported, err)
		}
		return nil, nil, fmt.Errorf("opening sock_diag: %w", err)
	}
	unhook := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	return c, func() { unhook(); c.Close() }, nil
}

// dumpEach sends one SOCK_DIAG_BY_FAMILY dump request and calls fn with
// each message of the reply that passes checkDiagMsg. It reads the reply
// to its end even after an error, so the socket is clean for a retry, and
// returns the first error.
func dumpEach(c *netlink.Conn, req []byte, fn func(netlink.Message) error) error {
	sent, err := c.Send(netlink.Message{
		Header: netlink.Header{Type: sockDiagByFamily, Flags: netlink.Request | netlink.Dump},
		Data:   req,
	})
	if err != nil {
		return err
	}
	var failed error
	for m, err := range c.ReceiveIter() {
		if err != nil {
			return err
		}
		if failed != nil {
			continue
		}
		if m.Header.Sequence != sent.Header.Sequence {
			failed = fmt.Errorf("reply sequence %d, want %d", m.Header.Sequence, sent.Header.Sequence)
			continue
		}
		if failed = checkDiagMsg(m); failed == nil {
			failed = fn(m)
		}
	}
	return failed
}

// retryDump runs dump, again while the kernel marks it interrupted, at
// most dumpAttempts times.
func retryDump(ctx context.Context, dump func() error) error {
	for attempt := 1; ; attempt++ {
		err := dump()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !errors.Is(err, errDumpInterrupted) || attempt == dumpAttempts {
			if attempt > 1 {
				err = fmt.Errorf("%w (%d attempts)", err, attempt)
			}
			return err
		}
	}
}

// netnsInode returns the inode of the calling thread's network namespace,
// the one sock_diag reports on; 0 when it cannot be read.
func netnsInode(procRoot string) uint64 {
	var st unix.Stat_t
	if err := unix.Stat(procRoot+"/thread-self/ns/net", &st); err != nil {
		return 0
	}
	return st.Ino
}
