package report_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/closewait/closewait/collector"
	"github.com/closewait/closewait/internal/check"
	"github.com/closewait/closewait/report"
)

// checkTime is fixed so results never depend on the clock.
var checkTime = time.Date(2026, 3, 14, 9, 26, 53, 0, time.UTC)

// sock builds a CLOSE_WAIT socket: n numbers its client port, so sockets
// differ; age < 0 means unknown; exact marks the age exact.
func sock(n int, pid int, comm string, age time.Duration, exact bool, causes ...collector.Cause) collector.Socket {
	s := collector.Socket{
		Family: collector.FamilyIPv4, State: collector.StateCloseWait,
		Local:  netip.MustParseAddrPort("10.0.0.5:8080"),
		Remote: netip.AddrPortFrom(netip.MustParseAddr("10.0.0.17"), uint16(40000+n)),
		Inode:  uint64(90000 + n), Cookie: uint64(4000 + n),
		Inbound: true,
		Causes:  causes,
	}
	if age >= 0 {
		s.Age, s.AgeKnown, s.AgeExact = age, true, exact
	}
	if pid != 0 {
		s.Owners = []collector.Owner{{PID: pid, Comm: comm, FD: 3 + n}}
	}
	if len(causes) == 0 {
		s.Causes = []collector.Cause{collector.CauseEOFNotClosed}
	}
	return s
}

// many returns n sockets of one process, the first aged age and the rest younger.
func many(n, from, pid int, comm string, age time.Duration) []collector.Socket {
	out := make([]collector.Socket, n)
	for i := range out {
		out[i] = sock(from+i, pid, comm, age-time.Duration(i)*time.Second, false)
	}
	return out
}

func snapshot(socks ...[]collector.Socket) *collector.Snapshot {
	s := &collector.Snapshot{Host: "web-1", Time: checkTime, Source: "netlink"}
	for _, ss := range socks {
		s.Sockets = append(s.Sockets, ss...)
	}
	collector.SortByAge(s.Sockets)
	return s
}

// prevState is a previous run's state, 5 minutes before checkTime.
func prevState(count int, procs []check.StateProcess, socks ...check.StateSocket) *check.State {
	return &check.State{
		Schema: check.StateSchema, Host: "web-1", Time: checkTime.Add(-5 * time.Minute),
		Count: count, Processes: procs, Sockets: socks,
	}
}

func defaultAges() check.Thresholds {
	return check.Thresholds{WarnAge: new(time.Minute), CritAge: new(5 * time.Minute)}
}

// output renders the plugin output of r.
func output(t *testing.T, r *check.Result) string {
	t.Helper()
	var b bytes.Buffer
	if err := report.WriteCheck(&b, r, report.CheckTextOptions{}); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func TestEvaluate(t *testing.T) {
	tests := []struct {
		name   string
		snap   *collector.Snapshot
		th     check.Thresholds
		opts   check.Options
		status check.Status
		out    string // the whole plugin output
	}{
		{
			name:   "no sockets",
			snap:   snapshot(),
			th:     defaultAges(),
			status: check.StatusOK,
			out:    "CLOSEWAIT OK - 0 sockets in CLOSE_WAIT | count=0 oldest_seconds=0;60;300\n",
		},
		{
			// The example, to the byte.
			name: "issue example",
			snap: snapshot(many(10, 0, 812, "nginx", 840*time.Second), many(2, 100, 900, "java", 30*time.Second)),
			th: check.Thresholds{WarnCount: new(5), CritCount: new(10),
				WarnAge: new(time.Minute), CritAge: new(5 * time.Minute)},
			status: check.StatusCritical,
			out: "CLOSEWAIT CRITICAL - 12 sockets in CLOSE_WAIT, oldest >=14m (nginx pid 812, eof-not-closed) | count=12;5;10 oldest_seconds=840;60;300\n" +
				"CRITICAL: nginx pid 812: 10 sockets, oldest >=14m, eof-not-closed:10\n" +
				"CRITICAL: java pid 900: 2 sockets, oldest >=30s, eof-not-closed:2\n",
		},
		{
			name:   "count at the warning limit is OK",
			snap:   snapshot(many(5, 0, 812, "nginx", 10*time.Second)),
			th:     check.Thresholds{WarnCount: new(5), CritCount: new(10)},
			status: check.StatusOK,
			out:    "CLOSEWAIT OK - 5 sockets in CLOSE_WAIT, oldest >=10s (nginx pid 812, eof-not-closed) | count=5;5;10 oldest_seconds=10\n",
		},
		{
			name:   "count above warning",
			snap:   snapshot(many(6, 0, 812, "nginx", 10*time.Second)),
			th:     check.Thresholds{WarnCount: new(5), CritCount: new(10)},
			status: check.StatusWarning,
			out: "CLOSEWAIT WARNING - 6 sockets in CLOSE_WAIT, oldest >=10s (nginx pid 812, eof-not-closed) | count=6;5;10 oldest_seconds=10\n" +
				"WARNING: nginx pid 812: 6 sockets, oldest >=10s, eof-not-closed:6\n",
		},
		{
			name:   "warn-count 0 alerts on any socket",
			snap:   snapshot([]collector.Socket{sock(1, 812, "nginx", 0, true)}),
			th:     check.Thresholds{WarnCount: new(0)},
			status: check.StatusWarning,
			out: "CLOSEWAIT WARNING - 1 socket in CLOSE_WAIT, oldest 0ms (nginx pid 812, eof-not-closed) | count=1;0 oldest_seconds=0\n" +
				"WARNING: nginx pid 812: 1 socket, oldest 0ms, eof-not-closed:1\n",
		},
		{
			name:   "exact age above warning",
			snap:   snapshot([]collector.Socket{sock(1, 812, "nginx", 90*time.Second, true), sock(2, 900, "java", 5*time.Second, true)}),
			th:     defaultAges(),
			status: check.StatusWarning,
			out: "CLOSEWAIT WARNING - 2 sockets in CLOSE_WAIT, oldest 1m30s (nginx pid 812, eof-not-closed) | count=2 oldest_seconds=90;60;300\n" +
				"WARNING: nginx pid 812: 1 socket, oldest 1m30s, eof-not-closed:1\n",
		},
		{
			name:   "a lower-bound age counts as that age",
			snap:   snapshot([]collector.Socket{sock(1, 812, "nginx", 301*time.Second, false, collector.CauseFINNotRead)}),
			th:     defaultAges(),
			status: check.StatusCritical,
			out: "CLOSEWAIT CRITICAL - 1 socket in CLOSE_WAIT, oldest >=5m1s (nginx pid 812, fin-not-read) | count=1 oldest_seconds=301;60;300\n" +
				"CRITICAL: nginx pid 812: 1 socket, oldest >=5m1s, fin-not-read:1\n",
		},
		{
			name:   "ages are compared in whole seconds",
			snap:   snapshot([]collector.Socket{sock(1, 812, "nginx", 60*time.Second+900*time.Millisecond, true)}),
			th:     defaultAges(),
			status: check.StatusOK,
			out:    "CLOSEWAIT OK - 1 socket in CLOSE_WAIT, oldest 1m (nginx pid 812, eof-not-closed) | count=1 oldest_seconds=60;60;300\n",
		},
		{
			name:   "unknown ages (procfs)",
			snap:   snapshot([]collector.Socket{sock(1, 812, "nginx", -1, false), sock(2, 0, "", -1, false, collector.CauseNotAccepted)}),
			th:     defaultAges(),
			status: check.StatusOK,
			out:    "CLOSEWAIT OK - 2 sockets in CLOSE_WAIT, ages unknown | count=2 oldest_seconds=U;60;300\n",
		},
		{
			name: "first seen raises an unknown age",
			snap: snapshot([]collector.Socket{func() collector.Socket {
				s := sock(1, 812, "nginx", -1, false)
				s.Cookie = 0 // procfs: matched by 4-tuple and inode
				return s
			}()}),
			th: defaultAges(),
			opts: check.Options{Prev: prevState(1, nil, check.StateSocket{State: "CLOSE_WAIT",
				Local: "10.0.0.5:8080", Remote: "10.0.0.17:40001", Inode: 90001, FirstSeen: checkTime.Add(-10 * time.Minute)})},
			status: check.StatusCritical,
			// A previous run always gives growth: here its count was 1, but it
			// recorded no processes.
			out: "CLOSEWAIT CRITICAL - 1 socket in CLOSE_WAIT, oldest >=10m (nginx pid 812, eof-not-closed), +0 in 5m | count=1 oldest_seconds=600;60;300 growth=0\n" +
				"CRITICAL: nginx pid 812: 1 socket, oldest >=10m, eof-not-closed:1, +1\n",
		},
		{
			name: "first seen by cookie, capped by the kernel's upper bound",
			snap: snapshot([]collector.Socket{func() collector.Socket {
				s := sock(1, 812, "nginx", 2*time.Minute, false)
				s.AgeMax = 7 * time.Minute
				return s
			}()}),
			th: defaultAges(),
			opts: check.Options{Prev: prevState(1, nil, check.StateSocket{State: "CLOSE_WAIT",
				Cookie: 4001, Local: "10.9.9.9:1", Remote: "10.9.9.9:2", FirstSeen: checkTime.Add(-time.Hour)})},
			status: check.StatusCritical,
			// Raised to its upper bound, the age is exact.
			out: "CLOSEWAIT CRITICAL - 1 socket in CLOSE_WAIT, oldest 7m (nginx pid 812, eof-not-closed), +0 in 5m | count=1 oldest_seconds=420;60;300 growth=0\n" +
				"CRITICAL: nginx pid 812: 1 socket, oldest 7m, eof-not-closed:1, +1\n",
		},
		{
			// The socket was ESTABLISHED an hour ago: its time in CLOSE_WAIT
			// starts now, and a file without states matches nothing.
			name: "first seen in another state",
			snap: snapshot([]collector.Socket{sock(1, 812, "nginx", -1, false)}),
			th:   defaultAges(),
			opts: check.Options{Prev: prevState(1, nil,
				check.StateSocket{State: "ESTABLISHED", Cookie: 4001, Local: "10.0.0.5:8080", Remote: "10.0.0.17:40001", Inode: 90001, FirstSeen: checkTime.Add(-time.Hour)},
				check.StateSocket{Local: "10.0.0.5:8080", Remote: "10.0.0.17:40001", Inode: 90001, FirstSeen: checkTime.Add(-time.Hour)})},
			status: check.StatusOK,
			out:    "CLOSEWAIT OK - 1 socket in CLOSE_WAIT, ages unknown, +0 in 5m | count=1 oldest_seconds=U;60;300 growth=0\n",
		},
		{
			name:   "growth above warning",
			snap:   snapshot(many(5, 0, 812, "nginx", 10*time.Second)),
			th:     check.Thresholds{WarnGrowth: new(2), CritGrowth: new(10)},
			opts:   check.Options{Prev: prevState(2, []check.StateProcess{{PID: 812, Comm: "nginx", Sockets: 2}})},
			status: check.StatusWarning,
			out: "CLOSEWAIT WARNING - 5 sockets in CLOSE_WAIT, oldest >=10s (nginx pid 812, eof-not-closed), +3 in 5m | count=5 oldest_seconds=10 growth=3;2;10\n" +
				"WARNING: nginx pid 812: 5 sockets, oldest >=10s, eof-not-closed:5, +3\n",
		},
		{
			name:   "growth unknown without a previous run",
			snap:   snapshot(many(5, 0, 812, "nginx", 10*time.Second)),
			th:     check.Thresholds{WarnGrowth: new(2)},
			status: check.StatusOK,
			out:    "CLOSEWAIT OK - 5 sockets in CLOSE_WAIT, oldest >=10s (nginx pid 812, eof-not-closed), growth unknown (no previous run) | count=5 oldest_seconds=10 growth=U;2\n",
		},
		{
			name:   "shrinking is not growth",
			snap:   snapshot(many(1, 0, 812, "nginx", 10*time.Second)),
			th:     check.Thresholds{WarnGrowth: new(0)},
			opts:   check.Options{Prev: prevState(4, nil)},
			status: check.StatusOK,
			out:    "CLOSEWAIT OK - 1 socket in CLOSE_WAIT, oldest >=10s (nginx pid 812, eof-not-closed), -3 in 5m | count=1 oldest_seconds=10 growth=-3;0\n",
		},
		{
			name:   "per process: one process over, the total is not judged",
			snap:   snapshot(many(3, 0, 812, "nginx", 10*time.Second), many(2, 100, 900, "java", 20*time.Second)),
			th:     check.Thresholds{WarnCount: new(2), CritCount: new(4), PerProcess: true},
			status: check.StatusWarning,
			out: "CLOSEWAIT WARNING - 5 sockets in CLOSE_WAIT, oldest >=20s (java pid 900, eof-not-closed), worst nginx pid 812 with 3 | count=5 process_count=3;2;4 oldest_seconds=20\n" +
				"WARNING: nginx pid 812: 3 sockets, oldest >=10s, eof-not-closed:3\n",
		},
		{
			name:   "per process: only sockets without an owner",
			snap:   snapshot(many(3, 0, 0, "", 10*time.Second)),
			th:     check.Thresholds{WarnCount: new(2), PerProcess: true},
			status: check.StatusWarning,
			out: "CLOSEWAIT WARNING - 3 sockets in CLOSE_WAIT, oldest >=10s (no owner, eof-not-closed), worst no owner with 3 | count=3 process_count=3;2 oldest_seconds=10\n" +
				"WARNING: no owner: 3 sockets, oldest >=10s, eof-not-closed:3\n",
		},
		{
			name: "per process growth against the same pid and command",
			snap: snapshot(many(3, 0, 812, "nginx", 10*time.Second), many(3, 100, 900, "java", 20*time.Second)),
			th:   check.Thresholds{WarnGrowth: new(1), PerProcess: true},
			opts: check.Options{Prev: prevState(3, []check.StateProcess{
				{PID: 812, Comm: "nginx", Sockets: 3},
				{PID: 900, Comm: "python3", Sockets: 3}, // pid reused by another program
			})},
			status: check.StatusWarning,
			out: "CLOSEWAIT WARNING - 6 sockets in CLOSE_WAIT, oldest >=20s (java pid 900, eof-not-closed), worst java pid 900 with 3, +3 in 5m | count=6 process_count=3 oldest_seconds=20 growth=3 process_growth=3;1\n" +
				"WARNING: java pid 900: 3 sockets, oldest >=20s, eof-not-closed:3, +3\n",
		},
		{
			name:   "older-than counts only old sockets",
			snap:   snapshot(many(1, 0, 812, "nginx", 10*time.Minute), many(4, 100, 900, "java", 20*time.Second)),
			th:     check.Thresholds{WarnCount: new(0)},
			opts:   check.Options{OlderThan: time.Minute},
			status: check.StatusWarning,
			out: "CLOSEWAIT WARNING - 1 socket in CLOSE_WAIT, oldest >=10m (nginx pid 812, eof-not-closed) | count=1;0 oldest_seconds=600\n" +
				"WARNING: nginx pid 812: 1 socket, oldest >=10m, eof-not-closed:1\n",
		},
		{
			name:   "a command name cannot break the line",
			snap:   snapshot([]collector.Socket{sock(1, 812, "evil|x=1\n", 90*time.Second, true)}),
			th:     defaultAges(),
			status: check.StatusWarning,
			out: "CLOSEWAIT WARNING - 1 socket in CLOSE_WAIT, oldest 1m30s (evil/x=1\\x0a pid 812, eof-not-closed) | count=1 oldest_seconds=90;60;300\n" +
				"WARNING: evil/x=1\\x0a pid 812: 1 socket, oldest 1m30s, eof-not-closed:1\n",
		},
		{
			name:   "other states",
			snap:   snapshot([]collector.Socket{sock(1, 812, "nginx", -1, false)}),
			th:     check.Thresholds{},
			opts:   check.Options{States: collector.StatesCloseWait.With(collector.StateLastAck)},
			status: check.StatusOK,
			out:    "CLOSEWAIT OK - 1 socket in CLOSE_WAIT/LAST_ACK, ages unknown | count=1 oldest_seconds=U\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := check.Evaluate(tt.snap, tt.th, tt.opts)
			if r.Status != tt.status {
				t.Errorf("status %v, want %v", r.Status, tt.status)
			}
			if got := output(t, &r); got != tt.out {
				t.Errorf("output:\n%s\nwant:\n%s", got, tt.out)
			}
		})
	}
}

func TestEvaluateNextState(t *testing.T) {
	old := checkTime.Add(-time.Hour)
	snap := snapshot(many(2, 0, 812, "nginx", 10*time.Second), many(1, 100, 900, "java", 5*time.Minute))
	prev := prevState(1, nil, check.StateSocket{State: "CLOSE_WAIT", Cookie: 4000, Local: "10.0.0.5:8080", Remote: "10.0.0.17:40000", Inode: 90000, FirstSeen: old})
	r := check.Evaluate(snap, check.Thresholds{}, check.Options{Prev: prev, OlderThan: time.Minute})
	next := r.Next
	if next.Schema != check.StateSchema || next.Host != "web-1" || !next.Time.Equal(checkTime) {
		t.Errorf("header %q %q %v", next.Schema, next.Host, next.Time)
	}
	// Young sockets are remembered although --older-than hides them now.
	if len(next.Sockets) != 3 {
		t.Fatalf("%d sockets remembered, want 3: %+v", len(next.Sockets), next.Sockets)
	}
	first := map[uint64]time.Time{}
	for _, s := range next.Sockets {
		first[s.Cookie] = s.FirstSeen
	}
	if !first[4000].Equal(old) {
		t.Errorf("known socket first seen %v, want %v kept", first[4000], old)
	}
	if !first[4001].Equal(checkTime) || !first[4100].Equal(checkTime) {
		t.Errorf("new sockets first seen %v, %v; want now", first[4001], first[4100])
	}
	// The old socket is now an hour old, so it passes --older-than too.
	if next.Count != 2 || r.Count != 2 {
		t.Errorf("count %d (state %d), want 2: the socket first seen an hour ago and the 5m one", r.Count, next.Count)
	}
	if len(next.Processes) != 2 {
		t.Errorf("processes %+v", next.Processes)
	}
}

func TestCheckStateRoundTrip(t *testing.T) {
	snap := snapshot(many(3, 0, 812, "nginx", 10*time.Second))
	r := check.Evaluate(snap, check.Thresholds{}, check.Options{})
	r.Next.Scope = "states=close-wait"
	var b bytes.Buffer
	if err := r.Next.Write(&b); err != nil {
		t.Fatal(err)
	}
	st, err := check.ReadState(&b)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.SameScope("web-1", "states=close-wait"); err != nil {
		t.Error(err)
	}
	if err := st.SameScope("web-2", "states=close-wait"); !errors.Is(err, check.ErrForeignState) {
		t.Errorf("other host: %v, want ErrForeignState", err)
	}
	if err := st.SameScope("web-1", "states=close-wait port=80"); !errors.Is(err, check.ErrForeignState) {
		t.Errorf("other scope: %v, want ErrForeignState", err)
	}
	// A second run an hour later sees the sockets as stuck for an hour.
	later := *snap
	later.Time = checkTime.Add(time.Hour)
	r2 := check.Evaluate(&later, defaultAges(), check.Options{Prev: st})
	if r2.Status != check.StatusCritical || r2.Oldest == nil || r2.Oldest.Age != time.Hour {
		t.Errorf("second run: %s", report.CheckLine(&r2))
	}
}

func TestCheckJSON(t *testing.T) {
	snap := snapshot(many(3, 0, 812, "nginx", 10*time.Minute), many(1, 100, 900, "java", 10*time.Second))
	th := check.Thresholds{WarnCount: new(2), CritAge: new(5 * time.Minute)}
	r := check.Evaluate(snap, th, check.Options{})
	var b bytes.Buffer
	if err := report.WriteCheckJSON(&b, report.NewCheckDocument(&r, []string{"state file x: corrupt"})); err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(b.Bytes(), &doc); err != nil {
		t.Fatalf("%v\n%s", err, b.String())
	}
	want := map[string]any{
		"schema": "closewait/check/v1", "status": "CRITICAL", "exit_code": 2.0, "count": 4.0,
		"oldest_seconds": 600.0, "growth": nil, "previous_run": nil,
	}
	for k, v := range want {
		if fmt.Sprint(doc[k]) != fmt.Sprint(v) {
			t.Errorf("%s = %v, want %v", k, doc[k], v)
		}
	}
	th2 := doc["thresholds"].(map[string]any)
	if th2["warn_count"] != 2.0 || th2["crit_count"] != nil || th2["crit_age_seconds"] != 300.0 {
		t.Errorf("thresholds %v", th2)
	}
	alerts := doc["alerts"].([]any)
	if len(alerts) != 2 || alerts[0].(map[string]any)["metric"] != "oldest_seconds" {
		t.Errorf("alerts %v, want the critical age first, then the count", alerts)
	}
	// Both processes make up the count over its limit; only nginx is old.
	off := doc["offenders"].([]any)
	if len(off) != 2 {
		t.Fatalf("offenders %v", off)
	}
	o := off[0].(map[string]any)
	if o["pid"] != 812.0 || o["status"] != "CRITICAL" || o["sockets"] != 3.0 {
		t.Errorf("first offender %v", o)
	}
	if o := off[1].(map[string]any); o["pid"] != 900.0 || o["status"] != "WARNING" {
		t.Errorf("second offender %v", o)
	}
	if w := doc["warnings"].([]any); len(w) != 1 {
		t.Errorf("warnings %v", w)
	}
}

func TestPerfString(t *testing.T) {
	tests := []struct {
		p    report.Perf
		want string
	}{
		{report.Perf{Label: "count", Value: 12, Warn: new(5.0), Crit: new(10.0)}, "count=12;5;10"},
		{report.Perf{Label: "count", Value: 12}, "count=12"},
		{report.Perf{Label: "count", Value: 12, Crit: new(10.0)}, "count=12;;10"},
		{report.Perf{Label: "oldest_seconds", Unknown: true, Warn: new(60.0)}, "oldest_seconds=U;60"},
		{report.Perf{Label: "age", Value: 1.5}, "age=1.5"},
		{report.Perf{Label: "with space", Value: 1}, "'with space'=1"},
	}
	for _, tt := range tests {
		if got := tt.p.String(); got != tt.want {
			t.Errorf("%+v: %q, want %q", tt.p, got, tt.want)
		}
	}
}
