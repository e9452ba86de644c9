//go:build linux

package cli

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/closewait/closewait/collector"
	"github.com/closewait/closewait/internal/check"
	"github.com/closewait/closewait/internal/leaktest"
	"github.com/closewait/closewait/report"
)

// These tests build real CLOSE_WAIT sockets on loopback. Other tests make
// CLOSE_WAIT sockets at the same time, so every check is narrowed with
// --port to the test's own listener.

// perfItem is one parsed perfdata item.
type perfItem struct {
	value      float64
	unknown    bool // value "U"
	uom        string
	warn, crit string // ranges, "" when absent
	min, max   string
}

var (
	perfValue = regexp.MustCompile(`^(U|-?[0-9]+(\.[0-9]+)?)(s|ms|us|%|B|KB|MB|GB|TB|c)?$`)
	// A range: [@][start:]end, start may be ~; either side may be empty.
	perfRange = regexp.MustCompile(`^@?((~|-?[0-9]+(\.[0-9]+)?)?:)?(-?[0-9]+(\.[0-9]+)?)?$`)
	perfNum   = regexp.MustCompile(`^(-?[0-9]+(\.[0-9]+)?)?$`)
)

// parsePlugin splits monitoring-plugin output by the spec: the first line
// is "TEXT | PERFDATA", where PERFDATA is space-separated
// 'label'=value[UOM];[warn];[crit];[min];[max] items (the label quoted with
// single quotes when it holds spaces, ” for a quote); later lines are long
// output. It fails the test on anything the spec does not allow.
func parsePlugin(t *testing.T, out string) (text string, perf map[string]perfItem, long []string) {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	text, data, ok := strings.Cut(lines[0], "|")
	if !ok {
		t.Fatalf("no perfdata in %q", lines[0])
	}
	if strings.Contains(data, "|") {
		t.Fatalf("a second | in the first line: %q", lines[0])
	}
	perf = map[string]perfItem{}
	rest := strings.TrimSpace(data)
	for rest != "" {
		var label string
		if rest[0] == '\'' {
			i := 1
			for ; i < len(rest); i++ {
				if rest[i] == '\'' {
					if i+1 < len(rest) && rest[i+1] == '\'' {
						label += "'"
						i++
						continue
					}
					break
				}
				label += string(rest[i])
			}
			if i >= len(rest) || i+1 >= len(rest) || rest[i+1] != '=' {
				t.Fatalf("bad quoted label in %q", data)
			}
			rest = rest[i+2:]
		} else {
			var ok bool
			label, rest, ok = strings.Cut(rest, "=")
			if !ok || label == "" || strings.ContainsAny(label, " '") {
				t.Fatalf("bad label in %q", data)
			}
		}
		item, after, _ := strings.Cut(rest, " ")
		rest = strings.TrimLeft(after, " ")
		f := strings.Split(item, ";")
		if len(f) > 5 {
			t.Fatalf("%s: more than 5 fields in %q", label, item)
		}
		f = append(f, make([]string, 5-len(f))...)
		m := perfValue.FindStringSubmatch(f[0])
		if m == nil {
			t.Fatalf("%s: bad value %q", label, f[0])
		}
		p := perfItem{uom: m[3], warn: f[1], crit: f[2], min: f[3], max: f[4]}
		if m[1] == "U" {
			p.unknown = true
		} else {
			p.value, _ = strconv.ParseFloat(m[1], 64)
		}
		for _, r := range []string{p.warn, p.crit} {
			if !perfRange.MatchString(r) {
				t.Fatalf("%s: bad range %q", label, r)
			}
		}
		for _, n := range []string{p.min, p.max} {
			if !perfNum.MatchString(n) {
				t.Fatalf("%s: bad min/max %q", label, n)
			}
		}
		if _, dup := perf[label]; dup {
			t.Fatalf("label %s twice", label)
		}
		perf[label] = p
	}
	return strings.TrimSpace(text), perf, lines[1:]
}

// port is a listener's port, as a flag value.
func port(ln net.Listener) string {
	return strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
}

func TestParsePlugin(t *testing.T) {
	text, perf, long := parsePlugin(t, "CLOSEWAIT CRITICAL - 12 sockets | count=12;5;10 'a b''c'=3s;@1:2;~:4;0;100 oldest_seconds=U;60\nline 2\n")
	if text != "CLOSEWAIT CRITICAL - 12 sockets" || len(long) != 1 {
		t.Errorf("text %q long %q", text, long)
	}
	if p := perf["count"]; p.value != 12 || p.warn != "5" || p.crit != "10" {
		t.Errorf("count %+v", p)
	}
	if p := perf["a b'c"]; p.value != 3 || p.uom != "s" || p.warn != "@1:2" || p.max != "100" {
		t.Errorf("quoted %+v", p)
	}
	if p := perf["oldest_seconds"]; !p.unknown || p.warn != "60" {
		t.Errorf("unknown %+v", p)
	}
}

func TestCheckStatuses(t *testing.T) {
	tests := []struct {
		name    string
		network string
		sockets int
		args    []string
		code    int
		status  string
	}{
		{"ok without sockets", "tcp4", 0, []string{"--warn-count", "0"}, 0, "OK"},
		{"ok below the limits", "tcp6", 2, []string{"--warn-count", "2", "--crit-count", "5"}, 0, "OK"},
		{"warning", "tcp4", 3, []string{"--warn-count", "2", "--crit-count", "5"}, 1, "WARNING"},
		{"critical", "tcp6", 6, []string{"--warn-count", "2", "--crit-count", "5"}, 2, "CRITICAL"},
		{"critical only", "tcp4", 1, []string{"--crit-count", "0", "--warn-age", "off", "--crit-age", "off"}, 2, "CRITICAL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ln := leaktest.Listen(t, tt.network)
			leaktest.CloseWait(t, ln, tt.sockets)
			stdout, stderr, code := runArgs(t, append([]string{"check", "--port", port(ln)}, tt.args...)...)
			if code != tt.code {
				t.Errorf("exit %d, want %d\n%s%s", code, tt.code, stdout, stderr)
			}
			text, perf, long := parsePlugin(t, stdout)
			if want := fmt.Sprintf("CLOSEWAIT %s - %d socket", tt.status, tt.sockets); !strings.HasPrefix(text, want) {
				t.Errorf("status line %q, want it to start %q", text, want)
			}
			if c := perf["count"]; c.value != float64(tt.sockets) {
				t.Errorf("perfdata count %v, want %d", c.value, tt.sockets)
			}
			if _, ok := perf["oldest_seconds"]; !ok {
				t.Errorf("no oldest_seconds in perfdata")
			}
			if tt.code > 0 {
				pid := strconv.Itoa(os.Getpid())
				if len(long) != 1 || !strings.Contains(long[0], "pid "+pid+": ") {
					t.Errorf("offender lines %q, want this process (pid %s)", long, pid)
				}
			} else if len(long) != 0 {
				t.Errorf("offender lines when OK: %q", long)
			}
		})
	}
}

func TestCheckAgeFromStateFile(t *testing.T) {
	// Real sockets are young, so the test says they were first seen ten
	// minutes ago, as a cron run would have recorded them.
	ln := leaktest.Listen(t, "tcp4")
	conns := leaktest.CloseWait(t, ln, 2)
	opts := collector.Options{States: collector.StatesCloseWait}
	p, _ := strconv.Atoi(port(ln))
	opts.Filter.Ports = []uint16{uint16(p)}
	host, _ := os.Hostname()
	first := time.Now().Add(-10 * time.Minute)
	st := &check.State{Schema: check.StateSchema, Host: host, Scope: checkScope(&opts, 0),
		Time: first, Count: 2, Processes: []check.StateProcess{}}
	for _, c := range conns {
		var s syscall.Stat_t
		if err := syscall.Fstat(int(c.File.Fd()), &s); err != nil {
			t.Fatal(err)
		}
		st.Sockets = append(st.Sockets, check.StateSocket{State: "CLOSE_WAIT",
			Local: c.Local.String(), Remote: c.Remote.String(), Inode: s.Ino, FirstSeen: first})
	}
	path := filepath.Join(t.TempDir(), "state.json")
	writeState(t, path, st)

	// procfs knows no ages: the time since first seen is all there is.
	stdout, stderr, code := runArgs(t, "check", "--source", "procfs", "--port", port(ln), "--state-file", path)
	if code != 2 || stderr != "" {
		t.Fatalf("exit %d, stderr %q; want 2 (CRITICAL) and no warnings\n%s", code, stderr, stdout)
	}
	text, perf, _ := parsePlugin(t, stdout)
	if !strings.Contains(text, "oldest >=10m") {
		t.Errorf("status line %q does not say stuck at least 10m", text)
	}
	if o := perf["oldest_seconds"]; o.value < 600 || o.warn != "60" || o.crit != "300" {
		t.Errorf("oldest_seconds %+v, want >= 600;60;300", o)
	}

	// The other sources know an upper bound from the kernel (exact with the
	// tracer), and a first-seen time cannot push the age past it. The state
	// file the procfs run wrote keeps the first-seen times, now with cookies.
	stdout, _, code = runArgs(t, "check", "--port", port(ln), "--state-file", path)
	if code != 0 {
		t.Errorf("default source: exit %d, want 0: the kernel bounds the age below a minute\n%s", code, stdout)
	}
	if st := readState(t, path); len(st.Sockets) != 2 || !st.Sockets[0].FirstSeen.Equal(first.UTC()) {
		t.Errorf("first-seen times not kept across sources: %+v", st.Sockets)
	}
}

func writeState(t *testing.T, path string, st *check.State) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := st.Write(f); err != nil {
		t.Fatal(err)
	}
}

func readState(t *testing.T, path string) *check.State {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, err := check.ReadState(f)
	if err != nil {
		t.Fatalf("state file after the run: %v", err)
	}
	return st
}

func TestCheckGrowth(t *testing.T) {
	ln := leaktest.Listen(t, "tcp4")
	leaktest.CloseWait(t, ln, 2)
	path := filepath.Join(t.TempDir(), "state.json")
	args := []string{"check", "--port", port(ln), "--state-file", path, "--warn-growth", "2", "--crit-growth", "10"}

	stdout, _, code := runArgs(t, args...)
	if code != 0 || !strings.Contains(stdout, "growth unknown (no previous run)") {
		t.Fatalf("first run: exit %d\n%s", code, stdout)
	}
	if _, perf, _ := parsePlugin(t, stdout); !perf["growth"].unknown {
		t.Errorf("first run: growth %+v, want U", perf["growth"])
	}
	if st := readState(t, path); st.Count != 2 || len(st.Sockets) != 2 {
		t.Errorf("state after the first run: count %d, %d sockets; want 2", st.Count, len(st.Sockets))
	}

	leaktest.CloseWait(t, ln, 3)
	stdout, _, code = runArgs(t, args...)
	if code != 1 {
		t.Errorf("second run: exit %d, want 1 (WARNING)\n%s", code, stdout)
	}
	text, perf, _ := parsePlugin(t, stdout)
	if g := perf["growth"]; g.value != 3 || g.warn != "2" || g.crit != "10" {
		t.Errorf("growth %+v, want 3;2;10", g)
	}
	if !strings.Contains(text, ", +3 in ") {
		t.Errorf("status line %q does not show +3", text)
	}
	st := readState(t, path)
	if st.Count != 5 {
		t.Errorf("state count %d, want 5", st.Count)
	}
	// The state is replaced by rename: no temporary file is left behind.
	if ents, _ := os.ReadDir(filepath.Dir(path)); len(ents) != 1 {
		t.Errorf("state directory holds %d entries, want only the state file", len(ents))
	}
}

func TestCheckBadStateFiles(t *testing.T) {
	ln := leaktest.Listen(t, "tcp4")
	leaktest.CloseWait(t, ln, 1)
	host, _ := os.Hostname()
	tests := []struct {
		name, content, warn string
	}{
		{"corrupt", `{"schema":"closewait/check-state/v1","time":"2026-`, "corrupt state file"},
		{"not ours", "#!/bin/sh\necho hello\n", "corrupt state file"},
		{"another program's json", `{"version":3,"entries":[]}`, "not a state file of this check"},
		{"another host", `{"schema":"closewait/check-state/v1","host":"elsewhere","time":"2026-03-14T09:00:00Z"}`, `written on host "elsewhere"`},
		{"other filters", `{"schema":"closewait/check-state/v1","host":"` + host + `","scope":"states=all","time":"2026-03-14T09:00:00Z"}`, `written for "states=all"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "state.json")
			if err := os.WriteFile(path, []byte(tt.content), 0o644); err != nil {
				t.Fatal(err)
			}
			args := []string{"check", "--port", port(ln), "--state-file", path, "--warn-growth", "0"}
			stdout, stderr, code := runArgs(t, args...)
			if code != 0 {
				t.Errorf("exit %d, want 0: a fresh start has no growth\n%s%s", code, stdout, stderr)
			}
			// The warning goes into the long output, after the status
			// line, never to stderr before it.
			lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
			last := lines[len(lines)-1]
			if !strings.HasPrefix(lines[0], "CLOSEWAIT OK") || !strings.HasPrefix(last, "warning: state file") ||
				!strings.Contains(last, tt.warn) || !strings.Contains(last, "starting afresh") {
				t.Errorf("stdout %q, want the status line, then a warning naming %q", stdout, tt.warn)
			}
			if stderr != "" {
				t.Errorf("stderr %q, want nothing", stderr)
			}
			readState(t, path) // replaced by a good one
			// The next run uses it without complaint.
			stdout, stderr, code = runArgs(t, args...)
			if code != 0 || stderr != "" || !strings.Contains(stdout, "+0 in ") {
				t.Errorf("second run: exit %d, stderr %q\n%s", code, stderr, stdout)
			}
		})
	}
}

func TestCheckUnknown(t *testing.T) {
	ln := leaktest.Listen(t, "tcp4")
	leaktest.CloseWait(t, ln, 1)
	dir := t.TempDir()
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"state file in a missing directory", []string{"--state-file", filepath.Join(dir, "nope", "state.json")}, "writing state file"},
		{"unreadable state file", []string{"--state-file", unreadable(t)}, "reading state file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stdout, stderr, code := runArgs(t, append([]string{"check", "--port", port(ln)}, tt.args...)...)
			if code != 3 {
				t.Errorf("exit %d, want 3 (UNKNOWN)", code)
			}
			if !strings.HasPrefix(stdout, "CLOSEWAIT UNKNOWN - "+tt.want) || strings.Count(stdout, "\n") != 1 {
				t.Errorf("stdout %q, want one UNKNOWN line about %q", stdout, tt.want)
			}
			if stderr != "" {
				t.Errorf("stderr %q", stderr)
			}
		})
	}
	// -o json says UNKNOWN in JSON.
	stdout, _, code := runArgs(t, "check", "--port", port(ln), "-o", "json", "--state-file", filepath.Join(dir, "nope", "s.json"))
	var doc report.CheckDocument
	if err := json.Unmarshal([]byte(stdout), &doc); err != nil || code != 3 || doc.Status != "UNKNOWN" || doc.ExitCode != 3 || doc.Error == "" {
		t.Errorf("json: exit %d, err %v, doc %+v", code, err, doc)
	}
}

// unreadable returns a state file the check may open but not read. Root
// reads any mode and a directory is refused as a flag error, so take
// /proc/self/mem: a regular file whose read at offset 0 fails with EIO.
func unreadable(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat("/proc/self/mem"); err != nil {
		leaktest.Missing(t, fmt.Sprintf("no /proc/self/mem: %v", err))
	}
	return "/proc/self/mem"
}

func TestCheckBadFlags(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--warn-count", "x"}, "--warn-count"},
		{[]string{"--warn-count", "-1"}, "--warn-count"},
		{[]string{"--crit-count"}, "--crit-count"},
		{[]string{"--warn-age", "5q"}, "--warn-age"},
		{[]string{"--crit-age", "-1m"}, "--crit-age"},
		{[]string{"--warn-growth", "1"}, "--state-file"},
		{[]string{"--warn-count", "10", "--crit-count", "5"}, "--warn-count 10 is above --crit-count 5"},
		{[]string{"--warn-age", "10m", "--crit-age", "5m"}, "--warn-age 10m is above --crit-age 5m"},
		{[]string{"--warn-growth", "9", "--crit-growth", "3", "--state-file", filepath.Join(dir, "s")}, "--warn-growth"},
		{[]string{"--state-file", dir}, "not a regular file"},
		{[]string{"--port", "0"}, "--port"},
		{[]string{"--state", "bogus"}, "--state"},
		{[]string{"-o", "yaml"}, "--output"},
		{[]string{"extra"}, `"extra"`},
		{[]string{"--bogus"}, "--bogus"},
		{[]string{"--quiet", "--bogus"}, "--bogus"},       // --quiet never hides UNKNOWN
		{[]string{"--warn-age", "110000d"}, "--warn-age"}, // would wrap negative
		{[]string{"--crit-age", "36500d1h"}, "--crit-age"},
		{[]string{"--warn-count", "99999999999999999999"}, "out of range"},
		{[]string{"--state", "established", "--older-than", "1s"}, "not established"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			stdout, stderr, code := runArgs(t, append([]string{"check"}, tt.args...)...)
			if code != 3 {
				t.Errorf("exit %d, want 3 (UNKNOWN): 2 would read as CRITICAL", code)
			}
			if !strings.HasPrefix(stdout, "CLOSEWAIT UNKNOWN - ") || strings.Count(stdout, "\n") != 1 || !strings.Contains(stdout, tt.want) {
				t.Errorf("stdout %q, want one UNKNOWN line naming %s", stdout, tt.want)
			}
			if stderr != "" {
				t.Errorf("stderr %q, want nothing", stderr)
			}
		})
	}
	// With -o json, a bad flag is answered in JSON too, wherever -o is.
	for _, args := range [][]string{
		{"-o", "json", "--warn-count", "10", "--crit-count", "5"},
		{"--warn-count", "10", "--crit-count", "5", "--output=json"},
		{"--warn-count", "x", "-ojson"},
		{"--bogus", "-o", "json"},
	} {
		stdout, _, code := runArgs(t, append([]string{"check"}, args...)...)
		var doc report.CheckDocument
		if err := json.Unmarshal([]byte(stdout), &doc); err != nil || code != 3 || doc.Status != "UNKNOWN" || doc.Error == "" {
			t.Errorf("%q: exit %d, stdout %q (%v); want an UNKNOWN JSON document", args, code, stdout, err)
		}
	}
}

func TestCheckQuiet(t *testing.T) {
	ln := leaktest.Listen(t, "tcp4")
	leaktest.CloseWait(t, ln, 2)
	stdout, stderr, code := runArgs(t, "check", "--quiet", "--port", port(ln), "--warn-count", "2")
	if code != 0 || stdout != "" || stderr != "" {
		t.Errorf("OK with --quiet: exit %d, stdout %q, stderr %q; want silence", code, stdout, stderr)
	}
	stdout, _, code = runArgs(t, "check", "-q", "--port", port(ln), "--warn-count", "1")
	if code != 1 || !strings.HasPrefix(stdout, "CLOSEWAIT WARNING - 2 sockets") {
		t.Errorf("WARNING with --quiet: exit %d, stdout %q", code, stdout)
	}
}

func TestCheckPerProcess(t *testing.T) {
	ln := leaktest.Listen(t, "tcp4")
	leaktest.CloseWait(t, ln, 3)
	theirs := leaktest.CloseWait(t, ln, 2)
	child := leaktest.Hold(t, leaktest.Files(theirs))
	leaktest.Release(theirs)
	me := strconv.Itoa(os.Getpid())

	// The total of 5 is over 2, but per process only this one (3) is.
	stdout, _, code := runArgs(t, "check", "--port", port(ln), "--per-process", "--warn-count", "2", "--crit-count", "3")
	if code != 1 {
		t.Errorf("exit %d, want 1\n%s", code, stdout)
	}
	text, perf, long := parsePlugin(t, stdout)
	if !strings.HasPrefix(text, "CLOSEWAIT WARNING - 5 sockets") || !strings.Contains(text, "pid "+me+" with 3") {
		t.Errorf("status line %q", text)
	}
	if p := perf["process_count"]; p.value != 3 || p.warn != "2" || p.crit != "3" {
		t.Errorf("process_count %+v, want 3;2;3", p)
	}
	if c := perf["count"]; c.value != 5 || c.warn != "" {
		t.Errorf("count %+v, want 5 without limits", c)
	}
	if len(long) != 1 || !strings.Contains(long[0], "pid "+me+": 3 sockets") {
		t.Errorf("offenders %q, want only this process", long)
	}

	// -o json lists the offender with its own status.
	stdout, _, code = runArgs(t, "check", "--port", port(ln), "--per-process", "--warn-count", "1", "--crit-count", "2", "-o", "json")
	var doc report.CheckDocument
	if err := json.Unmarshal([]byte(stdout), &doc); err != nil {
		t.Fatalf("%v\n%s", err, stdout)
	}
	if code != 2 || doc.Status != "CRITICAL" || doc.ExitCode != 2 || doc.Count != 5 || !doc.Thresholds.PerProcess {
		t.Errorf("exit %d, doc %+v", code, doc)
	}
	got := map[int]string{}
	for _, o := range doc.Offenders {
		got[o.PID] = o.Status
	}
	if got[os.Getpid()] != "CRITICAL" || got[child.PID] != "WARNING" || len(got) != 2 {
		t.Errorf("offenders %v, want this process CRITICAL and the child %d WARNING", got, child.PID)
	}
}
