package watch

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/closewait/closewait/collector"
	"github.com/closewait/closewait/report"
)

// column is one column of the process table, shared by the terminal view
// and the plain text snapshots.
type column struct {
	title string
	width int
	right bool
	cell  func(r *Row) string
	sort  SortKey // the sort this column orders by; noSort for none
}

// noSort marks a column no sort orders by.
const noSort SortKey = -1

// sortMark follows the title of the column the rows are sorted by.
const sortMark = "▼"

// columns lists the process table's columns. countTitle names what is
// counted ("CLOSE_WAIT").
// A sortable column has room for its title and the sort mark.
func columns(countTitle string) []column {
	return []column{
		{"PID", 7, true, func(r *Row) string {
			if r.PID == 0 {
				return "-"
			}
			return strconv.Itoa(r.PID)
		}, SortPID},
		{"COMMAND", 15, false, func(r *Row) string { return report.Printable(r.Comm) }, noSort},
		{countTitle, max(len(countTitle)+1, 6), true, func(r *Row) string { return strconv.Itoa(r.Count) }, SortCount},
		{"CHANGE", 6, true, func(r *Row) string { return formatChange(r.Change) }, noSort},
		{"RATE/MIN", 9, true, func(r *Row) string { return formatRate(r.Rate, r.RateKnown) }, SortRate},
		{"OLDEST", 8, false, func(r *Row) string { return report.FormatAge(r.Oldest, r.OldestKnown, r.OldestExact) }, SortOldest},
		{"CAUSE", 14, false, func(r *Row) string { return causeName(r.Cause) }, noSort},
		{"CLOSED", 6, true, func(r *Row) string { return strconv.Itoa(r.Closed) }, noSort},
		{"FDS/LIMIT", 11, true, func(r *Row) string { return formatFDs(r.FDs, r.FDsKnown) }, noSort},
		{"LIMIT IN", 9, true, func(r *Row) string { return formatLimitIn(r.LimitIn, r.LimitInKnown) }, SortLimit},
	}
}

// shownColumns is columns without CLOSED unless some row holds a socket
// the kernel closed: the column is for a leak most hosts do not have.
func shownColumns(countTitle string, rows []Row) []column {
	cols := columns(countTitle)
	if !slices.ContainsFunc(rows, func(r Row) bool { return r.Closed > 0 }) {
		cols = slices.DeleteFunc(cols, func(c column) bool { return c.title == "CLOSED" })
	}
	return cols
}

// headTitle is a column's title in the header row, marked when the rows
// are sorted by it.
func (c column) headTitle(sort SortKey) string {
	if c.sort == sort {
		return c.title + sortMark
	}
	return c.title
}

func causeName(c collector.Cause) string {
	if c == "" {
		return "-"
	}
	return string(c)
}

// formatChange prints a signed count: "+12", "-3", "0".
func formatChange(n int) string {
	if n > 0 {
		return "+" + strconv.Itoa(n)
	}
	return strconv.Itoa(n)
}

// formatRate prints a change per minute with a sign, one decimal below 10.
func formatRate(r float64, known bool) string {
	switch {
	case !known:
		return "-"
	case math.Abs(r) < 0.05:
		return "0"
	case math.Abs(r) < 10:
		return fmt.Sprintf("%+.1f", r)
	}
	return fmt.Sprintf("%+.0f", r)
}

// formatFDs prints "open/limit"; an unlimited process shows "-" as limit.
func formatFDs(u collector.FDUsage, known bool) string {
	if !known {
		return "-"
	}
	if u.Limit <= 0 {
		return strconv.Itoa(u.Open) + "/-"
	}
	return strconv.Itoa(u.Open) + "/" + strconv.Itoa(u.Limit)
}

// formatLimitIn prints a forecast in one unit, rounded, with "~": it is
// an extrapolation, not a measurement.
func formatLimitIn(d time.Duration, known bool) string {
	switch {
	case !known:
		return "-"
	case d <= 0:
		return "now"
	case d < time.Minute:
		return fmt.Sprintf("~%ds", int(d.Round(time.Second)/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("~%dm", int(d.Round(time.Minute)/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("~%dh", int(d.Round(time.Hour)/time.Hour))
	case d < 1000*24*time.Hour:
		return fmt.Sprintf("~%dd", int(d.Round(24*time.Hour)/(24*time.Hour)))
	}
	return ">999d"
}

// formatInterval prints an interval the way flags take it: "1s", "500ms",
// "2m" rather than "2m0s".
func formatInterval(d time.Duration) string {
	if d >= time.Minute && d%time.Minute == 0 {
		return strconv.Itoa(int(d/time.Minute)) + "m"
	}
	return d.String()
}

// fit pads s to width runes, on the left for right-aligned cells. Text
// (left-aligned) is cut to width; a number never is, it pushes the row.
func fit(s string, width int, right bool) string {
	r := []rune(s)
	if len(r) > width && !right {
		if width <= 1 {
			return string(r[:width])
		}
		return string(r[:width-1]) + "…"
	}
	pad := strings.Repeat(" ", max(width-len(r), 0))
	if right {
		return pad + s
	}
	return s + pad
}

// feedLabel says what feeds the view, truthfully: the tracer's events
// only while they are read, else polls; and whether a tracer is installed
// (its stamps make the ages exact), when the caller knows.
func feedLabel(cfg *Config, events bool) string {
	s := "every " + formatInterval(cfg.Interval)
	if events {
		s = "tracer events"
	}
	switch cfg.Tracer {
	case TracerInstalled:
		s += "  tracer installed"
	case TracerNotInstalled:
		s += "  no tracer installed"
	}
	return s
}

// headerLine is the first line of a snapshot or view: where, from what,
// how many and how fast. A filtered header counts what the filter shows.
func headerLine(h Header, label string, every string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %d", label, h.Total)
	if h.Filtered {
		fmt.Fprintf(&b, " of %d (filter: %s)", h.All, report.Printable(h.Filter))
	}
	fmt.Fprintf(&b, "  change %s", formatChange(h.Change))
	if h.RateKnown {
		fmt.Fprintf(&b, " (%s/min)", formatRate(h.Rate, true))
	}
	if h.Host != "" {
		fmt.Fprintf(&b, "  host %s", h.Host)
	}
	if h.Source != "" {
		fmt.Fprintf(&b, "  source %s", h.Source)
	}
	b.WriteString("  " + every)
	return b.String()
}
