package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/closewait/closewait/collector"
	"github.com/closewait/closewait/ebpf"
)

const (
	// tracePoll bounds how long a read waits before looking at ctx again.
	tracePoll = 200 * time.Millisecond
	// traceLinger collects the rest of a burst after its first event, so
	// the burst shares one owner snapshot.
	traceLinger = 20 * time.Millisecond
	// traceScanGap spaces owner snapshots: each walks every fd of every
	// process.
	traceScanGap = 100 * time.Millisecond
	// traceBatch caps the events handled per snapshot.
	traceBatch = 4096
)

// traceLoop runs the trace until ctx ends. The events are read in batches:
// the first event of a batch, then what follows within traceLinger; if
// any names a socket the owner index does not know, one new snapshot
// serves the whole batch.
//
// Once the tracer is attached and the first snapshot taken, it says so in
// one line on stderr: every transition from then on is printed, including,
// after ctx ends, those still in the ring buffer that happened before it
// ended.
func traceLoop(ctx context.Context, o traceOptions, stdout, stderr io.Writer) error {
	t, err := ebpf.OpenTrace(ebpf.TraceOptions{AllStates: o.allStates, PinDir: o.pinDir, Mode: o.mode(), NoteOwners: true})
	if err != nil {
		return bpfError(fmt.Errorf("starting trace: %w", err), o.verbose)
	}
	defer t.Close()
	var owners ownerIndex
	owners, err = ebpf.NewOwnerIndex(t.Mode() == ebpf.ModeTracepoint, false)
	if err != nil {
		// The events need only the tracer: take owners from /proc.
		warn(stderr, bpfWarning(err, "owners come from /proc", o.verbose))
		if owners, err = collector.NewProcOwnerIndex(""); err != nil {
			return fmt.Errorf("reading owners: %w", err)
		}
	}
	defer owners.Close()
	what := "TCP sockets entering and leaving CLOSE_WAIT"
	if o.allStates {
		what = "every TCP state transition"
	}
	fmt.Fprintf(stderr, "closewait: tracing %s (hook %s); interrupt to stop\n", what, t.Mode())

	tl := &traceBatcher{t: t, owners: owners, filter: o.filter, stderr: stderr}
	tl.addrs = o.filter
	tl.addrs.PIDs, tl.addrs.Comms = nil, nil // the parts that need no owner
	bw := bufio.NewWriter(stdout)
	tl.out, tl.tw = bw, newTraceWriter(bw, o.output)
	batch := make([]ebpf.Event, 0, traceBatch)
	lastScan := time.Now()
	var stop time.Time // when ctx ended; then only what is older is read
	for {
		if stop.IsZero() && ctx.Err() != nil {
			stop = time.Now()
		}
		draining := !stop.IsZero()
		deadline := time.Now().Add(tracePoll)
		if draining {
			deadline = stop // in the past: take what is there, do not wait
		}
		batch = batch[:0]
		var e ebpf.Event
		err := t.Read(&e, deadline)
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded):
			tl.reportLost()
			if draining {
				return nil
			}
			continue
		case err != nil:
			return fmt.Errorf("reading events: %w", err)
		}
		done := draining && t.Time(e.Time).After(stop)
		if !done {
			batch = append(batch, e)
		}
		linger := time.Now().Add(traceLinger)
		if next := lastScan.Add(traceScanGap); next.After(linger) {
			linger = next
		}
		if draining {
			linger = stop
		}
		for !done && len(batch) < cap(batch) {
			if err := t.Read(&e, linger); err != nil {
				if errors.Is(err, os.ErrDeadlineExceeded) {
					done = draining
					break
				}
				return fmt.Errorf("reading events: %w", err)
			}
			// A busy host never empties the ring: stop at the first
			// event after the interrupt.
			if draining && t.Time(e.Time).After(stop) {
				done = true
				break
			}
			batch = append(batch, e)
		}
		scanned, err := tl.handle(batch)
		if err != nil {
			return err
		}
		if scanned {
			lastScan = time.Now()
		}
		tl.reportLost()
		if done {
			return nil
		}
	}
}

// ownerIndex answers "who holds this socket" for events: from BPF
// iterator snapshots, or from /proc where the kernel refuses the iterator.
type ownerIndex interface {
	Scan() error
	Lookup(*ebpf.Event) ([]ebpf.Owner, bool)
	Stale(*ebpf.Event) bool
	Close() error
}

// traceBatcher turns batches of events into output lines.
type traceBatcher struct {
	t      *ebpf.Trace
	owners ownerIndex
	filter collector.Filter
	addrs  collector.Filter // filter without the parts that need an owner
	out    *bufio.Writer
	tw     *traceWriter
	stderr io.Writer
	lost   uint64
}

// handle resolves the owners of a batch, taking a new snapshot if the
// index lacks one that a snapshot could find, and prints the events the
// filter keeps. It reports whether it took a snapshot.
func (tl *traceBatcher) handle(batch []ebpf.Event) (bool, error) {
	if len(batch) == 0 {
		return false, nil
	}
	// Only events the address filters keep may cost a snapshot.
	stale := false
	for i := range batch {
		s := traceSocket(&batch[i], nil)
		if tl.addrs.Match(&s) && tl.owners.Stale(&batch[i]) {
			stale = true
			break
		}
	}
	if stale {
		if err := tl.owners.Scan(); err != nil {
			return false, fmt.Errorf("reading owners: %w", err)
		}
	}
	for i := range batch {
		ev := &batch[i]
		who, ok := tl.owners.Lookup(ev)
		if !ok {
			// Closed before a snapshot saw its fd: the task and fd that
			// accept(2) or socket(2) gave it, if the kernel noted them.
			if n, ok := tl.t.NotedOwner(ev.Inode); ok {
				who = []ebpf.Owner{n}
			}
		}
		s := traceSocket(ev, who)
		if !tl.filter.Match(&s) {
			continue
		}
		if err := tl.tw.write(traceLine{time: tl.t.Time(ev.Time), ev: ev, owners: who}); err != nil {
			return stale, err
		}
	}
	return stale, tl.out.Flush()
}

// reportLost warns once per increase of the ring buffer's lost count.
func (tl *traceBatcher) reportLost() {
	if n := tl.t.Lost(); n > tl.lost {
		fmt.Fprintf(tl.stderr, "closewait: warning: %d events lost (ring buffer full)\n", n-tl.lost)
		tl.lost = n
	}
}
