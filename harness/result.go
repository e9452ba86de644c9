package harness

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/closewait/closewait/collector"
	"github.com/closewait/closewait/report"
)

// Causes the harness adds to the collector's for sockets that are stuck
// outside CLOSE_WAIT. The dead-peer ones rest on a kernel fact: an idle
// ESTABLISHED socket runs a timer only when keepalive is on, so "no timer"
// means keepalive is off even when the settings cannot be read.
const (
	// CauseKeepaliveOff: dead peer; the server socket has no keepalive and
	// no timeout noticed the silence.
	CauseKeepaliveOff = "keepalive-off"
	// CauseKeepaliveTooSlow: dead peer; keepalive is on, but its idle time
	// plus probes take longer than the deadline.
	CauseKeepaliveTooSlow = "keepalive-too-slow"
	// CauseNotDropped: dead peer; the socket outlived the deadline for a
	// reason the socket table does not show (e.g. retransmitting data).
	CauseNotDropped = "not-dropped"
	// CauseFINNotReceived: the client's FIN did not reach the server
	// socket, which is still ESTABLISHED (a middlebox or a lost packet).
	CauseFINNotReceived = "fin-not-received"
	// CauseNotEstablished: the server never completed this connection,
	// e.g. its accept queue was full.
	CauseNotEstablished = "not-established"
	// CauseConnect: the client could not connect.
	CauseConnect = "connect-failed"
	// CauseClosedLate: the server closed, but only after the deadline.
	CauseClosedLate = "closed-late"
)

// causeHints say in one line what a cause means for the server's code.
var causeHints = map[string]string{
	string(collector.CauseEOFNotClosed): "the server read EOF (a zero-byte read) and never called close()",
	string(collector.CauseFINNotRead):   "the server has not read since the FIN arrived: nothing watches the connection",
	string(collector.CauseUnreadData):   "the server stopped reading: data and the FIN are unread",
	string(collector.CauseNotAccepted):  "the connection still waits in the listen queue: the accept loop is stalled",
	string(collector.CauseInherited):    "a child process inherited the fd; close it there too (or set close-on-exec)",
	CauseKeepaliveOff:                   "no keepalive and no timeout: a vanished peer is never noticed (enable TCP keepalive or an idle timeout)",
	CauseKeepaliveTooSlow:               "keepalive is on but its idle time and probes outlast the deadline (shorten them)",
	CauseNotDropped:                     "the socket outlived the deadline; check TCP_USER_TIMEOUT and the server's own timeouts",
	CauseFINNotReceived:                 "the client's FIN never reached the server socket",
	CauseNotEstablished:                 "the server never completed the handshake (accept queue full?)",
	CauseConnect:                        "the client could not connect",
	CauseClosedLate:                     "the server closed, but only after the deadline",
}

// CauseHint explains a cause in one line; "" for unknown causes.
func CauseHint(cause string) string { return causeHints[cause] }

// Outcome is the result of one run.
type Outcome struct {
	Target    string
	Host      string
	Started   time.Time
	Duration  time.Duration
	Source    string   // collector source used for polling
	Warnings  []string // from the collector, each once
	Scenarios []ScenarioResult
}

// Passed reports whether every scenario passed.
func (r *Outcome) Passed() bool { return r.Failed() == 0 }

// Failed counts the scenarios that failed.
func (r *Outcome) Failed() int {
	n := 0
	for i := range r.Scenarios {
		if !r.Scenarios[i].Passed() {
			n++
		}
	}
	return n
}

// ScenarioResult is the outcome of one scenario.
type ScenarioResult struct {
	Name     string
	Conns    int
	OK       int           // connections whose server socket left in time
	Deadline time.Duration // per connection, from the client's FIN
	// Close latency, from the client's FIN (or RST, or vanishing) to the
	// first poll that no longer finds the server socket in ESTABLISHED or
	// CLOSE_WAIT, over the connections that passed. The resolution is the
	// poll tick plus one dump.
	P50, P99, Max time.Duration
	Duration      time.Duration // wall time of the whole scenario
	// ServerClosedFirst counts connections the server closed before the
	// client left (e.g. after answering with "Connection: close").
	ServerClosedFirst int
	Failures          []ConnFailure // one per failed connection
	// Err says why the scenario failed as a whole (e.g. the server exited).
	Err string
	// Note qualifies a pass, e.g. why reset cannot leak.
	Note string
	// Keepalive and KeepaliveTimer describe the server socket in dead-peer:
	// the settings when the source reads them (nil: unknown), and the
	// kernel timer seen on it before the client vanished.
	Keepalive      *collector.Keepalive
	KeepaliveTimer string
}

// Passed reports whether every connection passed and nothing else failed.
func (s *ScenarioResult) Passed() bool { return s.Err == "" && len(s.Failures) == 0 && s.OK == s.Conns }

// ConnFailure is one connection whose server socket did not leave in time,
// or that could not be set up.
type ConnFailure struct {
	Server netip.AddrPort // the server socket's local address (the target)
	Client netip.AddrPort // its remote address: the client's ephemeral port
	State  collector.State
	RecvQ  uint32
	// QueuesUnknown: the OS gives no Recv-Q (Windows, macOS); RecvQ is 0.
	QueuesUnknown bool
	Causes        []string
	Owners        []collector.Owner
	Waited        time.Duration // since the client's FIN
	Err           string        // for connect-failed
	// Keepalive and Timer as the last dump showed them (dead-peer).
	Keepalive *collector.Keepalive
	Timer     string
}

// Cause is the most telling cause, or "" when none is known.
func (f *ConnFailure) Cause() string {
	if len(f.Causes) == 0 {
		return ""
	}
	return f.Causes[0]
}

// Summary is one line saying what failed and why, e.g.
// "10 of 10 connections still in CLOSE_WAIT 2s after the client's FIN: eof-not-closed".
func (s *ScenarioResult) Summary() string {
	if s.Passed() {
		return fmt.Sprintf("%d of %d connections closed in time", s.OK, s.Conns)
	}
	var parts []string
	if s.Err != "" {
		parts = append(parts, s.Err)
	}
	if len(s.Failures) > 0 {
		parts = append(parts, s.failureSummary())
	}
	return strings.Join(parts, "; ")
}

// failureSummary groups the failures by state and cause.
func (s *ScenarioResult) failureSummary() string {
	states := map[string]int{}
	for _, f := range s.Failures {
		switch {
		case f.Cause() == CauseConnect || f.Cause() == CauseNotEstablished:
			states["not set up"]++
		case f.State == 0:
			states["open"]++
		default:
			states["in "+f.State.String()]++
		}
	}
	where := strings.Join(sortedKeys(states), " or ")
	if len(states) == 1 && states["not set up"] > 0 {
		return fmt.Sprintf("%d of %d connections not set up: %s", len(s.Failures), s.Conns, s.causeCounts())
	}
	after := "the client's FIN"
	switch s.Name {
	case Reset:
		after = "the client's RST"
	case DeadPeer:
		after = "the client vanished"
	}
	return fmt.Sprintf("%d of %d connections still %s %s after %s: %s",
		len(s.Failures), s.Conns, where, fmtDuration(s.Deadline), after, s.causeCounts())
}

// causeCounts lists the leading causes with counts, most frequent first:
// "eof-not-closed x9, inherited x1".
func (s *ScenarioResult) causeCounts() string {
	counts := map[string]int{}
	for _, f := range s.Failures {
		c := f.Cause()
		if c == "" {
			c = "unknown"
		}
		counts[c]++
	}
	keys := sortedKeys(counts)
	slices.SortStableFunc(keys, func(a, b string) int { return cmp.Compare(counts[b], counts[a]) })
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k
		if counts[k] > 1 || len(s.Failures) > 1 {
			parts[i] = fmt.Sprintf("%s x%d", k, counts[k])
		}
	}
	return strings.Join(parts, ", ")
}

// Details lists the failed connections (at most max, 0 for all) and a hint
// per cause, indented, one per line.
func (s *ScenarioResult) Details(max int) []string {
	var lines []string
	shown := s.Failures
	if max > 0 && len(shown) > max {
		shown = shown[:max]
	}
	for _, f := range shown {
		lines = append(lines, "  "+f.String())
	}
	if len(shown) < len(s.Failures) {
		lines = append(lines, fmt.Sprintf("  ... and %d more", len(s.Failures)-len(shown)))
	}
	seen := map[string]bool{}
	for _, f := range s.Failures {
		for _, c := range f.Causes {
			if h := CauseHint(c); h != "" && !seen[c] {
				seen[c] = true
				lines = append(lines, fmt.Sprintf("  %s: %s", c, h))
			}
		}
	}
	return lines
}

// String describes one failed connection on one line.
func (f *ConnFailure) String() string {
	var b strings.Builder
	if f.Client.IsValid() {
		fmt.Fprintf(&b, "%s <- %s", unmap(f.Server).String(), unmap(f.Client).String())
	} else {
		fmt.Fprintf(&b, "connection")
	}
	if f.Err != "" {
		fmt.Fprintf(&b, ": %s", f.Err)
		return b.String()
	}
	switch {
	case f.State != 0 && f.QueuesUnknown:
		fmt.Fprintf(&b, " %s", f.State)
	case f.State != 0:
		fmt.Fprintf(&b, " %s recv-q %d", f.State, f.RecvQ)
	}
	if len(f.Causes) > 0 {
		fmt.Fprintf(&b, " %s", strings.Join(f.Causes, ","))
	}
	if len(f.Owners) > 0 {
		var os []string
		for _, o := range f.Owners {
			h := fmt.Sprintf("%s[%d]", report.Printable(o.Comm), o.PID)
			if o.FD >= 0 { // -1: Windows does not say
				h += fmt.Sprintf(" fd %d", o.FD)
			}
			os = append(os, h)
		}
		fmt.Fprintf(&b, " held by %s", strings.Join(os, ", "))
	}
	if f.Waited > 0 {
		fmt.Fprintf(&b, " after %s", fmtDuration(f.Waited))
	}
	if f.State == collector.StateEstablished {
		fmt.Fprintf(&b, ", keepalive: %s", KeepaliveString(f.Keepalive, f.Timer))
	}
	return b.String()
}

// KeepaliveString describes keepalive settings; nil settings are
// "unknown", qualified by the kernel timer when one was seen.
func KeepaliveString(ka *collector.Keepalive, timer string) string {
	if ka == nil {
		switch timer {
		case "keepalive":
			return "unknown (keepalive timer running)"
		case "":
			return "unknown (no keepalive timer)"
		}
		return "unknown"
	}
	if !ka.Enabled {
		s := "off"
		if ka.UserTimeout > 0 {
			s += ", user timeout " + fmtDuration(ka.UserTimeout)
		}
		return s
	}
	s := fmt.Sprintf("idle %s, interval %s, %d probes", fmtDuration(ka.Idle), fmtDuration(ka.Interval), ka.Probes)
	if ka.UserTimeout > 0 {
		s += ", user timeout " + fmtDuration(ka.UserTimeout)
	}
	return s
}

// deadPeerCause says why a server socket outlived a vanished peer.
func deadPeerCause(s *collector.Socket, deadline time.Duration) string {
	if ka := s.Keepalive; ka != nil {
		if ka.UserTimeout > 0 && ka.UserTimeout <= deadline {
			return CauseNotDropped
		}
		if !ka.Enabled {
			return CauseKeepaliveOff
		}
		if ka.Idle+ka.Interval*time.Duration(ka.Probes) > deadline {
			return CauseKeepaliveTooSlow
		}
		return CauseNotDropped
	}
	switch s.Timer {
	case "":
		return CauseKeepaliveOff
	case "keepalive":
		return CauseKeepaliveTooSlow
	}
	return CauseNotDropped
}

// percentile returns the nearest-rank q-quantile of sorted durations.
func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted))*q+0.999999) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// fmtDuration prints durations short and readable: 0.31ms, 12.4ms, 2.05s.
func fmtDuration(d time.Duration) string {
	switch {
	case d <= 0:
		return "0s"
	case d < time.Millisecond:
		return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
	case d < time.Second && d%time.Millisecond == 0:
		return fmt.Sprintf("%dms", d/time.Millisecond)
	case d < time.Second:
		return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
	case d < time.Minute && d%time.Second != 0:
		return fmt.Sprintf("%.2fs", d.Seconds())
	}
	return d.String()
}

func sortedKeys(m map[string]int) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
