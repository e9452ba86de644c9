package report_test

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/closewait/closewait/collector"
	"github.com/closewait/closewait/report"
)

func TestTraceWriter(t *testing.T) {
	at := time.Date(2025, 1, 2, 3, 4, 5, 600e6, time.UTC)
	owners := []collector.Owner{{PID: 812, Comm: "ngi\x1bnx", FD: 6}, {PID: 900, Comm: "worker", FD: 3}}
	enter := collector.Event{Time: at, From: collector.StateEstablished, Socket: collector.Socket{
		Family: collector.FamilyIPv4, State: collector.StateCloseWait, Cookie: 7, Inode: 9, Owners: owners,
		Local: netip.MustParseAddrPort("127.0.0.1:8080"), Remote: netip.MustParseAddrPort("127.0.0.1:50000"),
	}}
	leave := enter
	leave.From, leave.Socket.State, leave.InCloseWait, leave.InCloseWaitKnown = collector.StateCloseWait, collector.StateLastAck, 1500*time.Millisecond, true
	unknown := leave
	unknown.InCloseWait, unknown.InCloseWaitKnown = 0, false

	var table bytes.Buffer
	tw := report.NewTraceWriter(&table, false)
	for _, e := range []*collector.Event{&enter, &leave, &unknown} {
		if err := tw.Write(e); err != nil {
			t.Fatal(err)
		}
	}
	gone := enter // had a file: owner unknown
	gone.Socket.Owners, gone.OwnersUnknown = nil, true
	tw.Write(&gone)
	queued := gone // no file: not accepted
	queued.Socket.Inode, queued.OwnersUnknown = 0, false
	tw.Write(&queued)
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
	tw = report.NewTraceWriter(&jsonl, true)
	leave.Socket.Owners = owners[:1]
	tw.Write(&leave)
	tw.Write(&gone)
	tw.Write(&queued)
	wantJSON := `{"time":"2025-01-02T03:04:05.6Z","event":"leave","old_state":"CLOSE_WAIT","new_state":"LAST_ACK","family":"ipv4","local":"127.0.0.1:8080","remote":"127.0.0.1:50000","cookie":7,"inode":9,"owners":[{"pid":812,"comm":"ngi\u001bnx","fd":6,"process":null,"container":null}],"close_wait_seconds":1.5}
{"time":"2025-01-02T03:04:05.6Z","event":"enter","old_state":"ESTABLISHED","new_state":"CLOSE_WAIT","family":"ipv4","local":"127.0.0.1:8080","remote":"127.0.0.1:50000","cookie":7,"inode":9,"owners":[],"owners_unknown":true}
{"time":"2025-01-02T03:04:05.6Z","event":"enter","old_state":"ESTABLISHED","new_state":"CLOSE_WAIT","family":"ipv4","local":"127.0.0.1:8080","remote":"127.0.0.1:50000","cookie":7,"inode":0,"owners":[]}
`
	if jsonl.String() != wantJSON {
		t.Errorf("jsonl:\n%s\nwant:\n%s", jsonl.String(), wantJSON)
	}
}
