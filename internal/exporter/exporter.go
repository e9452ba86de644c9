// Package exporter serves closewait's Prometheus metrics: a collection
// cache that concurrent scrapes share, the transition tally, the HTTP
// server and the textfile writer. The metrics themselves are report's.
package exporter

import (
	"cmp"
	"context"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/closewait/closewait/collector"
	"github.com/closewait/closewait/report"
)

// TransitionSource is what the exporter needs from the eBPF tracer:
// cumulative transition counts since the tracer started. A tracer that
// counts in the kernel implements it directly; one that streams ring-buffer
// events can feed a TransitionTally.
type TransitionSource interface {
	TransitionCounts() []report.TransitionCount
}

// TransitionTally counts transitions one event at a time. It is safe for
// concurrent use: the ring-buffer reader adds while scrapes read.
type TransitionTally struct {
	mu sync.Mutex
	m  map[[2]collector.State]uint64
}

// Add counts one transition.
func (t *TransitionTally) Add(from, to collector.State) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m == nil {
		t.m = map[[2]collector.State]uint64{}
	}
	t.m[[2]collector.State{from, to}]++
}

// TransitionCounts returns the counts so far, ordered by from, then to.
func (t *TransitionTally) TransitionCounts() []report.TransitionCount {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]report.TransitionCount, 0, len(t.m))
	for k, n := range t.m {
		out = append(out, report.TransitionCount{From: k[0], To: k[1], Count: n})
	}
	slices.SortFunc(out, func(a, b report.TransitionCount) int {
		return cmp.Or(cmp.Compare(a.From, b.From), cmp.Compare(a.To, b.To))
	})
	return out
}

// GatherFunc collects what one scrape shows: the CLOSE_WAIT sockets with
// owners, and every TCP socket counted by state (collector.CollectCounted).
type GatherFunc func(ctx context.Context) (*collector.Snapshot, collector.StateCounts, error)

// Options configures an Exporter.
type Options struct {
	report.MetricsOptions
	// TTL is how long a collection answers later scrapes. Scrapes that
	// arrive while a collection runs always wait for it rather than start
	// their own, TTL or not.
	TTL time.Duration
	// Timeout bounds one collection; 0 means none.
	Timeout time.Duration
	// Context is the parent of every collection: cancel it to stop them on
	// shutdown. nil means context.Background().
	Context context.Context
	// Transitions, when not nil, supplies closewait_state_transitions_total.
	Transitions TransitionSource
	// Now is the clock; nil means time.Now. Tests set it to step the TTL.
	Now func() time.Time
}

// Exporter is a prometheus.Collector that collects at scrape time. Any
// number of concurrent scrapes share one collection, and its result
// answers scrapes for TTL after it ends: a scrape never costs more than one
// listing, and several Prometheus servers do not multiply the work.
type Exporter struct {
	gather GatherFunc
	opts   Options

	mu       sync.Mutex
	last     *report.Scrape // the latest finished collection
	lastEnd  time.Time      // when it finished
	inflight *flight        // the collection running now, if any
	failures uint64         // collections that failed
}

type flight struct {
	done chan struct{}
	res  *report.Scrape
}

// New returns an exporter that calls gather to collect.
func New(gather GatherFunc, opts Options) *Exporter {
	if opts.Context == nil {
		opts.Context = context.Background()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Exporter{gather: gather, opts: opts}
}

// Describe sends every metric the exporter may produce.
func (e *Exporter) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range report.Descs() {
		ch <- d
	}
}

// Collect runs or joins a collection, or takes the cached one, and sends
// its metrics.
func (e *Exporter) Collect(ch chan<- prometheus.Metric) {
	s, failures := e.Scrape()
	for _, m := range report.ScrapeMetrics(s, failures, e.opts.MetricsOptions) {
		ch <- m
	}
	if e.opts.Transitions != nil {
		for _, m := range report.TransitionMetrics(e.opts.Transitions.TransitionCounts()) {
			ch <- m
		}
	}
}

// Scrape returns a collection no older than the TTL, running one when
// there is none and joining the running one when there is. It also
// returns the number of failed collections so far.
func (e *Exporter) Scrape() (*report.Scrape, uint64) {
	e.mu.Lock()
	if e.last != nil && e.opts.Now().Sub(e.lastEnd) < e.opts.TTL {
		s, n := e.last, e.failures
		e.mu.Unlock()
		return s, n
	}
	if f := e.inflight; f != nil {
		e.mu.Unlock()
		<-f.done
		e.mu.Lock()
		defer e.mu.Unlock()
		return f.res, e.failures
	}
	f := &flight{done: make(chan struct{})}
	e.inflight = f
	e.mu.Unlock()

	f.res = e.collect()

	e.mu.Lock()
	e.inflight = nil
	e.last, e.lastEnd = f.res, e.opts.Now()
	if f.res.Err != nil {
		e.failures++
	}
	n := e.failures
	e.mu.Unlock()
	close(f.done)
	return f.res, n
}

func (e *Exporter) collect() *report.Scrape {
	ctx := e.opts.Context
	if e.opts.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, e.opts.Timeout)
		defer cancel()
	}
	start := time.Now() // the real clock: a duration, not a cache age
	snap, counts, err := e.gather(ctx)
	s := &report.Scrape{Snapshot: snap, Counts: counts, Err: err}
	if err == nil && snap != nil {
		s.FDs = map[int]collector.FDUsage{}
		for _, p := range report.TopHolders(snap, e.opts.TopN()) {
			if u, err := collector.ReadFDUsage("", p.PID); err == nil {
				s.FDs[p.PID] = u
			}
		}
	}
	s.Duration = time.Since(start)
	return s
}
