package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/closewait/closewait/harness"
)

// stopGrace is how long a server started with --exec gets between
// SIGTERM and SIGKILL.
const stopGrace = 3 * time.Second

// serverOutputLines bounds the server output shown when a scenario fails.
const serverOutputLines = 40

// maxConns bounds --conns: each connection costs the test an fd, and the
// server under test one more.
const maxConns = 10000

func runTest(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var (
		o                      harness.Options
		target, execLine       string
		scenarios, send        string
		output, junitPath      string
		port                   uint16
		useHTTP                bool
		startTimeout           = 10 * time.Second
		deadline, deadPeerWait = harness.DefaultDeadline, harness.DefaultDeadPeerDeadline
	)
	fs := newFlagSet("test", `closewait test (--target HOST:PORT | --port PORT) [--exec "CMD ARGS"] [flags]`,
		harnessAbout(),
		`  closewait test --target 127.0.0.1:8080
  closewait test --exec "./server -listen :8080" --port 8080 --junit closewait.xml
  closewait test --port 8080 --http --scenarios request-close,half-close --conns 50
  closewait test --port 6379 --send 'PING\r\n' -o json
  sudo closewait test --port 8080 --scenarios dead-peer --dead-peer-deadline 30s`)
	fs.StringVar(&target, "target", "", "server under test, HOST:PORT (on this host)")
	fs.Var(portValue{&port}, "port", "shorthand for --target 127.0.0.1:PORT")
	fs.StringVar(&execLine, "exec", "", `start the server with this command line (no shell), wait until it accepts, stop it afterwards`)
	fs.Var(durationValue{&startTimeout}, "start-timeout", "how long --exec waits for the server to accept")
	fs.StringVar(&scenarios, "scenarios", "", "comma list of scenarios, or all (default: all but dead-peer)")
	fs.IntVar(&o.Conns, "conns", harness.DefaultConns, "connections per scenario")
	fs.Var(durationValue{&deadline}, "deadline", "max time in CLOSE_WAIT after the client's FIN")
	fs.Var(durationValue{&deadPeerWait}, "dead-peer-deadline", "max time the server keeps a vanished client")
	fs.StringVar(&send, "send", "", `payload the clients send; \r \n \t \xNN escapes work (default "closewait test\n")`)
	fs.BoolVar(&useHTTP, "http", false, "send a minimal HTTP/1.1 request instead of --send")
	fs.VarP(newEnum(&output, "table", "table", "json"), "output", "o", "output format: table, json")
	fs.StringVar(&junitPath, "junit", "", "also write a JUnit XML report to this file")
	addSourceFlag(fs, &o.Source, "source for stuck sockets' details")
	if done, err := fs.parse(args, stdout); done || err != nil {
		return err
	}
	if err := fs.noArgs(); err != nil {
		return err
	}

	switch {
	case target != "" && fs.Changed("port"):
		return usageErrorf("test: give --target or --port, not both")
	case fs.Changed("port") && port == 0:
		return usageErrorf("--port: 0: want 1 to 65535")
	case fs.Changed("port"):
		target = net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port)))
	case target == "" && execLine != "":
		return usageErrorf("--exec: say where the server listens with --target HOST:PORT or --port PORT")
	case target == "":
		return usageErrorf("test: no server to test: give --target HOST:PORT or --port PORT (see closewait test --help)")
	}
	if err := checkHostPort(target, 1); err != nil {
		return usageErrorf("--target: %v", err)
	}
	o.Target = target
	if o.Conns < 1 || o.Conns > maxConns {
		return usageErrorf("--conns: %d: want 1 to %d", o.Conns, maxConns)
	}
	if deadline <= 0 {
		return usageErrorf("--deadline: %v: want more than 0", deadline)
	}
	if deadPeerWait <= 0 {
		return usageErrorf("--dead-peer-deadline: %v: want more than 0", deadPeerWait)
	}
	if startTimeout <= 0 {
		return usageErrorf("--start-timeout: %v: want more than 0", startTimeout)
	}
	o.Deadline, o.DeadPeerDeadline = deadline, deadPeerWait
	if fs.Changed("scenarios") {
		list, err := harness.ParseScenarios(scenarios)
		if err != nil {
			return usageErrorf("--scenarios: %v", err)
		}
		o.Scenarios = list
	}
	switch {
	case useHTTP && fs.Changed("send"):
		return usageErrorf("--http: give --send or --http, not both")
	case useHTTP:
		o.Payload = harness.HTTPRequest(target)
	case fs.Changed("send"):
		p, err := unescape(send)
		if err != nil {
			return usageErrorf("--send: %v", err)
		}
		if p == "" {
			return usageErrorf("--send: empty payload")
		}
		o.Payload = []byte(p)
	}
	var argv []string
	if fs.Changed("exec") {
		var err error
		if argv, err = harness.SplitCommand(execLine); err != nil {
			return usageErrorf("--exec: %v", err)
		}
	}

	var srv *harness.Server
	if argv != nil {
		var err error
		srv, err = harness.StartServer(ctx, argv, target, startTimeout)
		if err != nil {
			if srv != nil {
				srv.Stop(stopGrace)
				printServerOutput(stderr, srv.Output())
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return &exitError{code: 2, err: err}
		}
		defer srv.Stop(stopGrace)
		o.ServerAlive = srv.Exited
	}
	rep, err := harness.Run(ctx, o)
	var serverOutput string
	if srv != nil {
		srv.Stop(stopGrace) // before reading its output: it may say more on SIGTERM
		serverOutput = srv.Output()
	}
	if err != nil {
		if ctx.Err() != nil || errors.Is(err, context.Canceled) {
			return err
		}
		printServerOutput(stderr, serverOutput)
		return &exitError{code: 2, err: err}
	}
	printWarnings(stderr, rep.Warnings...)
	if output == "json" {
		err = harness.WriteJSON(stdout, rep)
	} else {
		err = harness.WriteTable(stdout, rep)
	}
	if err != nil {
		return err
	}
	if junitPath != "" {
		junitOutput := ""
		if !rep.Passed() {
			junitOutput = serverOutput
		}
		if err := writeJUnit(junitPath, rep, junitOutput); err != nil {
			return &exitError{code: 2, err: err}
		}
	}
	if !rep.Passed() {
		printServerOutput(stderr, serverOutput)
		return &exitError{code: 1}
	}
	return nil
}

func harnessAbout() string {
	var b strings.Builder
	b.WriteString(`Drive a server with clients that disconnect in every way real clients do,
and prove from the server's own sockets that each one leaves CLOSE_WAIT within
--deadline of the client's FIN. The server must run on this host: closewait
reads its sockets from the kernel. --exec starts it and stops it afterwards.

Scenarios:
`)
	for _, s := range harness.Scenarios() {
		fmt.Fprintf(&b, "  %-18s %s\n", s.Name, s.About)
	}
	b.WriteString(`
dead-peer is not in the default set: it needs root for its nftables rule and
waits up to --dead-peer-deadline.

Exit status: 0 every scenario passed, 1 a scenario failed, 2 usage or setup
error (target not reachable, server did not start, no root for dead-peer).`)
	return b.String()
}

// unescape reads Go string escapes (\r, \n, \t, \xNN, \\) so payloads with
// CRLF can be given on a command line.
func unescape(s string) (string, error) {
	out, err := strconv.Unquote(`"` + strings.ReplaceAll(s, `"`, `\"`) + `"`)
	if err != nil {
		return "", fmt.Errorf("bad escape in %q (want \\r, \\n, \\t, \\xNN, \\\\)", s)
	}
	return out, nil
}

func writeJUnit(path string, rep *harness.Outcome, serverOutput string) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("--junit: %w", err)
	}
	if err := harness.WriteJUnit(f, rep, serverOutput); err != nil {
		f.Close()
		return fmt.Errorf("--junit: writing %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("--junit: writing %s: %w", path, err)
	}
	return nil
}

// printServerOutput shows the tail of what the --exec server wrote.
func printServerOutput(w io.Writer, out string) {
	out = strings.TrimRight(out, "\n")
	if out == "" {
		return
	}
	lines := strings.Split(out, "\n")
	head := "closewait: server output:"
	if len(lines) > serverOutputLines {
		head = fmt.Sprintf("closewait: server output (last %d of %d lines):", serverOutputLines, len(lines))
		lines = lines[len(lines)-serverOutputLines:]
	}
	fmt.Fprintln(w, head)
	for _, l := range lines {
		fmt.Fprintf(w, "  | %s\n", l)
	}
}
