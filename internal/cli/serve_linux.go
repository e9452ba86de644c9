package cli

import (
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/closewait/closewait/collector"
	"github.com/closewait/closewait/ebpf"
	"github.com/closewait/closewait/internal/exporter"
)

// openTransitions attaches a tracer that sends every TCP state transition
// of this network namespace, and counts them as they arrive. stop detaches
// it and waits for the reader.
//
// Each transition crosses the ring buffer to be counted here. Counting in
// the kernel (a per-CPU [from][to] array read at scrape time) would cost
// far less on a busy host; exporter.TransitionSource takes either.
func openTransitions(stderr io.Writer) (exporter.TransitionSource, func(), error) {
	tr, err := ebpf.OpenTrace(ebpf.TraceOptions{AllStates: true})
	if err != nil {
		return nil, nil, err
	}
	tally := &exporter.TransitionTally{}
	var wg sync.WaitGroup
	wg.Go(func() {
		var e ebpf.Event
		failed := 0 // errors in a row
		for {
			err := tr.Read(&e, time.Time{})
			switch {
			case errors.Is(err, ebpf.ErrTraceClosed):
				return
			case err != nil:
				// A bad event is skipped, logged once; an error that keeps
				// coming means the reader is broken, and spinning on it would
				// burn a core.
				if failed++; failed == 1 {
					fmt.Fprintf(stderr, "closewait: warning: transitions: %v\n", err)
				} else if failed == 1000 {
					fmt.Fprintf(stderr, "closewait: warning: transitions: giving up after 1000 errors in a row: counts stop\n")
					return
				}
				continue
			}
			failed = 0
			tally.Add(collector.State(e.OldState), collector.State(e.NewState))
		}
	})
	stop := func() {
		if n := tr.Lost(); n > 0 {
			fmt.Fprintf(stderr, "closewait: warning: transitions: the ring buffer lost %d events: counts are low\n", n)
		}
		tr.Close()
		wg.Wait()
	}
	return tally, stop, nil
}
