package cli

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
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

// portsValue is a comma-separated list of TCP ports and port ranges
// ("80,443,8000-8100").
type portsValue struct{ p *[]uint16 }

func (v portsValue) String() string { return formatPorts(*v.p) }
func (v portsValue) Type() string   { return "ports" }
func (v portsValue) Set(s string) error {
	for _, f := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(strings.TrimSpace(f), "-")
		if !isRange {
			hi = lo
		}
		a, err1 := strconv.ParseUint(lo, 10, 16)
		b, err2 := strconv.ParseUint(hi, 10, 16)
		if err1 != nil || err2 != nil || a == 0 || b == 0 {
			return fmt.Errorf("%q is not a port (1-65535) or a range of them (8000-8100)", f)
		}
		if a > b {
			return fmt.Errorf("%q is an empty range: the first port is above the last", f)
		}
		for p := a; p <= b; p++ {
			*v.p = append(*v.p, uint16(p))
		}
	}
	*v.p = slices.Compact(slices.Sorted(slices.Values(*v.p)))
	return nil
}

// formatPorts writes ports sorted, runs as ranges: "80,443,8000-8100".
func formatPorts(ports []uint16) string {
	ps := slices.Compact(slices.Sorted(slices.Values(ports)))
	var b strings.Builder
	for i := 0; i < len(ps); {
		j := i
		for j+1 < len(ps) && ps[j+1] == ps[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(int(ps[i])))
		if j > i {
			b.WriteString("-" + strconv.Itoa(int(ps[j])))
		}
		i = j + 1
	}
	return b.String()
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
	rest, hasDays := s, false
	if i := strings.IndexByte(s, 'd'); i > 0 {
		n, err := strconv.ParseUint(s[:i], 10, 32)
		switch {
		case err == nil && n > uint64(maxDuration/(24*time.Hour)):
			return 0, fmt.Errorf("%q is out of range (at most 36500d)", s)
		case err == nil:
			days = time.Duration(n) * 24 * time.Hour
			rest, hasDays = s[i+1:], true
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
	} else if !hasDays {
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

// checkHostPort checks a HOST:PORT value without a lookup: the port must
// be a number from minPort to 65535, and a host written as an address
// (digits and dots, or with a colon) a valid IP. Other hosts are names,
// looked up when used.
func checkHostPort(s string, minPort uint64) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("%q is not HOST:PORT", s)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n < minPort {
		return fmt.Errorf("%q: port %q: want %d to 65535", s, port, minPort)
	}
	if host != "" && strings.Trim(host, "0123456789.") == "" || strings.Contains(host, ":") {
		if _, err := netip.ParseAddr(host); err != nil {
			return fmt.Errorf("%q: %q is not an IP address", s, host)
		}
	}
	return nil
}

// The flag groups. Each flag is declared here once; commands take the
// groups they use.

// addCollectFlags adds the source and filter flags of the commands that
// list sockets (list, check, watch).
func addCollectFlags(fs *flagSet, o *collector.Options) {
	addSourceFlag(fs, &o.Source, "socket table source")
	addNetNSFlag(fs, &o.NetNS)
	addCRIFlag(fs, &o.CRISockets)
	addStateFlag(fs, &o.States, collector.StatesCloseWait)
	addPortFlags(fs, &o.Filter)
	addNetFlags(fs, &o.Filter)
	addOwnerFlags(fs, &o.Filter)
	fs.Var(durationValue{&o.Filter.OlderThan}, "older-than", "only sockets at least this long in close-wait (90s, 5m, 1d)")
	addFamilyFlags(fs, &o.Filter)
	fs.StringVar(&o.TracerPinDir, "pin-dir", ebpf.DefaultPinDir, "bpffs directory where closewait tracer install pinned the tracer and iterators")
}

// addStateFlag adds --state with the default def.
func addStateFlag(fs *flagSet, p *collector.StateSet, def collector.StateSet) {
	*p = def
	fs.Var(statesValue{p}, "state",
		"TCP states, comma list of ss names (close-wait, established, time-wait, ...) or all")
}

// addSourceFlag adds --source; what says what the source is for.
func addSourceFlag(fs *flagSet, p *string, what string) {
	fs.Var(newEnum(p, collector.SourceAuto, collectorSources...), "source",
		what+": "+strings.Join(collectorSources, ", "))
}

// addNetNSFlag adds --netns.
func addNetNSFlag(fs *flagSet, p *[]string) {
	fs.StringSliceVar(p, "netns", nil,
		"only these network namespaces (comma list: a name under /run/netns, an inode, or host); default every one as root")
}

// addCRIFlag adds --cri-socket.
func addCRIFlag(fs *flagSet, p *[]string) {
	fs.StringSliceVar(p, "cri-socket", nil,
		"container runtime sockets asked for pod and container names (comma list; \"\" for none); default containerd's, k3s's, CRI-O's, cri-dockerd's")
}

// addPortFlags adds --port, --sport and --dport.
func addPortFlags(fs *flagSet, f *collector.Filter) {
	fs.Var(portsValue{&f.Ports}, "port", "local or remote port (comma list; ranges as 8000-8100)")
	fs.Var(portsValue{&f.SPorts}, "sport", "local port (comma list; ranges as 8000-8100)")
	fs.Var(portsValue{&f.DPorts}, "dport", "remote port (comma list; ranges as 8000-8100)")
	fs.Var(portsValue{&f.ExcludePorts}, "exclude-port", "leave out sockets with this local or remote port (comma list; ranges)")
}

// addNetFlags adds --src and --dst.
func addNetFlags(fs *flagSet, f *collector.Filter) {
	fs.Var(netsValue{&f.SrcNets}, "src", "local address or network (comma list: 10.0.0.5, 10.0.0.0/8, ::1)")
	fs.Var(netsValue{&f.DstNets}, "dst", "remote address or network (comma list)")
}

// portValue is one TCP port, 1-65535.
type portValue struct{ p *uint16 }

func (v portValue) String() string {
	if *v.p == 0 {
		return ""
	}
	return strconv.Itoa(int(*v.p))
}
func (v portValue) Type() string { return "port" }
func (v portValue) Set(s string) error {
	n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 16)
	if err != nil || n == 0 {
		return fmt.Errorf("%q is not a port (1-65535)", s)
	}
	*v.p = uint16(n)
	return nil
}

// netsValue is a comma-separated list of addresses and CIDR networks.
type netsValue struct{ p *[]netip.Prefix }

func (v netsValue) String() string {
	s := make([]string, len(*v.p))
	for i, p := range *v.p {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}
func (v netsValue) Type() string { return "nets" }
func (v netsValue) Set(s string) error {
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if a, err := netip.ParseAddr(f); err == nil {
			a = a.Unmap()
			*v.p = append(*v.p, netip.PrefixFrom(a, a.BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(f)
		if err != nil {
			return fmt.Errorf("%q is not an address or a network (10.0.0.0/8)", f)
		}
		*v.p = append(*v.p, p.Masked())
	}
	return nil
}

// addOwnerFlags adds --pid and --comm.
func addOwnerFlags(fs *flagSet, f *collector.Filter) {
	fs.Var(pidsValue{&f.PIDs}, "pid", "owning process id (comma list)")
	fs.Var(commsValue{&f.Comms}, "comm", "owning command name, exact (comma list)")
	addExcludeCommFlag(fs, f)
}

// addExcludeCommFlag adds --exclude-comm.
func addExcludeCommFlag(fs *flagSet, f *collector.Filter) {
	fs.Var(commsValue{&f.ExcludeComms}, "exclude-comm", "leave out sockets held only by commands of these names (comma list)")
}

// addVerboseFlag adds -v for the commands that list: a source fallback
// that costs nothing shown (ebpf to netlink) is said on stderr only then;
// JSON's warnings always have it.
func addVerboseFlag(fs *flagSet, p *bool) {
	fs.BoolVarP(p, "verbose", "v", false, "also say on stderr what costs only time: a fallback to a source that shows as much, pinned iterators not used, auto taking netlink on a small host")
}

// addFamilyFlags adds -4 and -6.
func addFamilyFlags(fs *flagSet, f *collector.Filter) {
	fs.BoolVarP(&f.IPv4, "ipv4", "4", false, "IPv4 sockets only")
	fs.BoolVarP(&f.IPv6, "ipv6", "6", false, "IPv6 sockets only")
}

// collectorSources are the --source values.
var collectorSources = collector.SourceNames()

// parseCollect parses the command line of a command that lists sockets
// and checks what pflag cannot; done as for flagSet.parse.
func parseCollect(fs *flagSet, args []string, stdout io.Writer, o *collector.Options) (done bool, err error) {
	if done, err := fs.parse(args, stdout); done || err != nil {
		return done, err
	}
	if err := fs.noArgs(); err != nil {
		return false, err
	}
	return false, validateCollect(o, false)
}

// validateCollect checks flag combinations that pflag cannot check alone.
// firstSeen is set when something gives every state an age (check's
// --state-file); otherwise only CLOSE_WAIT sockets have one.
func validateCollect(o *collector.Options, firstSeen bool) error {
	if err := collector.CheckNetNS(o.NetNS); err != nil {
		return usageErrorf("%v", err)
	}
	if o.Filter.OlderThan == 0 || firstSeen {
		return nil
	}
	if !collector.AgesKnown {
		return usageErrorf("--older-than: no source on this OS knows socket ages; use check --state-file")
	}
	if o.Source == collector.SourceProcfs {
		return usageErrorf("--older-than: the procfs source knows no socket ages; use --source netlink or ebpf")
	}
	if ageless := o.States &^ collector.StatesCloseWait; ageless != 0 {
		return usageErrorf("--older-than: only close-wait sockets have an age, not %s", ageless)
	}
	return nil
}

// longCommNotes warns of each --comm name longer than the 15 bytes the
// kernel keeps of a command name (as pgrep does): it is matched against
// the executable's name instead.
func longCommNotes(f collector.Filter) []string {
	var notes []string
	for _, n := range f.Comms {
		if len(n) > 15 {
			notes = append(notes, fmt.Sprintf("--comm %s: the kernel keeps 15 bytes of a command name (%s); matching the executable's name instead", n, n[:15]))
		}
	}
	return notes
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
