package harness

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseScenarios(t *testing.T) {
	tests := []struct {
		in      string
		want    []string
		wantErr string
	}{
		{"idle-close", []string{IdleClose}, ""},
		{"burst, idle-close", []string{IdleClose, Burst}, ""}, // run order, not list order
		{"RESET,reset", []string{Reset}, ""},
		{"all", []string{IdleClose, RequestClose, HalfClose, AbortMidRequest, Reset, Burst, DeadPeer}, ""},
		{"default", DefaultScenarios(), ""},
		{"default,dead-peer", append(DefaultScenarios(), DeadPeer), ""},
		{"", nil, "empty scenario"},
		{"idle-close,,burst", nil, "empty scenario"},
		{"idle", nil, `unknown scenario "idle"`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseScenarios(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || !slices.Equal(got, tt.want) {
				t.Fatalf("got %v, %v; want %v", got, err, tt.want)
			}
		})
	}
	if slices.Contains(DefaultScenarios(), DeadPeer) {
		t.Error("dead-peer is in the default set")
	}
}

func TestSplitCommand(t *testing.T) {
	tests := []struct {
		in      string
		want    []string
		wantErr bool
	}{
		{"./server -listen :8080", []string{"./server", "-listen", ":8080"}, false},
		{"  a   b\tc  ", []string{"a", "b", "c"}, false},
		{`sh -c 'exec ./srv --name "x y"'`, []string{"sh", "-c", `exec ./srv --name "x y"`}, false},
		{`a "b c" d\ e ''`, []string{"a", "b c", "d e", ""}, false},
		{`a "it's"`, []string{"a", "it's"}, false},
		{`a "b\"c"`, []string{"a", `b"c`}, false},
		{"", nil, true},
		{"   ", nil, true},
		{`a 'b`, nil, true},
		{`a "b`, nil, true},
		{`a\`, nil, true},
	}
	for _, tt := range tests {
		got, err := SplitCommand(tt.in)
		if (err != nil) != tt.wantErr || !slices.Equal(got, tt.want) {
			t.Errorf("SplitCommand(%q) = %q, %v; want %q, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestPercentile(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 100; i++ {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	for _, tt := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 50 * time.Millisecond}, {0.99, 99 * time.Millisecond}, {1, 100 * time.Millisecond}} {
		if got := percentile(d, tt.q); got != tt.want {
			t.Errorf("percentile(1..100ms, %v) = %v, want %v", tt.q, got, tt.want)
		}
	}
	if got := percentile(d[:1], 0.99); got != time.Millisecond {
		t.Errorf("percentile of one = %v", got)
	}
	if got := percentile(nil, 0.5); got != 0 {
		t.Errorf("percentile of none = %v", got)
	}
}

func TestFmtDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0:                        "0s",
		312 * time.Microsecond:   "0.31ms",
		12400 * time.Microsecond: "12.4ms",
		300 * time.Millisecond:   "300ms",
		2 * time.Second:          "2s",
		2050 * time.Millisecond:  "2.05s",
		90 * time.Second:         "1m30s",
	} {
		if got := fmtDuration(d); got != want {
			t.Errorf("fmtDuration(%v) = %q, want %q", time.Duration(d), got, want)
		}
	}
}

func TestTail(t *testing.T) {
	tl := newTail(16)
	tl.Write([]byte("first line\nsecond\n"))
	tl.Write([]byte("third\n"))
	// Only whole lines of the last 16 bytes are kept.
	if got := tl.String(); got != "second\nthird\n" {
		t.Errorf("tail = %q", got)
	}
}
