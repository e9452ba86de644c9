package watch

import (
	"math"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/closewait/closewait/collector"
)

var t0 = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)

// sock builds a CLOSE_WAIT socket held by pid (0: no owner) on local port
// port, aged age (exact when exact) at the snapshot's time.
func sock(cookie uint64, pid int, comm string, port uint16, age time.Duration, exact bool) collector.Socket {
	s := collector.Socket{
		Family: collector.FamilyIPv4,
		State:  collector.StateCloseWait,
		Local:  netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port),
		Remote: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(40000+cookie)),
		RecvQ:  1,
		Inode:  cookie + 1000,
		Cookie: cookie,
		// An age of -1 means unknown.
		Age: age, AgeKnown: age >= 0, AgeExact: exact && age >= 0,
		Inbound: true,
	}
	if exact {
		s.AgeMax = age
	}
	if pid != 0 {
		s.Owners = []collector.Owner{{PID: pid, Comm: comm, FD: int(cookie) + 3}}
	}
	collector.Classify(&s)
	return s
}

// socks builds n sockets of one process with cookies from first.
func socks(first uint64, n int, pid int, comm string, port uint16) []collector.Socket {
	var out []collector.Socket
	for i := range n {
		out = append(out, sock(first+uint64(i), pid, comm, port, time.Duration(i)*time.Second, true))
	}
	return out
}

// snapAt is a full poll at `at` of the given sockets.
func snapAt(at time.Time, ss ...[]collector.Socket) *collector.Changes {
	snap := &collector.Changes{Host: "h", Source: "netlink", Time: at, Full: true}
	for _, s := range ss {
		snap.Sockets = append(snap.Sockets, s...)
	}
	return snap
}

func rowOf(t *testing.T, rows []Row, pid int) Row {
	t.Helper()
	for _, r := range rows {
		if r.PID == pid {
			return r
		}
	}
	t.Fatalf("no row for pid %d in %+v", pid, rows)
	return Row{}
}

func TestSeriesRate(t *testing.T) {
	tests := []struct {
		name   string
		counts []int // one per second
		window time.Duration
		want   float64
		known  bool
	}{
		{"no samples", nil, time.Minute, 0, false},
		{"one sample", []int{5}, time.Minute, 0, false},
		{"flat", []int{5, 5, 5}, 2 * time.Second, 0, true},
		{"one per second", []int{0, 1, 2, 3}, 3 * time.Second, 60, true},
		{"falling", []int{10, 8, 6}, 2 * time.Second, -120, true},
		// Only the last 2 s count: 10 -> 14 is 2 per second.
		{"window cuts", []int{0, 0, 0, 10, 12, 14}, 2 * time.Second, 120, true},
		// 5 sockets in the first seconds of a minute's window: no rate
		// (it would read +25/min and forecast a limit from it).
		{"under the window", []int{0, 5, 5, 5, 5, 5, 5}, time.Minute, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSeries(8)
			for i, n := range tt.counts {
				s.add(t0.Add(time.Duration(i)*time.Second), n)
			}
			got, known := s.rate(tt.window)
			if known != tt.known || math.Abs(got-tt.want) > 1e-9 {
				t.Errorf("rate = %v, %v; want %v, %v", got, known, tt.want, tt.known)
			}
		})
	}
}

func TestSeriesRingKeepsLatest(t *testing.T) {
	s := newSeries(3)
	for i := range 10 {
		s.add(t0.Add(time.Duration(i)*time.Second), i)
	}
	if got := s.tail(5); !slices.Equal(got, []int{7, 8, 9}) {
		t.Errorf("tail = %v, want [7 8 9]", got)
	}
}

func TestSparkline(t *testing.T) {
	tests := []struct {
		counts []int
		want   string
	}{
		{nil, ""},
		{[]int{5, 5, 5}, "▁▁▁"},
		{[]int{0, 7}, "▁█"},
		{[]int{100, 101, 102, 103, 104, 105, 106, 107}, "▁▂▃▄▅▆▇█"},
	}
	for _, tt := range tests {
		if got := Sparkline(tt.counts); got != tt.want {
			t.Errorf("Sparkline(%v) = %q, want %q", tt.counts, got, tt.want)
		}
	}
}

func TestForecast(t *testing.T) {
	tests := []struct {
		name      string
		u         collector.FDUsage
		known     bool
		rate      float64
		rateKnown bool
		want      time.Duration
		wantKnown bool
	}{
		{"growing", collector.FDUsage{Open: 100, Limit: 1100}, true, 10, true, 100 * time.Minute, true},
		{"at the limit", collector.FDUsage{Open: 1024, Limit: 1024}, true, 0, false, 0, true},
		{"flat", collector.FDUsage{Open: 100, Limit: 1100}, true, 0, true, 0, false},
		{"shrinking", collector.FDUsage{Open: 100, Limit: 1100}, true, -5, true, 0, false},
		{"rate unknown", collector.FDUsage{Open: 100, Limit: 1100}, true, 0, false, 0, false},
		{"unlimited", collector.FDUsage{Open: 100}, true, 10, true, 0, false},
		{"fds unknown", collector.FDUsage{}, false, 10, true, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, known := forecast(tt.u, tt.known, tt.rate, tt.rateKnown)
			if got != tt.want || known != tt.wantKnown {
				t.Errorf("forecast = %v, %v; want %v, %v", got, known, tt.want, tt.wantKnown)
			}
		})
	}
}

// TestModelHistory polls a growing process, a steady one and one that
// appears later, every 20 s for a minute, and checks counts, changes,
// rates and the forecast: none for the one seen for less than the minute.
func TestModelHistory(t *testing.T) {
	m := NewModel(20*time.Second, 5*time.Second)
	steady := socks(1, 5, 200, "steady", 9000)
	for i := range 4 {
		at := t0.Add(time.Duration(i) * 20 * time.Second)
		grow := socks(100, 10+6*i, 100, "leaky", 8080) // +6 per sample: 18 a minute
		parts := [][]collector.Socket{grow, steady}
		if i >= 2 {
			parts = append(parts, socks(500, i, 300, "late", 7000))
		}
		m.Update(snapAt(at, parts...), at)
		m.Sample(at)
		m.SetFDs(100, collector.FDUsage{Open: 100 + 6*i, Limit: 1000}, true)
	}
	rows := m.Rows(SortCount, "")
	leaky := rowOf(t, rows, 100)
	if leaky.Count != 28 || leaky.Change != 18 {
		t.Errorf("leaky count, change = %d, %d; want 28, 18", leaky.Count, leaky.Change)
	}
	if !leaky.RateKnown || math.Abs(leaky.Rate-18) > 1e-6 {
		t.Errorf("leaky rate = %v (known %v), want 18/min", leaky.Rate, leaky.RateKnown)
	}
	// (1000 - 118) fds left at 18 per minute.
	if want := time.Duration(float64(1000-118) / 18 * float64(time.Minute)); !leaky.LimitInKnown || leaky.LimitIn != want {
		t.Errorf("leaky limit in = %v (known %v), want %v", leaky.LimitIn, leaky.LimitInKnown, want)
	}
	if !slices.Equal(leaky.Trend, []int{10, 16, 22, 28}) {
		t.Errorf("leaky trend = %v", leaky.Trend)
	}
	if s := rowOf(t, rows, 200); s.Change != 0 || s.Rate != 0 || !s.RateKnown || s.LimitInKnown {
		t.Errorf("steady row = %+v, want no change, rate 0, no forecast", s)
	}
	// A process that came later started from zero, and has no rate yet.
	if l := rowOf(t, rows, 300); l.Count != 3 || l.Change != 3 || l.RateKnown {
		t.Errorf("late row count, change, rate known = %d, %d, %v; want 3, 3, false", l.Count, l.Change, l.RateKnown)
	}
	h := m.Header()
	if h.Total != 36 || h.Change != 21 || !h.RateKnown {
		t.Errorf("header = %+v, want total 36, change +21", h)
	}
}

// TestModelProcessLeaves keeps a process whose sockets closed for a while,
// with its drop, then forgets it.
func TestModelProcessLeaves(t *testing.T) {
	m := NewModel(time.Second, 5*time.Second)
	m.Update(snapAt(t0, socks(1, 4, 100, "app", 80)), t0)
	m.Sample(t0)
	at := t0.Add(time.Second)
	m.Update(snapAt(at), at)
	m.Sample(at)
	r := rowOf(t, m.Rows(SortCount, ""), 100)
	if r.Count != 0 || r.Change != -4 {
		t.Errorf("row after close = %+v, want count 0, change -4", r)
	}
	at = t0.Add(rateWindow + 2*time.Second)
	m.Update(snapAt(at), at)
	m.Sample(at)
	if rows := m.Rows(SortCount, ""); len(rows) != 0 {
		t.Errorf("rows a minute later = %+v, want none", rows)
	}
}

// TestModelChangeSinceStart: the header's change, like each row's, counts
// from the first sample, even once the history has rolled past it.
func TestModelChangeSinceStart(t *testing.T) {
	m := NewModel(time.Second, 5*time.Second)
	var at time.Time
	for i := range 3 * int(rateWindow/time.Second) {
		at = t0.Add(time.Duration(i) * time.Second)
		m.Update(snapAt(at, socks(1, 10+i, 100, "app", 80)), at)
		m.Sample(at)
	}
	n := 3*int(rateWindow/time.Second) - 1
	if h := m.Header(); h.Total != 10+n || h.Change != n {
		t.Errorf("header total, change = %d, %d; want %d, %d", h.Total, h.Change, 10+n, n)
	}
	if r := rowOf(t, m.Rows(SortCount, ""), 100); r.Change != n {
		t.Errorf("row change = %d, want %d", r.Change, n)
	}
}

func TestModelSort(t *testing.T) {
	m := NewModel(30*time.Second, 5*time.Second)
	// pid 1: many sockets, flat; pid 2: few, fast growing and oldest;
	// pid 3: medium, slow growing, nearest fd limit. A minute of samples.
	for i := range 3 {
		at := t0.Add(time.Duration(i) * 30 * time.Second)
		s1 := socks(1, 50, 1, "many", 80)
		s2 := socks(1000, 2+10*i, 2, "fast", 81)
		s2[0] = sock(1000, 2, "fast", 81, time.Hour+time.Duration(i)*time.Second, true)
		s3 := socks(2000, 20+i, 3, "slow", 82)
		m.Update(snapAt(at, s1, s2, s3), at)
		m.Sample(at)
	}
	m.SetFDs(2, collector.FDUsage{Open: 100, Limit: 100000}, true)
	m.SetFDs(3, collector.FDUsage{Open: 1000, Limit: 1010}, true)
	tests := []struct {
		key  SortKey
		want []int
	}{
		{SortCount, []int{1, 2, 3}},  // 50, 22, 22 (tie: by pid)
		{SortRate, []int{2, 3, 1}},   // 20, 2, 0 per minute
		{SortOldest, []int{2, 1, 3}}, // 1h, 49s, 22s
		{SortLimit, []int{3, 2, 1}},  // 10 fds at 2/min, 99900 at 20/min, unknown
		{SortPID, []int{1, 2, 3}},
	}
	for _, tt := range tests {
		t.Run(tt.key.String(), func(t *testing.T) {
			var got []int
			for _, r := range m.Rows(tt.key, "") {
				got = append(got, r.PID)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("order = %v, want %v", got, tt.want)
			}
		})
	}
	if k := SortPID.Next(); k != SortCount {
		t.Errorf("sort after pid = %v, want count", k)
	}
}

func TestModelFilter(t *testing.T) {
	m := NewModel(time.Second, 5*time.Second)
	m.Update(snapAt(t0,
		socks(1, 3, 100, "nginx", 8080),
		socks(10, 2, 200, "java", 9090),
		socks(20, 1, 8080, "other", 5000), // pid 8080 on another port
		[]collector.Socket{sock(30, 0, "", 7000, time.Second, true)},
	), t0)
	m.Sample(t0)
	tests := []struct {
		filter string
		want   []int
	}{
		{"", []int{100, 200, 0, 8080}},
		{"ngi", []int{100}},
		{"JAVA", []int{200}},
		{"9090", []int{200}},
		{"8080", []int{100, 8080}}, // the port, and the pid
		{"7000", []int{0}},
		{"nothing", nil},
	}
	for _, tt := range tests {
		t.Run(tt.filter, func(t *testing.T) {
			var got []int
			for _, r := range m.Rows(SortCount, tt.filter) {
				got = append(got, r.PID)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("rows = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestModelAges checks that ages grow with the clock between polls, that
// an exact age from an event survives a poll with bounds only, and that
// Oldest follows the samples without a change to the set.
func TestModelAges(t *testing.T) {
	m := NewModel(time.Second, 5*time.Second)
	ev := sock(1, 100, "app", 80, 0, true)
	m.Update(&collector.Changes{Time: t0, Sockets: []collector.Socket{ev}}, t0)
	m.Sample(t0)
	// A poll 10 s later knows only a lower bound of 4 s.
	at := t0.Add(10 * time.Second)
	polled := sock(1, 100, "app", 80, 4*time.Second, false)
	m.Update(snapAt(at, []collector.Socket{polled}), at)
	m.Sample(at)
	r := rowOf(t, m.Rows(SortCount, ""), 100)
	if r.Oldest != 10*time.Second || !r.OldestExact {
		t.Errorf("oldest = %v exact %v, want exact 10s", r.Oldest, r.OldestExact)
	}
	m.Sample(at.Add(5 * time.Second))
	if r := rowOf(t, m.Rows(SortCount, ""), 100); r.Oldest != 15*time.Second {
		t.Errorf("oldest 5 s later = %v, want 15s", r.Oldest)
	}
	socks := m.Sockets(100, "", false)
	if len(socks) != 1 || socks[0].Socket.Age != 15*time.Second || !socks[0].Socket.AgeExact {
		t.Errorf("drill-down = %+v", socks)
	}
}

func TestMergeAges(t *testing.T) {
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	tests := []struct {
		name     string
		old, new sockMeta
		want     sockMeta
	}{
		{"unknown old", sockMeta{}, sockMeta{known: true, latest: at(5)}, sockMeta{known: true, latest: at(5)}},
		{"unknown new", sockMeta{known: true, latest: at(5)}, sockMeta{}, sockMeta{known: true, latest: at(5)}},
		{"exact wins", sockMeta{known: true, exact: true, latest: at(3), earliest: at(3)},
			sockMeta{known: true, latest: at(1)}, sockMeta{known: true, exact: true, latest: at(3), earliest: at(3)}},
		{"tightest bounds", sockMeta{known: true, latest: at(5), earliest: at(0)},
			sockMeta{known: true, latest: at(7), earliest: at(2)}, sockMeta{known: true, latest: at(5), earliest: at(2)}},
		{"bounds meet", sockMeta{known: true, latest: at(4), earliest: at(1)},
			sockMeta{known: true, latest: at(6), earliest: at(4)}, sockMeta{known: true, exact: true, latest: at(4), earliest: at(4)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.new
			mergeAges(&got, &tt.old)
			if got != tt.want {
				t.Errorf("merged = %+v, want %+v", got, tt.want)
			}
		})
	}
}

// TestModelEvents applies tracer events: new sockets are highlighted, left
// ones go, and a poll afterwards keeps the first-seen time.
func TestModelEvents(t *testing.T) {
	m := NewModel(time.Second, 5*time.Second)
	m.Update(snapAt(t0, socks(1, 2, 100, "app", 80)), t0)
	m.Sample(t0)
	at := t0.Add(500 * time.Millisecond)
	m.Update(&collector.Changes{Time: at, Sockets: []collector.Socket{sock(10, 100, "app", 80, 0, true)}}, at)
	m.Leave([]collector.SocketID{{Cookie: 1}}, at)
	m.Sample(t0.Add(time.Second))
	r := rowOf(t, m.Rows(SortCount, ""), 100)
	if r.Count != 2 || r.New != 1 {
		t.Errorf("after events: count %d new %d, want 2, 1", r.Count, r.New)
	}
	got := m.Sockets(100, "", true)
	if len(got) != 2 || got[0].Socket.Cookie != 10 || !got[0].New || got[1].New {
		t.Errorf("newest first = %+v", got)
	}
	// Still in the next poll; no longer new 6 s later.
	at = t0.Add(7 * time.Second)
	m.Update(snapAt(at, []collector.Socket{sock(2, 100, "app", 80, 8*time.Second, true), sock(10, 100, "app", 80, 7*time.Second, true)}), at)
	m.Sample(at)
	if r := rowOf(t, m.Rows(SortCount, ""), 100); r.New != 0 {
		t.Errorf("new after the highlight time = %d, want 0", r.New)
	}
}

// queuedSock builds a socket waiting in the accept queue of a listener
// held by pid (0: none).
func queuedSock(cookie uint64, pid int, comm string, port uint16) collector.Socket {
	s := sock(cookie, 0, "", port, time.Second, true)
	s.Inode = 0
	if pid != 0 {
		s.Listener = []collector.Owner{{PID: pid, Comm: comm, FD: 5}}
	}
	collector.Classify(&s)
	return s
}

// TestModelQueued shows sockets in accept queues under their listener's
// process, marked not accepted: two stalled listeners get a row each, and
// only a socket no process listens for goes to the '-' row.
func TestModelQueued(t *testing.T) {
	m := NewModel(time.Second, 5*time.Second)
	m.Update(snapAt(t0, socks(1, 2, 100, "nginx", 80),
		[]collector.Socket{queuedSock(10, 200, "java", 9090), queuedSock(11, 200, "java", 9090)},
		[]collector.Socket{queuedSock(20, 300, "redis", 6379)},
		[]collector.Socket{queuedSock(30, 0, "", 7000)}), t0)
	m.Sample(t0)
	at := t0.Add(time.Second)
	m.Update(&collector.Changes{Time: at, Sockets: []collector.Socket{queuedSock(12, 200, "java", 9090)}}, at)
	m.Sample(at)

	rows := m.Rows(SortCount, "")
	for _, want := range []struct {
		pid, count, new int
		cause           collector.Cause
	}{
		{100, 2, 0, collector.CauseFINNotRead},
		{200, 3, 1, collector.CauseNotAccepted},
		{300, 1, 0, collector.CauseNotAccepted},
		{0, 1, 0, collector.CauseNotAccepted},
	} {
		if r := rowOf(t, rows, want.pid); r.Count != want.count || r.New != want.new || r.Cause != want.cause {
			t.Errorf("row %d: count %d new %d cause %s; want %d, %d, %s", want.pid, r.Count, r.New, r.Cause, want.count, want.new, want.cause)
		}
	}
	if len(rows) != 4 {
		t.Errorf("%d rows, want 4: %+v", len(rows), rows)
	}
	got := m.Sockets(200, "", false)
	if len(got) != 3 {
		t.Fatalf("Sockets(200) = %d sockets, want the 3 queued", len(got))
	}
	for _, r := range got {
		if len(r.FDs) != 0 || !slices.Contains(r.Socket.Causes, collector.CauseNotAccepted) {
			t.Errorf("queued socket %d: fds %v causes %v", r.Socket.Cookie, r.FDs, r.Socket.Causes)
		}
	}
	if rows := m.Rows(SortCount, "6379"); len(rows) != 1 || rows[0].PID != 300 {
		t.Errorf("filter by the listener's port: %+v", rows)
	}
}

func TestModelSocketsFilter(t *testing.T) {
	m := NewModel(time.Second, 5*time.Second)
	a := sock(1, 100, "app", 80, 3*time.Second, true)
	b := sock(2, 100, "app", 443, 9*time.Second, true)
	c := sock(3, 200, "other", 80, time.Second, true)
	m.Update(snapAt(t0, []collector.Socket{a, b, c}), t0)
	m.Sample(t0)
	tests := []struct {
		pid    int
		filter string
		want   []uint64 // cookies
	}{
		{100, "", []uint64{2, 1}}, // oldest first
		{100, "443", []uint64{2}},
		{100, "100", []uint64{2, 1}}, // the pid itself: all its sockets
		{100, "app", []uint64{2, 1}}, // a command filter keeps every socket
		{200, "", []uint64{3}},
		{300, "", nil},
	}
	for _, tt := range tests {
		var got []uint64
		for _, r := range m.Sockets(tt.pid, tt.filter, false) {
			got = append(got, r.Socket.Cookie)
			if !slices.Contains(r.FDs, int(r.Socket.Cookie)+3) {
				t.Errorf("socket %d fds = %v", r.Socket.Cookie, r.FDs)
			}
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("Sockets(%d, %q) = %v, want %v", tt.pid, tt.filter, got, tt.want)
		}
	}
}

func TestMainCause(t *testing.T) {
	tests := []struct {
		counts map[collector.Cause]int
		want   collector.Cause
	}{
		{nil, ""},
		{map[collector.Cause]int{collector.CauseFINNotRead: 3, collector.CauseEOFNotClosed: 5}, collector.CauseEOFNotClosed},
		// A tie goes to the more telling cause.
		{map[collector.Cause]int{collector.CauseEOFNotClosed: 2, collector.CauseInherited: 2}, collector.CauseInherited},
	}
	for _, tt := range tests {
		if got := mainCause(tt.counts); got != tt.want {
			t.Errorf("mainCause(%v) = %q, want %q", tt.counts, got, tt.want)
		}
	}
}

func TestFormat(t *testing.T) {
	tests := []struct{ got, want string }{
		{formatChange(3), "+3"},
		{formatChange(-2), "-2"},
		{formatChange(0), "0"},
		{formatRate(0, false), "-"},
		{formatRate(0.01, true), "0"},
		{formatRate(2.34, true), "+2.3"},
		{formatRate(-12.6, true), "-13"},
		{formatLimitIn(0, false), "-"},
		{formatLimitIn(0, true), "now"},
		{formatLimitIn(42*time.Second, true), "~42s"},
		{formatLimitIn(90*time.Minute, true), "~2h"},
		{formatLimitIn(5*24*time.Hour, true), "~5d"},
		{formatFDs(collector.FDUsage{Open: 12, Limit: 1024}, true), "12/1024"},
		{formatFDs(collector.FDUsage{Open: 12}, true), "12/-"},
		{formatFDs(collector.FDUsage{}, false), "-"},
		{formatInterval(time.Second), "1s"},
		{formatInterval(2 * time.Minute), "2m"},
		{formatInterval(1500 * time.Millisecond), "1.5s"},
		{fit("abcdef", 4, false), "abc…"},
		{fit("123456", 4, true), "123456"},
		{fit("12", 4, true), "  12"},
	}
	for i, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("case %d: got %q, want %q", i, tt.got, tt.want)
		}
	}
}

func TestWriteSnapshot(t *testing.T) {
	m := NewModel(time.Second, 5*time.Second)
	m.Update(snapAt(t0, socks(1, 3, 100, "nginx\x1b[31m", 8080)), t0)
	m.Sample(t0)
	var b strings.Builder
	writeSnapshot(&b, m.Header(), m.Rows(SortCount, ""), "CLOSE_WAIT", "every 1s")
	out := b.String()
	for _, want := range []string{"2026-11-23T12:00:00Z", "CLOSE_WAIT 3", "host h", "source netlink", "every 1s", "PID", `nginx\x1b[31m`} {
		if !strings.Contains(out, want) {
			t.Errorf("snapshot lacks %q:\n%s", want, out)
		}
	}
	if strings.ContainsRune(out, '\x1b') {
		t.Errorf("snapshot has an escape code:\n%q", out)
	}
	b.Reset()
	writeSnapshot(&b, Header{Time: t0}, nil, "CLOSE_WAIT", "every 1s")
	if !strings.Contains(b.String(), "no CLOSE_WAIT sockets") {
		t.Errorf("empty snapshot:\n%s", b.String())
	}
}

// TestModelClosed: a process that holds only fds of sockets the kernel
// closed has a row, with its count of them, and the plain snapshot shows
// the CLOSED column only when some row has one.
func TestModelClosed(t *testing.T) {
	m := NewModel(time.Second, 5*time.Second)
	m.Update(snapAt(t0, socks(1, 2, 100, "nginx", 8080)), t0)
	m.Sample(t0)
	var b strings.Builder
	writeSnapshot(&b, m.Header(), m.Rows(SortCount, ""), "CLOSE_WAIT", "every 1s")
	if strings.Contains(b.String(), "CLOSED") {
		t.Errorf("CLOSED column without closed sockets:\n%s", b.String())
	}
	m.SetClosed(map[int]ClosedFDs{100: {"nginx", 1}, 300: {"java", 4}})
	rows := m.Rows(SortCount, "")
	if r := rowOf(t, rows, 300); r.Count != 0 || r.Closed != 4 || r.Comm != "java" {
		t.Errorf("closed-only row %+v, want java with 4 closed", r)
	}
	if r := rowOf(t, rows, 100); r.Count != 2 || r.Closed != 1 {
		t.Errorf("nginx row %+v, want 2 and 1 closed", r)
	}
	b.Reset()
	writeSnapshot(&b, m.Header(), rows, "CLOSE_WAIT", "every 1s")
	if !strings.Contains(b.String(), "CLOSED") {
		t.Errorf("no CLOSED column:\n%s", b.String())
	}
}
