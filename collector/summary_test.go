package collector

import (
	"reflect"
	"slices"
	"testing"
	"time"
)

func TestSummarizeEdges(t *testing.T) {
	tests := []struct {
		name  string
		socks []Socket
		want  ProcessSummary
	}{
		{
			name: "same pid twice on one socket counts once",
			socks: []Socket{{Owners: []Owner{{PID: 7, Comm: "a", FD: 3}, {PID: 7, Comm: "a", FD: 4}},
				Age: time.Second, AgeKnown: true, AgeExact: true}},
			want: ProcessSummary{PID: 7, Comm: "a", Sockets: 1, Oldest: time.Second, OldestKnown: true, OldestExact: true},
		},
		{
			name: "no ages known",
			socks: []Socket{
				{Owners: []Owner{{PID: 7, Comm: "a", FD: 3}}},
				{Owners: []Owner{{PID: 7, Comm: "a", FD: 4}}},
			},
			want: ProcessSummary{PID: 7, Comm: "a", Sockets: 2},
		},
		{
			name: "oldest is a lower bound",
			socks: []Socket{
				{Owners: []Owner{{PID: 7, Comm: "a", FD: 3}}, Age: time.Minute, AgeKnown: true, AgeMax: 2 * time.Minute},
				{Owners: []Owner{{PID: 7, Comm: "a", FD: 4}}, Age: time.Second, AgeKnown: true, AgeExact: true},
			},
			want: ProcessSummary{PID: 7, Comm: "a", Sockets: 2, Oldest: time.Minute, OldestKnown: true},
		},
		{
			name: "younger lower bound without upper bound",
			socks: []Socket{
				{Owners: []Owner{{PID: 7, Comm: "a", FD: 3}}, Age: time.Minute, AgeKnown: true, AgeExact: true},
				{Owners: []Owner{{PID: 7, Comm: "a", FD: 4}}, Age: time.Second, AgeKnown: true},
			},
			want: ProcessSummary{PID: 7, Comm: "a", Sockets: 2, Oldest: time.Minute, OldestKnown: true},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.want.Causes = map[Cause]int{}
			got := Summarize(&Snapshot{Sockets: tt.socks})
			if len(got) != 1 || !reflect.DeepEqual(got[0], tt.want) {
				t.Errorf("got %+v, want [%+v]", got, tt.want)
			}
		})
	}
	if got := Summarize(&Snapshot{}); len(got) != 0 {
		t.Errorf("empty snapshot: got %+v", got)
	}
}

func TestSummarizeOrder(t *testing.T) {
	sock := func(pid int, age time.Duration, known bool) Socket {
		return Socket{Owners: []Owner{{PID: pid, Comm: "p"}}, Age: age, AgeKnown: known, AgeExact: true}
	}
	snap := &Snapshot{Sockets: []Socket{
		sock(30, 0, false),
		sock(20, time.Second, true),
		sock(10, time.Second, true),
		sock(40, time.Minute, true),
		sock(50, time.Second, true), sock(50, time.Second, true),
	}}
	var pids []int
	for _, r := range Summarize(snap) {
		pids = append(pids, r.PID)
	}
	// Most sockets, then oldest (unknown last), then pid.
	if want := []int{50, 40, 10, 20, 30}; !slices.Equal(pids, want) {
		t.Errorf("order %v, want %v", pids, want)
	}
}
