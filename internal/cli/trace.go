package cli

import (
	"context"
	"io"

	"github.com/closewait/closewait/collector"
)

// traceOptions are the flags of closewait trace.
type traceOptions struct {
	allStates bool
	output    string // table or jsonl
	filter    collector.Filter
	bpfFlags
}

func runTrace(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var o traceOptions
	fs := newFlagSet("trace", "closewait trace [flags]",
		`Stream TCP sockets entering and leaving CLOSE_WAIT as it happens, until
interrupted: time, owning process and fd, addresses, old -> new state, and on
leaving, how long the socket sat in CLOSE_WAIT. Once attached, it says
"tracing ..." on stderr; every transition after that line is printed. On
SIGINT or SIGTERM it prints what happened before the signal, then exits.

The owner comes from the processes' fd tables, not from the task that ran
when the kernel changed the state (usually none: that happens in softirq).
A socket closed before a snapshot of the fd tables saw it gets the process
and fd that accept(2) or socket(2) gave it (hook tp_btf only). "-" means no
process holds the socket: still in an accept queue, or already closed; "?"
means one held it but closed it before its owner could be read (in JSON:
"owners": [] with "owners_unknown": true). Durations need the entry to have
been seen: by this trace, or by the tracer ("closewait tracer install")
before it. A socket entering SYN_SENT in connect() without bind() shows local
port 0: the kernel picks the port just after. Needs root.`,
		`  closewait trace
  closewait trace --port 8080
  closewait trace --all-states -4          # every TCP transition, IPv4
  closewait trace -o jsonl | jq -c 'select(.event == "leave")'
  closewait trace --comm nginx`)
	fs.BoolVar(&o.allStates, "all-states", false, "show every TCP state transition, not only into and out of CLOSE_WAIT")
	fs.VarP(newEnum(&o.output, "table", "table", "jsonl"), "output", "o", "output format: table, jsonl (one JSON object per line)")
	addPortFlags(fs, &o.filter)
	addNetFlags(fs, &o.filter)
	addOwnerFlags(fs, &o.filter)
	addFamilyFlags(fs, &o.filter)
	addBPFFlags(fs, &o.bpfFlags)
	if done, err := fs.parse(args, stdout); done || err != nil {
		return err
	}
	if err := fs.noArgs(); err != nil {
		return err
	}
	return traceLoop(ctx, o, stdout, stderr)
}
