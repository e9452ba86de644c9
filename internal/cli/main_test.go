package cli

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// runArgs runs the command line and returns stdout, stderr and the exit status.
func runArgs(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), args, &stdout, &stderr)
	code := exitCode(err, &stderr)
	return stdout.String(), stderr.String(), code
}

func TestBadCommandLines(t *testing.T) {
	tests := []struct {
		args []string
		want string // part of the one-line error
	}{
		{[]string{"--port", "abc"}, "--port"},
		{[]string{"--port", "0"}, "--port"},
		{[]string{"--port", "70000"}, "--port"},
		{[]string{"--port", "8100-8000"}, "empty range"},
		{[]string{"--port", "1-70000"}, "--port"},
		{[]string{"--sport", "80-"}, "--sport"},
		{[]string{"--src", "10.0.0.0/33"}, "--src"},
		{[]string{"--dst", "example.com"}, "--dst"},
		{[]string{"--exclude-port", "0"}, "--exclude-port"},
		{[]string{"--top", "-1"}, "--top"},
		{[]string{"--sport", "-1"}, "--sport"},
		{[]string{"--dport", "80,x"}, "--dport"},
		{[]string{"--pid", "0"}, "--pid"},
		{[]string{"--pid", "abc"}, "--pid"},
		{[]string{"--state", "bogus"}, "--state"},
		{[]string{"--state", ""}, "--state"},
		{[]string{"--state", "close-wait,,established"}, "--state"},
		{[]string{"--older-than", "5x"}, "--older-than"},
		{[]string{"--older-than", "-5s"}, "--older-than"},
		{[]string{"--older-than"}, "--older-than"},
		{[]string{"--source", "bpfx"}, "--source"},
		{[]string{"-o", "yaml"}, "--output"},
		{[]string{"--output"}, "--output"},
		{[]string{"--bogus"}, "--bogus"},
		{[]string{"-z"}, "'z'"},
		{[]string{"list", "extra"}, `"extra"`},
		{[]string{"frobnicate"}, `"frobnicate" (see closewait --help)`},
		{[]string{"lst"}, `"lst": did you mean list?`},
		{[]string{"chekc"}, "did you mean check?"},
		{[]string{"trac"}, "did you mean trace?"},
		{[]string{"lest"}, `"lest" (see closewait --help)`}, // list or test: one edit each
		{[]string{"--comm", ""}, "--comm"},
		{[]string{"list", "--port"}, "--port"},
		{[]string{"help", "nosuch"}, `"nosuch"`},
		{[]string{"-4", "--summary=maybe"}, "--summary"},
		{[]string{"--source", "procfs", "--older-than", "1m"}, "--older-than"},
		{[]string{"--older-than", "110000d"}, "--older-than"}, // would wrap negative
		{[]string{"--older-than", "36500d1s"}, "--older-than"},
		{[]string{"--older-than", "99999999999999999999d"}, "--older-than"},
		{[]string{"--state", "established", "--older-than", "1s"}, "not established"},
		{[]string{"--state", "all", "--older-than", "1s"}, "--older-than"},
		{[]string{"watch", "--interval", "110000d"}, "--interval"},
		{[]string{"watch", "--state", "close-wait,last-ack", "--older-than", "1s"}, "not last-ack"},
		{[]string{"test", "--port", "80", "--conns", "99999999999999999999"}, "--conns"},
		{[]string{"test", "--port", "80", "--conns", "10001"}, "--conns"},
		{[]string{"test", "--port", "80", "--deadline", "110000d"}, "--deadline"},
		{[]string{"serve", "--cache-ttl", "110000d"}, "--cache-ttl"},
		{[]string{"serve", "--listen", "999.1.1.1:80"}, "--listen"},
		{[]string{"serve", "--listen", "127.0.0.1:99999"}, "--listen"},
		{[]string{"watch", "--interval", "0s"}, "--interval: 0s: want at least 100ms"},
		{[]string{"watch", "--count", "-1"}, "--count: -1: want 0 or more"},
		{[]string{"test", "--port", "80", "--conns", "0"}, "--conns: 0: want 1 to 10000"},
		{[]string{"test", "--port", "80", "--deadline", "0s"}, "--deadline: 0s: want more than 0"},
		{[]string{"--older-than", "1d-2d"}, "--older-than"},
		{[]string{"keepalive", "--detect-over", "5x"}, "--detect-over"},
		{[]string{"keepalive", "--detect-over", "-1s"}, "--detect-over"},
		{[]string{"keepalive", "--idle-over", "110000d"}, "--idle-over"},
		{[]string{"keepalive", "--idle-over"}, "--idle-over"},
		{[]string{"keepalive", "--no-keepalive=perhaps"}, "--no-keepalive"},
		{[]string{"keepalive", "--state", "bogus"}, "--state"},
		{[]string{"keepalive", "--older-than", "1m"}, "--older-than"},
		{[]string{"keepalive", "-o", "yaml"}, "--output"},
		{[]string{"keepalive", "extra"}, `"extra"`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) { assertUsageError(t, tt.want, tt.args...) })
	}
}

// assertUsageError runs closewait with args and checks the answer to a
// bad command line: exit status 2, nothing on stdout, one stderr line
// "closewait: ..." that names want, and no sign of a crash.
func assertUsageError(t *testing.T, want string, args ...string) {
	t.Helper()
	stdout, stderr, code := runArgs(t, args...)
	if code != 2 {
		t.Errorf("exit status %d, want 2 (stderr %q)", code, stderr)
	}
	if stdout != "" {
		t.Errorf("stdout %q, want nothing", stdout)
	}
	if strings.Count(stderr, "\n") != 1 || !strings.HasPrefix(stderr, "closewait: ") {
		t.Errorf("stderr %q, want one line starting with closewait:", stderr)
	}
	if !strings.Contains(stderr, want) {
		t.Errorf("stderr %q does not name %s", stderr, want)
	}
	if strings.Contains(stderr, "goroutine") || strings.Contains(stderr, "panic") {
		t.Errorf("stderr looks like a crash: %q", stderr)
	}
}

func TestHelpAndVersion(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--help"}, "Commands:"},
		{[]string{"-h"}, "Commands:"},
		{[]string{"help"}, "Commands:"},
		{[]string{"list", "--help"}, "--older-than"},
		{[]string{"help", "list"}, "Examples:"},
		{[]string{"--version"}, "closewait "},
		{[]string{"list", "--version"}, "closewait "},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			stdout, stderr, code := runArgs(t, tt.args...)
			if code != 0 || stderr != "" {
				t.Errorf("exit %d, stderr %q; want success and no stderr", code, stderr)
			}
			if !strings.Contains(stdout, tt.want) {
				t.Errorf("stdout lacks %q:\n%s", tt.want, stdout)
			}
		})
	}
	// Every command's help must work and show examples.
	for _, c := range commands() {
		stdout, _, code := runArgs(t, c.name, "--help")
		if code != 0 || !strings.Contains(stdout, "Examples:") {
			t.Errorf("%s --help: exit %d, output:\n%s", c.name, code, stdout)
		}
	}
}

var updateHelp = flag.Bool("update", false, "rewrite testdata/help/*.golden from the current output")

// TestHelpGolden pins every command's --help byte for byte: help is part of
// the interface, and a change to it should be one on purpose.
func TestHelpGolden(t *testing.T) {
	names := []string{""}
	for _, c := range commands() {
		names = append(names, c.name)
	}
	for _, name := range names {
		args, file := []string{"--help"}, "closewait.golden"
		if name != "" {
			args, file = []string{name, "--help"}, name+".golden"
		}
		stdout, _, code := runArgs(t, args...)
		if code != 0 {
			t.Fatalf("%v: exit %d", args, code)
		}
		path := filepath.Join("testdata", "help", file)
		if *updateHelp {
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, []byte(stdout), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		want, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (go test -run TestHelpGolden -update writes it)", err)
		}
		if stdout != string(want) {
			t.Errorf("%v differs from %s (go test -run TestHelpGolden -update rewrites it)\ngot:\n%s", args, path, stdout)
		}
	}
}
