package main

import (
	"encoding/json"
	"strings"
	"testing"

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
