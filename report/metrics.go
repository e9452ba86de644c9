package report

import (
	"cmp"
	"slices"
	"strconv"
	"strings"
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
	descClosed = prometheus.NewDesc("closewait_closed_socket_fds",
		`Sockets the kernel already closed (peer reset, timeout, ss -K) whose fd a process still holds, by command of the first owner, as closewait_close_wait_sockets groups them. ebpf source only; absent with the others, which cannot see them.`,
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

// Scrape is the outcome of one collection.
type Scrape struct {
	Snapshot *collector.Snapshot
	Counts   collector.StateCounts
	Duration time.Duration
	Err      error
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

	var cw, closed []*collector.Socket
	for i := range s.Snapshot.Sockets {
		switch sk := &s.Snapshot.Sockets[i]; sk.State {
		case collector.StateCloseWait:
			cw = append(cw, sk)
		case collector.StateClose:
			closed = append(closed, sk)
		}
	}
	top := opts.top()
	out = append(out, commMetrics(cw, top, descCommSockets, descCommOldest)...)
	// Only the ebpf source sees closed sockets: elsewhere a 0 would lie.
	if s.Snapshot.Source == collector.SourceEBPF {
		out = append(out, commMetrics(closed, top, descClosed, nil)...)
	}

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

// commMetrics gives the series of socks by command of the first holder:
// the top commands, the rest in comm="other", those no process holds in
// comm="-". A socket in an accept queue counts under its listener's
// process. oldest may be nil for sockets without ages.
func commMetrics(socks []*collector.Socket, top int, count, oldest *prometheus.Desc) []prometheus.Metric {
	comms := groupBy(socks, func(sk *collector.Socket) string {
		if h := sk.Holders(); len(h) > 0 {
			return commLabel(h[0].Comm)
		}
		return NoOwnerComm
	})
	var out []prometheus.Metric
	other := group{key: OtherComm}
	n := 0
	for _, g := range comms {
		switch {
		case g.key == NoOwnerComm:
			// What no process holds is never folded into other.
			out = append(out, g.metrics(count, oldest, g.key)...)
		case n < top:
			out = append(out, g.metrics(count, oldest, g.key)...)
			n++
		default:
			other.add(g)
		}
	}
	return append(out, other.metrics(count, oldest, OtherComm)...)
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
	if g.oldestKnown && oldest != nil {
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
			collector.CompareAge(b.oldest, b.oldestKnown, a.oldest, a.oldestKnown),
			cmp.Compare(a.key, b.key))
	})
	return groups
}

// commLabel makes a command name a label value: valid UTF-8 (a process
// may name itself with bytes that are not, which Prometheus rejects), and
// never one of the reserved values: a process named "-" or "other" is
// labelled "'-'" or "'other'", so that its sockets do not merge with
// those of no process or of the commands outside the top.
func commLabel(s string) string {
	switch s {
	case NoOwnerComm, OtherComm:
		return "'" + s + "'"
	case "":
		return "''"
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}

// Descs returns every metric description ScrapeMetrics and
// TransitionMetrics may produce.
func Descs() []*prometheus.Desc {
	return []*prometheus.Desc{descSockets, descCommSockets, descClosed, descCommOldest, descAges,
		descPIDSockets, descPIDOldest, descTransitions, descDuration, descErrors}
}

// TransitionMetrics gives closewait_state_transitions_total.
func TransitionMetrics(counts []TransitionCount) []prometheus.Metric {
	out := make([]prometheus.Metric, 0, len(counts))
	for _, t := range counts {
		out = append(out, prometheus.MustNewConstMetric(descTransitions, prometheus.CounterValue, float64(t.Count), t.From.Label(), t.To.Label()))
	}
	return out
}
