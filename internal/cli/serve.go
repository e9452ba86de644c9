package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/closewait/closewait/collector"
	"github.com/closewait/closewait/internal/exporter"
	"github.com/closewait/closewait/report"
)

// defaultListen is loopback only: the metrics name processes and ports, so
// exposing them further is the operator's decision (--listen :10087).
// 10087 is not taken by any exporter we know of; it is not registered in
// the Prometheus default-port-allocations list yet.
const defaultListen = "127.0.0.1:10087"

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	// CLOSE too, for closewait_closed_socket_fds. Processes for the
	// owners' containers: the pod/namespace/container labels.
	opts := collector.Options{States: collector.StatesCloseWait.With(collector.StateClose), Containers: true}
	var listen, textfile string
	var mopts report.MetricsOptions
	var ttl time.Duration
	var transitions bool
	fs := newFlagSet("serve", "closewait serve [flags]",
		`Serve Prometheus metrics about CLOSE_WAIT sockets: counts per TCP state, per
command, the oldest age per command and a histogram of ages. Every scrape
collects afresh, except that concurrent scrapes share one collection and
its result answers scrapes for --cache-ttl. Listens on loopback unless
--listen names another address. --textfile writes the metrics once, for
node_exporter's textfile collector, and exits.

Only the address filters apply: closewait_sockets counts every state, and
owners are looked up for CLOSE_WAIT sockets only, so that a scrape costs
about one listing. Narrow by process in PromQL with the comm label.
closewait_closed_socket_fds counts the fds of connections the kernel
already closed.

--transitions attaches an eBPF tracer for closewait_state_transitions_total
(every TCP state change in this network namespace); without it the metric
is absent.`,
		`  closewait serve                                   # http://127.0.0.1:10087/metrics
  closewait serve --listen :10087 --top 20         # all interfaces: asked explicitly
  closewait serve --port 8080,8443 --per-pid
  closewait serve --transitions                    # root, or CAP_BPF and CAP_PERFMON
  # cron, for node_exporter --collector.textfile.directory=/var/lib/node_exporter
  closewait serve --textfile /var/lib/node_exporter/closewait.prom`)
	addSourceFlag(fs, &opts.Source, "socket table source")
	addNetNSFlag(fs, &opts.NetNS)
	addCRIFlag(fs, &opts.CRISockets)
	addPortFlags(fs, &opts.Filter)
	addNetFlags(fs, &opts.Filter)
	addExcludeCommFlag(fs, &opts.Filter)
	addFamilyFlags(fs, &opts.Filter)
	fs.StringVar(&listen, "listen", defaultListen, "address to serve on, host:port")
	fs.StringVar(&textfile, "textfile", "", "write the metrics to this file once (atomically) and exit")
	fs.IntVar(&mopts.Top, "top", 10, "commands with their own series; the rest add up in comm=\"other\"")
	fs.BoolVar(&mopts.PerPID, "per-pid", false, "add per-process series labelled by pid (new series on every restart)")
	ttl = 5 * time.Second // before the flag, so --help shows it
	fs.Var(durationValue{&ttl}, "cache-ttl", "reuse a collection for scrapes within this time")
	fs.BoolVar(&transitions, "transitions", false, "count TCP state transitions with an eBPF tracer (CAP_BPF, CAP_PERFMON)")
	if done, err := fs.parse(args, stdout); done || err != nil {
		return err
	}
	if err := fs.noArgs(); err != nil {
		return err
	}
	if mopts.Top < 1 {
		return usageErrorf("--top: %d: want 1 or more", mopts.Top)
	}
	if err := checkHostPort(listen, 0); err != nil {
		return usageErrorf("--listen: %v", err)
	}
	if err := collector.CheckNetNS(opts.NetNS); err != nil {
		return usageErrorf("%v", err)
	}
	if textfile != "" && fs.Changed("listen") {
		return usageErrorf("--textfile writes a file and exits: it does not listen (drop --listen)")
	}

	if textfile != "" && transitions {
		return usageErrorf("--transitions counts while serving: a textfile written once would hold no transitions")
	}
	if textfile != "" {
		ttl = time.Hour // one collection serves the write
		opts.OneShot = true
	}
	var tally exporter.TransitionSource
	if transitions {
		src, stop, err := openTransitions(stderr)
		if err != nil {
			return fmt.Errorf("--transitions: %w", err)
		}
		defer stop()
		tally = src
	}
	// When serving, collections outlive SIGTERM until the server has shut
	// down, so a scrape in flight is answered in full rather than without
	// its socket metrics. A textfile run stops at once.
	collectCtx, stopCollections := context.WithCancel(context.WithoutCancel(ctx))
	defer stopCollections()
	if textfile != "" {
		collectCtx = ctx
	}
	exp := exporter.New(newGather(opts, stderr), exporter.Options{
		MetricsOptions: mopts,
		TTL:            ttl,
		Timeout:        exporter.CollectTimeout,
		Context:        collectCtx,
		Transitions:    tally,
	})
	if textfile != "" {
		return writeTextfile(exp, textfile, stderr)
	}

	return exporter.Serve(ctx, exp, listen, version, stderr)
}

// newGather returns the exporter's collection. It logs each distinct
// warning once, and a failure only when it differs from the last one, so a
// scrape every few seconds does not flood the log.
func newGather(opts collector.Options, stderr io.Writer) exporter.GatherFunc {
	var mu sync.Mutex
	warned := map[string]bool{}
	lastErr := ""
	return func(ctx context.Context) (*collector.Snapshot, collector.StateCounts, error) {
		snap, counts, err := collector.CollectCounted(ctx, opts)
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			if err.Error() != lastErr && ctx.Err() == nil {
				fmt.Fprintf(stderr, "closewait: collection failed: %v\n", err)
			}
			lastErr = err.Error()
			return nil, nil, err
		}
		lastErr = ""
		for _, w := range snap.Notes() {
			if !warned[w] {
				warned[w] = true
				warn(stderr, w)
			}
		}
		return snap, counts, nil
	}
}

// writeTextfile writes the metrics once for node_exporter's textfile
// collector.
func writeTextfile(exp *exporter.Exporter, path string, stderr io.Writer) error {
	defer oneShotGC()()
	if !strings.HasSuffix(path, ".prom") {
		warn(stderr, "node_exporter reads only *.prom files, not "+path)
	}
	return exporter.WriteTextfile(exp, path)
}

// openTransitions attaches a tracer that sends every TCP state transition
// of this network namespace, and counts them as they arrive. stop detaches
// it and waits for the reader.
//
// Each transition crosses the ring buffer to be counted here. Counting in
// the kernel (a per-CPU [from][to] array read at scrape time) would cost
// far less on a busy host; exporter.TransitionSource takes either.
func openTransitions(stderr io.Writer) (exporter.TransitionSource, func(), error) {
	es, err := collector.OpenEvents(collector.EventOptions{AllStates: true})
	if err != nil {
		return nil, nil, err
	}
	tally := &exporter.TransitionTally{}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			batch, err := es.Next(ctx)
			if err != nil {
				if !errors.Is(err, io.EOF) {
					warn(stderr, fmt.Sprintf("transitions: %v: counts stop", err))
				}
				return
			}
			for i := range batch {
				tally.Add(batch[i].From, batch[i].Socket.State)
			}
		}
	})
	stop := func() {
		cancel()
		wg.Wait()
		if n := es.Lost(); n > 0 {
			warn(stderr, fmt.Sprintf("transitions: the ring buffer lost %d events: counts are low", n))
		}
		if n := es.Bad(); n > 0 {
			warn(stderr, fmt.Sprintf("transitions: %d events did not decode: counts are low", n))
		}
		es.Close()
	}
	return tally, stop, nil
}
