package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/closewait/closewait/ebpf"
	"github.com/closewait/closewait/internal/leaktest"
	"github.com/closewait/closewait/report"
)

// requireBPF skips the test (fails it in CI) when BPF cannot load here.
func requireBPF(t *testing.T) {
	t.Helper()
	leaktest.RequireRoot(t)
	it, err := ebpf.LoadIterators(ebpf.IterOptions{PinDir: t.TempDir()})
	if err != nil {
		leaktest.Missing(t, fmt.Sprintf("BPF cannot load: %+v", err))
	}
	it.Close()
}

// testPinDir is a tracer pin directory of the test's own, so a real
// install is never touched; whatever is left there is removed at the end.
func testPinDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join("/sys/fs/bpf", fmt.Sprintf("closewait-test-%d-%s", os.Getpid(), strings.ReplaceAll(t.Name(), "/", "-")))
	t.Cleanup(func() { ebpf.RemoveTracer(dir) })
	return dir
}

func countFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// TestTraceCommand runs closewait trace, makes a connection enter and
// leave CLOSE_WAIT, checks both lines, then cancels the context as Ctrl-C
// does and checks that the command returns cleanly and leaks no fd.
func TestTraceCommand(t *testing.T) {
	requireBPF(t)
	ln := leaktest.Listen(t, "tcp4")
	fds := countFDs(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"trace", "-o", "jsonl", "--port", portOf(ln), "--pin-dir", t.TempDir()}, &stdout, &stderr)
	}()

	// The trace attaches a moment after it starts: connect until it sees one.
	var c *leaktest.Conn
	var tries []*leaktest.Conn
	var enter traceJSON
	deadline := time.Now().Add(10 * time.Second)
	for c == nil {
		if time.Now().After(deadline) {
			t.Fatalf("no enter event; stdout %q stderr %q", stdout.String(), stderr.String())
		}
		try := leaktest.CloseWait(t, ln, 1)[0]
		tries = append(tries, try)
		for end := time.Now().Add(300 * time.Millisecond); time.Now().Before(end) && c == nil; time.Sleep(10 * time.Millisecond) {
			if e, ok := findEvent(t, stdout.String(), "enter", try.Remote.String()); ok {
				c, enter = try, e
			}
		}
	}
	time.Sleep(50 * time.Millisecond)
	fd := int(c.File.Fd())
	c.File.Close()
	c.File = nil
	var leave traceJSON
	for ok := false; !ok; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no leave event; stdout %q", stdout.String())
		}
		leave, ok = findEvent(t, stdout.String(), "leave", c.Remote.String())
	}

	want := []report.OwnerJSON{{PID: os.Getpid(), Comm: selfComm(t), FD: fd}}
	for _, e := range []traceJSON{enter, leave} {
		if fmt.Sprint(e.Owners) != fmt.Sprint(want) || e.Local != c.Local.String() || e.Cookie == 0 {
			t.Errorf("%s event %+v: want owner %+v, local %v", e.Event, e, want, c.Local)
		}
	}
	if enter.OldState != "ESTABLISHED" || enter.NewState != "CLOSE_WAIT" || leave.OldState != "CLOSE_WAIT" || leave.NewState != "LAST_ACK" {
		t.Errorf("transitions %s -> %s, %s -> %s", enter.OldState, enter.NewState, leave.OldState, leave.NewState)
	}
	if leave.CloseWaitSeconds == nil || *leave.CloseWaitSeconds <= 0 {
		t.Errorf("leave event without duration: %+v", leave)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("trace returned %v after cancel", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("trace did not stop after cancel")
	}
	leaktest.Release(tries)
	if got := countFDs(t); got != fds {
		t.Errorf("%d fds open after the trace, %d before", got, fds)
	}
}

// findEvent returns the first JSON line of kind for the given remote.
func findEvent(t *testing.T, out, kind, remote string) (traceJSON, bool) {
	t.Helper()
	for _, line := range strings.Split(out, "\n") {
		if line == "" {
			continue
		}
		var e traceJSON
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("bad JSON line %q: %v", line, err)
		}
		if e.Event == kind && e.Remote == remote {
			return e, true
		}
	}
	return traceJSON{}, false
}

func selfComm(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/comm")
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// TestTracerCommand installs, inspects and removes the tracer through the
// command line, in a pin directory of its own.
func TestTracerCommand(t *testing.T) {
	requireBPF(t)
	dir := testPinDir(t)
	steps := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"tracer", "status", "--pin-dir", dir}, 1, "tracer not installed"},
		{[]string{"tracer", "install", "--pin-dir", dir}, 0, "tracer installed at " + dir},
		{[]string{"tracer", "install", "--pin-dir", dir}, 0, "tracer already installed"},
		{[]string{"tracer", "status", "--pin-dir", dir}, 0, "tracer installed: hook tp_btf"},
		{[]string{"tracer", "status", "--pin-dir", dir, "-o", "json"}, 0, `"installed": true`},
		{[]string{"tracer", "remove", "--pin-dir", dir}, 0, "tracer removed"},
		{[]string{"tracer", "remove", "--pin-dir", dir}, 0, "tracer not installed"},
		{[]string{"tracer", "status", "--pin-dir", dir, "-o", "json"}, 1, `"installed": false`},
	}
	for _, s := range steps {
		stdout, stderr, code := runArgs(t, s.args...)
		if code != s.code || !strings.Contains(stdout, s.want) || stderr != "" {
			t.Errorf("%s: exit %d, stdout %q, stderr %q; want exit %d and %q", strings.Join(s.args, " "), code, stdout, stderr, s.code, s.want)
		}
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("pin directory left behind: %v", err)
	}
}
