package collector

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/closewait/closewait/ebpf"
)

const (
	// eventPoll bounds how long Next waits before looking at ctx again.
	eventPoll = 200 * time.Millisecond
	// eventLinger collects the rest of a burst after its first event, so
	// the burst shares one owner snapshot.
	eventLinger = 20 * time.Millisecond
	// eventScanGap spaces owner snapshots: each walks every fd of every
	// process.
	eventScanGap = 100 * time.Millisecond
	// eventBatch caps the events of one batch.
	eventBatch = 4096
)

// eventSource is what Events reads: an ebpf.Trace, or a fake in tests.
type eventSource interface {
	Read(e *ebpf.Event, deadline time.Time) error
	Time(mono uint64) time.Time
	Lost() uint64
	NotedOwner(inode uint64) (ebpf.Owner, bool)
	Close() error
}

// ownerIndex answers "who holds this socket" for events: from BPF
// iterator snapshots (iterOwners), or from /proc (ProcOwnerIndex).
type ownerIndex interface {
	Scan() error
	Lookup(*ebpf.Event) ([]ebpf.Owner, bool)
	Stale(*ebpf.Event) bool
	Close() error
}

// EventsSupported says whether this build has the tracer's event stream.
const EventsSupported = true

// Events is the tracer's stream of TCP state transitions, in batches, with
// owners when asked. It is the one reader of the ring buffer for trace,
// watch and serve: a bad event is skipped and counted, and only a stream
// that keeps failing ends with an error.
type Events struct {
	src       eventSource
	mode      string
	owners    ownerIndex // nil unless EventOptions.Owners
	ownersErr error      // why owners come from /proc
	filter    Filter
	addrs     Filter // filter without the parts that need an owner
	raw       []ebpf.Event
	out       []Event
	lastScan  time.Time
	stop      time.Time // when ctx ended: only older events are read
	done      bool
	bad       uint64
	badRun    int
	netns     map[uint64]bool // the namespaces chosen; nil every one traced
}

// OpenEvents attaches a tracer and, with Owners, takes a first owner
// snapshot.
func OpenEvents(opts EventOptions) (_ *Events, err error) {
	var warnings []string
	nss, _, err := resolveNetNS("/proc", opts.NetNS, &warnings)
	if err != nil {
		return nil, err
	}
	t, err := ebpf.OpenTrace(ebpf.TraceOptions{AllStates: opts.AllStates, PinDir: opts.PinDir,
		Mode: ebpf.TracerMode(opts.Hook), NoteOwners: opts.Owners, AllNetNS: nss != nil})
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			t.Close()
		}
	}()
	if opts.Cookies && t.Mode() != ebpf.ModeBTF {
		return nil, fmt.Errorf("the %s hook gives no socket cookies", t.Mode())
	}
	es := newEvents(t, string(t.Mode()), opts.Filter)
	if len(opts.NetNS) > 0 && nss != nil {
		es.netns = map[uint64]bool{}
		for _, ns := range nss {
			es.netns[ns.inode] = true
		}
	}
	if opts.Owners {
		ix, err := newIterOwners(t.Mode() == ebpf.ModeTracepoint, nss != nil)
		if err == nil {
			es.owners = ix
		} else {
			// The events need only the tracer: owners come from /proc.
			es.ownersErr = err
			if es.owners, err = NewProcOwnerIndex(""); err != nil {
				return nil, fmt.Errorf("reading owners: %w", err)
			}
		}
	}
	return es, nil
}

func newEvents(src eventSource, mode string, f Filter) *Events {
	f = f.normalized()
	es := &Events{src: src, mode: mode, filter: f, addrs: f, raw: make([]ebpf.Event, 0, eventBatch), lastScan: time.Now()}
	es.addrs.PIDs, es.addrs.Comms, es.addrs.ExcludeComms = nil, nil, nil
	return es
}

// Mode is the kernel hook the tracer is attached to.
func (es *Events) Mode() string { return es.mode }

// OwnersErr says why owners come from /proc rather than the BPF iterator;
// nil when they do not.
func (es *Events) OwnersErr() error { return es.ownersErr }

// Lost returns how many events the ring buffer had no room for.
func (es *Events) Lost() uint64 { return es.src.Lost() }

// Bad returns how many events were skipped because they did not decode.
func (es *Events) Bad() uint64 { return es.bad }

// Close detaches the tracer.
func (es *Events) Close() error {
	var errs []error
	if es.owners != nil {
		errs = append(errs, es.owners.Close())
	}
	errs = append(errs, es.src.Close())
	return errors.Join(errs...)
}

// Next returns the next batch: the first event within eventPoll, then what
// follows within a short linger, so that one owner snapshot serves the
// whole burst. The batch may be empty, and is valid until the next call.
// Once ctx ends, Next returns the events that happened before, then
// io.EOF.
func (es *Events) Next(ctx context.Context) ([]Event, error) {
	if es.done {
		return nil, io.EOF
	}
	if es.stop.IsZero() && ctx.Err() != nil {
		es.stop = time.Now()
	}
	draining := !es.stop.IsZero()
	deadline := time.Now().Add(eventPoll)
	if draining {
		deadline = es.stop // in the past: take what is there, do not wait
	}
	es.raw = es.raw[:0]
	linger := time.Time{}
	for len(es.raw) < cap(es.raw) {
		var e ebpf.Event
		ok, err := es.read(&e, deadline)
		if err != nil {
			return nil, err
		}
		// A busy host never empties the ring: draining stops at the first
		// event after ctx ended.
		if !ok || (draining && es.src.Time(e.Time).After(es.stop)) {
			es.done = draining
			break
		}
		es.raw = append(es.raw, e)
		if linger.IsZero() {
			linger = time.Now().Add(eventLinger)
			if next := es.lastScan.Add(eventScanGap); es.owners != nil && next.After(linger) {
				linger = next
			}
			if !draining {
				deadline = linger
			}
		}
	}
	if len(es.raw) == 0 && es.done {
		return nil, io.EOF
	}
	return es.resolve()
}

// read reads one event; false when none came by deadline. A bad event is
// skipped; maxBadEvents in a row break the stream.
func (es *Events) read(e *ebpf.Event, deadline time.Time) (bool, error) {
	for {
		err := es.src.Read(e, deadline)
		switch {
		case err == nil:
			es.badRun = 0
			return true, nil
		case errors.Is(err, os.ErrDeadlineExceeded):
			return false, nil
		case errors.Is(err, ebpf.ErrTraceClosed):
			return false, io.EOF
		}
		es.bad++
		if es.badRun++; es.badRun >= maxBadEvents {
			return false, fmt.Errorf("%w: %v", ErrEventsBroken, err)
		}
	}
}

// resolve turns the raw batch into events: owners (one new snapshot when
// the index lacks a socket that a snapshot could find), then the filter.
func (es *Events) resolve() ([]Event, error) {
	if es.owners != nil {
		for i := range es.raw {
			s := eventSocket(&es.raw[i])
			// Only events the address filters keep may cost a snapshot.
			if es.addrs.Match(&s) && es.owners.Stale(&es.raw[i]) {
				if err := es.owners.Scan(); err != nil {
					return nil, fmt.Errorf("reading owners: %w", err)
				}
				es.lastScan = time.Now()
				break
			}
		}
	}
	es.out = es.out[:0]
	for i := range es.raw {
		r := &es.raw[i]
		ev := Event{Time: es.src.Time(r.Time), From: State(r.OldState), Socket: eventSocket(r)}
		if r.Flags&ebpf.EvDuration != 0 {
			ev.InCloseWait, ev.InCloseWaitKnown = r.CloseWait, true
		}
		if es.owners != nil {
			who, ok := es.owners.Lookup(r)
			if !ok {
				// Closed before a snapshot saw its fd: the task and fd that
				// accept(2) or socket(2) gave it, if the kernel noted them.
				if n, ok := es.src.NotedOwner(r.Inode); ok {
					who = []ebpf.Owner{n}
				}
			}
			for _, o := range who {
				ev.Socket.Owners = append(ev.Socket.Owners, Owner{PID: o.PID, Comm: o.Comm, FD: o.FD})
			}
			// It had a file (an inode) when it changed state, so some
			// process held it; classic tracepoint events carry no inode.
			ev.OwnersUnknown = len(who) == 0 && (r.Inode != 0 || r.Flags&ebpf.EvClassic != 0)
		}
		if es.filter.Match(&ev.Socket) && (es.netns == nil || ev.Socket.NetNS == 0 || es.netns[ev.Socket.NetNS]) {
			es.out = append(es.out, ev)
		}
	}
	return es.out, nil
}

// eventSocket is the socket of a raw event, in its new state.
func eventSocket(r *ebpf.Event) Socket {
	s := Socket{Family: FamilyIPv4, State: State(r.NewState), Local: r.Local, Remote: r.Remote,
		Cookie: r.Cookie, Inode: r.Inode, NetNS: uint64(r.NetNS)}
	if r.Family == 10 {
		s.Family = FamilyIPv6
	}
	return s
}
