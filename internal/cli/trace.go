package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/closewait/closewait/collector"
	"github.com/closewait/closewait/ebpf"
	"github.com/closewait/closewait/report"
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

// traceLine is one event ready to print: the event with its owners and
// wall-clock time.
type traceLine struct {
	time   time.Time
	ev     *ebpf.Event
	owners []ebpf.Owner
}

// traceSocket builds the collector view of an event's socket, for the
// filter.
func traceSocket(e *ebpf.Event, owners []ebpf.Owner) collector.Socket {
	s := collector.Socket{Family: collector.FamilyIPv4, State: collector.State(e.NewState), Local: e.Local, Remote: e.Remote}
	if e.Family == 10 {
		s.Family = collector.FamilyIPv6
	}
	for _, o := range owners {
		s.Owners = append(s.Owners, collector.Owner{PID: o.PID, Comm: o.Comm, FD: o.FD})
	}
	return s
}

// eventKind names an event: entering or leaving CLOSE_WAIT, or another
// transition.
func eventKind(e *ebpf.Event) string {
	switch {
	case collector.State(e.NewState) == collector.StateCloseWait:
		return "enter"
	case collector.State(e.OldState) == collector.StateCloseWait:
		return "leave"
	}
	return "transition"
}

// traceJSON is one line of "closewait trace -o jsonl".
type traceJSON struct {
	Time     time.Time          `json:"time"`
	Event    string             `json:"event"` // enter, leave, transition
	OldState string             `json:"old_state"`
	NewState string             `json:"new_state"`
	Family   string             `json:"family"`
	Local    string             `json:"local"`
	Remote   string             `json:"remote"`
	Cookie   uint64             `json:"cookie"` // 0 with the classic tracepoint
	Inode    uint64             `json:"inode"`  // 0 when no fd was ever attached
	Owners   []report.OwnerJSON `json:"owners"`
	// OwnersUnknown says that a process held the socket but closed it
	// before its owner could be read; empty owners without it mean that
	// no process held it (accept queue, or already closed).
	OwnersUnknown bool `json:"owners_unknown,omitempty"`
	// CloseWaitSeconds is the time spent in CLOSE_WAIT, on leaving it,
	// when the entry was seen; absent otherwise.
	CloseWaitSeconds *float64 `json:"close_wait_seconds,omitempty"`
}

// traceWriter prints events as table lines or JSON lines.
type traceWriter struct {
	w      io.Writer
	jsonl  bool
	enc    *json.Encoder
	header bool
}

func newTraceWriter(w io.Writer, output string) *traceWriter {
	tw := &traceWriter{w: w, jsonl: output == "jsonl"}
	if tw.jsonl {
		tw.enc = json.NewEncoder(w)
	}
	return tw
}

const traceTableFormat = "%-12s %7s %-15s %4s %-22s %-22s %-26s %s\n"

func (tw *traceWriter) write(l traceLine) error {
	e := l.ev
	if tw.jsonl {
		doc := traceJSON{
			Time:     l.time,
			Event:    eventKind(e),
			OldState: collector.State(e.OldState).String(),
			NewState: collector.State(e.NewState).String(),
			Family:   "ipv4",
			Local:    report.Addr(e.Local),
			Remote:   report.Addr(e.Remote),
			Cookie:   e.Cookie,
			Inode:    e.Inode,
			Owners:   []report.OwnerJSON{},
		}
		if e.Family == 10 {
			doc.Family = "ipv6"
		}
		for _, o := range l.owners {
			doc.Owners = append(doc.Owners, report.OwnerJSON{PID: o.PID, Comm: o.Comm, FD: o.FD})
		}
		doc.OwnersUnknown = len(l.owners) == 0 && ownerUnknown(e)
		if e.Flags&ebpf.EvDuration != 0 {
			s := e.CloseWait.Round(time.Millisecond).Seconds()
			doc.CloseWaitSeconds = &s
		}
		return tw.enc.Encode(doc)
	}
	if !tw.header {
		tw.header = true
		if _, err := fmt.Fprintf(tw.w, traceTableFormat, "TIME", "PID", "COMMAND", "FD", "LOCAL", "REMOTE", "TRANSITION", "IN CLOSE_WAIT"); err != nil {
			return err
		}
	}
	pid, comm, fd := "-", "-", "-"
	if len(l.owners) == 0 && ownerUnknown(e) {
		pid, comm, fd = "?", "?", "?"
	}
	if len(l.owners) > 0 {
		o := l.owners[0]
		pid, comm, fd = fmt.Sprint(o.PID), printableComm(o.Comm), fmt.Sprint(o.FD)
		if len(l.owners) > 1 {
			pid += fmt.Sprintf("+%d", len(l.owners)-1)
		}
	}
	dur := ""
	if e.Flags&ebpf.EvDuration != 0 {
		dur = e.CloseWait.Round(time.Millisecond).String()
	} else if eventKind(e) == "leave" {
		dur = "?" // entered before the trace, no tracer installed
	}
	transition := collector.State(e.OldState).String() + " -> " + collector.State(e.NewState).String()
	_, err := fmt.Fprintf(tw.w, traceTableFormat, l.time.Format("15:04:05.000"), pid, comm, fd,
		report.Addr(e.Local), report.Addr(e.Remote), transition, dur)
	return err
}

// ownerUnknown reports whether an event's socket, shown without an owner,
// had one that could not be read: it had a file (an inode) when it changed
// state, so some process had accepted or created it. Classic tracepoint
// events carry no inode: their owner is unknown whenever it is missing.
func ownerUnknown(e *ebpf.Event) bool {
	return e.Inode != 0 || e.Flags&ebpf.EvClassic != 0
}

// printableComm keeps a process-chosen name from carrying escape sequences
// or, with a space, breaking the columns.
func printableComm(s string) string {
	return strings.ReplaceAll(report.Printable(s), " ", "?")
}
