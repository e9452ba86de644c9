// Package cli is closewait's command line: one file per command, each
// parsing its flags into options, calling the packages that do the work and
// rendering through report.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
)

// version is what --version prints; Main sets it.
var version = "dev"

// Main runs the command line args and returns the exit status.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer, v string) int {
	version = v
	return exitCode(run(ctx, args, stdout, stderr), stderr)
}

// command is one subcommand: its name, a one-line summary for the top-level
// help, and the function that parses its flags and runs it.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

// commands lists the subcommands in the order the help shows them. A
// function, not a var: completion reads the list, and a var would make an
// initialization cycle.
func commands() []command {
	return []command{
		{"list", "list sockets in CLOSE_WAIT with owners, ages and causes (the default)", runList},
		{"watch", "live view per process: counts, growth, oldest age, fd budget", runWatch},
		{"check", "check thresholds for cron and monitoring: plugin status line and exit code", runCheck},
		{"serve", "serve Prometheus metrics (or write them once with --textfile)", runServe},
		{"trace", "stream sockets entering and leaving CLOSE_WAIT, with owners and durations", runTrace},
		{"tracer", "install, check or remove the BPF tracer that makes ages exact", runTracer},
		{"keepalive", "audit connections for dead peers: keepalive on or off, time to notice", runKeepalive},
		{"test", "drive a server with disconnecting clients; prove it closes in time", runTest},
		{"completion", "print a bash, zsh or fish completion script", runCompletion},
	}
}

// run dispatches to a subcommand; with no command name it runs list.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "help":
			if len(args) == 2 && args[1] == "--man" {
				return writeMan(stdout)
			}
			if len(args) > 1 {
				return run(ctx, []string{args[1], "--help"}, stdout, stderr)
			}
			return printTopHelp(stdout)
		case "--help", "-h":
			return printTopHelp(stdout)
		}
		for _, c := range commands() {
			if c.name == args[0] {
				return c.run(ctx, args[1:], stdout, stderr)
			}
		}
		if args[0] != "" && args[0][0] != '-' {
			if near := nearestCommand(args[0]); near != "" {
				return usageErrorf("unknown command %q: did you mean %s?", args[0], near)
			}
			return usageErrorf("unknown command %q (see closewait --help)", args[0])
		}
	}
	return runList(ctx, args, stdout, stderr)
}

// topAbout and topMore open and close the top-level help; the man page
// uses them too.
const (
	topAbout = `closewait finds TCP sockets stuck in CLOSE_WAIT: the peer closed, the
application never called close(), and one fd leaks per departed client.`
	topMore = `With no command, closewait runs list. "closewait COMMAND --help" shows a
command's flags and examples; "closewait --version" prints the version;
"closewait help --man" prints this help as a manual page.`
)

func printTopHelp(w io.Writer) error {
	fmt.Fprintf(w, "%s\n\nUsage:\n  closewait [command] [flags]\n\nCommands:\n", topAbout)
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, "\n%s\n", topMore)
	return nil
}

// exitError carries an exit status. A nil err means the command already
// said what it had to and only the status is left.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}

func (e *exitError) Unwrap() error { return e.err }

// usageErrorf reports bad input: exit status 2.
func usageErrorf(format string, args ...any) error {
	return &exitError{code: 2, err: fmt.Errorf(format, args...)}
}

// exitCode prints err, if any, as one line and returns the exit status.
func exitCode(err error, stderr io.Writer) int {
	if err == nil {
		return 0
	}
	code := 1
	var ee *exitError
	if errors.As(err, &ee) {
		code = ee.code
		if ee.err == nil {
			return code
		}
	}
	if errors.Is(err, context.Canceled) {
		return 130
	}
	fmt.Fprintf(stderr, "closewait: %v\n", err)
	return code
}

// nearestCommand returns the command name fewest edits from name, at
// most two; "" when none is that near or two are equally near.
func nearestCommand(name string) string {
	found, best, tie := "", 3, false
	for _, c := range commands() {
		switch d := editDistance(name, c.name); {
		case d < best:
			found, best, tie = c.name, d, false
		case d == best:
			tie = true
		}
	}
	if tie {
		return ""
	}
	return found
}

// editDistance is the Levenshtein distance between a and b, in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
