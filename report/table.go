package report

import (
	"bufio"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"

	"github.com/closewait/closewait/collector"
)

// TableOptions controls the text table.
type TableOptions struct {
	SummaryOnly bool // print only the per-process summary
	// Wide adds a COMMAND LINE column (from Owner.Proc; "-" when not read).
	Wide bool
	// Top, when above 0, prints only the first Top sockets; the summary
	// still counts every socket.
	Top int
	// States is the state set the caller asked the collector for; it only
	// names the states in the line printed when there are no sockets.
	// 0 means CLOSE_WAIT, as for collector.Options.
	States collector.StateSet
}

// Table writes the sockets in the order given (the collector sorts them
// oldest first), then a blank line and the per-process summary. A socket
// held by several processes takes one row per extra owner, with only PID,
// COMMAND and FD filled. A STATE column appears when any socket is not in
// CLOSE_WAIT. A snapshot with no sockets prints one line saying so.
// Warnings are the caller's to print, on stderr.
func Table(w io.Writer, snap *collector.Snapshot, opts TableOptions) error {
	if len(snap.Sockets) == 0 {
		_, err := fmt.Fprintln(w, noSocketsLine(opts.States))
		return err
	}
	bw := bufio.NewWriterSize(w, 32<<10)
	if !opts.SummaryOnly {
		socks := snap.Sockets
		if opts.Top > 0 && opts.Top < len(socks) {
			socks = socks[:opts.Top]
		}
		if err := socketTable(bw, socks, opts.Wide); err != nil {
			return err
		}
		if err := bw.WriteByte('\n'); err != nil {
			return err
		}
	}
	if err := summaryTable(bw, collector.Summarize(snap), processContainers(snap.Sockets)); err != nil {
		return err
	}
	if err := ClosedNote(bw, snap.Sockets); err != nil {
		return err
	}
	return bw.Flush()
}

// noSocketsLine names the states that were searched, so an empty answer to
// "--state established" does not claim anything about CLOSE_WAIT.
func noSocketsLine(states collector.StateSet) string {
	switch states {
	case 0:
		states = collector.StatesCloseWait
	case collector.StatesAll:
		return "no TCP sockets"
	}
	var names []string
	for _, st := range states.States() {
		names = append(names, st.String())
	}
	return "no sockets in " + strings.Join(names, ", ")
}

// socketTable writes the socket rows with a columnWriter (see columns.go
// for why not tablewriter): a first pass measures the columns, a second
// formats each row again and writes it, so no more than one row is ever
// held in memory.
func socketTable(w *bufio.Writer, socks []collector.Socket, wide bool) error {
	withState := false
	for i := range socks {
		if socks[i].State != collector.StateCloseWait {
			withState = true
			break
		}
	}
	header := []string{"PID", "COMMAND", "FD", "LOCAL", "REMOTE", "RECV-Q", "AGE", "CAUSE"}
	right := []bool{true, false, true, false, false, true, false, false}
	if withState {
		// After FD: the owner columns stay together, then the socket's.
		header = insert(header, 3, "STATE")
		right = insert(right, 3, false)
	}
	withContainer := hasContainer(socks)
	if withContainer {
		header, right = append(header, "CONTAINER/POD"), append(right, false)
	}
	if wide {
		header, right = append(header, "COMMAND LINE"), append(right, false)
	}
	// after is how many columns follow CAUSE.
	after := boolInt(withContainer) + boolInt(wide)
	// tail adds the cells after CAUSE for the row's first owner, after
	// blanks up to them on a continuation row.
	tail := func(r *cells, owners []collector.Owner, blanks int) {
		if after == 0 {
			return
		}
		for range blanks {
			r.add("")
		}
		var p *collector.Process
		if len(owners) > 0 {
			p = owners[0].Proc
		}
		if withContainer {
			r.add(containerCell(p))
		}
		if wide {
			if p == nil {
				r.add("-")
			} else {
				r.add(Printable(p.Cmdline))
			}
		}
	}
	cw := newColumnWriter(right)
	var r cells
	// each calls fn with the cells of every row, continuation rows
	// included, in the order they print.
	each := func(fn func(*cells) error) error {
		for i := range socks {
			s := &socks[i]
			r.reset()
			switch {
			case len(s.Owners) > 0:
				ownerCells(&r, s.Owners[0])
			case len(s.Listener) > 0:
				// In an accept queue: the listener's process, no fd yet.
				o := s.Listener[0]
				r.buf = strconv.AppendInt(r.buf, int64(o.PID), 10)
				r.endASCII()
				r.add(Printable(o.Comm))
				r.add("-")
			default:
				r.add("-")
				r.add("-")
				r.add("-")
			}
			if withState {
				r.add(s.State.String())
			}
			addrCell(&r, s.Local)
			addrCell(&r, s.Remote)
			if s.QueuesUnknown {
				r.buf = append(r.buf, '-')
			} else {
				r.buf = strconv.AppendUint(r.buf, uint64(s.RecvQ), 10)
			}
			r.endASCII()
			r.buf = appendSocketAge(r.buf, s)
			r.endASCII()
			r.buf = appendCauses(r.buf, s.Causes[:min(1, len(s.Causes))])
			r.end()
			tail(&r, s.Holders(), 0)
			if err := fn(&r); err != nil {
				return err
			}
			// Continuation rows: each further owner, and each further
			// cause under CAUSE, one a line, so rows stay within 80
			// columns.
			for i := 1; i < max(len(s.Owners), len(s.Causes)); i++ {
				r.reset()
				if i < len(s.Owners) {
					ownerCells(&r, s.Owners[i])
				} else {
					r.add("")
					r.add("")
					r.add("")
				}
				if i < len(s.Causes) {
					for range len(header) - 4 - after {
						r.add("")
					}
					r.add(string(s.Causes[i]))
					if i < len(s.Owners) {
						tail(&r, s.Owners[i:], 0)
					}
				} else {
					tail(&r, s.Owners[i:], len(header)-3-after)
				}
				if err := fn(&r); err != nil {
					return err
				}
			}
		}
		return nil
	}
	return cw.writeTable(w, header, each)
}

// summaryTable writes the per-process rows, with a columnWriter too (a
// row per process: tablewriter took 25 ms for 1000), with a CONTAINER/POD
// column after COMMAND when containers (by pid) is not empty.
func summaryTable(w *bufio.Writer, rows []collector.ProcessSummary, containers map[int]*collector.Process) error {
	header := []string{"PID", "COMMAND", "SOCKETS", "OLDEST", "CAUSES"}
	right := []bool{true, false, true, false, false}
	if len(containers) > 0 {
		header, right = insert(header, 2, "CONTAINER/POD"), insert(right, 2, false)
	}
	var r cells
	each := func(fn func(*cells) error) error {
		for _, p := range rows {
			r.reset()
			if p.PID != 0 {
				r.buf = strconv.AppendInt(r.buf, int64(p.PID), 10)
				r.endASCII()
			} else {
				r.add("-")
			}
			r.add(Printable(p.Comm))
			if len(containers) > 0 {
				r.add(containerCell(containers[p.PID]))
			}
			r.buf = strconv.AppendInt(r.buf, int64(p.Sockets), 10)
			r.endASCII()
			r.add(FormatAge(p.Oldest, p.OldestKnown, p.OldestExact))
			r.add(formatCauseCounts(p.Causes))
			if err := fn(&r); err != nil {
				return err
			}
		}
		return nil
	}
	return newColumnWriter(right).writeTable(w, header, each)
}

// hasContainer reports whether some owner of socks runs in a container.
func hasContainer(socks []collector.Socket) bool {
	for i := range socks {
		for _, o := range socks[i].Holders() {
			if o.Proc != nil && o.Proc.Container != nil {
				return true
			}
		}
	}
	return false
}

// processContainers maps the pid of every owner in a container to its
// Process; nil when no owner is in one.
func processContainers(socks []collector.Socket) map[int]*collector.Process {
	var m map[int]*collector.Process
	for i := range socks {
		for _, o := range socks[i].Holders() {
			if o.Proc != nil && o.Proc.Container != nil {
				if m == nil {
					m = map[int]*collector.Process{}
				}
				m[o.PID] = o.Proc
			}
		}
	}
	return m
}

// containerCell names p's container: the pod when known, else the short
// id; "-" outside a container.
func containerCell(p *collector.Process) string {
	if p == nil || p.Container == nil {
		return "-"
	}
	if c := p.Container; c.Pod != "" {
		return Printable(c.Pod)
	}
	return p.Container.ShortID()
}

// ownerCells adds the PID, COMMAND and FD cells of o.
func ownerCells(r *cells, o collector.Owner) {
	r.buf = strconv.AppendInt(r.buf, int64(o.PID), 10)
	r.endASCII()
	r.add(Printable(o.Comm))
	if o.FD < 0 {
		r.buf = append(r.buf, '-')
	} else {
		r.buf = strconv.AppendInt(r.buf, int64(o.FD), 10)
	}
	r.endASCII()
}

// addrCell adds Addr(a). Only a zone (an interface name) can be other than
// ASCII.
func addrCell(r *cells, a netip.AddrPort) {
	r.buf = appendAddr(r.buf, unmapped(a))
	if a.Addr().Zone() == "" {
		r.endASCII()
	} else {
		r.end()
	}
}

// appendCauses appends the causes comma-separated, "-" when none.
func appendCauses(b []byte, causes []collector.Cause) []byte {
	if len(causes) == 0 {
		return append(b, '-')
	}
	for i, c := range causes {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, c...)
	}
	return b
}

func insert[T any](s []T, i int, v T) []T {
	return append(s[:i:i], append([]T{v}, s[i:]...)...)
}

// formatCauseCounts renders counts as "inherited:2 eof-not-closed:10".
func formatCauseCounts(counts map[collector.Cause]int) string {
	causes := collector.OrderedCauses(counts)
	if len(causes) == 0 {
		return "-"
	}
	parts := make([]string, len(causes))
	for i, c := range causes {
		parts[i] = string(c) + ":" + strconv.Itoa(counts[c])
	}
	return strings.Join(parts, " ")
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
