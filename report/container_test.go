package report

import (
	"bytes"
	"strings"
	"testing"

	"github.com/closewait/closewait/collector"
)

// TestTableContainerColumn checks the CONTAINER/POD cells: the pod name
// when known, else the short id, "-" for a host process, on continuation
// rows too and before COMMAND LINE under --wide.
func TestTableContainerColumn(t *testing.T) {
	const id = "3f1c2a7d9b8e4f60a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718"
	named := &collector.Process{Cmdline: "server", Container: &collector.Container{ID: id, Pod: "web-7d9f8c6b5-x2x4k"}}
	bare := &collector.Process{Cmdline: "worker", Container: &collector.Container{Runtime: "docker", ID: id}}
	host := &collector.Process{Cmdline: "sleep 3600"}
	snap := &collector.Snapshot{Sockets: []collector.Socket{{
		State: collector.StateCloseWait,
		Local: ap("10.0.0.5:8080"), Remote: ap("10.0.0.17:51552"),
		Owners: []collector.Owner{{PID: 10, Comm: "server", FD: 3, Proc: named}, {PID: 11, Comm: "worker", FD: 3, Proc: bare},
			{PID: 12, Comm: "sleep", FD: 3, Proc: host}},
		Causes: []collector.Cause{collector.CauseInherited, collector.CauseEOFNotClosed},
	}}}
	for _, wide := range []bool{false, true} {
		var buf bytes.Buffer
		if err := Table(&buf, snap, TableOptions{Wide: wide}); err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(buf.String(), "\n")
		fields := func(i int) []string { return strings.Fields(lines[i]) }
		head := "CONTAINER/POD"
		if wide {
			head += " COMMAND LINE"
		}
		if !strings.HasSuffix(strings.Join(fields(0), " "), head) {
			t.Errorf("wide=%v header %q, want it to end in %q", wide, lines[0], head)
		}
		want := [][]string{
			{"web-7d9f8c6b5-x2x4k", "server"},
			{"eof-not-closed", id[:12], "worker"},
			{"-", "sleep", "3600"},
		}
		for i, w := range want {
			f := fields(i + 1)
			if !wide {
				w = w[:len(w)-1]
				if i == 2 {
					w = w[:1]
				}
			}
			if got := f[len(f)-len(w):]; strings.Join(got, " ") != strings.Join(w, " ") {
				t.Errorf("wide=%v row %d %q, want it to end in %q", wide, i+1, lines[i+1], w)
			}
		}
		// The summary names the container of each process.
		sum := buf.String()[strings.Index(buf.String(), "\n\n")+2:]
		if !strings.Contains(sum, "CONTAINER/POD") || !strings.Contains(sum, "web-7d9f8c6b5-x2x4k") || !strings.Contains(sum, id[:12]) {
			t.Errorf("summary does not name the containers:\n%s", sum)
		}
	}
}
