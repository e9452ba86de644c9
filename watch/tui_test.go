package watch

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	tea "charm.land/bubbletea/v2"
	"charm.land/lipgloss/v2"

	"github.com/closewait/closewait/collector"
)

// fakeSource returns its full polls in turn, the last one again and again.
type fakeSource struct {
	snaps     []*collector.Changes
	err       error
	polls     int
	forgot    []collector.SocketID
	completed []collector.Socket
}

func (f *fakeSource) PollChanges(context.Context) (*collector.Changes, error) {
	if f.err != nil {
		return nil, f.err
	}
	s := f.snaps[min(f.polls, len(f.snaps)-1)]
	f.polls++
	c := *s
	c.Time = time.Now()
	return &c, nil
}

func (f *fakeSource) Complete(_ context.Context, socks []collector.Socket) (*collector.Changes, error) {
	f.completed = append(f.completed, socks...)
	return &collector.Changes{Time: time.Now(), Sockets: socks}, nil
}

func (f *fakeSource) Refresh(context.Context) (*collector.Changes, error) {
	return &collector.Changes{Time: time.Now()}, nil
}

func (f *fakeSource) Forget(ids []collector.SocketID) { f.forgot = append(f.forgot, ids...) }

func key(s string) tea.KeyPressMsg {
	switch s {
	case "enter":
		return tea.KeyPressMsg{Code: tea.KeyEnter}
	case "esc":
		return tea.KeyPressMsg{Code: tea.KeyEscape}
	case "ctrl+c":
		return tea.KeyPressMsg{Code: 'c', Mod: tea.ModCtrl}
	}
	return tea.KeyPressMsg{Code: []rune(s)[0], Text: s}
}

func isQuit(cmd tea.Cmd) bool {
	if cmd == nil {
		return false
	}
	_, ok := cmd().(tea.QuitMsg)
	return ok
}

// newTestTUI returns a view of 160x30 that has had one poll.
func newTestTUI(t *testing.T, count int) *tui {
	t.Helper()
	cfg := &Config{Interval: time.Second, Count: count, FDUsage: func(pid int) (collector.FDUsage, error) {
		return collector.FDUsage{Open: 10, Limit: 1024}, nil
	}}
	cfg.defaults()
	v := newTUI(cfg)
	v.Update(tea.WindowSizeMsg{Width: 160, Height: 30})
	snap := snapAt(t0, socks(1, 3, 100, "nginx", 8080), socks(10, 2, 200, "java", 9090))
	if cmd := v.onUpdate(update{at: t0, changes: snap, sample: true}); cmd != nil {
		t.Fatalf("first update returned a command")
	}
	return v
}

func TestTUIKeys(t *testing.T) {
	v := newTestTUI(t, 0)
	screen := v.render()
	for _, want := range []string{"CLOSE_WAIT 5", "nginx", "java", "sort: count", "10/1024", "PID"} {
		if !strings.Contains(screen, want) {
			t.Errorf("screen lacks %q:\n%s", want, screen)
		}
	}
	if got := strings.Count(screen, "\n") + 1; got != 30 {
		t.Errorf("screen has %d lines, want 30", got)
	}
	steps := []struct {
		key  string
		want []string
		not  []string
	}{
		{"s", []string{"sort: rate"}, nil},
		{"s", []string{"sort: oldest"}, nil},
		{"j", []string{">", "java"}, nil},
		{"enter", []string{"PID 200 java: 2 sockets", "order: oldest first", "127.0.0.1:9090"}, []string{"nginx"}},
		{"s", []string{"order: newest first"}, nil},
		{"esc", []string{"sort: oldest", "nginx", "java"}, nil},
		{"p", []string{"PAUSED"}, nil},
		{"p", nil, []string{"PAUSED"}},
		{"/", []string{"filter (command, port or pid): "}, nil},
		{"ngi", []string{"filter (command, port or pid): ngi"}, nil},
		{"enter", []string{"filter: ngi", "nginx"}, []string{"java"}},
		{"esc", []string{"java", "nginx"}, []string{"filter: ngi"}},
		{"?", []string{"Press any key", "fd limit"}, nil},
		{"x", []string{"sort: oldest"}, []string{"Press any key"}},
	}
	for _, st := range steps {
		if cmd := v.onKey(key(st.key)); isQuit(cmd) {
			t.Fatalf("key %q quit", st.key)
		}
		screen := v.render()
		for _, want := range st.want {
			if !strings.Contains(screen, want) {
				t.Errorf("after %q the screen lacks %q:\n%s", st.key, want, screen)
			}
		}
		for _, not := range st.not {
			if strings.Contains(screen, not) {
				t.Errorf("after %q the screen shows %q:\n%s", st.key, not, screen)
			}
		}
	}
	for _, k := range []string{"q", "ctrl+c"} {
		if !isQuit(v.onKey(key(k))) {
			t.Errorf("%s does not quit", k)
		}
	}
}

// TestTUIPause checks that a paused view keeps its rows while the model
// goes on, and catches up on resume.
func TestTUIPause(t *testing.T) {
	v := newTestTUI(t, 0)
	v.onKey(key("p"))
	at := t0.Add(time.Second)
	v.onUpdate(update{at: at, changes: snapAt(at, socks(1, 7, 100, "nginx", 8080)), sample: true})
	if screen := v.render(); !strings.Contains(screen, "CLOSE_WAIT 5") || strings.Contains(screen, "+4") {
		t.Errorf("paused view changed:\n%s", screen)
	}
	v.onKey(key("p"))
	if screen := v.render(); !strings.Contains(screen, "CLOSE_WAIT 7") || !strings.Contains(screen, "+4") {
		t.Errorf("resumed view is not up to date:\n%s", screen)
	}
}

func TestTUICountAndErrors(t *testing.T) {
	v := newTestTUI(t, 2)
	at := t0.Add(time.Second)
	if cmd := v.onUpdate(update{at: at, err: errors.New("dump failed"), sample: true}); !isQuit(cmd) {
		t.Errorf("second sample of --count 2 does not quit")
	}
	if screen := v.render(); !strings.Contains(screen, "dump failed") {
		t.Errorf("error not shown:\n%s", screen)
	}
	v = newTUI(&Config{Interval: time.Second})
	if cmd := v.onUpdate(update{err: errors.Join(errFirstPoll, errors.New("no source"))}); !isQuit(cmd) || v.err == nil || v.err.Error() != "no source" {
		t.Errorf("first poll failure: quit %v, err %v", isQuit(cmd), v.err)
	}
}

func TestTUISmall(t *testing.T) {
	for _, size := range []tea.WindowSizeMsg{{Width: 60, Height: 10}, {Width: 20, Height: 3}, {Width: 1, Height: 1}, {}} {
		v := newTestTUI(t, 0)
		v.Update(size)
		v.onKey(key("enter"))
		drill := v.render()
		v.onKey(key("esc"))
		v.onKey(key("?"))
		help := v.render()
		v.onKey(key("x"))
		v.onKey(key("/"))
		for _, view := range []string{drill, help, v.render()} {
			lines := strings.Split(view, "\n")
			if len(lines) > max(size.Height, 2) {
				t.Errorf("%dx%d: %d lines", size.Width, size.Height, len(lines))
			}
			for i, line := range lines {
				if n := lipgloss.Width(line); n > size.Width {
					t.Errorf("%dx%d: line %d is %d wide: %q", size.Width, size.Height, i, n, line)
				}
			}
		}
	}
}

func TestPlain(t *testing.T) {
	src := &fakeSource{snaps: []*collector.Changes{
		snapAt(t0, socks(1, 3, 100, "nginx", 8080)),
		snapAt(t0, socks(1, 5, 100, "nginx", 8080)),
	}}
	var out bytes.Buffer
	var warnings []string
	err := Plain(context.Background(), Config{Source: src, Interval: 100 * time.Millisecond, Count: 3,
		Warn: func(m string) { warnings = append(warnings, m) }}, &out)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(out.String(), "CLOSE_WAIT 5"); n != 2 {
		t.Errorf("want 2 snapshots with 5 sockets:\n%s", out.String())
	}
	if n := strings.Count(out.String(), "\n\n"); n != 3 {
		t.Errorf("want 3 snapshots:\n%s", out.String())
	}
	if strings.ContainsRune(out.String(), '\x1b') {
		t.Errorf("escape codes in plain output")
	}

	src = &fakeSource{err: errors.New("no source works")}
	if err := Plain(context.Background(), Config{Source: src, Count: 1}, &out); err == nil || err.Error() != "no source works" {
		t.Errorf("first poll failure: err %v", err)
	}
}

// TestFeedSettle calls Settle once after each poll that read the whole
// table (full, or with many new sockets), at the tick after it, and not
// after the others.
func TestFeedSettle(t *testing.T) {
	partial := &collector.Changes{Sockets: socks(1, 2, 100, "app", 80)}
	burst := &collector.Changes{Sockets: socks(1, settleAfter+1, 100, "app", 80)}
	src := &fakeSource{snaps: []*collector.Changes{
		snapAt(t0, socks(1, 2, 100, "app", 80)), partial, snapAt(t0, socks(1, 3, 100, "app", 80)), partial, burst, partial,
	}}
	var settled []int // polls made when Settle ran
	cfg := Config{Source: src, Interval: time.Millisecond, Settle: func() { settled = append(settled, src.polls) }}
	cfg.defaults()
	feed(context.Background(), &cfg, func(update) bool { return src.polls < 7 })
	if want := []int{1, 3, 5}; !slices.Equal(settled, want) {
		t.Errorf("settled after polls %v, want %v", settled, want)
	}
}

// TestFeedEvents follows events between polls: the interval is long, so
// only events can make updates, in order.
func TestFeedEvents(t *testing.T) {
	src := &fakeSource{snaps: []*collector.Changes{snapAt(t0, socks(1, 2, 100, "app", 80))}}
	events := make(chan Event, 4)
	enter := sock(10, 100, "app", 80, 0, true)
	events <- Event{Time: time.Now(), Socket: enter}
	events <- Event{Time: time.Now(), Socket: sock(1, 100, "app", 80, 0, true), Left: true}
	close(events)
	cfg := Config{Source: src, Events: events, Interval: time.Hour, Resync: time.Hour}
	cfg.defaults()
	var got []update
	feed(context.Background(), &cfg, func(u update) bool {
		got = append(got, u)
		return u.err == nil
	})
	m := NewModel(cfg.Interval, cfg.Highlight)
	for _, u := range got {
		u.apply(m)
	}
	last := got[len(got)-1]
	if last.err == nil || !strings.Contains(last.err.Error(), "polling") {
		t.Errorf("closing the events does not say so: %+v", last)
	}
	if len(got) < 3 || got[0].changes == nil || !got[0].changes.Full || !got[0].sample {
		t.Fatalf("updates = %+v", got)
	}
	m.Sample(time.Now())
	ss := m.Sockets(100, "", false)
	var cookies []uint64
	for _, s := range ss {
		cookies = append(cookies, s.Socket.Cookie)
		if s.Socket.Cookie == 10 && (!s.Socket.AgeExact || !s.New) {
			t.Errorf("event socket = %+v, want exact age, new", s)
		}
	}
	if len(src.forgot) != 1 || src.forgot[0].Cookie != 1 {
		t.Errorf("left sockets not forgotten: %v", src.forgot)
	}
	if len(cookies) != 2 || !(cookies[0] == 2 || cookies[1] == 2) || !(cookies[0] == 10 || cookies[1] == 10) {
		t.Errorf("sockets after events = %v, want 2 and 10", cookies)
	}
}

// TestFeedInAndOut: a socket that enters and leaves CLOSE_WAIT within one
// batch of events is not completed after it was forgotten: the poller
// would keep it until the next full poll (watch counted above ss under
// churn).
func TestFeedInAndOut(t *testing.T) {
	src := &fakeSource{snaps: []*collector.Changes{snapAt(t0, socks(1, 2, 100, "app", 80))}}
	events := make(chan Event, 4)
	brief := sock(10, 100, "app", 80, 0, true)
	events <- Event{Time: time.Now(), Socket: brief}
	events <- Event{Time: time.Now(), Socket: brief, Left: true}
	close(events)
	cfg := Config{Source: src, Events: events, Interval: time.Hour, Resync: time.Hour}
	cfg.defaults()
	m := NewModel(cfg.Interval, cfg.Highlight)
	feed(context.Background(), &cfg, func(u update) bool {
		u.apply(m)
		return u.err == nil
	})
	for _, s := range src.completed {
		if s.Cookie == 10 {
			t.Errorf("the socket that came and went was completed after it was forgotten")
		}
	}
	if len(src.forgot) != 1 || src.forgot[0].Cookie != 10 {
		t.Errorf("forgotten %v, want the socket that left", src.forgot)
	}
}

// TestTUIFirstUse walks what a first-time user met: the cursor on the top
// row until moved, the sort column marked, a filter that applies as it is
// typed (Ctrl-W, Ctrl-U) and a header that counts what it shows.
func TestTUIFirstUse(t *testing.T) {
	v := newTestTUI(t, 0)
	if v.cursor != 0 || !strings.Contains(v.render(), "CLOSE_WAIT▼") {
		t.Fatalf("cursor %d, header:\n%s", v.cursor, v.render())
	}
	// java overtakes nginx: the cursor stays on the top row.
	at := t0.Add(time.Second)
	v.onUpdate(update{at: at, changes: snapAt(at, socks(1, 3, 100, "nginx", 8080), socks(10, 5, 200, "java", 9090)), sample: true})
	if v.rows[0].PID != 200 || v.cursor != 0 {
		t.Errorf("after a reorder: top pid %d, cursor %d; want java on top, cursor 0", v.rows[0].PID, v.cursor)
	}
	// Once moved, it follows the process.
	v.onKey(key("j")) // nginx
	at = at.Add(time.Second)
	v.onUpdate(update{at: at, changes: snapAt(at, socks(1, 9, 100, "nginx", 8080), socks(10, 5, 200, "java", 9090)), sample: true})
	if v.rows[v.cursor].PID != 100 {
		t.Errorf("moved cursor on pid %d, want nginx (100) followed", v.rows[v.cursor].PID)
	}
	v.onKey(key("s"))
	if s := v.render(); !strings.Contains(s, "RATE/MIN▼") || strings.Contains(s, "CLOSE_WAIT▼") {
		t.Errorf("sort by rate not marked:\n%s", s)
	}

	v.onKey(key("/"))
	v.onKey(key("ngi"))
	if s := v.render(); strings.Contains(s, " java ") || !strings.Contains(s, "nginx") {
		t.Errorf("typing ngi did not filter at once:\n%s", s)
	}
	if s := v.render(); !strings.Contains(s, "CLOSE_WAIT 9 of 14 (filter: ngi)") {
		t.Errorf("header does not count what the filter shows:\n%s", s)
	}
	v.onKey(key(" java")) // "ngi java": nothing
	if s := v.render(); !strings.Contains(s, "no CLOSE_WAIT sockets matching the filter") {
		t.Errorf("ngi java matches:\n%s", s)
	}
	v.onKey(tea.KeyPressMsg{Code: 'w', Mod: tea.ModCtrl}) // "ngi "
	if s := v.render(); strings.Contains(s, " java ") || !strings.Contains(s, "nginx") {
		t.Errorf("after Ctrl-W the filter is not ngi:\n%s", s)
	}
	v.onKey(tea.KeyPressMsg{Code: 'u', Mod: tea.ModCtrl})
	if s := v.render(); !strings.Contains(s, "java") || !strings.Contains(s, "nginx") || strings.Contains(s, "(filter") {
		t.Errorf("after Ctrl-U the filter is not empty:\n%s", s)
	}
	// Enter keeps the filter; Esc while editing restores it.
	v.onKey(key("nginx"))
	v.onKey(key("enter"))
	v.onKey(key("/"))
	v.onKey(key(" java"))
	v.onKey(key("esc"))
	if v.editing || v.filter != "nginx" {
		t.Errorf("after Esc: editing %v, filter %q; want the kept filter nginx", v.editing, v.filter)
	}
}

// TestTUIRateNeedsAMinute: a burst in the first seconds shows no rate and
// no "limit in"; a minute of data does, and the header agrees with the row.
func TestTUIRateNeedsAMinute(t *testing.T) {
	v := newTestTUI(t, 0)
	at := t0.Add(10 * time.Second)
	v.onUpdate(update{at: at, changes: snapAt(at, socks(1, 8, 100, "nginx", 8080), socks(10, 2, 200, "java", 9090)), sample: true})
	r := v.rows[0]
	if r.PID != 100 || r.RateKnown || r.LimitInKnown || v.header.RateKnown {
		t.Errorf("after 10 s: row %+v, header rate known %v; want no rate, no forecast", r, v.header.RateKnown)
	}
	if s := v.render(); strings.Contains(s, "/min)") || strings.Contains(s, "~") {
		t.Errorf("a rate or forecast from 10 s of data:\n%s", s)
	}
	at = t0.Add(time.Minute)
	v.onUpdate(update{at: at, changes: snapAt(at, socks(1, 8, 100, "nginx", 8080), socks(10, 2, 200, "java", 9090)), sample: true})
	r = v.rows[0]
	if !r.RateKnown || r.Rate != 5 || !v.header.RateKnown || v.header.Rate != 5 {
		t.Errorf("after a minute: row rate %v (%v), header %v (%v); want both +5/min", r.Rate, r.RateKnown, v.header.Rate, v.header.RateKnown)
	}
}

// TestTUI80Columns: at 80 columns the process table keeps CAUSE and drops
// the fd budget; the sockets view keeps whole cause names.
func TestTUI80Columns(t *testing.T) {
	v := newTestTUI(t, 0)
	v.Update(tea.WindowSizeMsg{Width: 80, Height: 24})
	v.cfg.Tracer = TracerInstalled
	v.refresh()
	s := v.render()
	for _, want := range []string{"CAUSE", "fin-not-read", "OLDEST", "every 1s  tracer installed"} {
		if !strings.Contains(s, want) {
			t.Errorf("80 columns: no %q:\n%s", want, s)
		}
	}
	if strings.Contains(s, "FDS/LIMIT") {
		t.Errorf("80 columns: the fd budget kept before CAUSE:\n%s", s)
	}
	at := t0.Add(time.Second)
	two := socks(1, 3, 100, "nginx", 8080)
	for i := range two {
		two[i].Owners = append(two[i].Owners, collector.Owner{PID: 101, Comm: "nginx", FD: 7})
		collector.Classify(&two[i]) // inherited, then fin-not-read
	}
	v.onUpdate(update{at: at, changes: snapAt(at, two), sample: true})
	v.onKey(key("enter"))
	s = v.render()
	for i, line := range strings.Split(s, "\n") {
		if n := lipgloss.Width(line); n > 80 {
			t.Errorf("line %d is %d wide: %q", i, n, line)
		}
	}
	if !strings.Contains(s, "inherited,fin-not-read") {
		t.Errorf("causes cut in the sockets view:\n%s", s)
	}
	if got := fitCauses([]collector.Cause{"inherited", "fin-not-read"}, 12); got != "inherited +1" {
		t.Errorf("fitCauses in 12 = %q, want whole names and a count", got)
	}
}
