// Package report turns a collector.Snapshot into tables, JSON, metrics and
// alerts. It never gathers: every function here is a pure rendering of the
// snapshot it is given, so the same snapshot always prints the same bytes.
package report

import (
	"fmt"
	"net/netip"
	"strings"
	"time"
	"unicode"
)

// FormatAge renders an age for a table cell in at most two units, the way
// people read ages: "850ms", "12s", "4m12s", "3h12m", "2d3h". A zero lower
// unit is dropped ("4m", not "4m0s"). known false gives "-"; exact false
// marks the age as a lower bound with a ">=" prefix (">=12s").
//
// The age is truncated, never rounded up, so a lower bound stays a lower
// bound and an exact "59s" never shows as "1m".
func FormatAge(d time.Duration, known, exact bool) string {
	if !known {
		return "-"
	}
	s := compactDuration(d)
	if !exact {
		return ">=" + s
	}
	return s
}

func compactDuration(d time.Duration) string {
	const day = 24 * time.Hour
	if d < 0 {
		d = 0
	}
	two := func(n1 int64, u1 string, n2 int64, u2 string) string {
		if n2 == 0 {
			return fmt.Sprintf("%d%s", n1, u1)
		}
		return fmt.Sprintf("%d%s%d%s", n1, u1, n2, u2)
	}
	switch {
	case d < time.Second:
		return fmt.Sprintf("%dms", d.Milliseconds())
	case d < time.Minute:
		return fmt.Sprintf("%ds", int64(d/time.Second))
	case d < time.Hour:
		return two(int64(d/time.Minute), "m", int64(d%time.Minute/time.Second), "s")
	case d < day:
		return two(int64(d/time.Hour), "h", int64(d%time.Hour/time.Minute), "m")
	default:
		return two(int64(d/day), "d", int64(d%day/time.Hour), "h")
	}
}

// printable replaces control characters: a process picks its own command
// name (prctl PR_SET_NAME), and an escape sequence in it must not reach the
// terminal or break the table's rows.
func printable(s string) string {
	if strings.IndexFunc(s, unicode.IsControl) < 0 {
		return s
	}
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return '?'
		}
		return r
	}, s)
}

// Addr formats an address as tables and JSON print it: "127.0.0.1:8080",
// "[::1]:8080", and "*" for the unset remote end of a listener.
func Addr(a netip.AddrPort) string {
	if !a.IsValid() {
		return "*"
	}
	return a.String()
}
