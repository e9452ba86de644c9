package cli

import (
	"strings"
	"testing"
)

func TestHarnessBadCommandLines(t *testing.T) {
	tests := []struct {
		args []string
		want string // part of the one-line error
	}{
		{[]string{"test"}, "--target"},
		{[]string{"test", "--exec", "./server"}, "--exec"},
		{[]string{"test", "--target", "127.0.0.1:80", "--port", "80"}, "not both"},
		{[]string{"test", "--port", "0"}, "--port"},
		{[]string{"test", "--port", "70000"}, `"70000" is not a port (1-65535)`},
		{[]string{"test", "--target", "127.0.0.1"}, "--target"},
		{[]string{"test", "--target", "127.0.0.1:0"}, "--target"},
		{[]string{"test", "--target", "127.0.0.1:http"}, "--target"},
		{[]string{"test", "--target", "999.1.1.1:80"}, "--target"},
		{[]string{"test", "--target", "[::1]:65536"}, "--target"},
		{[]string{"test", "--port", "80", "--conns", "0"}, "--conns"},
		{[]string{"test", "--port", "80", "--conns", "x"}, "--conns"},
		{[]string{"test", "--port", "80", "--deadline", "0s"}, "--deadline"},
		{[]string{"test", "--port", "80", "--deadline", "soon"}, "--deadline"},
		{[]string{"test", "--port", "80", "--dead-peer-deadline", "0s"}, "--dead-peer-deadline"},
		{[]string{"test", "--port", "80", "--start-timeout", "0s"}, "--start-timeout"},
		{[]string{"test", "--port", "80", "--scenarios", "idle"}, "--scenarios"},
		{[]string{"test", "--port", "80", "--scenarios", ""}, "--scenarios"},
		{[]string{"test", "--port", "80", "--http", "--send", "x"}, "not both"},
		{[]string{"test", "--port", "80", "--send", ""}, "--send"},
		{[]string{"test", "--port", "80", "--send", `\q`}, "--send"},
		{[]string{"test", "--port", "80", "--exec", `./server 'x`}, "--exec"},
		{[]string{"test", "--port", "80", "--exec", ""}, "--exec"},
		{[]string{"test", "--port", "80", "-o", "xml"}, "--output"},
		{[]string{"test", "--port", "80", "--source", "magic"}, "--source"},
		{[]string{"test", "--port", "80", "extra"}, `"extra"`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) { assertUsageError(t, tt.want, tt.args...) })
	}
}

func TestHarnessHelp(t *testing.T) {
	stdout, _, code := runArgs(t, "test", "--help")
	if code != 0 {
		t.Fatalf("exit status %d", code)
	}
	for _, want := range []string{"Examples:", "--exec", "--junit", "dead-peer", "idle-close", "Exit status"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("help lacks %q", want)
		}
	}
	if stdout, _, _ := runArgs(t, "--help"); !strings.Contains(stdout, "  test ") {
		t.Error("top-level help does not list test")
	}
}

func TestUnescape(t *testing.T) {
	for in, want := range map[string]string{
		`PING\r\n`: "PING\r\n",
		`a"b`:      `a"b`,
		`\x00\t`:   "\x00\t",
		`plain`:    "plain",
		`back\\ok`: `back\ok`,
	} {
		if got, err := unescape(in); err != nil || got != want {
			t.Errorf("unescape(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := unescape(`end\`); err == nil {
		t.Error("no error for a trailing backslash")
	}
}
