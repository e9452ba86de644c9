package cli

import (
	"strings"
	"testing"
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
