// Package testserver builds and starts the example servers in
// testdata/servers for tests: leak, noread, correct, nokeepalive and
// keepalive.
package testserver

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
)

// dirPrefix names the per-process build directories in the temp dir; a
// directory whose process is gone is removed by the next build.
const dirPrefix = "closewait-testservers-"

// Build compiles every example server once per test process and returns
// the path of the named one.
func Build(t testing.TB, name string) string {
	t.Helper()
	buildOnce.Do(func() { buildDir, buildErr = build() })
	if buildErr != nil {
		t.Fatalf("building example servers: %v", buildErr)
	}
	bin := filepath.Join(buildDir, name)
	if runtime.GOOS == "windows" {
		bin += ".exe"
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("no example server %q: %v", name, err)
	}
	return bin
}

func build() (string, error) {
	removeStale()
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(os.TempDir(), dirPrefix+strconv.Itoa(os.Getpid()))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("the go command is not in PATH: %w", err)
	}
	cmd := exec.Command(goBin, "build", "-o", dir+string(filepath.Separator), "./testdata/servers/...")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return dir, nil
}

// removeStale deletes build directories of test processes that have exited.
func removeStale() {
	matches, _ := filepath.Glob(filepath.Join(os.TempDir(), dirPrefix+"*"))
	for _, m := range matches {
		pid, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(m), dirPrefix))
		if err != nil || pid == os.Getpid() {
			continue
		}
		if p, err := os.FindProcess(pid); err == nil && p.Signal(syscall.Signal(0)) == nil {
			continue
		}
		os.RemoveAll(m)
	}
}

// moduleRoot finds the directory of go.mod above this source file's
// package directory, wherever the test runs from.
func moduleRoot() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", fmt.Errorf("cannot locate the source tree")
	}
	dir := filepath.Dir(file)
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod above %s", filepath.Dir(file))
		}
		dir = parent
	}
}

// Server is a running example server.
type Server struct {
	Addr string // where it listens, HOST:PORT
	cmd  *exec.Cmd
}

// PID returns the server's process id.
func (s *Server) PID() int { return s.cmd.Process.Pid }

// Start runs the named example server on an ephemeral loopback port and
// returns once it listens. It is killed when the test ends.
func Start(t testing.TB, name string, args ...string) *Server {
	t.Helper()
	bin := Build(t, name)
	cmd := exec.Command(bin, append([]string{"-listen", "127.0.0.1:0"}, args...)...)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = procAttr()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	line := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		if sc.Scan() {
			line <- sc.Text()
		}
		close(line)
		for sc.Scan() { // keep the pipe drained
		}
	}()
	select {
	case l, ok := <-line:
		addr, found := strings.CutPrefix(l, "listening on ")
		if !ok || !found {
			t.Fatalf("%s: want a first line \"listening on ADDR\", got %q", name, l)
		}
		return &Server{Addr: addr, cmd: cmd}
	case <-time.After(10 * time.Second):
		t.Fatalf("%s did not start listening within 10s", name)
	}
	return nil
}
