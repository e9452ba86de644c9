package winetest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/closewait/closewait/internal/leaktest"
)

// wine holds what one TestWine run needs: the prefix, its environment and
// the Windows binaries.
type wine struct {
	prefix    string
	env       []string
	dir       string // temp dir with closewait.exe and leak.exe
	closewait string
}

// require finds a tool; a missing one skips the test with the reason, or
// fails it under CI=true.
func require(t *testing.T, tool, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(tool)
	if err != nil {
		why := tool + " not found (Debian package " + pkg + "; make deps installs it)"
		if os.Getenv("CI") == "true" {
			t.Fatal(why)
		}
		t.Skip(why)
	}
	return p
}

func moduleRoot(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil || len(bytes.TrimSpace(out)) == 0 {
		t.Fatalf("go env GOMOD: %v", err)
	}
	return filepath.Dir(string(bytes.TrimSpace(out)))
}

// maxHostSockets bounds the host's TCP sockets for TestWine: Wine builds
// its table from the host's, looking up an owner for every socket, and that
// grows faster than the count (58 s for 13.5k sockets; over 2 minutes for
// 16k here).
const maxHostSockets = 2000

// hostTCPSockets counts the host's TCP sockets in /proc/net/tcp and tcp6.
func hostTCPSockets(t *testing.T) int {
	t.Helper()
	n := 0
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // no IPv6
		}
		n += max(0, bytes.Count(b, []byte("\n"))-1) // a header line
	}
	return n
}

// setup builds the ProcessPrng DLL into the prefix (kept between runs in
// the user cache: a cold prefix costs minutes) and cross-builds the
// binaries.
func setup(t *testing.T) *wine {
	t.Helper()
	if runtime.GOARCH != "amd64" {
		t.Skip("Wine runs the amd64 Windows build on amd64 hosts only")
	}
	if n := hostTCPSockets(t); n > maxHostSockets {
		why := fmt.Sprintf("the host has %d TCP sockets, over %d: Wine lists every one and looks up its owner, which then takes minutes; TestWine needs a quiet machine", n, maxHostSockets)
		if os.Getenv("CI") == "true" {
			t.Fatal(why)
		}
		t.Skip(why)
	}
	require(t, "wine", "wine")
	require(t, "wineboot", "wine")
	gcc := require(t, "x86_64-w64-mingw32-gcc", "gcc-mingw-w64-x86-64-win32")
	cache, err := os.UserCacheDir()
	if err != nil {
		t.Fatal(err)
	}
	w := &wine{prefix: filepath.Join(cache, "closewait", "wineprefix"), dir: t.TempDir()}
	w.env = append(os.Environ(),
		"WINEPREFIX="+w.prefix,
		"WINEDEBUG=-all",
		"WINEDLLOVERRIDES=mscoree,mshtml=;bcryptprimitives=n,b", // no Mono/Gecko installer; our DLL first
		"DISPLAY=",
	)
	root := moduleRoot(t)

	// Build first: go build needs no prefix.
	build := func(out, pkg string) {
		cmd := exec.Command("go", "build", "-o", filepath.Join(w.dir, out), pkg)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "GOOS=windows", "GOARCH=amd64", "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("building %s: %v\n%s", out, err, b)
		}
	}
	build("closewait.exe", ".")
	build("leak.exe", "./testdata/servers/leak")
	w.closewait = filepath.Join(w.dir, "closewait.exe")
	dll := filepath.Join(w.dir, "bcryptprimitives.dll")
	if b, err := exec.Command(gcc, "-shared", "-O2", "-s", "-o", dll,
		filepath.Join(root, "internal", "winetest", "testdata", "bcryptprimitives.c"), "-ladvapi32").CombinedOutput(); err != nil {
		t.Fatalf("building bcryptprimitives.dll: %v\n%s", err, b)
	}

	// A wineserver left from a run in another network namespace would
	// start the service that reads the TCP table there: let it exit.
	if os.Getenv(netnsEnv) != "" {
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		cmd := exec.CommandContext(ctx, "wineserver", "-w")
		cmd.Env = w.env
		cmd.Run()
		cancel()
	}
	sys32 := filepath.Join(w.prefix, "drive_c", "windows", "system32")
	if _, err := os.Stat(sys32); err != nil {
		t.Logf("creating the Wine prefix %s (once)", w.prefix)
		if err := os.MkdirAll(filepath.Dir(w.prefix), 0o755); err != nil { // wine makes only the last part
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "wineboot", "--init")
		cmd.Env = w.env
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("wineboot --init: %v\n%s", err, b)
		}
	}
	b, err := os.ReadFile(dll)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(sys32, "bcryptprimitives.dll"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	w.persist(t)
	return w
}

// persist starts a wineserver that stays until the test ends. The one
// wine starts exits 3 s after its last program, and a program that starts
// as it exits fails with "wine client error:0: recvmsg: Connection reset
// by peer".
func (w *wine) persist(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	for _, arg := range []string{"-w", "-p"} { // -p: the server goes to the background
		cmd := exec.CommandContext(ctx, "wineserver", arg)
		cmd.Env = w.env
		if err := cmd.Run(); err != nil {
			t.Fatalf("wineserver %s: %v", arg, err)
		}
	}
	t.Cleanup(func() {
		cmd := exec.Command("wineserver", "-k")
		cmd.Env = w.env
		cmd.Run()
	})
}

// run runs a Windows program under Wine and returns its stdout, stderr and
// exit status.
func (w *wine) run(t *testing.T, exe string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "wine", append([]string{exe}, args...)...)
	cmd.Env = w.env
	cmd.Dir = w.dir
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("wine %s %v: %v\n%s", filepath.Base(exe), args, err, e.String())
	}
	return o.String(), e.String(), code
}

// startLeak runs leak.exe under Wine on an ephemeral port of addr and
// returns where it listens.
func (w *wine) startLeak(t *testing.T, addr string) string {
	t.Helper()
	cmd := exec.Command("wine", filepath.Join(w.dir, "leak.exe"), "-listen", addr)
	cmd.Env = w.env
	cmd.Dir = w.dir
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		sc.Scan()
		line <- sc.Text()
		for sc.Scan() {
		}
	}()
	select {
	case l := <-line:
		got, ok := strings.CutPrefix(l, "listening on ")
		if !ok {
			t.Fatalf("leak.exe said %q", l)
		}
		return got
	case <-time.After(time.Minute):
		t.Fatal("leak.exe did not listen within a minute")
	}
	return ""
}

// leave connects n clients to addr and closes them: n server sockets in
// CLOSE_WAIT. It returns the clients' addresses.
func leave(t *testing.T, addr string, n int) []string {
	t.Helper()
	var clients []string
	for range n {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c.LocalAddr().String())
		c.Close()
	}
	slices.Sort(clients)
	return clients
}

type listDoc struct {
	Source  string `json:"source"`
	Sockets []struct {
		State  string  `json:"state"`
		Family string  `json:"family"`
		Local  string  `json:"local"`
		Remote string  `json:"remote"`
		RecvQ  *uint32 `json:"recv_q"`
		Inode  *uint64 `json:"inode"`
	} `json:"sockets"`
}

// list runs "closewait list -o json" on port until it shows want sockets
// (the FINs land a moment after the clients close), or a minute passes.
func (w *wine) list(t *testing.T, port string, want int) listDoc {
	t.Helper()
	var doc listDoc
	for deadline := time.Now().Add(time.Minute); ; {
		out, errOut, code := w.run(t, w.closewait, "list", "-o", "json", "--port", port)
		if code != 0 {
			t.Fatalf("list exit %d: %s", code, errOut)
		}
		doc = listDoc{}
		if err := json.Unmarshal([]byte(out), &doc); err != nil {
			t.Fatalf("list -o json: %v\n%s", err, out)
		}
		if len(doc.Sockets) >= want || time.Now().After(deadline) {
			return doc
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// netnsEnv marks the run of TestWine inside its own network namespace.
const netnsEnv = "CLOSEWAIT_WINETEST_NETNS"

// inOwnNetns runs TestWine again in a new network namespace, where the
// only sockets are the test's own, so that other work on the host does not
// slow Wine's table down. It returns false, having done nothing, where a
// namespace cannot be made (not root, no unshare): the test then runs here.
func inOwnNetns(t *testing.T) bool {
	t.Helper()
	if os.Getenv(netnsEnv) != "" {
		return false
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil || exec.Command(unshare, "-n", "true").Run() != nil {
		return false
	}
	// Its ports above the host's range: host tests that list every
	// namespace by port never meet its sockets.
	cmd := exec.Command(unshare, "-n", "sh", "-c", `ip link set lo up && echo "$PORTS" > /proc/sys/net/ipv4/ip_local_port_range && exec "$@"`, "sh",
		os.Args[0], "-test.run=^TestWine$", "-test.count=1", "-test.v", "-test.timeout=15m")
	cmd.Env = append(os.Environ(), netnsEnv+"=1", "PORTS="+leaktest.OtherPortRange)
	out, err := cmd.CombinedOutput()
	t.Logf("TestWine in its own network namespace:\n%s", out)
	switch {
	case err != nil:
		t.Fatalf("TestWine in its own network namespace: %v", err)
	case bytes.Contains(out, []byte("--- SKIP: TestWine ")):
		t.Skip("skipped in its own network namespace (see the log)")
	}
	return true
}

func TestWine(t *testing.T) {
	if inOwnNetns(t) {
		return
	}
	w := setup(t)
	const n = 3
	for _, tc := range []struct{ name, listen, family string }{
		{"ipv4", "127.0.0.1:0", "ipv4"},
		{"ipv6", "[::1]:0", "ipv6"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := w.startLeak(t, tc.listen)
			_, port, _ := net.SplitHostPort(addr)
			clients := leave(t, addr, n)

			doc := w.list(t, port, n)
			if doc.Source != "iphlpapi" {
				t.Errorf("source %q, want iphlpapi", doc.Source)
			}
			var remotes []string
			for _, s := range doc.Sockets {
				if s.State != "CLOSE_WAIT" || s.Family != tc.family || s.Local != addr || s.RecvQ != nil || s.Inode != nil {
					t.Errorf("socket %+v: want CLOSE_WAIT %s on %s, recv_q and inode null", s, tc.family, addr)
				}
				remotes = append(remotes, s.Remote)
			}
			slices.Sort(remotes)
			if !slices.Equal(remotes, clients) {
				t.Errorf("CLOSE_WAIT sockets' remotes %v, want the clients %v", remotes, clients)
			}

			// The state file's first-seen times give a lower bound on the
			// age from the second run on, where Windows has none of its own.
			state := "Z:" + filepath.Join(t.TempDir(), "state.json")
			for run := 1; run <= 2; run++ {
				out, errOut, code := w.run(t, w.closewait, "check", "--port", port, "--crit-count", "2", "--state-file", state)
				if code != 2 || !strings.HasPrefix(out, "CLOSEWAIT CRITICAL - 3 sockets in CLOSE_WAIT") {
					t.Errorf("check run %d: exit %d, %q %q; want 2 and CRITICAL with 3 sockets", run, code, out, errOut)
				}
				if bound := strings.Contains(out, "oldest >="); bound != (run == 2) {
					t.Errorf("check run %d: %q: lower bound %v, want one on the second run only", run, out, bound)
				}
			}
		})
	}

	t.Run("serve-textfile", func(t *testing.T) {
		promtool := require(t, "promtool", "prometheus")
		addr := w.startLeak(t, "127.0.0.1:0")
		_, port, _ := net.SplitHostPort(addr)
		leave(t, addr, n)
		w.list(t, port, n)
		prom := filepath.Join(w.dir, "closewait.prom")
		if _, errOut, code := w.run(t, w.closewait, "serve", "--port", port, "--textfile", "Z:"+prom); code != 0 {
			t.Fatalf("serve --textfile: exit %d: %s", code, errOut)
		}
		b, err := os.ReadFile(prom)
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(promtool, "check", "metrics")
		cmd.Stdin = bytes.NewReader(b)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool check metrics: %v\n%s", err, out)
		}
		if !strings.Contains(string(b), "\nclosewait_sockets{state=\"close_wait\"} 3\n") {
			t.Errorf("textfile lacks closewait_sockets{state=\"close_wait\"} 3:\n%s", b)
		}
	})

	t.Run("test-exec", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0") // a free port for --exec's server
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		out, errOut, code := w.run(t, w.closewait, "test", "--exec", "./leak.exe -listen "+addr, "--target", addr,
			"--scenarios", "idle-close", "--conns", "2", "--deadline", "300ms", "-o", "json")
		var rep struct {
			Source    string `json:"source"`
			Scenarios []struct {
				Failures []struct {
					Local  string  `json:"local"`
					State  string  `json:"state"`
					RecvQ  *uint32 `json:"recv_q"`
					Remote string  `json:"remote"`
				} `json:"failures"`
			} `json:"scenarios"`
		}
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			t.Fatalf("test -o json: exit %d, %v\n%s\n%s", code, err, out, errOut)
		}
		if code != 1 || rep.Source != "iphlpapi" || len(rep.Scenarios) != 1 || len(rep.Scenarios[0].Failures) != 2 {
			t.Fatalf("test: exit %d, want 1 with both connections of the leak failing:\n%s\n%s", code, out, errOut)
		}
		for _, f := range rep.Scenarios[0].Failures {
			if f.Local != addr || f.State != "CLOSE_WAIT" || f.RecvQ != nil || f.Remote == "" {
				t.Errorf("failure %+v: want CLOSE_WAIT on %s with recv_q null", f, addr)
			}
		}
	})

	// Windows cannot drop a peer's packets for dead-peer; the error names
	// the keepalive defaults (Wine's registry sets none: 2h and 1s).
	t.Run("dead-peer-keepalive-defaults", func(t *testing.T) {
		addr := w.startLeak(t, "127.0.0.1:0")
		_, errOut, code := w.run(t, w.closewait, "test", "--target", addr, "--scenarios", "dead-peer")
		if code != 2 || !strings.Contains(errOut, "KeepAliveTime 2h0m0s (default), KeepAliveInterval 1s (default)") {
			t.Errorf("test --scenarios dead-peer: exit %d, %q; want 2 naming the keepalive defaults", code, errOut)
		}
	})

	t.Run("trace-linux-only", func(t *testing.T) {
		for _, cmd := range [][]string{{"trace"}, {"tracer", "status"}} {
			out, errOut, code := w.run(t, w.closewait, cmd...)
			if code != 2 || out != "" || strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, "Linux-only") {
				t.Errorf("%v: exit %d, stdout %q, stderr %q; want 2 and one Linux-only line", cmd, code, out, errOut)
			}
		}
	})
}
