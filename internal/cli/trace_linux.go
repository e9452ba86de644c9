package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/closewait/closewait/collector"
	"github.com/closewait/closewait/report"
)

// traceLoop runs the trace until ctx ends, printing each batch of events
// as it comes.
//
// Once the tracer is attached and the first owner snapshot taken, it says
// so in one line on stderr: every transition from then on is printed,
// including, after ctx ends, those still in the ring buffer that happened
// before it ended.
func traceLoop(ctx context.Context, o traceOptions, stdout, stderr io.Writer) error {
	es, err := collector.OpenEvents(collector.EventOptions{AllStates: o.allStates, PinDir: o.pinDir,
		Hook: string(o.mode()), Owners: true, Filter: o.filter})
	if err != nil {
		return bpfError(fmt.Errorf("starting trace: %w", err), o.verbose)
	}
	defer es.Close()
	if err := es.OwnersErr(); err != nil {
		warn(stderr, bpfWarning(err, "owners come from /proc", o.verbose))
	}
	what := "TCP sockets entering and leaving CLOSE_WAIT"
	if o.allStates {
		what = "every TCP state transition"
	}
	fmt.Fprintf(stderr, "closewait: tracing %s (hook %s); interrupt to stop\n", what, es.Mode())

	bw := bufio.NewWriter(stdout)
	tw := report.NewTraceWriter(bw, o.output == "jsonl")
	var losses streamLosses
	for {
		batch, err := es.Next(ctx)
		losses.report(stderr, es)
		if errors.Is(err, io.EOF) {
			return bw.Flush()
		}
		if err != nil {
			return fmt.Errorf("reading events: %w", err)
		}
		for i := range batch {
			if err := tw.Write(&batch[i]); err != nil {
				return err
			}
		}
		if err := bw.Flush(); err != nil {
			return err
		}
	}
}

// streamLosses warns once per increase of an event stream's lost and bad
// counts.
type streamLosses struct{ lost, bad uint64 }

func (l *streamLosses) report(stderr io.Writer, es *collector.Events) {
	if n := es.Lost(); n > l.lost {
		warn(stderr, fmt.Sprintf("%d events lost (ring buffer full)", n-l.lost))
		l.lost = n
	}
	if n := es.Bad(); n > l.bad {
		warn(stderr, fmt.Sprintf("%d events skipped (did not decode)", n-l.bad))
		l.bad = n
	}
}
