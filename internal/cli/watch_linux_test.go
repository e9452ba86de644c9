package cli

import (
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
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
	p := &tmuxPane{t: t, socket: fmt.Sprintf("closewait-test-%d", os.Getpid())}
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
	pane.keys("echo MARK$((40+2))", "Enter")
	pane.waitText("MARK42")
}
