package cli

import (
	"encoding/json"
	"encoding/xml"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/closewait/closewait/internal/testserver"
)

// TestHarnessExitStatus runs "closewait test" end to end against the
// example servers: 0 when all pass, 1 when a scenario fails, 2 when the
// run cannot start.
func TestHarnessExitStatus(t *testing.T) {
	t.Parallel()
	correct := testserver.Build(t, "correct")
	leak := testserver.Build(t, "leak")

	t.Run("exec correct: 0", func(t *testing.T) {
		t.Parallel()
		addr := testserver.FreeAddr(t)
		junit := filepath.Join(t.TempDir(), "junit.xml")
		stdout, stderr, code := runArgs(t, "test", "--exec", correct+" -listen "+addr, "--target", addr, "--junit", junit)
		if code != 0 {
			t.Fatalf("exit status %d, want 0\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
		}
		if !strings.Contains(stdout, "6 scenarios against "+addr+": all passed") {
			t.Errorf("stdout:\n%s", stdout)
		}
		if strings.Contains(stderr, "server output") {
			t.Errorf("server output shown although all passed:\n%s", stderr)
		}
		var doc struct {
			Tests    int `xml:"tests,attr"`
			Failures int `xml:"failures,attr"`
		}
		if b, err := os.ReadFile(junit); err != nil {
			t.Error(err)
		} else if err := xml.Unmarshal(b, &doc); err != nil || doc.Tests != 6 || doc.Failures != 0 {
			t.Errorf("junit: %v, tests %d failures %d\n%s", err, doc.Tests, doc.Failures, b)
		}
	})

	t.Run("target leak: 1", func(t *testing.T) {
		t.Parallel()
		srv := testserver.Start(t, "leak")
		stdout, stderr, code := runArgs(t, "test", "--target", srv.Addr, "--scenarios", "idle-close,reset",
			"--conns", "2", "--deadline", "300ms", "-o", "json")
		if code != 1 {
			t.Fatalf("exit status %d, want 1\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
		}
		var doc struct {
			Passed    bool
			Scenarios []struct {
				Name     string
				Passed   bool
				Failures []struct{ Causes []string }
			}
		}
		if err := json.Unmarshal([]byte(stdout), &doc); err != nil {
			t.Fatalf("%v\n%s", err, stdout)
		}
		if doc.Passed || len(doc.Scenarios) != 2 || doc.Scenarios[0].Passed || !doc.Scenarios[1].Passed {
			t.Fatalf("want idle-close failed, reset passed:\n%s", stdout)
		}
		if f := doc.Scenarios[0].Failures; len(f) != 2 || f[0].Causes[0] != "eof-not-closed" {
			t.Errorf("idle-close failures %+v, want 2 x eof-not-closed", f)
		}
	})

	t.Run("exec leak: 1 with server output", func(t *testing.T) {
		t.Parallel()
		addr := testserver.FreeAddr(t)
		stdout, stderr, code := runArgs(t, "test", "--exec", leak+" -listen "+addr, "--target", addr,
			"--scenarios", "half-close", "--conns", "2", "--deadline", "300ms", "--http")
		if code != 1 {
			t.Fatalf("exit status %d, want 1\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
		}
		if !strings.Contains(stdout, "eof-not-closed") || !strings.Contains(stdout, "never called close()") {
			t.Errorf("stdout does not name the cause:\n%s", stdout)
		}
		if !strings.Contains(stderr, "server output") || !strings.Contains(stderr, "| listening on "+addr) {
			t.Errorf("stderr does not show the server's output:\n%s", stderr)
		}
	})

	t.Run("not reachable: 2", func(t *testing.T) {
		t.Parallel()
		_, port, _ := net.SplitHostPort(testserver.ClosedAddr(t))
		_, stderr, code := runArgs(t, "test", "--port", port)
		if code != 2 || !strings.Contains(stderr, "not reachable") {
			t.Errorf("exit status %d, stderr %q; want 2, not reachable", code, stderr)
		}
	})

	t.Run("exec fails: 2", func(t *testing.T) {
		t.Parallel()
		addr := testserver.FreeAddr(t)
		_, stderr, code := runArgs(t, "test", "--exec", correct+" -listen nonsense", "--target", addr)
		if code != 2 || !strings.Contains(stderr, "exited before accepting connections on "+addr) {
			t.Errorf("exit status %d, stderr %q; want 2, exited before accepting", code, stderr)
		}
		if !strings.Contains(stderr, "| ") {
			t.Errorf("stderr does not show the server's output: %q", stderr)
		}
		_, stderr, code = runArgs(t, "test", "--exec", "/nonexistent/server", "--target", addr)
		if code != 2 || !strings.Contains(stderr, "/nonexistent/server") {
			t.Errorf("exit status %d, stderr %q; want 2 naming the command", code, stderr)
		}
	})
}
