package cli

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/closewait/closewait/collector"
	"github.com/closewait/closewait/ebpf"
	"github.com/spf13/pflag"
)

// flagSet is a command's pflag set plus its help text. Every command gets
// -h/--help (printed to stdout, success) and --version.
type flagSet struct {
	*pflag.FlagSet
	usage    string   // "closewait list [flags]"
	about    string   // what the command does, a paragraph
	examples string   // indented example lines
	args     []string // positional words the command takes, for completions
	help     bool
	version  bool
}

func newFlagSet(name, usage, about, examples string) *flagSet {
	fs := &flagSet{
		FlagSet:  pflag.NewFlagSet(name, pflag.ContinueOnError),
		usage:    usage,
		about:    about,
		examples: examples,
	}
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	fs.SortFlags = false
	fs.BoolVarP(&fs.help, "help", "h", false, "show this help")
	fs.BoolVar(&fs.version, "version", false, "print the version")
	return fs
}

// parse parses args. done is true when --help or --version was answered
// and the command should stop. Bad flags give a usage error (exit 2).
func (fs *flagSet) parse(args []string, stdout io.Writer) (done bool, err error) {
	if c, ok := stdout.(*flagCapture); ok {
		c.fs = fs
		return true, nil
	}
	if err := fs.Parse(args); err != nil {
		return false, usageErrorf("%s: %v", fs.Name(), err)
	}
	switch {
	case fs.help:
		fmt.Fprintf(stdout, "%s\n\nUsage:\n  %s\n\nFlags:\n%s", fs.about, fs.usage, fs.FlagUsages())
		if fs.examples != "" {
			fmt.Fprintf(stdout, "\nExamples:\n%s\n", strings.TrimRight(fs.examples, "\n"))
		}
		return true, nil
	case fs.version:
		printVersion(stdout)
		return true, nil
	}
	return false, nil
}

// noArgs rejects positional arguments for commands that take none.
func (fs *flagSet) noArgs() error {
	if fs.NArg() > 0 {
		return usageErrorf("%s: unexpected argument %q (flags start with -)", fs.Name(), fs.Arg(0))
	}
	return nil
}

// enumValue is a string flag restricted to a fixed list.
type enumValue struct {
	p       *string
	allowed []string
}

func newEnum(p *string, def string, allowed ...string) *enumValue {
	*p = def
	return &enumValue{p: p, allowed: allowed}
}

func (e *enumValue) String() string { return *e.p }
func (e *enumValue) Type() string   { return "string" }
func (e *enumValue) Set(s string) error {
	if !slices.Contains(e.allowed, s) {
		return fmt.Errorf("want one of %s", strings.Join(e.allowed, ", "))
	}
	*e.p = s
	return nil
}

// portsValue is a comma-separated list of TCP ports.
type portsValue struct{ p *[]uint16 }

func (v portsValue) String() string {
	s := make([]string, len(*v.p))
	for i, p := range *v.p {
		s[i] = strconv.Itoa(int(p))
	}
	return strings.Join(s, ",")
}
func (v portsValue) Type() string { return "ports" }
func (v portsValue) Set(s string) error {
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.ParseUint(strings.TrimSpace(f), 10, 16)
		if err != nil || n == 0 {
			return fmt.Errorf("%q is not a port (1-65535)", f)
		}
		*v.p = append(*v.p, uint16(n))
	}
	return nil
}

// pidsValue is a comma-separated list of process ids.
type pidsValue struct{ p *[]int }

func (v pidsValue) String() string {
	s := make([]string, len(*v.p))
	for i, p := range *v.p {
		s[i] = strconv.Itoa(p)
	}
	return strings.Join(s, ",")
}
func (v pidsValue) Type() string { return "pids" }
func (v pidsValue) Set(s string) error {
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			return fmt.Errorf("%q is not a process id", f)
		}
		*v.p = append(*v.p, n)
	}
	return nil
}

// commsValue is a comma-separated list of command names.
type commsValue struct{ p *[]string }

func (v commsValue) String() string { return strings.Join(*v.p, ",") }
func (v commsValue) Type() string   { return "names" }
func (v commsValue) Set(s string) error {
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			return fmt.Errorf("empty command name in %q", s)
		}
		*v.p = append(*v.p, f)
	}
	return nil
}

// statesValue is an ss-style state list.
type statesValue struct{ p *collector.StateSet }

func (v statesValue) String() string { return v.p.String() }
func (v statesValue) Type() string   { return "states" }
func (v statesValue) Set(s string) error {
	set, err := collector.ParseStates(s)
	if err != nil {
		return err
	}
	*v.p = set
	return nil
}

// durationValue is a non-negative duration; "2d" means two days.
type durationValue struct{ p *time.Duration }

func (v durationValue) String() string {
	if *v.p == 0 {
		return "0s"
	}
	return v.p.String()
}
func (v durationValue) Type() string { return "duration" }
func (v durationValue) Set(s string) error {
	d, err := parseDuration(s)
	if err != nil {
		return err
	}
	*v.p = d
	return nil
}

// maxDuration bounds every duration flag: far beyond any socket's age or
// any sensible timeout, and far below time.Duration's limit (292 years).
const maxDuration = 36500 * 24 * time.Hour

// parseDuration reads Go durations ("90s", "5m", "1h30m") plus a leading
// whole number of days ("2d", "1d12h"), up to maxDuration.
func parseDuration(s string) (time.Duration, error) {
	var days time.Duration
	rest := s
	if i := strings.IndexByte(s, 'd'); i > 0 {
		n, err := strconv.ParseUint(s[:i], 10, 32)
		switch {
		case err == nil && n > uint64(maxDuration/(24*time.Hour)):
			return 0, fmt.Errorf("%q is out of range (at most 36500d)", s)
		case err == nil:
			days = time.Duration(n) * 24 * time.Hour
			rest = s[i+1:]
		case errors.Is(err, strconv.ErrRange):
			return 0, fmt.Errorf("%q is out of range (at most 36500d)", s)
		}
	}
	var d time.Duration
	if rest != "" {
		var err error
		if d, err = time.ParseDuration(rest); err != nil {
			return 0, fmt.Errorf("%q is not a duration (e.g. 90s, 5m, 2h, 1d)", s)
		}
	} else if days == 0 {
		return 0, fmt.Errorf("%q is not a duration (e.g. 90s, 5m, 2h, 1d)", s)
	}
	if d < 0 {
		return 0, fmt.Errorf("%q is negative", s)
	}
	if d > maxDuration-days {
		return 0, fmt.Errorf("%q is out of range (at most 36500d)", s)
	}
	return days + d, nil
}

// The flag groups. Each flag is declared here once; commands take the
// groups they use.

// addCollectFlags adds the source and filter flags of the commands that
// list sockets (list, check, watch).
func addCollectFlags(fs *flagSet, o *collector.Options) {
	addSourceFlag(fs, &o.Source, "socket table source")
	o.States = collector.StatesCloseWait
	fs.Var(statesValue{&o.States}, "state",
		"TCP states, comma list of ss names (close-wait, established, time-wait, ...) or all")
	addPortFlags(fs, &o.Filter)
	addOwnerFlags(fs, &o.Filter)
	fs.Var(durationValue{&o.Filter.OlderThan}, "older-than", "only sockets at least this long in close-wait (90s, 5m, 1d)")
	addFamilyFlags(fs, &o.Filter)
}

// addSourceFlag adds --source; what says what the source is for.
func addSourceFlag(fs *flagSet, p *string, what string) {
	fs.Var(newEnum(p, collector.SourceAuto, collectorSources...), "source",
		what+": "+strings.Join(collectorSources, ", "))
}

// addPortFlags adds --port, --sport and --dport.
func addPortFlags(fs *flagSet, f *collector.Filter) {
	fs.Var(portsValue{&f.Ports}, "port", "local or remote port (comma list)")
	fs.Var(portsValue{&f.SPorts}, "sport", "local port (comma list)")
	fs.Var(portsValue{&f.DPorts}, "dport", "remote port (comma list)")
}

// addOwnerFlags adds --pid and --comm.
func addOwnerFlags(fs *flagSet, f *collector.Filter) {
	fs.Var(pidsValue{&f.PIDs}, "pid", "owning process id (comma list)")
	fs.Var(commsValue{&f.Comms}, "comm", "owning command name, exact (comma list)")
}

// addFamilyFlags adds -4 and -6.
func addFamilyFlags(fs *flagSet, f *collector.Filter) {
	fs.BoolVarP(&f.IPv4, "ipv4", "4", false, "IPv4 sockets only")
	fs.BoolVarP(&f.IPv6, "ipv6", "6", false, "IPv6 sockets only")
}

// collectorSources are the --source values.
var collectorSources = []string{collector.SourceAuto, collector.SourceEBPF, collector.SourceNetlink, collector.SourceProcfs}

// validateCollect checks flag combinations that pflag cannot check alone.
// firstSeen is set when something gives every state an age (check's
// --state-file); otherwise only CLOSE_WAIT sockets have one.
func validateCollect(o *collector.Options, firstSeen bool) error {
	if o.Filter.OlderThan == 0 || firstSeen {
		return nil
	}
	if o.Source == collector.SourceProcfs {
		return usageErrorf("--older-than: the procfs source knows no socket ages; use --source netlink or ebpf")
	}
	if ageless := o.States &^ collector.StatesCloseWait; ageless != 0 {
		return usageErrorf("--older-than: only close-wait sockets have an age, not %s", ageless)
	}
	return nil
}

// bpfFlags are the options of the commands that load BPF programs (trace,
// tracer).
type bpfFlags struct {
	pinDir  string
	hook    string // auto, tp_btf, tracepoint
	verbose bool
}

// addBPFFlags adds --pin-dir, --hook and -v.
func addBPFFlags(fs *flagSet, b *bpfFlags) {
	fs.StringVar(&b.pinDir, "pin-dir", ebpf.DefaultPinDir, "bpffs directory of the installed tracer's pins")
	fs.Var(newEnum(&b.hook, "auto", "auto", string(ebpf.ModeBTF), string(ebpf.ModeTracepoint)), "hook",
		"kernel hook: auto (tp_btf, else the classic tracepoint), tp_btf, tracepoint")
	fs.BoolVarP(&b.verbose, "verbose", "v", false, "on failure, print the whole cause (the verifier log)")
}

// mode is the tracer mode --hook asks for; "" lets the loader choose.
func (b *bpfFlags) mode() ebpf.TracerMode {
	if b.hook == "auto" {
		return ""
	}
	return ebpf.TracerMode(b.hook)
}
