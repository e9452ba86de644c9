// Package check judges a snapshot against monitoring thresholds and keeps
// the state file that carries first-seen times and counts between runs.
package check

import (
	"cmp"
	"slices"
	"time"

	"github.com/closewait/closewait/collector"
)

// Status is a monitoring-plugin status. Its value is the exit code the
// plugin conventions (Nagios, Icinga, Sensu, Zabbix agents) give it.
type Status int

// Statuses, worst last.
const (
	StatusOK       Status = 0
	StatusWarning  Status = 1
	StatusCritical Status = 2
	StatusUnknown  Status = 3
)

// String returns the name the status line prints: OK, WARNING, CRITICAL or
// UNKNOWN.
func (s Status) String() string {
	switch s {
	case StatusOK:
		return "OK"
	case StatusWarning:
		return "WARNING"
	case StatusCritical:
		return "CRITICAL"
	}
	return "UNKNOWN"
}

// worse orders statuses for alerting, where OK < WARNING < CRITICAL; it
// returns the worse of a and b.
func worse(a, b Status) Status { return max(a, b) }

// Thresholds are the limits of a check. A nil limit is not checked. As in
// the plugin conventions, a value alerts when it is above its limit, so a
// limit of 0 alerts on any socket at all.
type Thresholds struct {
	WarnCount, CritCount *int
	// WarnAge and CritAge apply to the oldest socket; a lower-bound age
	// counts as that age, and so does the time since a socket was first seen.
	WarnAge, CritAge *time.Duration
	// WarnGrowth and CritGrowth apply to the sockets gained since the
	// previous run (net: new ones minus those gone). They need a previous
	// run's CheckState.
	WarnGrowth, CritGrowth *int
	// PerProcess applies the count and growth limits to each process
	// instead of the total. (The oldest socket of all is the oldest of its
	// process, so the age limits mean the same either way.)
	PerProcess bool
}

// Metric names of the values a check compares; they are also the perfdata
// labels in total mode.
const (
	MetricCount  = "count"
	MetricOldest = "oldest_seconds"
	MetricGrowth = "growth"
)

// Alert is one limit a value went over.
type Alert struct {
	Status Status
	Metric string  // MetricCount, MetricOldest or MetricGrowth
	Value  float64 // seconds for MetricOldest
	Limit  float64
	// PID and Comm name the process in per-process mode; PID is 0 and Comm
	// empty for an alert on the total.
	PID  int
	Comm string
}

// ProcessCheck is one process's part of a check: its summary over the
// counted sockets (with ages raised to the time since first seen), its
// growth since the previous run, and its own status.
type ProcessCheck struct {
	collector.ProcessSummary
	// Growth is nil when there is no previous run to compare with.
	Growth *int
	// Status is the process's own status: the age limits on its oldest
	// socket and, in per-process mode, the count and growth limits on its
	// own numbers; in total mode, the total's count and growth status, since
	// every holder makes up the total.
	Status Status
}

// Result is the outcome of a check.
type Result struct {
	Status     Status
	Thresholds Thresholds
	// Snapshot is the checked snapshot with each socket's age raised to the
	// time since it was first seen, when that is longer.
	Snapshot *collector.Snapshot
	// States names what was counted, for the wording of the status line.
	States collector.StateSet
	Count  int
	// Oldest is the oldest socket with a known age; nil when none has one.
	// OldestExact is false when its age is a lower bound, or when a socket
	// of unknown or inexact age could be older still.
	Oldest      *collector.Socket
	OldestExact bool
	// Growth is the net number of sockets gained since the previous run;
	// nil when there is none. Since is the time of that run.
	Growth *int
	Since  time.Time
	// Alerts lists the limits exceeded, worst first.
	Alerts []Alert
	// Processes lists every process holding a counted socket, as Summarize
	// orders them; Offenders are those whose Status is not OK.
	Processes []ProcessCheck
	// Next is the state to save for the next run.
	Next *State
}

// Offenders returns the processes whose own status is not OK.
func (r *Result) Offenders() []ProcessCheck {
	var out []ProcessCheck
	for _, p := range r.Processes {
		if p.Status != StatusOK {
			out = append(out, p)
		}
	}
	return out
}

// Options is what Evaluate needs besides the snapshot and limits.
type Options struct {
	// Prev is the state the previous run saved; nil when there is none. It
	// supplies first-seen times, so that without the tracer a socket is
	// reported as stuck at least since a run first saw it, and the counts
	// growth is measured from.
	Prev *State
	// States is the state set that was collected (0 means CLOSE_WAIT); it
	// only words the result.
	States collector.StateSet
	// OlderThan drops sockets younger than this after their ages are raised
	// to the time since first seen. The caller collects without it, so that
	// the state remembers young sockets too and they can age into view.
	OlderThan time.Duration
}

// Evaluate checks a snapshot against thresholds. It is pure: the same
// input gives the same result, including the state to save (Result.Next).
func Evaluate(snap *collector.Snapshot, th Thresholds, opts Options) Result {
	prev, states := opts.Prev, opts.States
	if states == 0 {
		states = collector.StatesCloseWait
	}
	aged := *snap
	aged.Sockets = make([]collector.Socket, 0, len(snap.Sockets))
	next := &State{
		Schema:    StateSchema,
		Host:      snap.Host,
		Time:      snap.Time,
		Processes: []StateProcess{},
		Sockets:   make([]StateSocket, 0, len(snap.Sockets)),
	}
	seen := prev.index()
	for _, s := range snap.Sockets {
		first, ok := seen.firstSeen(&s)
		if !ok || first.After(snap.Time) {
			first = snap.Time
		}
		raiseAge(&s, snap.Time.Sub(first))
		next.Sockets = append(next.Sockets, newStateSocket(&s, first))
		if opts.OlderThan > 0 && (!s.AgeKnown || s.Age < opts.OlderThan) {
			continue
		}
		aged.Sockets = append(aged.Sockets, s)
	}
	next.Count = len(aged.Sockets)
	collector.SortByAge(aged.Sockets)

	r := Result{Thresholds: th, Snapshot: &aged, States: states, Count: len(aged.Sockets)}
	r.Oldest, r.OldestExact = oldest(aged.Sockets)
	if prev != nil {
		g := r.Count - prev.Count
		r.Growth, r.Since = &g, prev.Time
	}

	// Totals first: in total mode they are the check.
	var countSt, growthSt, ageSt Status
	if r.Oldest != nil {
		ageSt = r.ageAlert(r.Oldest.Age, 0, "")
	}
	if !th.PerProcess {
		countSt = r.limitAlert(MetricCount, float64(r.Count), th.WarnCount, th.CritCount, 0, "")
		if r.Growth != nil {
			growthSt = r.limitAlert(MetricGrowth, float64(*r.Growth), th.WarnGrowth, th.CritGrowth, 0, "")
		}
	}
	r.Status = worse(worse(countSt, growthSt), ageSt)

	prevProcs := prev.processCounts()
	for _, ps := range collector.Summarize(&aged) {
		pc := ProcessCheck{ProcessSummary: ps}
		next.Processes = append(next.Processes, StateProcess{PID: ps.PID, Comm: ps.Comm, Sockets: ps.Sockets})
		if prev != nil {
			g := ps.Sockets - prevProcs[procKey{ps.PID, ps.Comm}]
			pc.Growth = &g
		}
		if ps.OldestKnown {
			pc.Status = statusOf(WholeSeconds(ps.Oldest), SecondsLimit(th.WarnAge), SecondsLimit(th.CritAge))
		}
		if th.PerProcess {
			st := r.limitAlert(MetricCount, float64(ps.Sockets), th.WarnCount, th.CritCount, ps.PID, ps.Comm)
			if pc.Growth != nil {
				st = worse(st, r.limitAlert(MetricGrowth, float64(*pc.Growth), th.WarnGrowth, th.CritGrowth, ps.PID, ps.Comm))
			}
			pc.Status = worse(pc.Status, st)
			r.Status = worse(r.Status, st)
		} else {
			pc.Status = worse(pc.Status, worse(countSt, growthSt))
		}
		r.Processes = append(r.Processes, pc)
	}
	slices.SortStableFunc(r.Alerts, func(a, b Alert) int { return cmp.Compare(b.Status, a.Status) })
	r.Next = next
	return r
}

// raiseAge makes the time since first seen a lower bound on s's age. The
// kernel's upper bound, when there is one, still caps it: a clock step must
// not make a socket older than the kernel says it can be.
func raiseAge(s *collector.Socket, seen time.Duration) {
	if seen <= 0 || (s.AgeKnown && s.Age >= seen) {
		return
	}
	if s.AgeKnown && s.AgeMax > 0 && seen > s.AgeMax {
		seen = s.AgeMax
	}
	s.Age, s.AgeKnown, s.AgeExact = seen, true, false
}

// oldest returns the oldest socket of socks with a known age, and whether
// its age is exact and no socket of unknown or inexact age can be older.
func oldest(socks []collector.Socket) (*collector.Socket, bool) {
	var o *collector.Socket
	for i := range socks {
		if s := &socks[i]; s.AgeKnown && (o == nil || s.Age > o.Age) {
			o = s
		}
	}
	if o == nil {
		return nil, false
	}
	exact := !slices.ContainsFunc(socks, func(s collector.Socket) bool {
		return !s.AgeKnown || (!s.AgeExact && (s.AgeMax == 0 || s.AgeMax > o.Age))
	})
	return o, exact
}

// limitAlert compares value with warn and crit, records an Alert when it
// is over one, and returns the status.
func (r *Result) limitAlert(metric string, value float64, warn, crit *int, pid int, comm string) Status {
	var w, c *float64
	if warn != nil {
		w = new(float64(*warn))
	}
	if crit != nil {
		c = new(float64(*crit))
	}
	return r.record(metric, value, w, c, pid, comm)
}

// ageAlert is limitAlert for the age limits, in seconds.
func (r *Result) ageAlert(age time.Duration, pid int, comm string) Status {
	return r.record(MetricOldest, WholeSeconds(age), SecondsLimit(r.Thresholds.WarnAge), SecondsLimit(r.Thresholds.CritAge), pid, comm)
}

// WholeSeconds truncates an age to whole seconds. Ages are compared as the
// perfdata prints them, so a graph never shows a value at its limit as over
// it; sub-second precision means nothing for a socket stuck in CLOSE_WAIT.
func WholeSeconds(d time.Duration) float64 { return float64(d / time.Second) }

func (r *Result) record(metric string, value float64, warn, crit *float64, pid int, comm string) Status {
	st := statusOf(value, warn, crit)
	if st != StatusOK {
		limit := warn // statusOf says WARNING only with warn set, CRITICAL only with crit
		if st == StatusCritical {
			limit = crit
		}
		r.Alerts = append(r.Alerts, Alert{Status: st, Metric: metric, Value: value, Limit: *limit, PID: pid, Comm: comm})
	}
	return st
}

// statusOf compares a value with its limits: above crit is CRITICAL, else
// above warn is WARNING.
func statusOf(value float64, warn, crit *float64) Status {
	switch {
	case crit != nil && value > *crit:
		return StatusCritical
	case warn != nil && value > *warn:
		return StatusWarning
	}
	return StatusOK
}

// SecondsLimit converts an age limit to seconds; nil stays nil.
func SecondsLimit(d *time.Duration) *float64 {
	if d == nil {
		return nil
	}
	return new(d.Seconds())
}

// GrowthAsked reports whether growth limits were asked for, which is the
// only time the status line mentions a missing previous run.
func (r *Result) GrowthAsked() bool {
	return r.Thresholds.WarnGrowth != nil || r.Thresholds.CritGrowth != nil
}

// Worst returns the process with the worst status, most sockets first.
func (r *Result) Worst() ProcessCheck {
	w := r.Processes[0]
	for _, p := range r.Processes[1:] {
		if p.Status > w.Status {
			w = p
		}
	}
	return w
}
