package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"time"

	"github.com/charmbracelet/x/term"

	"github.com/closewait/closewait/collector"
	"github.com/closewait/closewait/watch"
)

func runWatch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var opts collector.Options
	var interval time.Duration
	var count int
	var noTracer bool
	fs := newFlagSet("watch", "closewait watch [flags]",
		`Watch CLOSE_WAIT sockets live: one row per process with its count, the change
since the start and per minute, the oldest socket, the main cause, open fds
against the limit and when the limit is reached at the current rate.

With the tracer ("closewait tracer install") the view follows its events;
otherwise it polls every --interval. When stdout is not a terminal it prints
one plain text snapshot per interval. Keys: q quit, s sort, Enter sockets of
the selected process (Esc back), p pause, / filter, ? help.`,
		`  closewait watch
  closewait watch --port 8080 --interval 5s
  closewait watch --count 3 > snapshots.txt   # three plain snapshots
  closewait watch --comm java | tee watch.log`)
	addCollectFlags(fs, &opts)
	interval = time.Second
	fs.Var(durationValue{&interval}, "interval", "time between refreshes (polls without the tracer)")
	fs.IntVar(&count, "count", 0, "stop after this many refreshes (0: run until q or Ctrl-C)")
	fs.BoolVar(&noTracer, "no-tracer", false, "poll every --interval even when the tracer is available")
	if done, err := parseCollect(fs, args, stdout, &opts); done || err != nil {
		return err
	}
	for _, n := range opts.Filter.Comms {
		if len(n) > 15 {
			return usageErrorf("--comm %s: longer than the 15 bytes the kernel keeps of a command name; watch matches those: --comm %s", n, n[:15])
		}
	}
	if interval < 100*time.Millisecond {
		return usageErrorf("--interval: %v: want at least 100ms", interval)
	}
	if count < 0 {
		return usageErrorf("--count: %d: want 0 or more", count)
	}

	settle, restoreGC := watchGC()
	defer restoreGC()
	poller := collector.NewPoller(opts)
	defer poller.Close()
	poller.TolerateMisses(1) // no flicker when a dump skips a live socket
	cfg := watch.Config{
		Source:   poller,
		Interval: interval,
		Count:    count,
		Label:    "CLOSE_WAIT",
		FDUsage:  func(pid int) (collector.FDUsage, error) { return collector.ReadFDUsage(opts.ProcRoot, pid) },
		Warn:     func(msg string) { warn(stderr, msg) },
		Tracer:   tracerState(opts.TracerPinDir),
		Settle:   settle,
	}
	if runtime.GOOS == "linux" {
		cfg.Closed = closedCounter(opts)
	}
	if opts.States != collector.StatesCloseWait {
		cfg.Label = "SOCKETS"
	}
	// The tracer reports CLOSE_WAIT transitions only.
	if !noTracer && collector.EventsSupported && opts.States == collector.StatesCloseWait {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel() // stops the tracer's stream
		events, err := openWatchEvents(ctx, opts.NetNS, stderr)
		if err != nil {
			fmt.Fprintf(stderr, "closewait: tracer events unavailable (%v): polling every %v\n", err, interval)
		} else {
			cfg.Events = events
		}
	}
	if f, ok := stdout.(*os.File); ok && term.IsTerminal(f.Fd()) {
		var in io.Reader // nil: watch opens /dev/tty
		if term.IsTerminal(os.Stdin.Fd()) {
			in = os.Stdin
		}
		return watch.Terminal(ctx, cfg, in, f)
	}
	return watch.Plain(ctx, cfg, stdout)
}

// closedCounter counts, by process, the fds that hold sockets the kernel
// already closed, among the sockets opts choose (list --state closed).
func closedCounter(opts collector.Options) func(context.Context) (map[int]watch.ClosedFDs, error) {
	opts.States = collector.StateSet(0).With(collector.StateClose)
	opts.Filter.OlderThan = 0 // a closed socket has no age
	return func(ctx context.Context) (map[int]watch.ClosedFDs, error) {
		snap, err := collector.Collect(ctx, opts)
		if err != nil {
			return nil, err
		}
		out := map[int]watch.ClosedFDs{}
		for _, s := range snap.Sockets {
			for _, o := range s.Owners {
				c := out[o.PID]
				c.Comm, c.N = o.Comm, c.N+1
				out[o.PID] = c
			}
		}
		return out, nil
	}
}

// openWatchEvents streams the sockets entering and leaving CLOSE_WAIT, as
// watch events, until ctx ends. It needs the tp_btf hook: the cookie is
// what joins an event to the socket a poll sees.
func openWatchEvents(ctx context.Context, netns []string, stderr io.Writer) (<-chan watch.Event, error) {
	es, err := collector.OpenEvents(collector.EventOptions{Cookies: true, NetNS: netns})
	if err != nil {
		return nil, err
	}
	ch := make(chan watch.Event, 1024)
	go func() {
		defer close(ch)
		defer es.Close()
		for {
			batch, err := es.Next(ctx)
			if err != nil {
				if !errors.Is(err, io.EOF) {
					warn(stderr, fmt.Sprintf("tracer events: %v: polling from now on", err))
				}
				return // watch goes back to polling
			}
			for i := range batch {
				select {
				case ch <- watchEvent(&batch[i]):
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return ch, nil
}

// watchEvent converts an event into or out of CLOSE_WAIT.
func watchEvent(e *collector.Event) watch.Event {
	ev := watch.Event{Time: e.Time, Socket: e.Socket, Left: e.Kind() == "leave"}
	if !ev.Left {
		// The FIN just arrived and counts as one unread byte: fin-not-read
		// until a poll reads the real Recv-Q.
		ev.Socket.RecvQ = 1
	}
	return ev
}
