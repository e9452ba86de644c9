package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/closewait/closewait/collector"
	"github.com/closewait/closewait/ebpf"
	"github.com/closewait/closewait/internal/leaktest"
	"github.com/closewait/closewait/report"
)

// Other packages' tests make CLOSE_WAIT sockets at the same time: every
// listing here is restricted with --port to the test's own listeners.

func TestListJSON(t *testing.T) {
	ln4 := leaktest.Listen(t, "tcp4")
	ln6 := leaktest.Listen(t, "tcp6")
	conns := append(leaktest.CloseWait(t, ln4, 3), leaktest.CloseWait(t, ln6, 2)...)
	for _, src := range []string{"netlink", "procfs"} {
		t.Run(src, func(t *testing.T) {
			stdout, stderr, code := runArgs(t, "--source", src, "-o", "json", "--port", port(ln4)+","+port(ln6))
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			var doc report.Document
			if err := json.Unmarshal([]byte(stdout), &doc); err != nil {
				t.Fatalf("decoding JSON: %v\n%s", err, stdout)
			}
			if doc.Schema != "closewait/v1" || doc.Source != src {
				t.Errorf("schema %q source %q", doc.Schema, doc.Source)
			}
			if len(doc.Sockets) != len(conns) {
				t.Fatalf("%d sockets, want %d:\n%s", len(doc.Sockets), len(conns), stdout)
			}
			want := map[string]bool{}
			for _, c := range conns {
				want[c.Local.String()+" "+c.Remote.String()] = true
			}
			for _, s := range doc.Sockets {
				if !want[s.Local+" "+s.Remote] {
					t.Errorf("unexpected socket %s %s", s.Local, s.Remote)
				}
				if s.State != "CLOSE_WAIT" || len(s.Owners) != 1 || s.Owners[0].PID != os.Getpid() {
					t.Errorf("socket %s: state %s owners %+v", s.Local, s.State, s.Owners)
				}
				if len(s.Causes) != 1 || s.Causes[0] != collector.CauseFINNotRead {
					t.Errorf("socket %s: causes %v, want [fin-not-read]", s.Local, s.Causes)
				}
				if (s.AgeSeconds == nil) != (src == "procfs") {
					t.Errorf("socket %s: age %v from %s", s.Local, s.AgeSeconds, src)
				}
			}
			if len(doc.Summary) != 1 || doc.Summary[0].Sockets != len(conns) {
				t.Errorf("summary %+v", doc.Summary)
			}
		})
	}
}

func TestListTable(t *testing.T) {
	ln := leaktest.Listen(t, "tcp4")
	leaktest.CloseWait(t, ln, 2)
	stdout, stderr, code := runArgs(t, "--port", port(ln))
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, want := range []string{"PID", "CAUSE", fmt.Sprint(os.Getpid()), "127.0.0.1:" + port(ln), "fin-not-read"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("table lacks %q:\n%s", want, stdout)
		}
	}
	stdout, _, code = runArgs(t, "--port", port(ln), "--summary")
	if code != 0 || strings.Contains(stdout, "REMOTE") || !strings.Contains(stdout, "SOCKETS") {
		t.Errorf("--summary: exit %d\n%s", code, stdout)
	}
}

func TestListNothing(t *testing.T) {
	ln := leaktest.Listen(t, "tcp4") // a port nobody else uses, with no CLOSE_WAIT
	stdout, stderr, code := runArgs(t, "--port", port(ln))
	if code != 0 || stdout != "no sockets in CLOSE_WAIT\n" {
		t.Errorf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
}

var (
	buildOnce sync.Once
	binPath   string
	binErr    error
)

// closewaitBinary builds the command once per test run, into a directory
// any user may read, so tests can run it as another user.
func closewaitBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "closewait-bin-")
		if err != nil {
			binErr = err
			return
		}
		os.Chmod(dir, 0o755)
		binPath = filepath.Join(dir, "closewait")
		out, err := exec.Command("go", "build", "-o", binPath, "github.com/closewait/closewait").CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binPath != "" {
		os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}

// TestNotRoot runs the binary as an unprivileged user: it must list the
// sockets it can see, name the owners it may read (its own user's) and warn
// that other users' owners are hidden.
func TestNotRoot(t *testing.T) {
	leaktest.RequireRoot(t)
	const nobody = 65534
	bin := closewaitBinary(t)
	ln := leaktest.Listen(t, "tcp4")
	mine := leaktest.CloseWait(t, ln, 2)   // held by this root process
	theirs := leaktest.CloseWait(t, ln, 1) // held by a child running as nobody
	child := leaktest.HoldAs(t, leaktest.Files(theirs), nobody)
	leaktest.Release(theirs)

	cmd := exec.CommandContext(context.Background(), bin, "--source", "netlink", "-o", "json", "--port", port(ln))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("closewait as nobody: %v\n%s", err, stderr.String())
	}
	var doc report.Document
	if err := json.Unmarshal(stdout.Bytes(), &doc); err != nil {
		t.Fatalf("decoding JSON: %v", err)
	}
	if len(doc.Sockets) != len(mine)+len(theirs) {
		t.Fatalf("%d sockets, want %d", len(doc.Sockets), len(mine)+len(theirs))
	}
	owned := 0
	for _, s := range doc.Sockets {
		for _, o := range s.Owners {
			if o.PID != child.PID {
				t.Errorf("owner %+v visible to nobody; only pid %d should be", o, child.PID)
			}
			owned++
		}
	}
	if owned != len(theirs) {
		t.Errorf("%d sockets with owners, want %d", owned, len(theirs))
	}
	// Two warnings: owners hidden, and other network namespaces unread.
	if !strings.Contains(stderr.String(), "not root: owners") || !strings.Contains(stderr.String(), "only this process's network namespace") ||
		strings.Count(stderr.String(), "\n") != 2 {
		t.Errorf("stderr %q, want the two not-root warnings", stderr.String())
	}
	if len(doc.Warnings) != 2 {
		t.Errorf("JSON warnings %q, want two", doc.Warnings)
	}
}

// TestListQuietFallback: when the auto source falls back from ebpf to
// netlink, which shows as much, a cron job's stderr stays empty; JSON and
// -v still say it. A fallback to procfs, which loses ages, is warned.
func TestListQuietFallback(t *testing.T) {
	leaktest.RequireRoot(t)
	t.Setenv(ebpf.RefuseEnv, "dump_task_file,dump_tcp")
	ln := leaktest.Listen(t, "tcp4")
	leaktest.CloseWait(t, ln, 1)
	stdout, stderr, code := runArgs(t, "--port", port(ln))
	if code != 0 || stderr != "" || !strings.Contains(stdout, "fin-not-read") {
		t.Errorf("plain: exit %d, stderr %q; want the listing and nothing on stderr\n%s", code, stderr, stdout)
	}
	if _, stderr, _ := runArgs(t, "--port", port(ln), "-v"); !strings.Contains(stderr, "ebpf source unavailable") || !strings.Contains(stderr, "using netlink") {
		t.Errorf("-v: stderr %q, want the fallback", stderr)
	}
	stdout, _, _ = runArgs(t, "--port", port(ln), "-o", "json")
	var doc report.Document
	if err := json.Unmarshal([]byte(stdout), &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Source != "netlink" || len(doc.Warnings) != 1 || !strings.Contains(doc.Warnings[0], "using netlink") {
		t.Errorf("JSON: source %q warnings %q; want netlink and the fallback", doc.Source, doc.Warnings)
	}
}

// TestListProcessIdentity: JSON names each owner's process (command line,
// parent, uid), -w shows the command line, and --comm matches a name
// longer than the 15 bytes of comm against the executable's name.
func TestListProcessIdentity(t *testing.T) {
	ln := leaktest.Listen(t, "tcp4")
	conns := leaktest.CloseWait(t, ln, 1)
	const long = "payments-gateway-worker"                           // 23 bytes; comm keeps "payments-gatewa"
	child := leaktest.HoldNamed(t, leaktest.Files(conns), long, "7") // sleep takes more durations
	leaktest.Release(conns)

	stdout, stderr, code := runArgs(t, "-o", "json", "--port", port(ln), "--comm", long)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if !strings.Contains(stderr, "15") || !strings.Contains(stderr, long) {
		t.Errorf("stderr %q, want the warning that comm is cut at 15 bytes", stderr)
	}
	var doc report.Document
	if err := json.Unmarshal([]byte(stdout), &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Sockets) != 1 || len(doc.Sockets[0].Owners) != 1 {
		t.Fatalf("want one socket held by the child:\n%s", stdout)
	}
	o := doc.Sockets[0].Owners[0]
	if o.PID != child.PID || o.Comm != long[:15] || o.Process == nil {
		t.Fatalf("owner %+v", o)
	}
	if p := o.Process; p.PPID != os.Getpid() || p.UID != os.Geteuid() || !strings.HasSuffix(p.Cmdline, "/"+long+" 3600 7") {
		t.Errorf("process %+v", *p)
	}

	stdout, _, _ = runArgs(t, "-w", "--port", port(ln))
	if !strings.Contains(stdout, "COMMAND LINE") || !strings.Contains(stdout, long+" 3600 7") {
		t.Errorf("-w:\n%s", stdout)
	}
	// The cut name matches as comm; another long name with the same first
	// 15 bytes does not.
	if stdout, _, _ := runArgs(t, "--port", port(ln), "--comm", long[:15]); !strings.Contains(stdout, strconv.Itoa(child.PID)) {
		t.Errorf("--comm %s:\n%s", long[:15], stdout)
	}
	if stdout, _, _ := runArgs(t, "--port", port(ln), "--comm", long[:15]+"-other"); !strings.Contains(stdout, "no sockets") {
		t.Errorf("--comm of another long name:\n%s", stdout)
	}
}

// TestListSummaryJSON: --summary -o json keeps the summary of every socket
// and leaves the sockets out.
func TestListSummaryJSON(t *testing.T) {
	ln := leaktest.Listen(t, "tcp4")
	leaktest.CloseWait(t, ln, 3)
	stdout, stderr, code := runArgs(t, "--summary", "-o", "json", "--port", port(ln))
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var doc report.Document
	if err := json.Unmarshal([]byte(stdout), &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Sockets == nil || len(doc.Sockets) != 0 || len(doc.Summary) != 1 || doc.Summary[0].Sockets != 3 {
		t.Errorf("sockets %v, summary %+v; want [] and one process with 3\n%s", doc.Sockets, doc.Summary, stdout)
	}
}

// TestFiltersAgainstSS: --src, --dst, port ranges and --exclude-port give
// what ss's own filters give on the same sockets.
func TestFiltersAgainstSS(t *testing.T) {
	ssPath, err := exec.LookPath("ss")
	if err != nil {
		leaktest.Missing(t, "needs ss(8) from iproute2")
	}
	lnA := leaktest.ListenOn(t, "tcp4", "127.0.0.1:0")
	lnB := leaktest.ListenOn(t, "tcp4", "127.0.0.2:0")
	ln6 := leaktest.Listen(t, "tcp6")
	var conns []*leaktest.Conn
	conns = append(conns, leaktest.CloseWait(t, lnA, 2)...)
	conns = append(conns, leaktest.CloseWait(t, lnB, 3)...)
	conns = append(conns, leaktest.CloseWait(t, ln6, 1)...)
	ours := map[string]bool{}
	for _, c := range conns {
		ours[c.Local.String()+" "+c.Remote.String()] = true
	}
	pa, pb, p6 := port(lnA), port(lnB), port(ln6)
	lo, hi := min(pa, pb), max(pa, pb)
	sports := "( sport = :" + pa + " or sport = :" + pb + " or sport = :" + p6 + " )"
	tests := []struct {
		args []string
		ss   string
	}{
		{[]string{"--src", "127.0.0.2"}, "src 127.0.0.2"},
		{[]string{"--src", "127.0.0.0/8"}, "src 127.0.0.0/8"},
		{[]string{"--src", "::1"}, "src [::1]"},
		{[]string{"--dst", "127.0.0.1"}, "dst 127.0.0.1"},
		{[]string{"--sport", lo + "-" + hi}, "( sport >= :" + lo + " and sport <= :" + hi + " )"},
		{[]string{"--exclude-port", pb}, "not sport = :" + pb},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			args := append([]string{"-o", "json", "--sport", pa + "," + pb + "," + p6}, tt.args...)
			if tt.args[0] == "--sport" {
				args = append([]string{"-o", "json"}, tt.args...)
			}
			stdout, stderr, code := runArgs(t, args...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			var doc report.Document
			if err := json.Unmarshal([]byte(stdout), &doc); err != nil {
				t.Fatal(err)
			}
			got := map[string]bool{}
			for _, s := range doc.Sockets {
				if k := s.Local + " " + s.Remote; ours[k] {
					got[k] = true
				}
			}
			out, err := exec.Command(ssPath, "-tanH", "state", "close-wait", sports+" and "+tt.ss).CombinedOutput()
			if err != nil {
				t.Fatalf("ss: %v\n%s", err, out)
			}
			want := map[string]bool{}
			for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
				if f := strings.Fields(line); len(f) >= 4 && ours[f[2]+" "+f[3]] {
					want[f[2]+" "+f[3]] = true
				}
			}
			if len(want) == 0 || len(want) == len(ours) && tt.args[0] != "--sport" {
				t.Fatalf("ss kept %d of our %d sockets: the case tests nothing", len(want), len(ours))
			}
			if !maps.Equal(got, want) {
				t.Errorf("closewait %v\nss %v", got, want)
			}
		})
	}
}

// TestListExcludeCommAndTop: --exclude-comm drops sockets only its
// commands hold; --top keeps the N oldest and the summary of all.
func TestListExcludeCommAndTop(t *testing.T) {
	ln := leaktest.Listen(t, "tcp4")
	conns := leaktest.CloseWait(t, ln, 3)
	leaktest.HoldNamed(t, leaktest.Files(conns[:1]), "noisy-daemon")
	leaktest.Release(conns[:1])                                       // only noisy-daemon holds the first
	leaktest.HoldNamed(t, leaktest.Files(conns[1:2]), "noisy-daemon") // shared with this process
	count := func(args ...string) (int, int) {
		stdout, stderr, code := runArgs(t, append([]string{"-o", "json", "--port", port(ln)}, args...)...)
		if code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, stderr)
		}
		var doc report.Document
		if err := json.Unmarshal([]byte(stdout), &doc); err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, p := range doc.Summary {
			n += p.Sockets
		}
		return len(doc.Sockets), n
	}
	if n, _ := count("--exclude-comm", "noisy-daemon"); n != 2 {
		t.Errorf("--exclude-comm: %d sockets, want the 2 this process holds", n)
	}
	if n, _ := count(); n != 3 {
		t.Errorf("no filter: %d sockets, want 3", n)
	}
	if n, summed := count("--top", "1"); n != 1 || summed < 3 {
		t.Errorf("--top 1: %d sockets, summary of %d; want 1 and all 3", n, summed)
	}
}
