package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
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

// TestTraceCommand runs closewait trace, makes a connection enter and
// leave CLOSE_WAIT once the trace says it is live, checks both lines, then
// cancels the context as Ctrl-C does and checks that the command returns
// cleanly and leaks no fd. It runs again with the verifier refusing the
// fd iterator: owners then come from /proc, and a warning says so.
func TestTraceCommand(t *testing.T) {
	requireBPF(t)
	for _, refuse := range []string{"", "dump_task_file"} {
		t.Run("refuse="+refuse, func(t *testing.T) {
			t.Setenv(ebpf.RefuseEnv, refuse)
			testTraceCommand(t, refuse != "")
		})
	}
}

func testTraceCommand(t *testing.T, refused bool) {
	ln := leaktest.Listen(t, "tcp4")
	fds := leaktest.CountFDs(t)
	var stdout syncBuffer
	stderr, stop := startTrace(t, &stdout, "-o", "jsonl", "--port", port(ln), "--pin-dir", t.TempDir())

	c := leaktest.CloseWait(t, ln, 1)[0]
	enter := waitEvent(t, &stdout, "enter", c.Remote.String())
	time.Sleep(50 * time.Millisecond)
	fd := int(c.File.Fd())
	c.File.Close()
	c.File = nil
	leave := waitEvent(t, &stdout, "leave", c.Remote.String())

	want := []report.OwnerJSON{{PID: os.Getpid(), Comm: leaktest.SelfComm(t), FD: fd}}
	for _, e := range []report.TraceJSON{enter, leave} {
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

	if err := stop(); err != nil {
		t.Errorf("trace returned %v after cancel", err)
	}
	tracing := "closewait: tracing TCP sockets entering and leaving CLOSE_WAIT (hook "
	if refused {
		tracing = "closewait: warning: verifier refused dump_task_file: R9 !read_ok: owners come from /proc\n" + tracing
	}
	if !strings.HasPrefix(stderr.String(), tracing) {
		t.Errorf("stderr %q: want %q first", stderr.String(), tracing)
	}
	leaktest.Release([]*leaktest.Conn{c})
	if got := leaktest.CountFDs(t); got != fds {
		t.Errorf("%d fds open after the trace, %d before", got, fds)
	}
}

// TestTraceResetLeave: a socket reset in CLOSE_WAIT (its closed peer
// answered data with an RST) reaches TCP_CLOSE after the kernel released
// its local port. The leave event still names the port, so --port keeps it.
func TestTraceResetLeave(t *testing.T) {
	requireBPF(t)
	ln := leaktest.Listen(t, "tcp4")
	var stdout syncBuffer
	_, stop := startTrace(t, &stdout, "-o", "jsonl", "--port", port(ln), "--pin-dir", t.TempDir())
	c := leaktest.CloseWait(t, ln, 1)[0]
	if _, err := c.File.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	leave := waitEvent(t, &stdout, "leave", c.Remote.String())
	want := []report.OwnerJSON{{PID: os.Getpid(), Comm: leaktest.SelfComm(t), FD: int(c.File.Fd())}}
	if leave.NewState != "CLOSE" || leave.Local != c.Local.String() || fmt.Sprint(leave.Owners) != fmt.Sprint(want) {
		t.Errorf("leave event %+v: want CLOSE, local %v, owners %+v", leave, c.Local, want)
	}
	if err := stop(); err != nil {
		t.Error(err)
	}
}

// TestTraceShortCloseWait: a server that closes as soon as it reads EOF
// keeps a socket in CLOSE_WAIT for microseconds, before any fd snapshot
// can see it. Both lines still name the process and fd that accepted it.
func TestTraceShortCloseWait(t *testing.T) {
	requireBPF(t)
	ln := leaktest.Listen(t, "tcp4")
	var stdout syncBuffer
	_, stop := startTrace(t, &stdout, "-o", "jsonl", "--port", port(ln), "--pin-dir", t.TempDir(), "--hook", "tp_btf")
	cl, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	sc, err := ln.AcceptTCP()
	if err != nil {
		t.Fatal(err)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var fd int
	rc.Control(func(s uintptr) { fd = int(s) })
	cl.Close()
	if _, err := io.ReadAll(sc); err != nil {
		t.Fatal(err)
	}
	sc.Close()

	remote := cl.LocalAddr().String()
	want := []report.OwnerJSON{{PID: os.Getpid(), Comm: leaktest.SelfComm(t), FD: fd}}
	for _, kind := range []string{"enter", "leave"} {
		e := waitEvent(t, &stdout, kind, remote)
		if fmt.Sprint(e.Owners) != fmt.Sprint(want) || e.OwnersUnknown || e.Inode == 0 {
			t.Errorf("%s event %+v: want owners %+v", kind, e, want)
		}
	}
	if err := stop(); err != nil {
		t.Error(err)
	}
}

// TestTraceDrainsOnInterrupt: events that happened before the interrupt
// but were still in the ring buffer are printed before trace returns. The
// trace is held in the middle of printing one event (its stdout blocks)
// while a second one happens and the context is cancelled.
func TestTraceDrainsOnInterrupt(t *testing.T) {
	requireBPF(t)
	ln := leaktest.Listen(t, "tcp4")
	out := &gatedWriter{started: make(chan struct{}), open: make(chan struct{})}
	_, stop := startTrace(t, out, "-o", "jsonl", "--port", port(ln), "--pin-dir", t.TempDir())
	first := leaktest.CloseWait(t, ln, 1)[0]
	select {
	case <-out.started:
	case <-time.After(10 * time.Second):
		t.Fatal("trace printed nothing")
	}
	second := leaktest.CloseWait(t, ln, 1)[0] // while the trace is busy
	errc := make(chan error, 1)
	go func() { errc <- stop() }()
	time.Sleep(50 * time.Millisecond) // let the cancel land before printing resumes
	close(out.open)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	for _, c := range []*leaktest.Conn{first, second} {
		if _, ok := findEvent(t, out.String(), "enter", c.Remote.String()); !ok {
			t.Errorf("no enter line for %v; stdout %q", c.Remote, out.String())
		}
	}
}

// gatedWriter blocks writes until open is closed; started is closed at
// the first write.
type gatedWriter struct {
	syncBuffer
	once    sync.Once
	started chan struct{}
	open    chan struct{}
}

func (g *gatedWriter) Write(p []byte) (int, error) {
	g.once.Do(func() { close(g.started) })
	<-g.open
	return g.syncBuffer.Write(p)
}

// startTrace runs closewait trace with args in this process and returns
// once it has said that it is tracing. stop cancels it as Ctrl-C does and
// returns its error; it runs at the latest when the test ends.
func startTrace(t *testing.T, stdout io.Writer, args ...string) (*syncBuffer, func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stderr := &syncBuffer{}
	done := make(chan error, 1)
	go func() { done <- run(ctx, append([]string{"trace"}, args...), stdout, stderr) }()
	var once sync.Once
	var err error
	stop := func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-done:
			case <-time.After(10 * time.Second):
				err = errors.New("trace did not stop within 10s of cancel")
			}
		})
		return err
	}
	t.Cleanup(func() { stop() })
	deadline := time.After(10 * time.Second)
	for !strings.Contains(stderr.String(), "closewait: tracing ") {
		select {
		case err := <-done:
			t.Fatalf("trace ended before tracing: %v; stderr %q", err, stderr.String())
		case <-deadline:
			t.Fatalf("trace not ready after 10s; stderr %q", stderr.String())
		case <-time.After(5 * time.Millisecond):
		}
	}
	return stderr, stop
}

// waitEvent waits up to 10 s for a JSON line of kind with this remote.
func waitEvent(t *testing.T, out *syncBuffer, kind, remote string) report.TraceJSON {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if e, ok := findEvent(t, out.String(), kind, remote); ok {
			return e
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s event for %s; stdout %q", kind, remote, out.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// findEvent returns the first JSON line of kind for the given remote.
func findEvent(t *testing.T, out, kind, remote string) (report.TraceJSON, bool) {
	t.Helper()
	for _, line := range strings.Split(out, "\n") {
		if line == "" {
			continue
		}
		var e report.TraceJSON
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("bad JSON line %q: %v", line, err)
		}
		if e.Event == kind && e.Remote == remote {
			return e, true
		}
	}
	return report.TraceJSON{}, false
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
		{[]string{"tracer", "status", "--pin-dir", dir}, 0, "; listing iterators pinned\n"},
		{[]string{"tracer", "status", "--pin-dir", dir, "-o", "json"}, 0, `"installed": true`},
		{[]string{"tracer", "status", "--pin-dir", dir, "-o", "json"}, 0, `"iterators": true`},
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
