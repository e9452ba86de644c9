package report

import (
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/closewait/closewait/collector"
)

// closedReasons names the errors the kernel leaves on a socket it closed,
// in the order ClosedNote lists them.
var closedReasons = []struct {
	errno        uint32
	name, reason string
}{
	{104, "ECONNRESET", "reset by the peer"},
	{32, "EPIPE", "reset after the FIN"}, // the reset came in CLOSE_WAIT
	{110, "ETIMEDOUT", "timed out"},      // keepalive, retransmissions, user timeout
	{103, "ECONNABORTED", "aborted (e.g. ss -K)"},
	{113, "EHOSTUNREACH", "host unreachable"},
	{0, "", "no error left to read"}, // none, or the application read it
}

// errnoName names a socket's pending error for JSON; nil for none.
func errnoName(errno uint32) *string {
	if errno == 0 {
		return nil
	}
	s := "errno " + strconv.Itoa(int(errno))
	for _, r := range closedReasons {
		if r.errno == errno {
			s = r.name
		}
	}
	return &s
}

// closedError is the list JSON's "error" of s: errnoName of the error
// the kernel left on a CLOSE socket; nil in other states or when unknown.
func closedError(s *collector.Socket) *string {
	if s.State != collector.StateClose || s.SockErrUnknown {
		return nil
	}
	return errnoName(s.SockErr)
}

// ClosedNote writes, when socks hold CLOSE sockets, a line saying why the
// kernel closed them, counted by the error it left on each (sk_err), e.g.
// "closed-not-released: closed by the kernel, fd still open: 2 reset by
// the peer, 1 timed out". Sockets found through /proc come with no error:
// they are counted apart.
func ClosedNote(w io.Writer, socks []collector.Socket) error {
	counts := map[uint32]int{}
	n, unknown := 0, 0
	for i := range socks {
		switch s := &socks[i]; {
		case s.State != collector.StateClose:
		case s.SockErrUnknown:
			unknown++
		default:
			counts[s.SockErr]++
			n++
		}
	}
	if n+unknown == 0 {
		return nil
	}
	var parts []string
	for _, r := range closedReasons {
		if c := counts[r.errno]; c > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", c, r.reason))
			delete(counts, r.errno)
		}
	}
	other := 0
	for _, c := range counts {
		other += c
	}
	if other > 0 {
		parts = append(parts, fmt.Sprintf("%d other errors", other))
	}
	if unknown > 0 {
		parts = append(parts, fmt.Sprintf("%d for a reason only the ebpf source reads", unknown))
	}
	_, err := fmt.Fprintf(w, "\n%s: closed by the kernel, fd still open: %s\n",
		collector.CauseClosedNotReleased, strings.Join(parts, ", "))
	return err
}
