// Package report renders: socket tables, summaries and JSON, check
// results (plugin lines and JSON), and Prometheus metrics. It is pure: the
// same input always gives the same bytes. Judging thresholds is package
// check's; caching collections for scrapes is package exporter's.
package report

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/closewait/closewait/collector"
)

// FormatAge renders an age for a table cell in at most two units, the way
// people read ages: "850ms", "12s", "4m12s", "3h12m", "2d3h". A zero lower
// unit is dropped ("4m", not "4m0s"). known false gives "-"; exact false
// marks the age as a lower bound with a ">=" prefix (">=12s").
//
// The age is truncated, never rounded up, so a lower bound stays a lower
// bound and an exact "59s" never shows as "1m".
func FormatAge(d time.Duration, known, exact bool) string {
	var b [24]byte // ">=" and the longest two-unit age fit
	return string(appendAge(b[:0], d, known, exact))
}

// appendAge appends FormatAge's text to b, so a table of many rows can
// format ages without a string per row.
func appendAge(b []byte, d time.Duration, known, exact bool) []byte {
	if !known {
		return append(b, '-')
	}
	if !exact {
		b = append(b, ">="...)
	}
	return appendCompactDuration(b, d)
}

// FormatSocketAge is a socket's age for a table cell: FormatAge, without
// ">=" when its lower and upper bounds print the same.
func FormatSocketAge(s *collector.Socket) string {
	var b [24]byte
	return string(appendSocketAge(b[:0], s))
}

// appendSocketAge appends a socket's age for a table: without ">=" when
// its lower and upper bounds print the same ("21s" for 21.904 s to
// 21.912 s), since the difference is below what the cell shows. JSON
// keeps both bounds.
func appendSocketAge(b []byte, s *collector.Socket) []byte {
	if !s.AgeKnown && s.AgeMax > 0 {
		// Only an upper bound (Windows: since the connection was made).
		return appendCompactDuration(append(b, "<="...), s.AgeMax)
	}
	exact := s.AgeExact
	if s.AgeKnown && !exact && s.AgeMax > 0 {
		var lo, hi [24]byte
		exact = string(appendCompactDuration(lo[:0], s.Age)) == string(appendCompactDuration(hi[:0], s.AgeMax))
	}
	return appendAge(b, s.Age, s.AgeKnown, exact)
}

func compactDuration(d time.Duration) string {
	var b [24]byte
	return string(appendCompactDuration(b[:0], d))
}

func appendCompactDuration(b []byte, d time.Duration) []byte {
	const day = 24 * time.Hour
	if d < 0 {
		d = 0
	}
	switch {
	case d < time.Second:
		return append(strconv.AppendInt(b, d.Milliseconds(), 10), "ms"...)
	case d < time.Minute:
		return append(strconv.AppendInt(b, int64(d/time.Second), 10), 's')
	case d < time.Hour:
		return appendTwoUnits(b, d/time.Minute, 'm', d%time.Minute/time.Second, 's')
	case d < day:
		return appendTwoUnits(b, d/time.Hour, 'h', d%time.Hour/time.Minute, 'm')
	default:
		return appendTwoUnits(b, d/day, 'd', d%day/time.Hour, 'h')
	}
}

// appendTwoUnits appends "4m12s", or "4m" when the lower unit is zero.
func appendTwoUnits(b []byte, n1 time.Duration, u1 byte, n2 time.Duration, u2 byte) []byte {
	b = append(strconv.AppendInt(b, int64(n1), 10), u1)
	if n2 == 0 {
		return b
	}
	return append(strconv.AppendInt(b, int64(n2), 10), u2)
}

// Printable escapes what must not reach a terminal as is: a process picks
// its own command name (prctl PR_SET_NAME), and an escape sequence in it
// must not act on the terminal or break a table's rows, nor a bidi control
// reorder what follows. Control characters and bytes that are not UTF-8
// become \xNN, bidi controls \uNNNN, and a backslash \\, so that every
// name reads back unambiguously.
func Printable(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '\\' {
			return escapeName(s)
		}
	}
	return s // printable ASCII: the common case
}

func escapeName(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, "\\x%02x", s[i])
		case r == '\\':
			b.WriteString("\\\\")
		case r < 0x100 && unicode.IsControl(r):
			fmt.Fprintf(&b, "\\x%02x", r)
		case unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r):
			fmt.Fprintf(&b, "\\u%04x", r)
		default:
			b.WriteRune(r)
		}
		i += size
	}
	return b.String()
}

// Addr formats an address as tables and JSON print it: "127.0.0.1:8080",
// "[::1]:8080", and "*" for the unset remote end of a listener.
func Addr(a netip.AddrPort) string {
	if !a.IsValid() {
		return "*"
	}
	return a.String()
}

// unmapped shows an IPv4-mapped IPv6 address (a dual-stack socket's
// IPv4 peer) as the IPv4 address it is, for tables; JSON keeps what the
// kernel says.
func unmapped(a netip.AddrPort) netip.AddrPort {
	if a.Addr().Is4In6() {
		return netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
	}
	return a
}

// appendAddr appends Addr(a) without making a string.
func appendAddr(b []byte, a netip.AddrPort) []byte {
	if !a.IsValid() {
		return append(b, '*')
	}
	return a.AppendTo(b)
}
