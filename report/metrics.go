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

// containerLabels name the container of an owner: its Kubernetes namespace
// and pod (empty until the CRI API is queried) and its container name, or
// short id while the name is unknown; all empty outside a container.
var containerLabels = []string{"namespace", "pod", "container"}

// commLabels are the labels of the series grouped by command: its own
// series for each command and container.
var commLabels = append([]string{"comm"}, containerLabels...)

// pidLabels are the labels of the per-process series.
var pidLabels = append([]string{"pid", "comm"}, containerLabels...)

var (
	descSockets = prometheus.NewDesc("closewait_sockets",
		"TCP sockets by state, after the address filters (--port, -4, -6 ...).",
		[]string{"state"}, nil)
	descCommSockets = prometheus.NewDesc("closewait_close_wait_sockets",
		`Sockets in CLOSE_WAIT by command of their first owner (lowest pid) and main cause: the top --top commands, the rest in comm="other", sockets without a visible owner in comm="-". Each socket counts once, so the sum is closewait_sockets{state="close_wait"}.`,
		append(commLabels, "cause"), nil)
	descClosed = prometheus.NewDesc("closewait_closed_socket_fds",
		`Sockets the kernel already closed (peer reset, timeout, ss -K) whose fd a process still holds, by command of the first owner, as closewait_close_wait_sockets groups them. Linux only; with the netlink and procfs sources, of processes in the namespaces listed.`,
		commLabels, nil)
	descCommOldest = prometheus.NewDesc("closewait_close_wait_oldest_age_seconds",
		"Age of the oldest CLOSE_WAIT socket per command, as closewait_close_wait_sockets groups them; a lower bound unless the tracer is installed. Absent when no age is known (procfs source).",
		commLabels, nil)
	descAges = prometheus.NewDesc("closewait_close_wait_age_seconds",
		"Ages of the sockets in CLOSE_WAIT now (lower bounds count as their value). A snapshot, not a running total: use histogram_quantile on it directly, never rate().",
		nil, nil)
	descPIDSockets = prometheus.NewDesc("closewait_close_wait_process_sockets",
		"Sockets in CLOSE_WAIT by first owner process, for the top --top processes (only with --per-pid).",
		pidLabels, nil)
	descPIDOldest = prometheus.NewDesc("closewait_close_wait_process_oldest_age_seconds",
		"Age of the oldest CLOSE_WAIT socket per first owner process, for the top --top processes (only with --per-pid).",
		pidLabels, nil)
	descPortSockets = prometheus.NewDesc("closewait_close_wait_port_sockets",
		"Sockets in CLOSE_WAIT accepted on each local port of this host's listeners, for the top --top ports.",
		[]string{"port"}, nil)
	descOpenFDs = prometheus.NewDesc("closewait_process_open_fds",
		"Open file descriptors of the top --top processes holding CLOSE_WAIT sockets.",
		pidLabels, nil)
	descMaxFDs = prometheus.NewDesc("closewait_process_max_fds",
		"The soft RLIMIT_NOFILE of the top --top processes holding CLOSE_WAIT sockets; absent when unlimited.",
		pidLabels, nil)
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

// TopN is how many commands, processes and ports get series of their own.
func (o MetricsOptions) TopN() int {
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
	// FDs are the fd usage of the processes that hold the most CLOSE_WAIT
	// sockets, by pid (TopHolders).
	FDs      map[int]collector.FDUsage
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
	top := opts.TopN()
	// A socket in an accept queue counts under its listener's process.
	comms := groupBy(cw, commKey)
	other := group{key: otherKey}
	label := map[string]string{} // comm key -> its series' key
	n := 0
	for _, g := range comms {
		switch {
		case g.key == noOwnerKey:
			// What no process holds is never folded into other.
			label[g.key] = g.key
		case n < top:
			label[g.key] = g.key
			n++
		default:
			label[g.key] = otherKey
			other.add(g)
			continue
		}
		out = append(out, g.oldestMetric(descCommOldest, splitKey(g.key)...)...)
	}
	out = append(out, other.oldestMetric(descCommOldest, splitKey(otherKey)...)...)
	// The counts split by main cause: at most six series per comm.
	causes := groupBy(cw, func(sk *collector.Socket) string {
		return label[commKey(sk)] + "\x00" + mainCause(sk)
	})
	merged := map[string]int{}
	var keys []string
	for _, g := range causes {
		if _, ok := merged[g.key]; !ok {
			keys = append(keys, g.key)
		}
		merged[g.key] += g.sockets
	}
	if other.sockets == 0 {
		out = append(out, prometheus.MustNewConstMetric(descCommSockets, prometheus.GaugeValue, 0, append(splitKey(otherKey), "none")...))
	}
	for _, k := range keys {
		out = append(out, prometheus.MustNewConstMetric(descCommSockets, prometheus.GaugeValue, float64(merged[k]), splitKey(k)...))
	}

	ports := groupBy(cw, func(sk *collector.Socket) string {
		if !sk.Inbound {
			return ""
		}
		return strconv.Itoa(int(sk.Local.Port()))
	})
	n = 0
	for _, g := range ports {
		if g.key == "" {
			continue // outbound: no listener's port
		}
		if n == top {
			break
		}
		out = append(out, prometheus.MustNewConstMetric(descPortSockets, prometheus.GaugeValue, float64(g.sockets), g.key))
		n++
	}
	containers := processContainers(s.Snapshot.Sockets)
	for _, p := range TopHolders(s.Snapshot, top) {
		u, ok := s.FDs[p.PID]
		if !ok {
			continue // gone before its fds were counted
		}
		labels := append([]string{strconv.Itoa(p.PID), commLabel(p.Comm)}, containerValues(containers[p.PID])...)
		out = append(out, prometheus.MustNewConstMetric(descOpenFDs, prometheus.GaugeValue, float64(u.Open), labels...))
		if u.Limit > 0 {
			out = append(out, prometheus.MustNewConstMetric(descMaxFDs, prometheus.GaugeValue, float64(u.Limit), labels...))
		}
	}
	// Only some sources see closed sockets: elsewhere a 0 would lie.
	if collector.SeesClosed(s.Snapshot.Source) {
		out = append(out, commMetrics(closed, top, descClosed, nil)...)
	}

	if opts.PerPID {
		procs := groupBy(cw, func(sk *collector.Socket) string {
			h := sk.Holders()
			if len(h) == 0 {
				return ""
			}
			return strconv.Itoa(h[0].PID) + "\x00" + commKey(sk)
		})
		n := 0
		for _, g := range procs {
			if g.key == "" {
				continue // no pid to label: the comm="-" series has them
			}
			if n == top {
				break
			}
			out = append(out, g.metrics(descPIDSockets, descPIDOldest, splitKey(g.key)...)...)
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
	comms := groupBy(socks, commKey)
	var out []prometheus.Metric
	other := group{key: otherKey}
	n := 0
	for _, g := range comms {
		switch {
		case g.key == noOwnerKey:
			// What no process holds is never folded into other.
			out = append(out, g.metrics(count, oldest, splitKey(g.key)...)...)
		case n < top:
			out = append(out, g.metrics(count, oldest, splitKey(g.key)...)...)
			n++
		default:
			other.add(g)
		}
	}
	return append(out, other.metrics(count, oldest, splitKey(otherKey)...)...)
}

// Keys of the groups by command and container: the commLabels values
// joined by NULs, which no label value holds.
var (
	noOwnerKey = NoOwnerComm + "\x00\x00\x00"
	otherKey   = OtherComm + "\x00\x00\x00"
)

// commKey is the group of a socket by the command and container of its
// first holder; noOwnerKey when none is visible.
func commKey(sk *collector.Socket) string {
	h := sk.Holders()
	if len(h) == 0 {
		return noOwnerKey
	}
	return strings.Join(append([]string{commLabel(h[0].Comm)}, containerValues(h[0].Proc)...), "\x00")
}

// splitKey is the label values a group key joins.
func splitKey(k string) []string {
	return strings.Split(k, "\x00")
}

// containerValues are the containerLabels values of p: the container label
// is the container's name, else its short id; all empty outside one.
func containerValues(p *collector.Process) []string {
	if p == nil || p.Container == nil {
		return []string{"", "", ""}
	}
	c := p.Container
	name := c.Name
	if name == "" {
		name = c.ShortID()
	}
	return []string{Printable(c.Namespace), Printable(c.Pod), Printable(name)}
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

// oldestMetric is the group's oldest age, when one is known.
func (g group) oldestMetric(oldest *prometheus.Desc, labels ...string) []prometheus.Metric {
	if !g.oldestKnown {
		return nil
	}
	return []prometheus.Metric{prometheus.MustNewConstMetric(oldest, prometheus.GaugeValue, g.oldest.Seconds(), labels...)}
}

// mainCause is a socket's most telling cause, "none" when it has none.
func mainCause(sk *collector.Socket) string {
	if len(sk.Causes) == 0 {
		return "none"
	}
	return string(sk.Causes[0])
}

// TopHolders are the n processes holding the most CLOSE_WAIT sockets (a
// queued socket counts for its listener's), the ones whose fds serve
// counts.
func TopHolders(snap *collector.Snapshot, n int) []collector.ProcessSummary {
	var out []collector.ProcessSummary
	for _, p := range collector.Summarize(snap) {
		if len(out) == n {
			break
		}
		if p.PID != 0 {
			out = append(out, p)
		}
	}
	return out
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

// Descs returns every metric description ScrapeMetrics and
// TransitionMetrics may produce.
func Descs() []*prometheus.Desc {
	return []*prometheus.Desc{descSockets, descCommSockets, descClosed, descCommOldest, descAges,
		descPIDSockets, descPIDOldest, descPortSockets, descOpenFDs, descMaxFDs,
		descTransitions, descDuration, descErrors}
}

// TransitionMetrics gives closewait_state_transitions_total.
func TransitionMetrics(counts []TransitionCount) []prometheus.Metric {
	out := make([]prometheus.Metric, 0, len(counts))
	for _, t := range counts {
		out = append(out, prometheus.MustNewConstMetric(descTransitions, prometheus.CounterValue, float64(t.Count), t.From.Label(), t.To.Label()))
	}
	return out
}
