package report

import (
	"cmp"
	"context"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/closewait/closewait/collector"
)

// AgeBuckets are the upper bounds, in seconds, of closewait_close_wait_age_seconds.
// A healthy server closes within milliseconds, so everything above a second
// is worth a bucket; the bounds are the questions people ask of a leak:
// stuck for more than a few seconds (a slow handler), a minute, five
// minutes (a typical alert), an hour, four hours, a day, a week.
var AgeBuckets = []float64{1, 5, 15, 60, 300, 900, 3600, 14400, 86400, 604800}

// OtherComm is the comm label value that gathers the commands outside the
// top N.
const OtherComm = "other"

// NoOwnerComm is the comm label value of sockets no visible process holds
// (or, in an accept queue, whose listener none holds): kernel sockets, or
// another user's process while not root. Summarize and the table print
// "-" for them as well. It is never folded into OtherComm.
const NoOwnerComm = "-"

var (
	descSockets = prometheus.NewDesc("closewait_sockets",
		"TCP sockets by state, after the address filters (--port, -4, -6 ...).",
		[]string{"state"}, nil)
	descCommSockets = prometheus.NewDesc("closewait_close_wait_sockets",
		`Sockets in CLOSE_WAIT by command of their first owner (lowest pid): the top --top commands, the rest in comm="other", sockets without a visible owner in comm="-". Each socket counts once, so the sum is closewait_sockets{state="close_wait"}.`,
		[]string{"comm"}, nil)
	descCommOldest = prometheus.NewDesc("closewait_close_wait_oldest_age_seconds",
		"Age of the oldest CLOSE_WAIT socket per command, as closewait_close_wait_sockets groups them; a lower bound unless the tracer is installed. Absent when no age is known (procfs source).",
		[]string{"comm"}, nil)
	descAges = prometheus.NewDesc("closewait_close_wait_age_seconds",
		"Ages of the sockets in CLOSE_WAIT now (lower bounds count as their value). A snapshot, not a running total: use histogram_quantile on it directly, never rate().",
		nil, nil)
	descPIDSockets = prometheus.NewDesc("closewait_close_wait_process_sockets",
		"Sockets in CLOSE_WAIT by first owner process, for the top --top processes (only with --per-pid).",
		[]string{"pid", "comm"}, nil)
	descPIDOldest = prometheus.NewDesc("closewait_close_wait_process_oldest_age_seconds",
		"Age of the oldest CLOSE_WAIT socket per first owner process, for the top --top processes (only with --per-pid).",
		[]string{"pid", "comm"}, nil)
	descTransitions = prometheus.NewDesc("closewait_state_transitions_total",
		"TCP state transitions seen by the eBPF tracer since serve started it (--transitions); absent without it.",
		[]string{"from", "to"}, nil)
	descDuration = prometheus.NewDesc("closewait_scrape_duration_seconds",
		"Time the collection behind this scrape took (scrapes within the cache TTL share one collection).",
		nil, nil)
	descErrors = prometheus.NewDesc("closewait_scrape_errors_total",
		"Collections that failed since the exporter started; a failed collection serves no socket metrics.",
		nil, nil)
)

// MetricsOptions shapes the metrics of a snapshot.
type MetricsOptions struct {
	// Top is how many commands (and with PerPID, processes) get their own
	// series; 0 means 10. It bounds the series a host can produce however
	// many programs leak.
	Top int
	// PerPID adds the per-process metrics, labelled by pid: opt-in because
	// every restart makes new series.
	PerPID bool
}

func (o MetricsOptions) top() int {
	if o.Top <= 0 {
		return 10
	}
	return o.Top
}

// TransitionCount is how often sockets went from one TCP state to another.
type TransitionCount struct {
	From, To collector.State
	Count    uint64
}

// TransitionSource is what the exporter needs from the eBPF tracer:
// cumulative transition counts since the tracer started. A tracer that
// counts in the kernel implements it directly; one that streams ring-buffer
// events can feed a TransitionTally.
type TransitionSource interface {
	TransitionCounts() []TransitionCount
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
func (t *TransitionTally) TransitionCounts() []TransitionCount {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]TransitionCount, 0, len(t.m))
	for k, n := range t.m {
		out = append(out, TransitionCount{From: k[0], To: k[1], Count: n})
	}
	slices.SortFunc(out, func(a, b TransitionCount) int {
		return cmp.Or(cmp.Compare(a.From, b.From), cmp.Compare(a.To, b.To))
	})
	return out
}

// GatherFunc collects what one scrape shows: the CLOSE_WAIT sockets with
// owners, and every TCP socket counted by state (collector.CollectCounted).
type GatherFunc func(ctx context.Context) (*collector.Snapshot, collector.StateCounts, error)

// ExporterOptions configures an Exporter.
type ExporterOptions struct {
	MetricsOptions
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
	opts   ExporterOptions

	mu       sync.Mutex
	last     *Scrape   // the latest finished collection
	lastEnd  time.Time // when it finished
	inflight *flight   // the collection running now, if any
	failures uint64    // collections that failed
}

// Scrape is the outcome of one collection.
type Scrape struct {
	Snapshot *collector.Snapshot
	Counts   collector.StateCounts
	Duration time.Duration
	Err      error
}

type flight struct {
	done chan struct{}
	res  *Scrape
}

// NewExporter returns an exporter that calls gather to collect.
func NewExporter(gather GatherFunc, opts ExporterOptions) *Exporter {
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
	for _, d := range []*prometheus.Desc{descSockets, descCommSockets, descCommOldest, descAges,
		descPIDSockets, descPIDOldest, descTransitions, descDuration, descErrors} {
		ch <- d
	}
}

// Collect runs or joins a collection, or takes the cached one, and sends
// its metrics.
func (e *Exporter) Collect(ch chan<- prometheus.Metric) {
	s, failures := e.Scrape()
	for _, m := range ScrapeMetrics(s, failures, e.opts.MetricsOptions) {
		ch <- m
	}
	if e.opts.Transitions != nil {
		for _, t := range e.opts.Transitions.TransitionCounts() {
			ch <- prometheus.MustNewConstMetric(descTransitions, prometheus.CounterValue, float64(t.Count), t.From.Label(), t.To.Label())
		}
	}
}

// Scrape returns a collection no older than the TTL, running one when
// there is none and joining the running one when there is. It also
// returns the number of failed collections so far.
func (e *Exporter) Scrape() (*Scrape, uint64) {
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

func (e *Exporter) collect() *Scrape {
	ctx := e.opts.Context
	if e.opts.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, e.opts.Timeout)
		defer cancel()
	}
	start := time.Now() // the real clock: a duration, not a cache age
	snap, counts, err := e.gather(ctx)
	return &Scrape{Snapshot: snap, Counts: counts, Duration: time.Since(start), Err: err}
}

// ScrapeMetrics turns one collection into metrics: pure, for the exporter
// and the textfile alike. failures is the value of
// closewait_scrape_errors_total. A failed collection gives only the scrape
// metrics: stale or partial socket counts would be worse than none.
func ScrapeMetrics(s *Scrape, failures uint64, opts MetricsOptions) []prometheus.Metric {
	out := []prometheus.Metric{
		prometheus.MustNewConstMetric(descDuration, prometheus.GaugeValue, s.Duration.Seconds()),
		prometheus.MustNewConstMetric(descErrors, prometheus.CounterValue, float64(failures)),
	}
	if s.Err != nil || s.Snapshot == nil {
		return out
	}
	for _, st := range collector.AllStates {
		out = append(out, prometheus.MustNewConstMetric(descSockets, prometheus.GaugeValue, float64(s.Counts[st]), st.Label()))
	}

	var cw []*collector.Socket
	for i := range s.Snapshot.Sockets {
		if sk := &s.Snapshot.Sockets[i]; sk.State == collector.StateCloseWait {
			cw = append(cw, sk)
		}
	}
	top := opts.top()
	// A socket in an accept queue counts under its listener's process.
	comms := groupBy(cw, func(sk *collector.Socket) string {
		if h := sk.Holders(); len(h) > 0 {
			return commLabel(h[0].Comm)
		}
		return NoOwnerComm
	})
	other := group{key: OtherComm}
	n := 0
	for _, g := range comms {
		switch {
		case g.key == NoOwnerComm:
			// What no process holds is never folded into other.
			out = append(out, g.metrics(descCommSockets, descCommOldest, g.key)...)
		case n < top:
			out = append(out, g.metrics(descCommSockets, descCommOldest, g.key)...)
			n++
		default:
			other.add(g)
		}
	}
	out = append(out, other.metrics(descCommSockets, descCommOldest, OtherComm)...)

	if opts.PerPID {
		procs := groupBy(cw, func(sk *collector.Socket) string {
			h := sk.Holders()
			if len(h) == 0 {
				return ""
			}
			return strconv.Itoa(h[0].PID) + "\x00" + commLabel(h[0].Comm)
		})
		n := 0
		for _, g := range procs {
			if g.key == "" {
				continue // no pid to label: the comm="-" series has them
			}
			if n == top {
				break
			}
			pid, comm, _ := strings.Cut(g.key, "\x00")
			out = append(out, g.metrics(descPIDSockets, descPIDOldest, pid, comm)...)
			n++
		}
	}

	buckets := make(map[float64]uint64, len(AgeBuckets))
	for _, b := range AgeBuckets {
		buckets[b] = 0 // empty buckets too: a histogram's bounds must not come and go
	}
	var count uint64
	var sum float64
	for _, sk := range cw {
		if !sk.AgeKnown {
			continue
		}
		age := sk.Age.Seconds()
		count++
		sum += age
		for _, b := range AgeBuckets {
			if age <= b {
				buckets[b]++ // cumulative: every bound at or above the age
			}
		}
	}
	out = append(out, prometheus.MustNewConstHistogram(descAges, count, sum, buckets))
	return out
}

// group is the CLOSE_WAIT sockets of one command or process.
type group struct {
	key         string
	sockets     int
	oldest      time.Duration
	oldestKnown bool
}

func (g *group) add(o group) {
	g.sockets += o.sockets
	if o.oldestKnown && (!g.oldestKnown || o.oldest > g.oldest) {
		g.oldest, g.oldestKnown = o.oldest, true
	}
}

func (g group) metrics(count, oldest *prometheus.Desc, labels ...string) []prometheus.Metric {
	out := []prometheus.Metric{prometheus.MustNewConstMetric(count, prometheus.GaugeValue, float64(g.sockets), labels...)}
	if g.oldestKnown {
		out = append(out, prometheus.MustNewConstMetric(oldest, prometheus.GaugeValue, g.oldest.Seconds(), labels...))
	}
	return out
}

// groupBy groups sockets by key, most sockets first, then oldest first,
// then by key, so the top N is stable from one scrape to the next.
func groupBy(socks []*collector.Socket, key func(*collector.Socket) string) []group {
	index := map[string]int{}
	var groups []group
	for _, sk := range socks {
		k := key(sk)
		i, ok := index[k]
		if !ok {
			i = len(groups)
			index[k] = i
			groups = append(groups, group{key: k})
		}
		g := group{key: k, sockets: 1, oldest: sk.Age, oldestKnown: sk.AgeKnown}
		groups[i].add(g)
	}
	slices.SortFunc(groups, func(a, b group) int {
		return cmp.Or(cmp.Compare(b.sockets, a.sockets),
			compareAge(b.oldest, b.oldestKnown, a.oldest, a.oldestKnown),
			cmp.Compare(a.key, b.key))
	})
	return groups
}

// commLabel makes a command name a label value: escaped as tables print
// it (Printable), so that it is valid UTF-8, which Prometheus requires, and
// holds no control characters for a terminal or a log to act on; and never
// one of the reserved values: a process named "-" or "other" is labelled
// "'-'" or "'other'", so that its sockets do not merge with those of no
// process or of the commands outside the top.
func commLabel(s string) string {
	switch s {
	case NoOwnerComm, OtherComm:
		return "'" + s + "'"
	case "":
		return "''"
	}
	return Printable(s)
}
