package cli

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/closewait/closewait/ebpf"
)

func TestTraceBadCommandLines(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"trace", "extra"}, `"extra"`},
		{[]string{"trace", "--port", "x"}, "--port"},
		{[]string{"trace", "-o", "json"}, "--output"},
		{[]string{"trace", "--comm", ""}, "--comm"},
		{[]string{"trace", "--hook", "kprobe"}, "--hook"},
		{[]string{"trace", "--state", "close-wait"}, "--state"},
		{[]string{"tracer"}, "missing action"},
		{[]string{"tracer", "start"}, `"start"`},
		{[]string{"tracer", "install", "now"}, `"now"`},
		{[]string{"tracer", "status", "-o", "yaml"}, "--output"},
		{[]string{"tracer", "install", "--hook", "fentry"}, "--hook"},
		{[]string{"tracer", "install", "--pin-dir", ""}, "--pin-dir"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) { assertUsageError(t, tt.want, tt.args...) })
	}
}

func TestTraceWriter(t *testing.T) {
	enter := ebpf.Event{
		Cookie: 7, Inode: 9, Family: 2, OldState: 1, NewState: 8,
		Local: netip.MustParseAddrPort("127.0.0.1:8080"), Remote: netip.MustParseAddrPort("127.0.0.1:50000"),
	}
	leave := enter
	leave.OldState, leave.NewState, leave.Flags, leave.CloseWait = 8, 9, ebpf.EvDuration, 1500*time.Millisecond
	unknown := leave
	unknown.Flags, unknown.CloseWait = 0, 0
	at := time.Date(2025, 1, 2, 3, 4, 5, 600e6, time.UTC)
	owners := []ebpf.Owner{{PID: 812, Comm: "ngi\x1bnx", FD: 6}, {PID: 900, Comm: "worker", FD: 3}}

	var table bytes.Buffer
	tw := newTraceWriter(&table, "table")
	for _, e := range []*ebpf.Event{&enter, &leave, &unknown} {
		if err := tw.write(traceLine{time: at, ev: e, owners: owners}); err != nil {
			t.Fatal(err)
		}
	}
	tw.write(traceLine{time: at, ev: &enter}) // had a file: owner unknown
	queued := enter
	queued.Inode = 0
	tw.write(traceLine{time: at, ev: &queued}) // no file: not accepted
	want := []string{
		"TIME             PID COMMAND           FD LOCAL                  REMOTE                 TRANSITION                 IN CLOSE_WAIT",
		"03:04:05.600   812+1 ngi\\x1bnx          6 127.0.0.1:8080         127.0.0.1:50000        ESTABLISHED -> CLOSE_WAIT  ",
		"03:04:05.600   812+1 ngi\\x1bnx          6 127.0.0.1:8080         127.0.0.1:50000        CLOSE_WAIT -> LAST_ACK     1.5s",
		"03:04:05.600   812+1 ngi\\x1bnx          6 127.0.0.1:8080         127.0.0.1:50000        CLOSE_WAIT -> LAST_ACK     ?",
		"03:04:05.600       ? ?                  ? 127.0.0.1:8080         127.0.0.1:50000        ESTABLISHED -> CLOSE_WAIT  ",
		"03:04:05.600       - -                  - 127.0.0.1:8080         127.0.0.1:50000        ESTABLISHED -> CLOSE_WAIT  ",
	}
	if got := strings.Split(strings.TrimSuffix(table.String(), "\n"), "\n"); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("table:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	var jsonl bytes.Buffer
	tw = newTraceWriter(&jsonl, "jsonl")
	tw.write(traceLine{time: at, ev: &leave, owners: owners[:1]})
	tw.write(traceLine{time: at, ev: &enter})
	tw.write(traceLine{time: at, ev: &queued})
	wantJSON := `{"time":"2025-01-02T03:04:05.6Z","event":"leave","old_state":"CLOSE_WAIT","new_state":"LAST_ACK","family":"ipv4","local":"127.0.0.1:8080","remote":"127.0.0.1:50000","cookie":7,"inode":9,"owners":[{"pid":812,"comm":"ngi\u001bnx","fd":6}],"close_wait_seconds":1.5}
{"time":"2025-01-02T03:04:05.6Z","event":"enter","old_state":"ESTABLISHED","new_state":"CLOSE_WAIT","family":"ipv4","local":"127.0.0.1:8080","remote":"127.0.0.1:50000","cookie":7,"inode":9,"owners":[],"owners_unknown":true}
{"time":"2025-01-02T03:04:05.6Z","event":"enter","old_state":"ESTABLISHED","new_state":"CLOSE_WAIT","family":"ipv4","local":"127.0.0.1:8080","remote":"127.0.0.1:50000","cookie":7,"inode":0,"owners":[]}
`
	if jsonl.String() != wantJSON {
		t.Errorf("jsonl:\n%s\nwant:\n%s", jsonl.String(), wantJSON)
	}
}
