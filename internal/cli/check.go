package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/closewait/closewait/collector"
	"github.com/closewait/closewait/internal/check"
	"github.com/closewait/closewait/report"
)

// checkUnknown is the exit status of a check that could not run: bad
// flags included. The plugin conventions give 2 to CRITICAL, so the usual
// usage status would page someone for a typo.
const checkUnknown = int(check.StatusUnknown)

func runCheck(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var opts collector.Options
	var th check.Thresholds
	var stateFile, output string
	var quiet bool
	fs := newFlagSet("check", "closewait check [flags]",
		`Check CLOSE_WAIT sockets against thresholds, for cron and monitoring systems
(Nagios, Icinga, Sensu, Zabbix agents). Prints one status line with perfdata
after "|", then one line per offending process, and exits 0 OK, 1 WARNING,
2 CRITICAL or 3 UNKNOWN (cannot collect, unusable state file, bad flags: bad
flags exit 3 here, not 2, because 2 means CRITICAL to a monitoring system).

A value alerts when it is above its limit, so --warn-count 0 warns on any
socket. Ages are the oldest socket's, in whole seconds; a lower bound counts
as that age. Limits take "off" to disable a default.

--state-file remembers when each socket was first seen in its state, so
without the tracer ages are at least the time since a run first saw the
socket there (in every --state, which --older-than then accepts), and it
makes --warn-growth/--crit-growth (net sockets gained since the previous run)
possible. It is replaced atomically on each run; a corrupt or foreign file
gives a warning and a fresh start. All the filters of "closewait list" apply.`,
		`  closewait check                                  # default: WARNING >1m, CRITICAL >5m
  closewait check --warn-count 5 --crit-count 10 --port 8080
  closewait check --per-process --crit-count 100 --comm java
  closewait check --state-file /var/lib/closewait/check.json --warn-growth 10 --quiet
  closewait check -o json | jq '.offenders'
  # cron: mails only when something is wrong
  */5 * * * * root closewait check --quiet --state-file /var/lib/closewait/cron.json`)
	addCollectFlags(fs, &opts)
	fs.Var(&countLimit{&th.WarnCount}, "warn-count", "WARNING above this many sockets")
	fs.Var(&countLimit{&th.CritCount}, "crit-count", "CRITICAL above this many sockets")
	th.WarnAge, th.CritAge = new(time.Minute), new(5*time.Minute)
	fs.Var(&ageLimit{&th.WarnAge}, "warn-age", "WARNING when the oldest socket is older (off to disable)")
	fs.Var(&ageLimit{&th.CritAge}, "crit-age", "CRITICAL when the oldest socket is older (off to disable)")
	fs.Var(&countLimit{&th.WarnGrowth}, "warn-growth", "WARNING above this many sockets gained since the previous run (needs --state-file)")
	fs.Var(&countLimit{&th.CritGrowth}, "crit-growth", "CRITICAL above this many sockets gained since the previous run (needs --state-file)")
	fs.BoolVar(&th.PerProcess, "per-process", false, "apply the count and growth limits to each process instead of the total")
	fs.StringVar(&stateFile, "state-file", "", "remember first-seen times and counts in this file between runs")
	fs.BoolVarP(&quiet, "quiet", "q", false, "print nothing when OK (for cron)")
	fs.VarP(newEnum(&output, "text", "text", "json"), "output", "o", "output format: text (plugin line), json")

	host, _ := os.Hostname()
	var warnings []string
	// unknown answers UNKNOWN in the chosen output format (bad flags too:
	// to a monitoring system exit 2 would mean CRITICAL).
	unknown := func(err error) error {
		// Warnings go after the status line, never on stderr first.
		if output == "json" {
			report.WriteCheckJSON(stdout, report.UnknownCheckDocument(host, time.Now(), err, warnings))
		} else {
			report.WriteCheckUnknown(stdout, err, warnings)
		}
		return &exitError{code: checkUnknown}
	}
	output = outputFlag(args, output) // so a bad flag before -o json is answered in JSON
	done, err := fs.parse(args, stdout)
	if err == nil && !done {
		err = validateCheck(fs, &opts, &th, stateFile)
	}
	if err != nil {
		var ee *exitError
		if errors.As(err, &ee) && ee.code == 2 {
			return unknown(ee.err)
		}
		return err
	}
	if done {
		return nil
	}
	warnings = append(warnings, longCommNotes(opts.Filter)...)

	// --older-than applies after first-seen times raise the ages, and the
	// state must remember young sockets so they can age into view.
	olderThan := opts.Filter.OlderThan
	opts.Filter.OlderThan = 0

	scope := checkScope(&opts, olderThan)
	var prev *check.State
	if stateFile != "" {
		var warn string
		prev, warn, err = check.LoadFile(stateFile, host, scope)
		if err != nil {
			return unknown(fmt.Errorf("reading state file: %w", err))
		}
		if warn != "" {
			warnings = append(warnings, warn)
		}
	}
	defer oneShotGC()()
	opts.OneShot = true
	snap, err := collector.Collect(ctx, opts)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return unknown(fmt.Errorf("cannot collect: %w", err))
	}
	res := check.Evaluate(snap, th, check.Options{Prev: prev, States: opts.States, OlderThan: olderThan})
	if stateFile != "" {
		res.Next.Scope = scope
		if err := res.Next.WriteFile(stateFile); err != nil {
			// Growth and first-seen times would silently stop working.
			return unknown(fmt.Errorf("writing state file: %w (sockets: %s)", err, strings.TrimPrefix(report.CheckLine(&res), "CLOSEWAIT ")))
		}
	}

	if quiet && res.Status == check.StatusOK {
		return nil
	}
	if output == "json" {
		err = report.WriteCheckJSON(stdout, report.NewCheckDocument(&res, warnings))
	} else {
		err = report.WriteCheck(stdout, &res, report.CheckTextOptions{Warnings: append(snap.Notes(), warnings...)})
	}
	if err != nil {
		return unknown(err)
	}
	if res.Status != check.StatusOK {
		return &exitError{code: int(res.Status)}
	}
	return nil
}

// outputFlag returns the value of the last -o/--output in args, or def:
// what the output format will be, read before the flags are parsed.
func outputFlag(args []string, def string) string {
	out := def
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			return out
		case a == "-o" || a == "--output":
			if i+1 < len(args) {
				out = args[i+1]
				i++
			}
		case strings.HasPrefix(a, "--output="):
			out = strings.TrimPrefix(a, "--output=")
		case strings.HasPrefix(a, "-o") && !strings.HasPrefix(a, "--"):
			out = strings.TrimPrefix(strings.TrimPrefix(a, "-o"), "=")
		}
	}
	return out
}

// validateCheck checks what pflag cannot: limits in order, growth limits
// with a state file to measure growth from.
func validateCheck(fs *flagSet, o *collector.Options, th *check.Thresholds, stateFile string) error {
	if err := fs.noArgs(); err != nil {
		return err
	}
	if err := validateCollect(o, stateFile != ""); err != nil {
		return err
	}
	if (th.WarnGrowth != nil || th.CritGrowth != nil) && stateFile == "" {
		return usageErrorf("--warn-growth and --crit-growth need --state-file to remember the previous count")
	}
	if th.WarnCount != nil && th.CritCount != nil && *th.WarnCount > *th.CritCount {
		return usageErrorf("--warn-count %d is above --crit-count %d", *th.WarnCount, *th.CritCount)
	}
	if th.WarnGrowth != nil && th.CritGrowth != nil && *th.WarnGrowth > *th.CritGrowth {
		return usageErrorf("--warn-growth %d is above --crit-growth %d", *th.WarnGrowth, *th.CritGrowth)
	}
	if th.WarnAge != nil && th.CritAge != nil && *th.WarnAge > *th.CritAge {
		return usageErrorf("--warn-age %s is above --crit-age %s",
			report.FormatAge(*th.WarnAge, true, true), report.FormatAge(*th.CritAge, true, true))
	}
	if stateFile != "" {
		if fi, err := os.Stat(stateFile); err == nil && !fi.Mode().IsRegular() {
			return usageErrorf("--state-file: %s is not a regular file", stateFile)
		}
	}
	return nil
}

// checkScope describes what a run counts. A state written for another
// scope is foreign: its growth would compare different things. The source
// is left out on purpose: first-seen matching works across sources.
func checkScope(o *collector.Options, olderThan time.Duration) string {
	f := o.Filter
	ints := func(xs []int) string {
		xs = slices.Sorted(slices.Values(xs))
		s := make([]string, len(xs))
		for i, x := range xs {
			s[i] = strconv.Itoa(x)
		}
		return strings.Join(s, ",")
	}
	ports := formatPorts
	states := o.States
	if states == 0 {
		states = collector.StatesCloseWait
	}
	fam := "any"
	if f.IPv4 != f.IPv6 {
		fam = map[bool]string{true: "ipv4", false: "ipv6"}[f.IPv4]
	}
	scope := fmt.Sprintf("states=%s family=%s port=%s sport=%s dport=%s pid=%s comm=%s older-than=%s",
		states, fam, ports(f.Ports), ports(f.SPorts), ports(f.DPorts), ints(f.PIDs),
		strings.Join(slices.Sorted(slices.Values(f.Comms)), ","), olderThan)
	// Newer filters join the scope only when set, so older files stay ours.
	nets := func(ps []netip.Prefix) string {
		s := make([]string, len(ps))
		for i, p := range ps {
			s[i] = p.String()
		}
		return strings.Join(slices.Sorted(slices.Values(s)), ",")
	}
	for _, extra := range []struct{ name, value string }{
		{"src", nets(f.SrcNets)}, {"dst", nets(f.DstNets)}, {"exclude-port", ports(f.ExcludePorts)},
		{"exclude-comm", strings.Join(slices.Sorted(slices.Values(f.ExcludeComms)), ",")},
	} {
		if extra.value != "" {
			scope += " " + extra.name + "=" + extra.value
		}
	}
	return scope
}

// countLimit is an optional non-negative count: unset by default, "off"
// unsets it.
type countLimit struct{ p **int }

// String shows the limit in help; empty when unset, so no default shows.
func (v *countLimit) String() string {
	if *v.p == nil {
		return ""
	}
	return strconv.Itoa(**v.p)
}

// Type names the value in help.
func (v *countLimit) Type() string { return "count" }

// Set parses a count or "off".
func (v *countLimit) Set(s string) error {
	if s == "off" {
		*v.p = nil
		return nil
	}
	n, err := strconv.Atoi(s)
	if errors.Is(err, strconv.ErrRange) {
		return fmt.Errorf("%q is out of range", s)
	}
	if err != nil || n < 0 {
		return fmt.Errorf("%q is not a count (0 or more, or off)", s)
	}
	*v.p = new(n)
	return nil
}

// ageLimit is an optional age limit; "off" unsets it.
type ageLimit struct{ p **time.Duration }

// String shows the limit in help as tables show ages: "1m", "off".
func (v *ageLimit) String() string {
	if *v.p == nil {
		return "off"
	}
	return report.FormatAge(**v.p, true, true)
}

// Type names the value in help.
func (v *ageLimit) Type() string { return "duration" }

// Set parses a duration ("90s", "5m", "1d") or "off".
func (v *ageLimit) Set(s string) error {
	if s == "off" {
		*v.p = nil
		return nil
	}
	d, err := parseDuration(s)
	if err != nil {
		return err
	}
	*v.p = new(d)
	return nil
}
