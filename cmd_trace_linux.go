package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

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
func traceLoop(ctx context.Context, o traceOptions, stdout, stderr io.Writer) error {
	mode := ebpf.TracerMode("")
	if o.hook != "auto" {
		mode = ebpf.TracerMode(o.hook)
	}
	t, err := ebpf.OpenTrace(ebpf.TraceOptions{AllStates: o.allStates, PinDir: o.pinDir, Mode: mode})
	if err != nil {
		return bpfError(fmt.Errorf("starting trace: %w", err), o.verbose)
	}
	defer t.Close()
	owners, err := ebpf.NewOwnerIndex(t.Mode() == ebpf.ModeTracepoint, false)
	if err != nil {
		return bpfError(fmt.Errorf("reading owners: %w", err), o.verbose)
	}
	defer owners.Close()

	addrs := o.filter
	addrs.PIDs, addrs.Comms = nil, nil // the parts that need no owner
	bw := bufio.NewWriter(stdout)
	defer bw.Flush()
	tw := newTraceWriter(bw, o.output)
	batch := make([]ebpf.Event, 0, traceBatch)
	var lost uint64
	lastScan := time.Now()
	for ctx.Err() == nil {
		batch = batch[:0]
		var e ebpf.Event
		err := t.Read(&e, time.Now().Add(tracePoll))
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded):
			continue
		case err != nil:
			return fmt.Errorf("reading events: %w", err)
		}
		batch = append(batch, e)
		linger := time.Now().Add(traceLinger)
		if next := lastScan.Add(traceScanGap); next.After(linger) {
			linger = next
		}
		for len(batch) < cap(batch) {
			if err := t.Read(&e, linger); err != nil {
				if errors.Is(err, os.ErrDeadlineExceeded) {
					break
				}
				return fmt.Errorf("reading events: %w", err)
			}
			batch = append(batch, e)
		}

		// Only events the address filters keep may cost a snapshot.
		stale := false
		for i := range batch {
			s := traceSocket(&batch[i], nil)
			if addrs.Match(&s) && owners.Stale(&batch[i]) {
				stale = true
				break
			}
		}
		if stale {
			if err := owners.Scan(); err != nil {
				return fmt.Errorf("reading owners: %w", err)
			}
			lastScan = time.Now()
		}
		for i := range batch {
			ev := &batch[i]
			who, _ := owners.Lookup(ev)
			s := traceSocket(ev, who)
			if !o.filter.Match(&s) {
				continue
			}
			if err := tw.write(traceLine{time: t.Time(ev.Time), ev: ev, owners: who}); err != nil {
				return err
			}
		}
		if err := bw.Flush(); err != nil {
			return err
		}
		if n := t.Lost(); n > lost {
			fmt.Fprintf(stderr, "closewait: warning: %d events lost (ring buffer full)\n", n-lost)
			lost = n
		}
	}
	return nil
}
