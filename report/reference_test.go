package report

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/olekukonko/tablewriter"
	"github.com/olekukonko/tablewriter/renderer"
	"github.com/olekukonko/tablewriter/tw"

	"github.com/closewait/closewait/collector"
)

// tablewriterSocketTable is the socket table as tablewriter renders it:
// the reference columnWriter must match byte for byte.
func tablewriterSocketTable(t *testing.T, socks []collector.Socket) []byte {
	t.Helper()
	withState := false
	for i := range socks {
		withState = withState || socks[i].State != collector.StateCloseWait
	}
	header := []string{"PID", "COMMAND", "FD", "LOCAL", "REMOTE", "RECV-Q", "AGE", "CAUSE"}
	right := []bool{true, false, true, false, false, true, false, false}
	if withState {
		header = insert(header, 3, "STATE")
		right = insert(right, 3, false)
	}
	owner := func(o collector.Owner) []string {
		fd := strconv.Itoa(o.FD)
		if o.FD < 0 {
			fd = "-"
		}
		return []string{strconv.Itoa(o.PID), Printable(o.Comm), fd}
	}
	var buf bytes.Buffer
	tab := newTable(&buf, header, right)
	for i := range socks {
		s := &socks[i]
		row := []string{"-", "-", "-"}
		if len(s.Listener) > 0 {
			row = owner(s.Listener[0])
			row[2] = "-"
		}
		if len(s.Owners) > 0 {
			row = owner(s.Owners[0])
		}
		if withState {
			row = append(row, s.State.String())
		}
		causes := make([]string, len(s.Causes))
		for i, c := range s.Causes {
			causes[i] = string(c)
		}
		cause := "-"
		if len(causes) > 0 {
			cause = causes[0]
		}
		recvQ := strconv.FormatUint(uint64(s.RecvQ), 10)
		if s.QueuesUnknown {
			recvQ = "-"
		}
		row = append(row, Addr(unmapped(s.Local)), Addr(unmapped(s.Remote)), recvQ, FormatSocketAge(s), cause)
		if err := tab.Append(row); err != nil {
			t.Fatal(err)
		}
		for i := 1; i < max(len(s.Owners), len(causes)); i++ {
			cont := []string{"", "", ""}
			if i < len(s.Owners) {
				cont = owner(s.Owners[i])
			}
			for len(cont) < len(header) {
				cont = append(cont, "")
			}
			if i < len(causes) {
				cont[len(header)-1] = causes[i]
			}
			if err := tab.Append(cont); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tab.Render(); err != nil {
		t.Fatal(err)
	}
	return trimLines(buf.Bytes())
}

// Values where a hand-written renderer could part from the reference:
// wide and zero-width characters, invalid UTF-8, blanks and control
// characters a process may put in its name, characters JSON escapes, long
// and zoned addresses, causes this package does not know.
var (
	oddComms = []string{
		"nginx", "", " ", "a b", " lead", "trail ", "\u00a0nbsp\u00a0", "数据库", "ｗｉｄｅ", "e\u0301te",
		"emoji🙂", "\xff\xfe", "tab\there", "esc\x1b[2J", "new\nline", "verylongcommand", "<&>\"'\\",
		"\u200bzero", "\u3000ideo", "x\u0085y", "del\x7f", "ls\u2028ps\u2029",
	}
	oddAddrs = []netip.AddrPort{
		{}, ap("127.0.0.1:8080"), ap("10.200.30.4:65535"), ap("[::1]:51552"),
		ap("[2001:db8:1234:5678:9abc:def0:1234:5678]:443"), ap("[fe80::1%eth0]:22"),
		ap("[fe80::1%a-rather-long-zone-name-for-an-interface-name]:22"),
		ap("[::ffff:10.0.0.1]:80"), ap("0.0.0.0:0"),
	}
	oddCauses = [][]collector.Cause{
		nil, {}, {collector.CauseFINNotRead}, {collector.CauseInherited, collector.CauseEOFNotClosed},
		{"future cause"}, {" padded "}, {"原因"}, {"<script>"},
	}
	oddStates = []collector.State{collector.StateCloseWait, collector.StateEstablished, collector.StateLastAck}
)

// randomSnapshot makes n sockets from the odd values above; with
// otherStates, not all in CLOSE_WAIT.
func randomSnapshot(rng *rand.Rand, n int, otherStates bool) *collector.Snapshot {
	pick := func(n int) int { return rng.IntN(n) }
	snap := &collector.Snapshot{
		Host: []string{"web-1", "", "h<o>st"}[pick(3)], Time: snapTime, Source: "netlink",
		Warnings:   [][]string{nil, {}, {"a", "b & c"}}[pick(3)],
		Sockets:    make([]collector.Socket, n),
		NetNSNames: []map[uint64]string{nil, {4026531840: "host"}, {4026531840: "n\"s<1>"}}[pick(3)],
	}
	for i := range snap.Sockets {
		s := &snap.Sockets[i]
		s.State = collector.StateCloseWait
		if otherStates {
			s.State = oddStates[pick(len(oddStates))]
		}
		s.Family = []collector.Family{collector.FamilyIPv4, collector.FamilyIPv6}[pick(2)]
		s.Local, s.Remote = oddAddrs[pick(len(oddAddrs))], oddAddrs[pick(len(oddAddrs))]
		s.RecvQ = []uint32{0, 1, 518, math.MaxUint32}[pick(4)]
		s.SendQ = []uint32{0, 12, math.MaxUint32}[pick(3)]
		s.Inode = []uint64{0, 91001, math.MaxUint64}[pick(3)]
		s.Cookie = rng.Uint64()
		s.UID = rng.Uint32()
		s.NetNS = []uint64{0, 4026531840}[pick(2)]
		s.Age = []time.Duration{
			0, 400 * time.Microsecond, 500 * time.Microsecond, 850 * time.Millisecond, 12345678 * time.Microsecond,
			-time.Millisecond, -300 * time.Microsecond, math.MaxInt64, time.Duration(rng.Int64N(int64(500 * time.Hour))),
		}[pick(9)]
		s.AgeMax = []time.Duration{0, s.Age, s.Age + 17*time.Millisecond + 3*time.Microsecond}[pick(3)]
		s.AgeKnown, s.AgeExact = pick(4) > 0, pick(2) > 0
		s.QueuesUnknown, s.InodeUnknown, s.UIDUnknown = pick(4) == 0, pick(4) == 0, pick(4) == 0
		s.Causes = oddCauses[pick(len(oddCauses))]
		for range pick(4) {
			s.Owners = append(s.Owners, collector.Owner{
				PID:  []int{1, 812, 4194304, 0}[pick(4)],
				Comm: oddComms[pick(len(oddComms))],
				FD:   []int{0, 7, 1023, 65535, -1}[pick(5)],
			})
		}
	}
	return snap
}

// TestSocketTableMatchesTablewriter holds columnWriter to the layout of the
// tablewriter configuration the summary uses, on the cells where the two
// could part: wide and zero-width characters, invalid UTF-8, blanks a
// command name may start or end with, long addresses, odd causes.
func TestSocketTableMatchesTablewriter(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var cases []struct {
		name  string
		socks []collector.Socket
	}
	add := func(name string, socks []collector.Socket) {
		cases = append(cases, struct {
			name  string
			socks []collector.Socket
		}{name, socks})
	}
	add("mixed", mixedSnapshot(t).Sockets)
	add("states", statesSnapshot(t).Sockets)
	add("procfs", procfsSnapshot(t).Sockets)
	for _, c := range oddComms {
		add(fmt.Sprintf("comm %q", c), []collector.Socket{
			{State: collector.StateCloseWait, Local: ap("127.0.0.1:8080"), Remote: ap("10.0.0.17:51552"),
				Owners: []collector.Owner{{PID: 7, Comm: c, FD: 3}, {PID: 8, Comm: c, FD: 4}}},
			{State: collector.StateCloseWait, Local: ap("127.0.0.1:8080"), Remote: ap("10.0.0.17:51552"),
				Owners: []collector.Owner{{PID: 70000, Comm: "x", FD: 3}}},
		})
	}
	for i := range 20 {
		add(fmt.Sprintf("random %d", i), randomSnapshot(rng, 1+rng.IntN(40), i%2 == 0).Sockets)
	}
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			want := tablewriterSocketTable(t, tt.socks)
			var buf bytes.Buffer
			if err := Table(&buf, &collector.Snapshot{Sockets: tt.socks}, TableOptions{}); err != nil {
				t.Fatal(err)
			}
			got, _, _ := bytes.Cut(buf.Bytes(), []byte("\n\n")) // the socket rows, not the summary
			got = append(got, '\n')
			if !bytes.Equal(got, want) {
				t.Errorf("columnWriter and tablewriter differ\ncolumnWriter:\n%s\ntablewriter:\n%s\n%q\n%q", got, want, got, want)
			}
		})
	}
}

// TestJSONMatchesEncoder holds the streamed document to what encoding/json
// makes of NewDocument, the schema's types.
func TestJSONMatchesEncoder(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	snaps := map[string]*collector.Snapshot{
		"mixed": mixedSnapshot(t), "states": statesSnapshot(t), "procfs": procfsSnapshot(t), "windows": windowsSnapshot(t),
		"empty": emptySnapshot(t),
	}
	for i := range 30 {
		snaps[fmt.Sprintf("random %d", i)] = randomSnapshot(rng, rng.IntN(50), i%2 == 0)
	}
	snaps["large"] = randomSnapshot(rng, 3000, true) // several flushes
	for name, snap := range snaps {
		t.Run(name, func(t *testing.T) {
			var want bytes.Buffer
			enc := json.NewEncoder(&want)
			enc.SetIndent("", "  ")
			if err := enc.Encode(NewDocument(snap)); err != nil {
				t.Fatal(err)
			}
			var got bytes.Buffer
			if err := JSON(&got, snap); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got.Bytes(), want.Bytes()) {
				g, w := got.String(), want.String()
				i := 0
				for i < min(len(g), len(w)) && g[i] == w[i] {
					i++
				}
				t.Errorf("JSON and encoding/json differ at byte %d:\nJSON:          %q\nencoding/json: %q",
					i, g[max(0, i-200):min(len(g), i+100)], w[max(0, i-200):min(len(w), i+100)])
			}
		})
	}
}

// newTable is the tablewriter configuration columnWriter reproduces: a
// borderless table in the style of ps and ss, a header
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

// tablewriterSummary is the summary as tablewriter renders it.
func tablewriterSummary(t *testing.T, rows []collector.ProcessSummary, containers map[int]*collector.Process) []byte {
	t.Helper()
	header := []string{"PID", "COMMAND", "SOCKETS", "OLDEST", "CAUSES"}
	right := []bool{true, false, true, false, false}
	if len(containers) > 0 {
		header, right = insert(header, 2, "CONTAINER/POD"), insert(right, 2, false)
	}
	var buf bytes.Buffer
	tab := newTable(&buf, header, right)
	for _, r := range rows {
		pid := "-"
		if r.PID != 0 {
			pid = strconv.Itoa(r.PID)
		}
		row := []string{pid, Printable(r.Comm), strconv.Itoa(r.Sockets), FormatAge(r.Oldest, r.OldestKnown, r.OldestExact), formatCauseCounts(r.Causes)}
		if len(containers) > 0 {
			row = insert(row, 2, containerCell(containers[r.PID]))
		}
		if err := tab.Append(row); err != nil {
			t.Fatal(err)
		}
	}
	if err := tab.Render(); err != nil {
		t.Fatal(err)
	}
	return trimLines(buf.Bytes())
}

// TestSummaryTableMatchesTablewriter holds the summary's columnWriter to
// tablewriter's layout, as TestSocketTableMatchesTablewriter the sockets'.
func TestSummaryTableMatchesTablewriter(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	snaps := map[string]*collector.Snapshot{"mixed": mixedSnapshot(t), "states": statesSnapshot(t), "procfs": procfsSnapshot(t)}
	for i, c := range oddComms {
		snaps[fmt.Sprintf("comm %q", c)] = &collector.Snapshot{Sockets: []collector.Socket{
			{State: collector.StateCloseWait, Local: ap("127.0.0.1:8080"), Remote: ap("10.0.0.17:51552"),
				Owners: []collector.Owner{{PID: 7 + i, Comm: c, FD: 3}, {PID: 70000, Comm: "x", FD: 4}}},
			{State: collector.StateCloseWait, Local: ap("127.0.0.1:8080"), Remote: ap("10.0.0.17:51553")},
		}}
	}
	for i := range 20 {
		snaps[fmt.Sprintf("random %d", i)] = randomSnapshot(rng, 1+rng.IntN(40), i%2 == 0)
	}
	for name, snap := range snaps {
		t.Run(name, func(t *testing.T) {
			rows, containers := collector.Summarize(snap), processContainers(snap.Sockets)
			want := tablewriterSummary(t, rows, containers)
			var buf bytes.Buffer
			bw := bufio.NewWriter(&buf)
			if err := summaryTable(bw, rows, containers); err != nil {
				t.Fatal(err)
			}
			bw.Flush()
			if !bytes.Equal(buf.Bytes(), want) {
				t.Errorf("columnWriter and tablewriter differ\ncolumnWriter:\n%s\ntablewriter:\n%s\n%q\n%q", buf.Bytes(), want, buf.Bytes(), want)
			}
		})
	}
}
