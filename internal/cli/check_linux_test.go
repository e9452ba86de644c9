package cli

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/closewait/closewait/ebpf"
	"github.com/closewait/closewait/internal/leaktest"
	"github.com/closewait/closewait/report"
)

// TestCheckFallbackWarning: a source fallback (here, the verifier refusing
// both iterators) must not come before the status line, which monitoring
// systems that read stdout and stderr together take as the first line.
func TestCheckFallbackWarning(t *testing.T) {
	leaktest.RequireRoot(t)
	t.Setenv(ebpf.RefuseEnv, "dump_task_file,dump_tcp")
	ln := leaktest.Listen(t, "tcp4")
	leaktest.CloseWait(t, ln, 1)
	args := []string{"check", "--port", port(ln), "--warn-count", "0"}

	stdout, stderr, code := runArgs(t, args...)
	lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
	if code != 1 || !strings.HasPrefix(lines[0], "CLOSEWAIT WARNING - ") {
		t.Errorf("exit %d, first line %q; want 1 and the WARNING status line", code, lines[0])
	}
	want := "warning: ebpf source unavailable (verifier refused dump_task_file: "
	if last := lines[len(lines)-1]; !strings.HasPrefix(last, want) || !strings.HasSuffix(last, "using netlink") {
		t.Errorf("last line %q, want the fallback warning", last)
	}
	if stderr != "" {
		t.Errorf("stderr %q, want nothing", stderr)
	}

	stdout, stderr, code = runArgs(t, append(args, "-o", "json")...)
	var doc report.CheckDocument
	if err := json.Unmarshal([]byte(stdout), &doc); err != nil {
		t.Fatalf("-o json: %v\n%s", err, stdout)
	}
	if code != 1 || doc.Source != "netlink" || len(doc.Warnings) != 1 || !strings.Contains(doc.Warnings[0], "dump_tcp") || stderr != "" {
		t.Errorf("-o json: exit %d, source %q, warnings %q, stderr %q", code, doc.Source, doc.Warnings, stderr)
	}
}

// TestCheckFiltersKeepDiagnosis: --pid and --comm choose the sockets, but
// owners and causes come from the whole host; a socket waiting in an
// accept queue counts under the process holding its listener.
func TestCheckFiltersKeepDiagnosis(t *testing.T) {
	leaktest.RequireRoot(t)
	// Inherited: this process and a child hold the socket.
	ln := leaktest.Listen(t, "tcp4")
	conns := leaktest.CloseWait(t, ln, 1)
	child := leaktest.Hold(t, leaktest.Files(conns))
	stdout, _, code := runArgs(t, "check", "--port", port(ln), "--pid", strconv.Itoa(child.PID), "--warn-count", "0")
	if code != 1 || !strings.Contains(stdout, "1 socket in CLOSE_WAIT") || !strings.Contains(stdout, ", inherited)") {
		t.Errorf("--pid of the child: exit %d\n%s\nwant one inherited socket", code, stdout)
	}

	// Not accepted: a child holds the listener and never accepts.
	ln2 := leaktest.Listen(t, "tcp4")
	f, err := ln2.File()
	if err != nil {
		t.Fatal(err)
	}
	stalled := leaktest.Hold(t, []*os.File{f})
	f.Close()
	addr := ln2.Addr().String()
	ln2.Close()
	c, err := net.Dial("tcp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	want := fmt.Sprintf("(sleep pid %d, not-accepted)", stalled.PID)
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		// The listener's port, which no other socket here has as its own:
		// a client's may be another connection's remote port.
		stdout, _, code = runArgs(t, "check", "--sport", strconv.Itoa(int(c.RemoteAddr().(*net.TCPAddr).Port)),
			"--comm", "sleep", "--per-process", "--warn-count", "0")
		if strings.Contains(stdout, want) || time.Now().After(deadline) {
			break
		}
	}
	if code != 1 || !strings.Contains(stdout, want) || !strings.Contains(stdout, fmt.Sprintf("worst sleep pid %d with 1", stalled.PID)) {
		t.Errorf("--comm sleep: exit %d\n%s\nwant the stalled server named", code, stdout)
	}
}

// TestCheckAgesPerState: a socket first seen ESTABLISHED is new to
// CLOSE_WAIT when its peer closes; the state file must not age it from the
// earlier state (that gave a false WARNING right after the FIN).
func TestCheckAgesPerState(t *testing.T) {
	leaktest.RequireRoot(t)
	ln := leaktest.Listen(t, "tcp4")
	conns := leaktest.Accepted(t, ln, 1)
	sources := []string{"procfs", "netlink", "ebpf"}
	dir := t.TempDir()
	args := func(src string) []string {
		return []string{"check", "--source", src, "--sport", port(ln), "--state", "established,close-wait",
			"--state-file", filepath.Join(dir, src+".json")}
	}
	for _, src := range sources {
		if stdout, _, code := runArgs(t, args(src)...); code != 0 || !strings.Contains(stdout, "1 socket in ESTABLISHED/CLOSE_WAIT") {
			t.Fatalf("%s, established: exit %d\n%s", src, code, stdout)
		}
	}
	// With a state file every state has an age, so --older-than works.
	older := []string{"check", "--sport", port(ln), "--state", "established", "--older-than", "1s",
		"--state-file", filepath.Join(dir, "older.json"), "--warn-age", "1s"}
	if stdout, _, code := runArgs(t, older...); code != 0 || !strings.Contains(stdout, "0 sockets in ESTABLISHED") {
		t.Errorf("--older-than, first run: exit %d, want none older yet\n%s", code, stdout)
	}
	time.Sleep(2 * time.Second)
	stdout, _, code := runArgs(t, older...)
	if code != 1 || !strings.Contains(stdout, "1 socket in ESTABLISHED, oldest >=") {
		t.Errorf("--older-than, established 2s: exit %d, want 1 (WARNING) for the socket first seen 2s ago\n%s", code, stdout)
	}
	fin := time.Now()
	leaktest.CloseClients(t, conns)
	for _, src := range sources {
		stdout, _, code := runArgs(t, args(src)...)
		if code != 0 || !strings.Contains(stdout, "1 socket in ESTABLISHED/CLOSE_WAIT") {
			t.Errorf("%s, after the FIN: exit %d\n%s", src, code, stdout)
		}
		st := readState(t, filepath.Join(dir, src+".json"))
		if len(st.Sockets) != 1 || st.Sockets[0].State != "CLOSE_WAIT" || st.Sockets[0].FirstSeen.Before(fin) {
			t.Errorf("%s: state file sockets %+v, want one in CLOSE_WAIT first seen after the FIN at %v", src, st.Sockets, fin.UTC())
		}
	}
}
