package exporter

import (
	"context"
	"errors"
	"fmt"
	"html"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Server timeouts. A loaded host can stretch a collection up to
// CollectTimeout, and the write timeout leaves room for it.
const (
	CollectTimeout    = 30 * time.Second
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 10 * time.Second
	writeTimeout      = CollectTimeout + 15*time.Second
	idleTimeout       = 2 * time.Minute
	shutdownTimeout   = 10 * time.Second
)

// Serve serves exp's metrics, with Go and process metrics, on /metrics at
// listen until ctx ends, then lets running scrapes finish (up to 10 s). It says where it
// listens on stderr.
func Serve(ctx context.Context, exp *Exporter, listen, version string, stderr io.Writer) error {
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
		fmt.Fprintf(w, indexPage, html.EscapeString(version))
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
	// Let running scrapes finish: their collections run on the exporter's
	// own context, which the caller cancels after Serve returns.
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

// WriteTextfile collects once and writes the metrics for node_exporter's
// textfile collector. A failed collection leaves the old file alone and
// returns the error: node_textfile_mtime_seconds then shows the
// staleness. Only closewait's metrics go in: node_exporter has its own go_
// and process_ metrics, and duplicates would make it reject the file.
func WriteTextfile(exp *Exporter, path string) error {
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

// indexPage is the page at /, with the version escaped. Not html/template:
// linking it costs every run of the binary, a listing too, at start.
const indexPage = `<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>closewait exporter</title></head>
<body>
<h1>closewait exporter</h1>
<p>TCP sockets stuck in CLOSE_WAIT: who holds them, for how long. Version %s.</p>
<p><a href="/metrics">Metrics</a></p>
</body></html>
`
