package watch

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	tea "charm.land/bubbletea/v2"
	"charm.land/lipgloss/v2"

	"github.com/closewait/closewait/collector"
	"github.com/closewait/closewait/report"
)

// Terminal runs the full-screen view on a terminal until q, Ctrl-C, the
// end of ctx, or cfg.Count samples. in and out are the terminal; a nil in
// opens /dev/tty (stdin may be a pipe). The terminal is restored in every
// case.
func Terminal(parent context.Context, cfg Config, in io.Reader, out io.Writer) error {
	cfg.defaults()
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	t := newTUI(&cfg)
	opts := []tea.ProgramOption{tea.WithContext(ctx), tea.WithOutput(out)}
	if in != nil {
		opts = append(opts, tea.WithInput(in)) // else stdin, or /dev/tty when it is not a terminal
	}
	p := tea.NewProgram(t, opts...)
	fed := make(chan struct{})
	go func() {
		defer close(fed)
		feed(ctx, &cfg, func(u update) bool {
			p.Send(updateMsg(u))
			return ctx.Err() == nil
		})
	}()
	_, err := p.Run()
	cancel()
	<-fed // the source is the caller's again
	if t.err != nil {
		return t.err
	}
	if errors.Is(err, tea.ErrProgramKilled) && parent.Err() != nil {
		return parent.Err() // the caller stopped the watch (a signal)
	}
	return err
}

// updateMsg carries an update from the feed into the program.
type updateMsg update

// tui is the bubbletea model: the watch model plus what the user chose.
type tui struct {
	cfg *Config
	m   *Model

	width, height int
	sort          SortKey
	filter        string
	editing       bool
	edit          []rune
	prevFilter    string // the filter before /, restored by Esc
	help          bool
	paused        bool
	events        bool
	status        string // the last error, until the next good update
	samples       int
	err           error // ends the program

	header Header // as shown: frozen while paused
	rows   []Row

	cursor   int // selected row
	offset   int // first row shown
	selected int // pid of the selected row
	// follow keeps the cursor on the selected pid across refreshes, once
	// the user has moved it; until then it stays on the top row.
	follow bool

	drill       bool
	drillPID    int
	drillComm   string
	newestFirst bool
	socks       []SocketRow
	dcursor     int
	doffset     int

	st styles
}

type styles struct {
	title, head, selected, fresh, warn, dim lipgloss.Style
}

func newTUI(cfg *Config) *tui {
	return &tui{
		cfg:    cfg,
		m:      NewModel(cfg.Interval, cfg.Highlight),
		width:  80,
		height: 24,
		st: styles{
			title:    lipgloss.NewStyle().Reverse(true).Bold(true),
			head:     lipgloss.NewStyle().Bold(true),
			selected: lipgloss.NewStyle().Reverse(true),
			fresh:    lipgloss.NewStyle().Bold(true).Foreground(lipgloss.Color("3")),
			warn:     lipgloss.NewStyle().Foreground(lipgloss.Color("1")),
			dim:      lipgloss.NewStyle().Faint(true),
		},
	}
}

// Init starts nothing: the feed runs beside the program and sends to it.
func (t *tui) Init() tea.Cmd { return nil }

// Update handles keys, resizes and the feed's updates.
func (t *tui) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	switch msg := msg.(type) {
	case tea.WindowSizeMsg:
		t.width, t.height = msg.Width, msg.Height
		t.clamp()
	case updateMsg:
		return t, t.onUpdate(update(msg))
	case tea.KeyPressMsg:
		return t, t.onKey(msg)
	}
	return t, nil
}

func (t *tui) onUpdate(u update) tea.Cmd {
	if u.err != nil {
		if errors.Is(u.err, errFirstPoll) {
			t.err = firstPollError(u.err)
			return tea.Quit
		}
		t.status = u.err.Error()
	} else if u.changes != nil {
		t.status = ""
	}
	t.events = u.events
	u.apply(t.m)
	if !u.sample {
		return nil
	}
	t.samples++
	if !t.paused {
		t.refresh()
	}
	if t.cfg.Count > 0 && t.samples >= t.cfg.Count {
		return tea.Quit
	}
	return nil
}

// refresh recomputes what is shown from the model.
func (t *tui) refresh() {
	rows := t.m.Rows(t.sort, t.filter)
	if t.cfg.FDUsage != nil {
		// Only the rows on screen: fd usage is read per process.
		lo, hi := t.visibleRange(len(rows), t.offset, t.tableHeight())
		readFDs(t.m, t.cfg, rows[lo:hi])
		sortRows(rows, t.sort) // the fd limit may be the order
	}
	t.rows, t.header = rows, t.m.Header()
	if t.filter != "" {
		t.header = t.m.FilteredHeader(rows)
		t.header.Filter = t.filter
	}
	t.cursor = 0
	for i, r := range rows {
		if t.follow && r.PID == t.selected {
			t.cursor = i
			break
		}
	}
	if t.drill {
		t.socks = t.m.Sockets(t.drillPID, t.filter, t.newestFirst)
	}
	t.clamp()
}

func (t *tui) visibleRange(n, offset, height int) (int, int) {
	lo := min(max(offset, 0), n)
	return lo, min(lo+max(height, 0), n)
}

// tableHeight is the number of table rows that fit: the screen less the
// title, status, column header and footer lines.
func (t *tui) tableHeight() int { return max(t.height-4, 1) }

// clamp keeps cursors and offsets inside their lists and the cursor on
// screen.
func (t *tui) clamp() {
	h := t.tableHeight()
	t.cursor, t.offset = clampScroll(t.cursor, t.offset, len(t.rows), h)
	if t.cursor < len(t.rows) {
		t.selected = t.rows[t.cursor].PID
	}
	t.dcursor, t.doffset = clampScroll(t.dcursor, t.doffset, len(t.socks), h)
}

func clampScroll(cursor, offset, n, h int) (int, int) {
	cursor = min(max(cursor, 0), max(n-1, 0))
	if cursor < offset {
		offset = cursor
	}
	if cursor >= offset+h {
		offset = cursor - h + 1
	}
	offset = min(max(offset, 0), max(n-h, 0))
	return cursor, offset
}

func (t *tui) onKey(k tea.KeyPressMsg) tea.Cmd {
	key := k.String()
	if key == "ctrl+c" {
		return tea.Quit
	}
	if t.editing {
		// The filter applies as it is typed.
		switch {
		case k.Code == tea.KeyEnter:
			t.editing = false
		case k.Code == tea.KeyEscape:
			t.editing, t.edit = false, []rune(t.prevFilter)
		case k.Code == tea.KeyBackspace:
			if len(t.edit) > 0 {
				t.edit = t.edit[:len(t.edit)-1]
			}
		case key == "ctrl+u":
			t.edit = nil
		case key == "ctrl+w":
			t.edit = deleteWord(t.edit)
		case k.Text != "":
			t.edit = append(t.edit, []rune(k.Text)...)
		default:
			return nil
		}
		if f := strings.TrimSpace(string(t.edit)); f != t.filter {
			t.filter = f
			t.cursor, t.offset, t.follow = 0, 0, false
			t.refresh()
		}
		return nil
	}
	if t.help {
		t.help = false
		if key != "q" {
			return nil
		}
	}
	page := t.tableHeight()
	switch key {
	case "q":
		return tea.Quit
	case "?":
		t.help = true
	case "p":
		t.paused = !t.paused
		if !t.paused {
			t.refresh()
		}
	case "/":
		t.editing, t.edit, t.prevFilter = true, []rune(t.filter), t.filter
	case "s":
		if t.drill {
			t.newestFirst = !t.newestFirst
			t.dcursor, t.doffset = 0, 0
		} else {
			t.sort = t.sort.Next()
		}
		t.refresh()
	case "enter":
		if !t.drill && t.cursor < len(t.rows) {
			r := t.rows[t.cursor]
			t.drill, t.drillPID, t.drillComm = true, r.PID, r.Comm
			t.dcursor, t.doffset = 0, 0
			t.socks = t.m.Sockets(t.drillPID, t.filter, t.newestFirst)
			t.clamp()
		}
	case "esc":
		switch {
		case t.drill:
			t.drill, t.socks = false, nil
		case t.filter != "":
			t.filter = ""
			t.refresh()
		}
	case "up", "k":
		t.move(-1)
	case "down", "j":
		t.move(1)
	case "pgup", "ctrl+b":
		t.move(-page)
	case "pgdown", "ctrl+f", "space":
		t.move(page)
	case "home", "g":
		t.move(-1 << 30)
	case "end", "G":
		t.move(1 << 30)
	}
	return nil
}

// deleteWord removes the word before the end of s, and the spaces after
// it, as Ctrl-W does in a shell.
func deleteWord(s []rune) []rune {
	i := len(s)
	for i > 0 && s[i-1] == ' ' {
		i--
	}
	for i > 0 && s[i-1] != ' ' {
		i--
	}
	return s[:i]
}

func (t *tui) move(d int) {
	t.follow = true
	if t.drill {
		t.dcursor = min(max(t.dcursor+d, 0), max(len(t.socks)-1, 0))
	} else {
		t.cursor = min(max(t.cursor+d, 0), max(len(t.rows)-1, 0))
	}
	t.clamp()
}

// View draws the screen in the alternate buffer.
func (t *tui) View() tea.View {
	v := tea.NewView(t.render())
	v.AltScreen = true
	return v
}

// render draws the screen: title, status, table (or help), footer.
func (t *tui) render() string {
	if t.help {
		return t.helpView()
	}
	lines := []string{t.titleLine(), t.statusLine()}
	if t.drill {
		lines = append(lines, t.socketLines()...)
	} else {
		lines = append(lines, t.processLines()...)
	}
	h := max(t.height, 2) // a tiny window still gets a title and the footer
	for len(lines) < h-1 {
		lines = append(lines, "")
	}
	lines = append(lines[:h-1], t.footer())
	return strings.Join(lines, "\n")
}

func (t *tui) every() string { return feedLabel(t.cfg, t.events) }

func (t *tui) titleLine() string {
	h := t.header
	left := "closewait watch  " + headerLine(h, t.cfg.Label, t.every())
	right := ""
	if !h.Time.IsZero() {
		right = h.Time.Format("15:04:05")
	}
	if !t.m.Started() {
		left = "closewait watch  collecting..."
	} else if len([]rune(left))+len(right) >= t.width {
		// Narrow: the counts and what feeds them before the name and clock.
		left, right = headerLine(h, t.cfg.Label, t.every()), ""
	}
	pad := t.width - len([]rune(left)) - len(right)
	if pad < 1 {
		return t.st.title.Render(t.cut(left))
	}
	return t.st.title.Render(left + strings.Repeat(" ", pad) + right)
}

func (t *tui) statusLine() string {
	var parts []string
	if t.drill {
		pid := strconv.Itoa(t.drillPID)
		if t.drillPID == 0 {
			pid = "- (no visible owner)"
		}
		order := "oldest first"
		if t.newestFirst {
			order = "newest first"
		}
		parts = append(parts, fmt.Sprintf("PID %s %s: %d sockets", pid, report.Printable(t.drillComm), len(t.socks)), "order: "+order)
	} else {
		parts = append(parts, "sort: "+t.sort.String())
	}
	if t.filter != "" {
		parts = append(parts, "filter: "+report.Printable(t.filter))
	}
	if t.paused {
		parts = append(parts, "PAUSED")
	}
	line := t.cut(strings.Join(parts, "  "))
	warn := t.status
	if warn == "" && len(t.header.Warnings) > 0 {
		warn = t.header.Warnings[0]
	}
	if room := t.width - len([]rune(line)) - 2; warn != "" && room > 0 {
		return line + "  " + t.st.warn.Render(fit(report.Printable(warn), room, false))
	}
	return line
}

func (t *tui) footer() string {
	if t.editing {
		return t.cut("filter (command, port or pid): " + report.Printable(string(t.edit)) + "█  enter keep  esc undo  ^U ^W erase")
	}
	if t.drill {
		return t.st.dim.Render(t.cut("esc back  s order  ↑↓ scroll  p pause  q quit  ? help"))
	}
	return t.st.dim.Render(t.cut("q quit  s sort  ↑↓ select  enter sockets  / filter  p pause  ? help"))
}

// tableColumns fits the process columns and the sparkline to the width,
// dropping the least needed first.
func (t *tui) tableColumns() ([]column, bool) {
	cols := shownColumns(t.cfg.Label, t.rows)
	spark := true
	width := func() int {
		w := 2 // cursor and new-socket marks
		for _, c := range cols {
			w += c.width + 1
		}
		if spark {
			w += sparkWidth
		}
		return w
	}
	drop := func(title string) {
		for i, c := range cols {
			if c.title == title {
				cols = append(cols[:i], cols[i+1:]...)
				return
			}
		}
	}
	if width() > t.width {
		spark = false
	}
	// The fd budget goes first, CAUSE last: it is what to fix.
	for _, title := range []string{"LIMIT IN", "FDS/LIMIT", "CHANGE", "RATE/MIN", "CLOSED", "CAUSE"} {
		if width() <= t.width {
			break
		}
		drop(title)
	}
	return cols, spark
}

func (t *tui) processLines() []string {
	cols, spark := t.tableColumns()
	cells := make([]string, 0, len(cols)+1)
	for _, c := range cols {
		cells = append(cells, fit(c.headTitle(t.sort), c.width, c.right))
	}
	if spark {
		cells = append(cells, "TREND")
	}
	lines := []string{t.st.head.Render(t.cut("  " + strings.Join(cells, " ")))}
	if len(t.rows) == 0 {
		msg := "no " + t.cfg.Label + " sockets"
		if t.filter != "" {
			msg += " matching the filter"
		}
		if !t.m.Started() {
			msg = "collecting..."
		}
		return append(lines, t.cut("  "+msg))
	}
	lo, hi := t.visibleRange(len(t.rows), t.offset, t.tableHeight())
	for i := lo; i < hi; i++ {
		r := &t.rows[i]
		cells = cells[:0]
		for _, c := range cols {
			cells = append(cells, fit(c.cell(r), c.width, c.right))
		}
		if spark {
			cells = append(cells, Sparkline(r.Trend))
		}
		mark := " "
		if r.New > 0 {
			mark = "+"
		}
		line := t.cut(cursorMark(i == t.cursor) + mark + strings.Join(cells, " "))
		lines = append(lines, t.style(line, i == t.cursor, r.New > 0))
	}
	return lines
}

func (t *tui) socketLines() []string {
	lo, hi := t.visibleRange(len(t.socks), t.doffset, t.tableHeight())
	// The fd and address columns as wide as what they show: what is left
	// goes to the causes, which are never cut inside a name.
	fw, lw, rw := len("FD"), len("LOCAL"), len("REMOTE")
	fdList := func(r *SocketRow) string {
		fds := make([]string, len(r.FDs))
		for j, fd := range r.FDs {
			fds[j] = strconv.Itoa(fd)
		}
		return cmp.Or(strings.Join(fds, ","), "-")
	}
	for i := lo; i < hi; i++ {
		fw = min(max(fw, len(fdList(&t.socks[i]))), 9)
		lw = max(lw, len(report.Addr(t.socks[i].Socket.Local)))
		rw = max(rw, len(report.Addr(t.socks[i].Socket.Remote)))
	}
	row := "%s%s%-*s %-*s %-*s %6s %-9s %s"
	head := fmt.Sprintf(row, " ", " ", fw, "FD", lw, "LOCAL", rw, "REMOTE", "RECV-Q", "AGE", "CAUSES")
	room := t.width - (len(head) - len("CAUSES"))
	lines := []string{t.st.head.Render(t.cut(head))}
	if len(t.socks) == 0 {
		return append(lines, t.cut("  no sockets"))
	}
	for i := lo; i < hi; i++ {
		r := &t.socks[i]
		s := &r.Socket
		mark := " "
		if r.New {
			mark = "+"
		}
		line := fmt.Sprintf(row, cursorMark(i == t.dcursor), mark,
			fw, fit(fdList(r), fw, false), lw, report.Addr(s.Local), rw, report.Addr(s.Remote), strconv.Itoa(int(s.RecvQ)),
			report.FormatAge(s.Age, s.AgeKnown, s.AgeExact), fitCauses(s.Causes, room))
		lines = append(lines, t.style(t.cut(line), i == t.dcursor, r.New))
	}
	return lines
}

// fitCauses joins whole cause names that fit in room, and says how many
// more there are ("inherited +1"): a name cut short ("not") would mislead.
// The first is whole even when it does not fit.
func fitCauses(causes []collector.Cause, room int) string {
	if len(causes) == 0 {
		return "-"
	}
	out := string(causes[0])
	for i := 1; i < len(causes); i++ {
		more := fmt.Sprintf(" +%d", len(causes)-i)
		if i == len(causes)-1 {
			more = ""
		}
		if next := out + "," + string(causes[i]); len(next)+len(more) <= room {
			out = next
			continue
		}
		return out + fmt.Sprintf(" +%d", len(causes)-i)
	}
	return out
}

func cursorMark(on bool) string {
	if on {
		return ">"
	}
	return " "
}

func (t *tui) style(line string, selected, fresh bool) string {
	switch {
	case selected:
		return t.st.selected.Render(line)
	case fresh:
		return t.st.fresh.Render(line)
	}
	return line
}

// cut trims a line to the screen width.
func (t *tui) cut(s string) string {
	if len([]rune(s)) <= t.width {
		return s
	}
	return string([]rune(s)[:max(t.width, 0)])
}

func (t *tui) helpView() string {
	help := `closewait watch: processes holding sockets in ` + t.cfg.Label + `

  q, Ctrl-C   quit
  s           next sort: count, rate, oldest, fd limit, pid (marked ▼)
              (in a process's sockets: oldest or newest first)
  ↑ ↓ k j     select; PgUp PgDn Home End page
  Enter       the selected process's sockets;  Esc  back
  p           pause the display (collection goes on)
  /           filter by command name, port or pid, as you type
              (Ctrl-U clear, Ctrl-W erase a word, Enter keep, Esc undo)
  Esc         clear a kept filter
  ?           this help

Columns
  CHANGE      sockets now less sockets when the watch started
  RATE/MIN    change per minute over the last minute ("-" until a
              minute of history)
  OLDEST      oldest socket's age; ">=" marks a lower bound
  CAUSE       the cause most of the process's sockets share
  CLOSED      fds of connections the kernel already closed (shown when
              some process has them: list --state closed lists them)
  FDS/LIMIT   open fds / soft limit (Max open files)
  LIMIT IN    when the fds reach the limit at the current rate
  TREND       the count over the last ` + strconv.Itoa(sparkWidth) + ` samples
  +           sockets new in the last ` + formatInterval(t.cfg.Highlight) + `

Press any key to go back.`
	lines := strings.Split(help, "\n")
	lines = lines[:min(len(lines), max(t.height, 1))]
	for i := range lines {
		lines[i] = t.cut(lines[i])
	}
	return strings.Join(lines, "\n")
}
