package report

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/closewait/closewait/collector"
	"github.com/closewait/closewait/internal/check"
)

// Perf is one perfdata item: 'label'=value[UOM];[warn];[crit];[min];[max]
// in the plugin conventions. closewait prints no UOM (the label carries
// the unit, as "oldest_seconds") and no min or max.
type Perf struct {
	Label string
	Value float64
	// Unknown prints the value as "U": the plugin spelling of "could not
	// be determined" (no socket has a known age, no previous run).
	Unknown    bool
	Warn, Crit *float64
}

// String renders the item, dropping trailing empty fields as the
// conventions allow: "count=12;5;10", "count=12", "oldest_seconds=U;60;300".
func (p Perf) String() string {
	v := "U"
	if !p.Unknown {
		v = number(p.Value)
	}
	fields := []string{quoteLabel(p.Label) + "=" + v, "", ""}
	if p.Warn != nil {
		fields[1] = number(*p.Warn)
	}
	if p.Crit != nil {
		fields[2] = number(*p.Crit)
	}
	return strings.TrimRight(strings.Join(fields, ";"), ";")
}

func number(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }

// quoteLabel quotes a label with spaces or quotes, as the conventions ask.
func quoteLabel(l string) string {
	if !strings.ContainsAny(l, " '=") {
		return l
	}
	return "'" + strings.ReplaceAll(strings.ReplaceAll(l, "'", "''"), "=", "_") + "'"
}

// Perfdata returns the performance data of a result: the count, the oldest
// age in whole seconds and, when growth limits are set or a previous run is
// known, the growth, each with the limits that apply to it. In per-process
// mode the count and growth limits apply to each process, so they go on
// process_count and process_growth (the largest among the processes), and
// the totals carry none.
func Perfdata(r *check.Result) []Perf {
	th := r.Thresholds
	toF := func(p *int) *float64 {
		if p == nil {
			return nil
		}
		return new(float64(*p))
	}
	var perf []Perf
	count := Perf{Label: check.MetricCount, Value: float64(r.Count)}
	if !th.PerProcess {
		count.Warn, count.Crit = toF(th.WarnCount), toF(th.CritCount)
	}
	perf = append(perf, count)
	if th.PerProcess {
		p := Perf{Label: "process_count", Warn: toF(th.WarnCount), Crit: toF(th.CritCount)}
		for _, pc := range r.Processes {
			p.Value = max(p.Value, float64(pc.Sockets))
		}
		perf = append(perf, p)
	}
	age := Perf{Label: check.MetricOldest, Warn: check.SecondsLimit(th.WarnAge), Crit: check.SecondsLimit(th.CritAge)}
	switch {
	case r.Oldest != nil:
		age.Value = check.WholeSeconds(r.Oldest.Age)
	case r.Count > 0:
		age.Unknown = true
	}
	perf = append(perf, age)
	if r.Growth == nil && th.WarnGrowth == nil && th.CritGrowth == nil {
		return perf
	}
	growth := Perf{Label: check.MetricGrowth, Unknown: r.Growth == nil}
	if r.Growth != nil {
		growth.Value = float64(*r.Growth)
	}
	if !th.PerProcess {
		growth.Warn, growth.Crit = toF(th.WarnGrowth), toF(th.CritGrowth)
	}
	perf = append(perf, growth)
	if th.PerProcess {
		p := Perf{Label: "process_growth", Unknown: r.Growth == nil, Warn: toF(th.WarnGrowth), Crit: toF(th.CritGrowth)}
		for i, pc := range r.Processes {
			if pc.Growth != nil && (i == 0 || float64(*pc.Growth) > p.Value) {
				p.Value = float64(*pc.Growth)
			}
		}
		perf = append(perf, p)
	}
	return perf
}

// CheckTextOptions controls WriteCheck.
type CheckTextOptions struct {
	// MaxOffenders bounds the offender lines after the status line; 0
	// means 5. The status line is what pagers show; the rest is detail.
	MaxOffenders int
	// Warnings go into the long output, after the offenders, as
	// "warning: ..." lines: never before the status line, which a
	// monitoring system that reads stdout and stderr together parses.
	Warnings []string
}

// WriteCheck writes the plugin output: the status line with its perfdata
// after "|", then one line per offending process (the plugin "long
// output"), worst first.
func WriteCheck(w io.Writer, r *check.Result, opts CheckTextOptions) error {
	bw := bufio.NewWriter(w)
	perf := Perfdata(r)
	items := make([]string, len(perf))
	for i, p := range perf {
		items[i] = p.String()
	}
	fmt.Fprintf(bw, "%s | %s\n", CheckLine(r), strings.Join(items, " "))
	limit := opts.MaxOffenders
	if limit <= 0 {
		limit = 5
	}
	off := r.Offenders()
	for i, p := range off {
		if i == limit {
			fmt.Fprintf(bw, "... and %d more %s\n", len(off)-limit, plural(len(off)-limit, "process", "processes"))
			break
		}
		fmt.Fprintf(bw, "%s: %s\n", p.Status, processLine(p))
	}
	writeWarnings(bw, opts.Warnings)
	return bw.Flush()
}

// WriteCheckUnknown writes the plugin output of a check that could not
// run: the UNKNOWN status line, then the warnings.
func WriteCheckUnknown(w io.Writer, err error, warnings []string) error {
	bw := bufio.NewWriter(w)
	fmt.Fprintf(bw, "CLOSEWAIT UNKNOWN - %s\n", lineSafe(oneLine(err.Error())))
	writeWarnings(bw, warnings)
	return bw.Flush()
}

func writeWarnings(w io.Writer, warnings []string) {
	for _, msg := range warnings {
		fmt.Fprintf(w, "warning: %s\n", lineSafe(oneLine(msg)))
	}
}

// oneLine keeps one line of output one line whatever a message says.
func oneLine(s string) string { return strings.ReplaceAll(s, "\n", " ") }

// processLine describes one process: "nginx pid 812: 10 sockets, oldest
// >=14m, eof-not-closed:10, +3".
func processLine(p check.ProcessCheck) string {
	name := "no owner"
	if p.PID != 0 {
		name = fmt.Sprintf("%s pid %d", lineSafe(p.Comm), p.PID)
	}
	s := fmt.Sprintf("%s: %d %s, oldest %s, %s", name, p.Sockets, plural(p.Sockets, "socket", "sockets"),
		FormatAge(p.Oldest, p.OldestKnown, p.OldestExact), formatCauseCounts(p.Causes))
	if p.Growth != nil {
		s += fmt.Sprintf(", %+d", *p.Growth)
	}
	return s
}

// lineSafe makes a command name safe for the plugin output: a process
// names itself, and a "|" would start the perfdata early, a newline a
// second line.
func lineSafe(s string) string {
	return strings.ReplaceAll(Printable(s), "|", "/")
}

// CheckSchemaV1 is the value of CheckDocument.Schema.
const CheckSchemaV1 = "closewait/check/v1"

// CheckDocument is `closewait check -o json`: the status, the limits and
// the offenders. Slices encode as [], never null; values that may be
// unknown are null.
type CheckDocument struct {
	Schema   string    `json:"schema"` // always CheckSchemaV1
	Status   string    `json:"status"` // OK, WARNING, CRITICAL, UNKNOWN
	ExitCode int       `json:"exit_code"`
	Line     string    `json:"line"` // the status line, without perfdata
	Host     string    `json:"host"`
	Time     time.Time `json:"time"`
	Source   string    `json:"source"`
	Warnings []string  `json:"warnings"`
	// Error says why the status is UNKNOWN; empty otherwise.
	Error      string         `json:"error,omitempty"`
	States     []string       `json:"states"` // e.g. ["CLOSE_WAIT"]
	Thresholds ThresholdsJSON `json:"thresholds"`
	Count      int            `json:"count"`
	// OldestSeconds is the oldest socket's age in seconds, rounded to the
	// millisecond; a lower bound unless OldestExact. Null when unknown.
	OldestSeconds *float64 `json:"oldest_seconds"`
	OldestExact   bool     `json:"oldest_exact"`
	// Growth is the net gain since PreviousRun; both null without one.
	Growth      *int           `json:"growth"`
	PreviousRun *time.Time     `json:"previous_run"`
	Alerts      []AlertJSON    `json:"alerts"`
	Offenders   []OffenderJSON `json:"offenders"`
}

// ThresholdsJSON holds the limits; null when not set.
type ThresholdsJSON struct {
	WarnCount      *int     `json:"warn_count"`
	CritCount      *int     `json:"crit_count"`
	WarnAgeSeconds *float64 `json:"warn_age_seconds"`
	CritAgeSeconds *float64 `json:"crit_age_seconds"`
	WarnGrowth     *int     `json:"warn_growth"`
	CritGrowth     *int     `json:"crit_growth"`
	PerProcess     bool     `json:"per_process"`
}

// AlertJSON is one exceeded limit.
type AlertJSON struct {
	Status string  `json:"status"`
	Metric string  `json:"metric"` // count, oldest_seconds or growth
	Value  float64 `json:"value"`
	Limit  float64 `json:"limit"`
	PID    *int    `json:"pid"` // null for an alert on the total
	Comm   *string `json:"comm"`
}

// OffenderJSON is a process whose own status is not OK.
type OffenderJSON struct {
	SummaryJSON
	Growth *int   `json:"growth"` // null without a previous run
	Status string `json:"status"`
}

// NewCheckDocument converts a result. The snapshot's warnings are added
// to warnings, the caller's own (e.g. about the state file).
func NewCheckDocument(r *check.Result, warnings []string) CheckDocument {
	snap := r.Snapshot
	doc := CheckDocument{
		Schema:   CheckSchemaV1,
		Status:   r.Status.String(),
		ExitCode: int(r.Status),
		Line:     CheckLine(r),
		Host:     snap.Host,
		Time:     snap.Time,
		Source:   snap.Source,
		Warnings: append(snap.Notes(), warnings...),
		States:   []string{},
		Thresholds: ThresholdsJSON{
			WarnCount: r.Thresholds.WarnCount, CritCount: r.Thresholds.CritCount,
			WarnAgeSeconds: check.SecondsLimit(r.Thresholds.WarnAge), CritAgeSeconds: check.SecondsLimit(r.Thresholds.CritAge),
			WarnGrowth: r.Thresholds.WarnGrowth, CritGrowth: r.Thresholds.CritGrowth,
			PerProcess: r.Thresholds.PerProcess,
		},
		Count:     r.Count,
		Growth:    r.Growth,
		Alerts:    []AlertJSON{},
		Offenders: []OffenderJSON{},
	}
	for _, st := range r.States.States() {
		doc.States = append(doc.States, st.String())
	}
	if r.Oldest != nil {
		doc.OldestSeconds = seconds(r.Oldest.Age)
		doc.OldestExact = r.OldestExact
	}
	if r.Growth != nil {
		doc.PreviousRun = new(r.Since)
	}
	for _, a := range r.Alerts {
		aj := AlertJSON{Status: a.Status.String(), Metric: a.Metric, Value: a.Value, Limit: a.Limit}
		if a.PID != 0 || a.Comm != "" {
			aj.PID, aj.Comm = new(a.PID), new(a.Comm)
		}
		doc.Alerts = append(doc.Alerts, aj)
	}
	for _, p := range r.Offenders() {
		oj := OffenderJSON{
			SummaryJSON: SummaryJSON{PID: p.PID, Comm: p.Comm, Sockets: p.Sockets, Causes: p.Causes,
				OldestExact: p.OldestKnown && p.OldestExact},
			Growth: p.Growth,
			Status: p.Status.String(),
		}
		if oj.Causes == nil {
			oj.Causes = map[collector.Cause]int{}
		}
		if p.OldestKnown {
			oj.OldestSeconds = seconds(p.Oldest)
		}
		doc.Offenders = append(doc.Offenders, oj)
	}
	return doc
}

// UnknownCheckDocument is the document of a check that could not run.
func UnknownCheckDocument(host string, now time.Time, err error, warnings []string) CheckDocument {
	line := "CLOSEWAIT UNKNOWN - " + lineSafe(oneLine(err.Error()))
	return CheckDocument{
		Schema: CheckSchemaV1, Status: check.StatusUnknown.String(), ExitCode: int(check.StatusUnknown),
		Line: line, Host: host, Time: now, Warnings: append([]string{}, warnings...), Error: err.Error(),
		States: []string{}, Alerts: []AlertJSON{}, Offenders: []OffenderJSON{},
	}
}

// WriteCheckJSON writes a check document, indented two spaces.
func WriteCheckJSON(w io.Writer, doc CheckDocument) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(doc)
}

// CheckLine returns the status line without its perfdata, e.g.
// "CLOSEWAIT CRITICAL - 12 sockets in CLOSE_WAIT, oldest >=14m (nginx pid 812, eof-not-closed)".
func CheckLine(r *check.Result) string {
	s := fmt.Sprintf("CLOSEWAIT %s - %d %s in %s", r.Status, r.Count, plural(r.Count, "socket", "sockets"), stateWords(r.States))
	switch {
	case r.Oldest != nil:
		s += ", oldest " + FormatAge(r.Oldest.Age, true, r.OldestExact) + " (" + who(r.Oldest) + ")"
	case r.Count > 0:
		s += ", ages unknown"
	}
	if r.Thresholds.PerProcess && len(r.Processes) > 0 {
		w := r.Worst()
		name := "no owner"
		if w.PID != 0 {
			name = fmt.Sprintf("%s pid %d", lineSafe(w.Comm), w.PID)
		}
		s += fmt.Sprintf(", worst %s with %d", name, w.Sockets)
	}
	if r.Growth != nil {
		s += fmt.Sprintf(", %+d in %s", *r.Growth, compactDuration(r.Snapshot.Time.Sub(r.Since)))
	} else if r.GrowthAsked() {
		s += ", growth unknown (no previous run)"
	}
	return s
}

// who names the holder of a socket (of a socket in an accept queue, its
// listener's) and its most telling cause: "nginx pid 812, eof-not-closed".
func who(s *collector.Socket) string {
	owner := "no owner"
	if h := s.Holders(); len(h) > 0 {
		owner = fmt.Sprintf("%s pid %d", lineSafe(h[0].Comm), h[0].PID)
	}
	if len(s.Causes) > 0 {
		return owner + ", " + string(s.Causes[0])
	}
	return owner
}

// stateWords names a state set for the status line: "CLOSE_WAIT",
// "CLOSE_WAIT/LAST_ACK", "any state".
func stateWords(states collector.StateSet) string {
	if states == collector.StatesAll {
		return "any state"
	}
	var s string
	for i, st := range states.States() {
		if i > 0 {
			s += "/"
		}
		s += st.String()
	}
	return s
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
