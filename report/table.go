package report

import (
	"bytes"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/olekukonko/tablewriter"
	"github.com/olekukonko/tablewriter/renderer"
	"github.com/olekukonko/tablewriter/tw"

	"github.com/closewait/closewait/collector"
)

// TableOptions controls the text table.
type TableOptions struct {
	SummaryOnly bool // print only the per-process summary
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
	// Render into a buffer: tablewriter pads the last column, and trailing
	// blanks are noise for terminals, diffs and golden files.
	var buf bytes.Buffer
	if !opts.SummaryOnly {
		if err := socketTable(&buf, snap.Sockets); err != nil {
			return err
		}
		buf.WriteByte('\n')
	}
	if err := summaryTable(&buf, Summarize(snap)); err != nil {
		return err
	}
	_, err := w.Write(trimLines(buf.Bytes()))
	return err
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

func socketTable(w io.Writer, socks []collector.Socket) error {
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
	t := newTable(w, header, right)
	for i := range socks {
		s := &socks[i]
		row := []string{"-", "-", "-"}
		if len(s.Owners) > 0 {
			row = ownerCells(s.Owners[0])
		}
		if withState {
			row = append(row, s.State.String())
		}
		row = append(row,
			Addr(s.Local),
			Addr(s.Remote),
			strconv.FormatUint(uint64(s.RecvQ), 10),
			FormatAge(s.Age, s.AgeKnown, s.AgeExact),
			joinCauses(s.Causes),
		)
		if err := t.Append(row); err != nil {
			return err
		}
		for _, o := range s.Owners[min(1, len(s.Owners)):] {
			cont := ownerCells(o)
			for len(cont) < len(header) {
				cont = append(cont, "")
			}
			if err := t.Append(cont); err != nil {
				return err
			}
		}
	}
	return t.Render()
}

func summaryTable(w io.Writer, rows []ProcessSummary) error {
	t := newTable(w,
		[]string{"PID", "COMMAND", "SOCKETS", "OLDEST", "CAUSES"},
		[]bool{true, false, true, false, false})
	for _, r := range rows {
		pid := "-"
		if r.PID != 0 {
			pid = strconv.Itoa(r.PID)
		}
		err := t.Append([]string{
			pid,
			printable(r.Comm),
			strconv.Itoa(r.Sockets),
			FormatAge(r.Oldest, r.OldestKnown, r.OldestExact),
			formatCauseCounts(r.Causes),
		})
		if err != nil {
			return err
		}
	}
	return t.Render()
}

func ownerCells(o collector.Owner) []string {
	return []string{strconv.Itoa(o.PID), printable(o.Comm), strconv.Itoa(o.FD)}
}

func joinCauses(causes []collector.Cause) string {
	if len(causes) == 0 {
		return "-"
	}
	parts := make([]string, len(causes))
	for i, c := range causes {
		parts[i] = string(c)
	}
	return strings.Join(parts, ",")
}

func insert[T any](s []T, i int, v T) []T {
	return append(s[:i:i], append([]T{v}, s[i:]...)...)
}

// newTable returns a borderless table in the style of ps and ss: a header
// row, no rules, columns one space apart, numbers right-aligned so the
// columns stay apart without wider gaps. One space rather than two keeps a
// typical IPv4 row within 80 columns.
func newTable(w io.Writer, header []string, right []bool) *tablewriter.Table {
	align := make([]tw.Align, len(header))
	for i := range align {
		align[i] = tw.AlignLeft
		if right[i] {
			align[i] = tw.AlignRight
		}
	}
	cell := tw.CellConfig{
		// No wrapping or truncation: a long IPv6 address widens the row
		// instead of splitting, so the output stays greppable.
		Formatting: tw.CellFormatting{AutoWrap: tw.WrapNone, AutoFormat: tw.Off},
		Padding:    tw.CellPadding{Global: tw.Padding{Right: " ", Overwrite: true}},
		Alignment:  tw.CellAlignment{Global: tw.AlignLeft, PerColumn: align},
	}
	off := tw.Off
	t := tablewriter.NewTable(w,
		tablewriter.WithRenderer(renderer.NewBlueprint(tw.Rendition{
			Borders: tw.BorderNone,
			Symbols: tw.NewSymbols(tw.StyleNone),
			Settings: tw.Settings{
				Separators: tw.Separators{ShowHeader: off, ShowFooter: off, BetweenRows: off, BetweenColumns: off},
				Lines:      tw.Lines{ShowTop: off, ShowBottom: off, ShowHeaderLine: off, ShowFooterLine: off},
			},
		})),
		tablewriter.WithConfig(tablewriter.Config{Header: cell, Row: cell}),
	)
	t.Header(header)
	return t
}

// trimLines removes trailing blanks from every line.
func trimLines(b []byte) []byte {
	lines := bytes.SplitAfter(b, []byte("\n"))
	out := make([]byte, 0, len(b))
	for _, l := range lines {
		nl := bytes.HasSuffix(l, []byte("\n"))
		out = append(out, bytes.TrimRight(l, " \t\n")...)
		if nl {
			out = append(out, '\n')
		}
	}
	return out
}
