package cli

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/closewait/closewait/ebpf"
	"github.com/closewait/closewait/internal/leaktest"
)

// TestWatchPlain runs watch with stdout not a terminal: plain snapshots,
// --count of them, no escape codes, the test's own sockets in them.
func TestWatchPlain(t *testing.T) {
	ln := leaktest.Listen(t, "tcp4")
	leaktest.CloseWait(t, ln, 3)
	row := regexp.MustCompile(fmt.Sprintf(`(?m)^ *%d +%s +3 `, os.Getpid(), regexp.QuoteMeta(leaktest.SelfComm(t))))
	// The last mode has the verifier refuse both iterators: the listing
	// falls back to netlink, the tracer's events still drive the view.
	for _, mode := range []string{"--no-tracer", "--interval=200ms", "refused"} {
		t.Run(mode, func(t *testing.T) {
			if mode == "refused" {
				t.Setenv(ebpf.RefuseEnv, "dump_task_file,dump_tcp")
				mode = "--interval=200ms"
			}
			stdout, stderr, code := runArgs(t, "watch", "--count", "2", "--interval", "200ms", mode, "--port", port(ln))
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			if n := strings.Count(stdout, "CLOSE_WAIT 3 "); n != 2 {
				t.Errorf("want 2 snapshots of 3 sockets:\n%s", stdout)
			}
			if n := len(row.FindAllString(stdout, -1)); n != 2 {
				t.Errorf("want the test process's row twice:\n%s", stdout)
			}
			if strings.ContainsRune(stdout, '\x1b') {
				t.Errorf("escape codes in plain output: %q", stdout)
			}
			// As root the tracer's events drive the view; it must not
			// have fallen back to polling unseen.
			want := "every 200ms"
			if mode != "--no-tracer" && os.Geteuid() == 0 {
				want = "tracer events"
			}
			if n := strings.Count(stdout, want); n != 2 {
				t.Errorf("want %q in both headers (stderr %q):\n%s", want, stderr, stdout)
			}
		})
	}
}

func TestWatchBadFlags(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"watch", "--interval", "10ms"}, "--interval"},
		{[]string{"watch", "--interval", "soon"}, "--interval"},
		{[]string{"watch", "--count", "-1"}, "--count"},
		{[]string{"watch", "--count", "x"}, "--count"},
		{[]string{"watch", "now"}, "unexpected argument"},
		{[]string{"watch", "--port", "0"}, "--port"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) { assertUsageError(t, tt.want, tt.args...) })
	}
	stdout, _, code := runArgs(t, "watch", "--help")
	if code != 0 || !strings.Contains(stdout, "--interval") || !strings.Contains(stdout, "Examples:") {
		t.Errorf("watch --help: exit %d\n%s", code, stdout)
	}
}

// tmuxPane is a detached tmux session on its own server, running an
// interactive shell with a known prompt.
type tmuxPane struct {
	t      *testing.T
	socket string
}

const tmuxPrompt = "WATCHTEST$ "

func startTmux(t *testing.T, width, height int) *tmuxPane {
	t.Helper()
	if _, err := exec.LookPath("tmux"); err != nil {
		leaktest.Missing(t, "tmux not installed (Debian package tmux; make deps installs it)")
	}
	// A server of its own per test: one killed at a test's end may still be
	// going when the next test starts one.
	p := &tmuxPane{t: t, socket: fmt.Sprintf("closewait-test-%d-%s", os.Getpid(), strings.ReplaceAll(t.Name(), "/", "_"))}
	shell := "env PS1='" + tmuxPrompt + "' TERM=xterm-256color bash --norc --noprofile -i"
	p.tmux("new-session", "-d", "-x", strconv.Itoa(width), "-y", strconv.Itoa(height), shell)
	t.Cleanup(func() { exec.Command("tmux", "-L", p.socket, "kill-server").Run() })
	p.waitText(strings.TrimSpace(tmuxPrompt)) // capture-pane drops trailing blanks
	return p
}

func (p *tmuxPane) tmux(args ...string) string {
	p.t.Helper()
	out, err := exec.Command("tmux", append([]string{"-L", p.socket}, args...)...).CombinedOutput()
	if err != nil {
		p.t.Fatalf("tmux %v: %v: %s", args, err, out)
	}
	return string(out)
}

func (p *tmuxPane) keys(keys ...string) {
	p.t.Helper()
	p.tmux(append([]string{"send-keys"}, keys...)...)
}

func (p *tmuxPane) screen() string { return p.tmux("capture-pane", "-p") }

// waitFor captures the pane until ok accepts it. The deadline only ends a
// test that would hang; nothing is asserted about how long it takes.
func (p *tmuxPane) waitFor(what string, ok func(string) bool) string {
	p.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		s := p.screen()
		if ok(s) {
			return s
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("waiting for %s; the pane shows:\n%s", what, s)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (p *tmuxPane) waitText(text string) string {
	p.t.Helper()
	return p.waitFor(strconv.Quote(text), func(s string) bool { return strings.Contains(s, text) })
}

// TestWatchTmux runs the full-screen view in tmux, built from this
// repository: the test's sockets show up and grow, s sorts, Enter drills
// down, Esc goes back, q quits and the shell works again.
func TestWatchTmux(t *testing.T) {
	pane := startTmux(t, 160, 40)
	bin := closewaitBinary(t)
	ln := leaktest.Listen(t, "tcp4")
	leaktest.CloseWait(t, ln, 3)
	pid, comm := strconv.Itoa(os.Getpid()), leaktest.SelfComm(t)
	rowWith := func(count int) func(string) bool {
		re := regexp.MustCompile(fmt.Sprintf(`(?m)^.. *%s +%s +%d `, pid, regexp.QuoteMeta(comm), count))
		return func(s string) bool { return re.MatchString(s) }
	}

	pane.keys(bin+" watch --interval 300ms --port "+port(ln), "Enter")
	pane.waitFor("the test process with 3 sockets", rowWith(3))
	leaktest.CloseWait(t, ln, 2)
	pane.waitFor("the test process with 5 sockets", rowWith(5))

	pane.keys("s")
	pane.waitText("sort: rate")
	pane.keys("Enter")
	screen := pane.waitText(fmt.Sprintf("PID %s %s: 5 sockets", pid, comm))
	if n := strings.Count(screen, "127.0.0.1:"+port(ln)); n != 5 {
		t.Errorf("drill-down shows %d of the 5 sockets:\n%s", n, screen)
	}
	pane.keys("Escape")
	pane.waitFor("the process table again", func(s string) bool {
		return strings.Contains(s, "sort: rate") && rowWith(5)(s)
	})

	pane.keys("q")
	// Keys typed before the view has let go of the terminal are its own.
	pane.waitFor("the shell's prompt again", func(s string) bool {
		return strings.Count(s, strings.TrimSpace(tmuxPrompt)) >= 2
	})
	pane.keys("echo MARK$((40+2))", "Enter")
	pane.waitText("MARK42")
}

// TestWatchTmux80 runs the view in an 80x24 terminal: it keeps CAUSE and
// no line is wider; the cursor is on the top row, the sort column marked;
// the / filter applies as it is typed and Ctrl-U clears it.
func TestWatchTmux80(t *testing.T) {
	pane := startTmux(t, 80, 24)
	bin := closewaitBinary(t)
	ln := leaktest.Listen(t, "tcp4")
	leaktest.CloseWait(t, ln, 3)
	pid, comm := strconv.Itoa(os.Getpid()), leaktest.SelfComm(t)
	row := regexp.MustCompile(fmt.Sprintf(`(?m)^> *%s +%s +3 .*fin-not-read`, pid, regexp.QuoteMeta(comm)))
	pane.keys(bin+" watch --interval 300ms --port "+port(ln), "Enter")
	screen := pane.waitFor("the test process on the top row, with its cause", row.MatchString)
	for _, want := range []string{"CAUSE", "CLOSE_WAIT▼"} {
		if !strings.Contains(screen, want) {
			t.Errorf("80 columns: no %q:\n%s", want, screen)
		}
	}
	for i, line := range strings.Split(screen, "\n") {
		if n := len([]rune(line)); n > 80 {
			t.Errorf("line %d is %d columns: %q", i, n, line)
		}
	}
	pane.keys("/")
	pane.waitText("filter (command, port or pid)")
	pane.keys("zzz") // no Enter: it filters as it is typed
	pane.waitText("no CLOSE_WAIT sockets matching the filter")
	pane.keys("C-u")
	pane.waitFor("the row back after Ctrl-U", row.MatchString)
	pane.keys(pid) // its own pid keeps the row; the header names the filter
	pane.waitFor("the row kept by its pid, counted as filtered", func(s string) bool {
		return row.MatchString(s) && strings.Contains(s, "(filter: "+pid+")")
	})
	pane.keys("Enter", "q")
}

// liveWatch is a plain watch running in this process until the test ends,
// its snapshots read as they come.
type liveWatch struct {
	t    *testing.T
	mu   sync.Mutex
	out  bytes.Buffer
	seen int // snapshots before the next await's
	// tracer is set when the tracer's events must drive the view.
	tracer bool
}

func (w *liveWatch) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.out.Write(b)
}

// startWatch runs watch with args every 200ms, plain, until the test ends.
func startWatch(t *testing.T, args ...string) *liveWatch {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := &liveWatch{t: t, tracer: os.Geteuid() == 0 && !slices.Contains(args, "--no-tracer")}
	var stderr bytes.Buffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, append([]string{"watch", "--interval", "200ms"}, args...), w, &stderr) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && err != context.Canceled {
			t.Errorf("watch: %v; stderr %s", err, stderr.String())
		}
	})
	return w
}

// snapshots returns the snapshots written whole so far.
func (w *liveWatch) snapshots() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	parts := strings.Split(w.out.String(), "\n\n")
	return parts[:len(parts)-1] // the last is not finished
}

// await waits for a snapshot, written after the one the last await
// accepted, that ok accepts, and returns it. The deadline only ends a test
// that would hang.
func (w *liveWatch) await(what string, ok func(string) bool) string {
	w.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		snaps := w.snapshots()
		for i := w.seen; i < len(snaps); i++ {
			if ok(snaps[i]) && (!w.tracer || strings.Contains(snaps[i], "tracer events")) {
				w.seen = i + 1
				return snaps[i]
			}
		}
		if time.Now().After(deadline) {
			last := "(none)"
			if len(snaps) > 0 {
				last = snaps[len(snaps)-1]
			}
			w.t.Fatalf("waiting for %s; the last snapshot:\n%s", what, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// rowRe matches a process row: pid ("-" for none), command, count and
// main cause.
func rowRe(pid int, comm string, count int, cause string) *regexp.Regexp {
	p := "-"
	if pid != 0 {
		p = strconv.Itoa(pid)
	}
	return regexp.MustCompile(fmt.Sprintf(`(?m)^ *%s +%s +%d .* %s `, p, regexp.QuoteMeta(comm), count, regexp.QuoteMeta(cause)))
}

// hasRows reports whether s has every row.
func hasRows(rows ...*regexp.Regexp) func(string) bool {
	return func(s string) bool {
		for _, r := range rows {
			if !r.MatchString(s) {
				return false
			}
		}
		return true
	}
}

// watchModes run watch on the tracer's events (as root) and by polls.
var watchModes = []string{"tracer", "--no-tracer"}

func eachWatchMode(t *testing.T, fn func(t *testing.T, mode []string)) {
	for _, m := range watchModes {
		t.Run(m, func(t *testing.T) {
			var args []string
			if m != "tracer" {
				args = append(args, m)
			}
			fn(t, args)
		})
	}
}

// TestWatchQueuedAccepted leaves connections in an accept queue: watch
// shows them under the listening process, not accepted, and once the
// process accepts them, as its own.
func TestWatchQueuedAccepted(t *testing.T) {
	eachWatchMode(t, func(t *testing.T, mode []string) {
		ln := leaktest.Listen(t, "tcp4")
		leaktest.Queue(t, ln, 2)
		self, comm := os.Getpid(), leaktest.SelfComm(t)
		w := startWatch(t, append(mode, "--port", port(ln))...)
		w.await("the queued sockets under this process", hasRows(rowRe(self, comm, 2, "not-accepted")))
		for range 2 {
			c, err := ln.AcceptTCP()
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
		}
		w.await("the accepted sockets as this process's own", func(s string) bool {
			return rowRe(self, comm, 2, "fin-not-read").MatchString(s) && !strings.Contains(s, "not-accepted")
		})
	})
}

// TestWatchStalledListeners stalls two listeners in two processes: each
// gets its own row, and there is no "-" row.
func TestWatchStalledListeners(t *testing.T) {
	eachWatchMode(t, func(t *testing.T, mode []string) {
		ln1, ln2 := leaktest.Listen(t, "tcp4"), leaktest.Listen(t, "tcp4")
		f, err := ln2.File()
		if err != nil {
			t.Fatal(err)
		}
		child := leaktest.Hold(t, []*os.File{f})
		f.Close()
		ln2.Close() // the child alone listens
		leaktest.Queue(t, ln1, 1)
		leaktest.Queue(t, ln2, 2)
		self, comm := os.Getpid(), leaktest.SelfComm(t)
		w := startWatch(t, append(mode, "--port", port(ln1)+","+port(ln2))...)
		s := w.await("a row for each stalled listener", hasRows(rowRe(self, comm, 1, "not-accepted"), rowRe(child.PID, "sleep", 2, "not-accepted")))
		if regexp.MustCompile(`(?m)^ *- `).MatchString(s) {
			t.Errorf("a row for no process:\n%s", s)
		}
	})
}

// TestWatchHandoff hands a process's sockets to its child, which keeps
// them while the parent closes its copies: watch must name the child.
func TestWatchHandoff(t *testing.T) {
	eachWatchMode(t, func(t *testing.T, mode []string) {
		ln := leaktest.Listen(t, "tcp4")
		conns := leaktest.CloseWait(t, ln, 3)
		h := leaktest.HoldHandoff(t, leaktest.Files(conns))
		leaktest.Release(conns)
		w := startWatch(t, append(mode, "--port", port(ln))...)
		// The holder is this test binary run again.
		w.await("the holder's row", hasRows(rowRe(h.PID, leaktest.SelfComm(t), 3, "fin-not-read")))
		child := h.Handoff(t)
		w.await("the child's row, and none left for the parent", func(s string) bool {
			parent := regexp.MustCompile(fmt.Sprintf(`(?m)^ *%d +\S+ +[1-9]`, h.PID))
			return rowRe(child, "sleep", 3, "fin-not-read").MatchString(s) && !parent.MatchString(s)
		})
	})
}

// TestWatchFilterInherited makes sockets, after watch started, that this
// process and a child both hold: under --pid and --comm watch must show
// both holders and the inherited cause.
func TestWatchFilterInherited(t *testing.T) {
	self, comm := os.Getpid(), leaktest.SelfComm(t)
	eachWatchMode(t, func(t *testing.T, mode []string) {
		for _, filter := range []string{"--pid", "--comm"} {
			t.Run(filter, func(t *testing.T) {
				ln := leaktest.Listen(t, "tcp4")
				leaktest.CloseWait(t, ln, 1) // known before: this process is probed first
				value := strconv.Itoa(self)
				if filter == "--comm" {
					value = "sleep"
				}
				w := startWatch(t, append(mode, "--port", port(ln), filter, value)...)
				if filter == "--pid" {
					w.await("the first socket", hasRows(rowRe(self, comm, 1, "fin-not-read")))
				} else {
					w.await("a first snapshot", func(string) bool { return true })
				}
				conns := leaktest.CloseWait(t, ln, 2)
				child := leaktest.Hold(t, leaktest.Files(conns))
				selfRow := rowRe(self, comm, 2, "inherited")
				if filter == "--pid" {
					selfRow = rowRe(self, comm, 3, "fin-not-read")
				}
				w.await("both holders of the new sockets", hasRows(selfRow, rowRe(child.PID, "sleep", 2, "inherited")))
			})
		}
	})
}

// TestWatchClosed: a process holding the fd of a connection its peer
// reset shows with its closed fds in a CLOSED column, though it has no
// socket in CLOSE_WAIT; with none, there is no such column.
func TestWatchClosed(t *testing.T) {
	leaktest.RequireRoot(t)
	pid := os.Getpid()
	other := leaktest.Listen(t, "tcp4")
	leaktest.CloseWait(t, other, 1)
	quiet := startWatch(t, "--no-tracer", "--port", port(other))
	if s := quiet.await("a snapshot", func(s string) bool { return strings.Contains(s, "CLOSE_WAIT 1") }); strings.Contains(s, "CLOSED") {
		t.Errorf("a CLOSED column with no closed socket:\n%s", s)
	}

	resetHeld(t)
	w := startWatch(t, "--no-tracer", "--pid", strconv.Itoa(pid))
	row := regexp.MustCompile(fmt.Sprintf(`(?m)^ *%d +%s +1 .* +1 +\d+/`, pid, regexp.QuoteMeta(leaktest.SelfComm(t))))
	s := w.await("this process with a closed fd", func(s string) bool {
		return strings.Contains(s, "CLOSED") && row.MatchString(s)
	})
	if !strings.Contains(s, "CAUSE") {
		t.Errorf("no CAUSE column:\n%s", s)
	}
}

// TestWatchPinDir: watch reads the tracer installed at --pin-dir, and says
// so in its header; without one there, it says none is.
func TestWatchPinDir(t *testing.T) {
	requireBPF(t)
	dir := testPinDir(t)
	ln := leaktest.Listen(t, "tcp4")
	leaktest.CloseWait(t, ln, 1)
	watch := func() string {
		t.Helper()
		stdout, stderr, code := runArgs(t, "watch", "--count", "1", "--no-tracer", "--pin-dir", dir, "--port", port(ln))
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		return stdout
	}
	if out := watch(); !strings.Contains(out, "no tracer installed") {
		t.Errorf("before install, header says otherwise:\n%s", out)
	}
	if _, stderr, code := runArgs(t, "tracer", "install", "--pin-dir", dir); code != 0 {
		t.Fatalf("tracer install: exit %d: %s", code, stderr)
	}
	if out := watch(); !strings.Contains(out, "  tracer installed") {
		t.Errorf("after install at --pin-dir, header says otherwise:\n%s", out)
	}
}
