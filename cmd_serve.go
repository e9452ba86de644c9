package main

import (
	"context"
	"errors"
	"fmt"
	"html/template"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/closewait/closewait/collector"
	"github.com/closewait/closewait/report"
)

// defaultListen is loopback only: the metrics name processes and ports, so
// exposing them further is the operator's decision (--listen :10087).
// 10087 is not taken by any exporter we know of; it is not registered in
// the Prometheus default-port-allocations list yet.
const defaultListen = "127.0.0.1:10087"

// Server timeouts. A scrape takes a fraction of a second at tens of
// thousands of sockets, but a loaded host can stretch a collection up to
// collectTimeout, and the write timeout leaves room for it.
const (
	collectTimeout    = 30 * time.Second
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 10 * time.Second
	writeTimeout      = collectTimeout + 15*time.Second
	idleTimeout       = 2 * time.Minute
	shutdownTimeout   = 10 * time.Second
)

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	opts := collector.Options{States: collector.StatesCloseWait}
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

--transitions attaches an eBPF tracer for closewait_state_transitions_total
(every TCP state change in this network namespace); without it the metric
is absent.`,
		`  closewait serve                                   # http://127.0.0.1:10087/metrics
  closewait serve --listen :10087 --top 20         # all interfaces: asked explicitly
  closewait serve --port 8080,8443 --per-pid
  closewait serve --transitions                    # root, or CAP_BPF and CAP_PERFMON
  # cron, for node_exporter --collector.textfile.directory=/var/lib/node_exporter
  closewait serve --textfile /var/lib/node_exporter/closewait.prom`)
	fs.Var(newEnum(&opts.Source, collector.SourceAuto, collectorSources...), "source",
		"socket table source: "+strings.Join(collectorSources, ", "))
	fs.Var(portsValue{&opts.Filter.Ports}, "port", "local or remote port (comma list)")
	fs.Var(portsValue{&opts.Filter.SPorts}, "sport", "local port (comma list)")
	fs.Var(portsValue{&opts.Filter.DPorts}, "dport", "remote port (comma list)")
	fs.BoolVarP(&opts.Filter.IPv4, "ipv4", "4", false, "IPv4 sockets only")
	fs.BoolVarP(&opts.Filter.IPv6, "ipv6", "6", false, "IPv6 sockets only")
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
	if textfile != "" && fs.Changed("listen") {
		return usageErrorf("--textfile writes a file and exits: it does not listen (drop --listen)")
	}

	if textfile != "" && transitions {
		return usageErrorf("--transitions counts while serving: a textfile written once would hold no transitions")
	}
	if textfile != "" {
		ttl = time.Hour // one collection serves the write
	}
	var tally report.TransitionSource
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
	exp := report.NewExporter(newGather(opts, stderr), report.ExporterOptions{
		MetricsOptions: mopts,
		TTL:            ttl,
		Timeout:        collectTimeout,
		Context:        collectCtx,
		Transitions:    tally,
	})
	if textfile != "" {
		return writeTextfile(exp, textfile, stderr)
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(exp,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		// A failed collection is reported by closewait_scrape_errors_total;
		// the other metrics still go out.
		ErrorHandling:       promhttp.ContinueOnError,
		MaxRequestsInFlight: 8,
	}))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		indexPage.Execute(w, version)
	})

	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("listening: %w", err)
	}
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    16 << 10,
	}
	fmt.Fprintf(stderr, "closewait: serving metrics on http://%s/metrics\n", ln.Addr())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		return fmt.Errorf("serving: %w", err)
	case <-ctx.Done():
	}
	// Let running scrapes finish; collections stop after shutdownTimeout.
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutting down: %w", err)
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serving: %w", err)
	}
	return nil
}

// newGather returns the exporter's collection. It logs each distinct
// warning once, and a failure only when it differs from the last one, so a
// scrape every few seconds does not flood the log.
func newGather(opts collector.Options, stderr io.Writer) report.GatherFunc {
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
		for _, w := range snap.Warnings {
			if !warned[w] {
				warned[w] = true
				warn(stderr, w)
			}
		}
		return snap, counts, nil
	}
}

// writeTextfile collects once and writes the metrics for node_exporter's
// textfile collector. A failed collection leaves the old file alone and
// exits non-zero: node_textfile_mtime_seconds then shows the staleness.
// Only closewait's metrics go in: node_exporter has its own go_ and
// process_ metrics, and duplicates would make it reject the file.
func writeTextfile(exp *report.Exporter, path string, stderr io.Writer) error {
	defer oneShotGC()()
	if !strings.HasSuffix(path, ".prom") {
		fmt.Fprintf(stderr, "closewait: warning: node_exporter reads only *.prom files, not %s\n", path)
	}
	if s, _ := exp.Scrape(); s.Err != nil {
		return fmt.Errorf("collecting: %w", s.Err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(exp)
	// WriteToTextfile renames a temporary file from the same directory into
	// place; its name does not end in .prom, so node_exporter never reads
	// half a file.
	if err := prometheus.WriteToTextfile(path, reg); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

var indexPage = template.Must(template.New("index").Parse(`<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>closewait exporter</title></head>
<body>
<h1>closewait exporter</h1>
<p>TCP sockets stuck in CLOSE_WAIT: who holds them, for how long. Version {{.}}.</p>
<p><a href="/metrics">Metrics</a></p>
</body></html>
`))
