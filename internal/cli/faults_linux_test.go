package cli

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/closewait/closewait/internal/leaktest"
	"github.com/closewait/closewait/internal/testserver"
	"github.com/closewait/closewait/report"
)

// hostileCommEnv turns the test binary into a holder of fd 3 whose command
// name is the variable's value, set from inside (another process may not).
const hostileCommEnv = "CLOSEWAIT_TEST_HOSTILE_COMM"

func init() {
	name, ok := os.LookupEnv(hostileCommEnv)
	if !ok {
		return
	}
	// One write: the kernel keeps the first 15 bytes of the last write.
	if err := os.WriteFile("/proc/self/comm", []byte(name), 0); err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	fmt.Println("ready")
	time.Sleep(time.Hour)
	os.Exit(0)
}

// hostileComm is an escape sequence, a tab, a newline, a carriage return
// and a euro sign the kernel cuts after its second byte (15 bytes kept).
const hostileComm = "\x1b[31mA\tB\nC D\r€€"

// startHostileHolder starts a process named hostileComm holding f.
func startHostileHolder(t *testing.T, f *os.File) int {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), hostileCommEnv+"="+hostileComm)
	cmd.ExtraFiles = []*os.File{f}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	if line, err := bufio.NewReader(out).ReadString('\n'); line != "ready\n" {
		t.Fatalf("holder: %q %v", line, err)
	}
	comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", cmd.Process.Pid))
	if want := hostileComm[:15] + "\n"; err != nil || string(comm) != want {
		t.Fatalf("holder's comm %q (%v), want %q", comm, err, want)
	}
	return cmd.Process.Pid
}

// controlChars returns the control characters and invalid UTF-8 in out,
// other than the newlines that end lines.
func controlChars(out string) []string {
	var bad []string
	for i := 0; i < len(out); {
		r, size := utf8.DecodeRuneInString(out[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			bad = append(bad, fmt.Sprintf("%q at %d", out[i], i))
		case r != '\n' && (r < 0x20 || r >= 0x7f && r < 0xa0):
			bad = append(bad, fmt.Sprintf("%q at %d", r, i))
		}
		i += size
	}
	return bad
}

// TestHostileCommand runs every output format over a socket held by a
// process whose name holds control characters and ends mid-rune: no
// output passes them through, each still shows the process, and the
// machine formats still parse.
func TestHostileCommand(t *testing.T) {
	leaktest.RequireRoot(t) // owners of another process
	ln := leaktest.Listen(t, "tcp4")
	conns := leaktest.CloseWait(t, ln, 1)
	pid := startHostileHolder(t, conns[0].File)
	leaktest.Release(conns) // the holder alone: its name is the metrics' comm
	p := port(ln)
	escaped := report.Printable(hostileComm[:15]) // what people read
	if !strings.Contains(escaped, `\x1b[31mA\x09B\x0aC D\x0d\xe2\x82`) {
		t.Fatalf("escaped name %q", escaped)
	}
	addr, _ := startServe(t, "--port", p)

	tests := []struct {
		name  string
		args  []string // nil: serve's metrics
		human bool     // shows the escaped name
	}{
		{"list table", []string{"list", "--port", p}, true},
		{"list summary", []string{"list", "--port", p, "--summary"}, true},
		{"list json", []string{"list", "--port", p, "-o", "json"}, false},
		{"check", []string{"check", "--port", p, "--warn-count", "0"}, true},
		{"check json", []string{"check", "--port", p, "--warn-count", "0", "-o", "json"}, false},
		{"watch plain", []string{"watch", "--port", p, "--count", "1", "--no-tracer"}, true},
		{"serve metrics", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out string
			if tt.args == nil {
				out = httpGet(t, "http://"+addr+"/metrics")
				promtoolCheckMetrics(t, out)
			} else {
				var stderr string
				var code int
				out, stderr, code = runArgs(t, tt.args...)
				if code > 1 || stderr != "" {
					t.Fatalf("exit %d, stderr %q\n%s", code, stderr, out)
				}
			}
			if bad := controlChars(out); len(bad) > 0 {
				t.Errorf("control characters or bad UTF-8 in the output: %v\n%q", bad, out)
			}
			if tt.human && !strings.Contains(out, escaped[:10]) { // watch cuts it to its column
				t.Errorf("output does not show the escaped name %q:\n%s", escaped, out)
			}
			if strings.HasSuffix(tt.name, "json") {
				if !json.Valid([]byte(out)) {
					t.Errorf("not JSON:\n%s", out)
				}
				if !strings.Contains(out, strconv.Itoa(pid)) {
					t.Errorf("holder %d missing:\n%s", pid, out)
				}
			}
			if tt.args == nil && !regexp.MustCompile(`closewait_close_wait_sockets\{cause="[a-z-]+",comm="`+regexp.QuoteMeta(strings.ReplaceAll(escaped, `\`, `\\`))+`",container="",namespace="",pod=""\} 1`).MatchString(out) {
				t.Errorf("no series for the holder's escaped name:\n%s", out)
			}
		})
	}
}

// mountTmpfs mounts a tmpfs of size bytes on a new directory, read-only if
// ro, and unmounts it when the test ends.
func mountTmpfs(t *testing.T, size int, ro bool) string {
	t.Helper()
	leaktest.RequireRoot(t)
	dir := t.TempDir()
	var flags uintptr
	if ro {
		flags = syscall.MS_RDONLY
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", flags, fmt.Sprintf("size=%d,mode=0755", size)); err != nil {
		leaktest.Missing(t, "mounting a tmpfs: "+err.Error())
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmounting %s: %v", dir, err)
		}
	})
	return dir
}

// fillFS writes to dir until the filesystem is full.
func fillFS(t *testing.T, dir string) {
	t.Helper()
	f, err := os.Create(filepath.Join(dir, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	for {
		if _, err := f.Write(buf); err != nil {
			if !strings.Contains(err.Error(), "no space left") {
				t.Fatalf("filling %s: %v", dir, err)
			}
			return
		}
	}
}

// TestUnwritableOutputs: --textfile and --state-file on a read-only or
// full filesystem. The run fails with the path and the cause (exit 1 for
// serve, UNKNOWN for check), and a file written before is left whole.
func TestUnwritableOutputs(t *testing.T) {
	ln := leaktest.Listen(t, "tcp4")
	leaktest.CloseWait(t, ln, 2)
	p := port(ln)
	for _, fault := range []string{"read-only", "full"} {
		t.Run("textfile "+fault, func(t *testing.T) {
			dir := mountTmpfs(t, 64<<10, false)
			path := filepath.Join(dir, "closewait.prom")
			if _, stderr, code := runArgs(t, "serve", "--port", p, "--textfile", path); code != 0 {
				t.Fatalf("writing the first file: exit %d, %s", code, stderr)
			}
			before, _ := os.ReadFile(path)
			breakFS(t, dir, fault)
			_, stderr, code := runArgs(t, "serve", "--port", p, "--textfile", path)
			if code != 1 || !strings.Contains(stderr, "writing "+path) || !strings.Contains(stderr, errText(fault)) {
				t.Errorf("exit %d, stderr %q; want 1 naming the file and %q", code, stderr, errText(fault))
			}
			assertLeftWhole(t, dir, path, before)
		})
		t.Run("state-file "+fault, func(t *testing.T) {
			dir := mountTmpfs(t, 64<<10, false)
			path := filepath.Join(dir, "state.json")
			args := []string{"check", "--port", p, "--state-file", path, "--warn-growth", "5"}
			if stdout, _, code := runArgs(t, args...); code != 0 {
				t.Fatalf("writing the first state: exit %d\n%s", code, stdout)
			}
			before, _ := os.ReadFile(path)
			breakFS(t, dir, fault)
			stdout, stderr, code := runArgs(t, args...)
			if code != 3 || !strings.HasPrefix(stdout, "CLOSEWAIT UNKNOWN - writing state file") ||
				!strings.Contains(stdout, errText(fault)) || !strings.Contains(stdout, "(sockets: OK - 2 sockets") {
				t.Errorf("exit %d, stderr %q; want 3 (UNKNOWN) naming %q and the sockets' status\n%s", code, stderr, errText(fault), stdout)
			}
			assertLeftWhole(t, dir, path, before)
		})
	}
}

func breakFS(t *testing.T, dir, fault string) {
	t.Helper()
	switch fault {
	case "read-only":
		if err := syscall.Mount("", dir, "", syscall.MS_REMOUNT|syscall.MS_RDONLY, ""); err != nil {
			t.Fatalf("remounting read-only: %v", err)
		}
	case "full":
		fillFS(t, dir)
	}
}

func errText(fault string) string {
	if fault == "full" {
		return "no space left on device"
	}
	return "read-only file system"
}

// assertLeftWhole checks that path still holds before and that no
// temporary file was left next to it.
func assertLeftWhole(t *testing.T, dir, path string, before []byte) {
	t.Helper()
	if after, err := os.ReadFile(path); err != nil || !bytes.Equal(after, before) || len(before) == 0 {
		t.Errorf("%s changed or lost (%v):\nbefore %q\nafter  %q", path, err, before, after)
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if n := e.Name(); n != filepath.Base(path) && n != "filler" {
			t.Errorf("left behind: %s", n)
		}
	}
}

// TestCheckClockWentBack: the previous run's state says it ran an hour
// from now and first saw the sockets then, as after the wall clock was set
// back. Ages are not negative, growth is still counted, and the next
// state is written at the new time.
func TestCheckClockWentBack(t *testing.T) {
	ln := leaktest.Listen(t, "tcp4")
	leaktest.CloseWait(t, ln, 2)
	p := port(ln)
	path := filepath.Join(t.TempDir(), "state.json")
	args := []string{"check", "--port", p, "--state-file", path, "--warn-growth", "0", "-o", "json"}
	if stdout, _, code := runArgs(t, args...); code != 0 {
		t.Fatalf("first run: exit %d\n%s", code, stdout)
	}
	st := readState(t, path)
	future := time.Now().Add(time.Hour).UTC()
	st.Time = future
	for i := range st.Sockets {
		st.Sockets[i].FirstSeen = future
	}
	st.Count = 1 // so the second run sees growth of 1
	writeState(t, path, st)

	stdout, stderr, code := runArgs(t, args...)
	if code != 1 || stderr != "" {
		t.Fatalf("exit %d, stderr %q; want 1 (WARNING for growth 1)\n%s", code, stderr, stdout)
	}
	var doc report.CheckDocument
	if err := json.Unmarshal([]byte(stdout), &doc); err != nil {
		t.Fatalf("%v\n%s", err, stdout)
	}
	if doc.Growth == nil || *doc.Growth != 1 {
		t.Errorf("growth %v, want 1\n%s", doc.Growth, stdout)
	}
	if a := doc.OldestSeconds; a == nil || *a < 0 {
		t.Errorf("oldest_seconds %v, want 0 or more\n%s", a, stdout)
	}
	if strings.Contains(stdout, `"-`) {
		t.Errorf("a negative duration in the output:\n%s", stdout)
	}
	after := readState(t, path)
	if after.Time.After(time.Now()) {
		t.Errorf("state time %v still in the future", after.Time)
	}
	for _, s := range after.Sockets {
		if s.FirstSeen.After(time.Now()) {
			t.Errorf("first_seen %v kept from the future", s.FirstSeen)
		}
	}
}

// TestServeSIGTERMDuringScrape sends SIGTERM to a serve process right after
// four scrape requests: each is answered in full, never without its socket
// metrics, or, if net/http had not read it when shutdown began, closed
// unanswered (a failed scrape); serve exits 0.
func TestServeSIGTERMDuringScrape(t *testing.T) {
	ln := leaktest.Listen(t, "tcp4")
	leaktest.CloseWait(t, ln, 3)
	cmd := exec.Command(closewaitBinary(t), "serve", "--listen", "127.0.0.1:0", "--cache-ttl", "0s", "--port", port(ln))
	stderr := &syncBuffer{}
	cmd.Stderr = stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill() })
	var addr string
	for addr == "" {
		select {
		case err := <-exited:
			t.Fatalf("serve exited: %v\n%s", err, stderr)
		case <-time.After(10 * time.Millisecond):
		}
		if m := servingLine.FindStringSubmatch(stderr.String()); m != nil {
			addr = m[1]
		}
	}

	// Whole requests, then the signal: some are being answered, others
	// not yet read.
	const scrapes = 4
	conns := make([]net.Conn, scrapes)
	for i := range conns {
		c, err := net.Dial("tcp4", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "GET /metrics HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", addr)
		conns[i] = c
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	answered := 0
	for i, c := range conns {
		raw, _ := io.ReadAll(c)
		if len(raw) == 0 {
			continue // not read when shutdown began: closed unanswered
		}
		resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(raw)), nil)
		if err != nil {
			t.Errorf("scrape %d: %v\n%s", i, err, raw)
			continue
		}
		body, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `closewait_sockets{state="close_wait"} 3`) {
			t.Errorf("scrape %d: %s, %v; want 200 with the 3 sockets\n%s", i, resp.Status, err, body)
		}
		answered++
	}
	t.Logf("%d of %d scrapes answered, the rest closed unanswered", answered, scrapes)
	if err := <-exited; err != nil {
		t.Errorf("serve after SIGTERM: %v\n%s", err, stderr)
	}
}

// TestHarnessSIGTERMDuringExec stops `closewait test --exec` with SIGTERM
// while a scenario waits on a leaking server: it exits 130, as
// interrupted commands do, and takes the server it started with it.
func TestHarnessSIGTERMDuringExec(t *testing.T) {
	leak := testserver.Build(t, "leak")
	addr := testserver.FreeAddr(t)
	_, p, _ := net.SplitHostPort(addr)
	cmd := exec.Command(closewaitBinary(t), "test", "--exec", leak+" -listen "+addr, "--target", addr,
		"--scenarios", "idle-close", "--conns", "2", "--deadline", "10m")
	var stdout, stderr syncBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	// The scenario is under way once the server holds CLOSE_WAIT sockets.
	server := 0
	for range 1000 {
		out, _ := exec.Command("ss", "-Htnp", "state", "close-wait", "sport = :"+p).Output()
		if m := regexp.MustCompile(`pid=(\d+)`).FindSubmatch(out); m != nil {
			server, _ = strconv.Atoi(string(m[1]))
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if server == 0 {
		t.Fatalf("no CLOSE_WAIT on the server's port\n%s%s", stdout.String(), stderr.String())
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	err := cmd.Wait()
	code := cmd.ProcessState.ExitCode()
	if code != 130 {
		t.Errorf("exit %d (%v), want 130 (interrupted)\nstdout:\n%s\nstderr:\n%s", code, err, stdout.String(), stderr.String())
	}
	for range 500 {
		if syscall.Kill(server, 0) == syscall.ESRCH {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Errorf("server %d still running after closewait test exited", server)
}
