package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/closewait/closewait/ebpf"
	"github.com/closewait/closewait/report"
)

// tracerOptions are the flags of closewait tracer.
type tracerOptions struct {
	action string // install, status, remove
	output string // table (text) or json, for status
	bpfFlags
}

func runTracer(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var o tracerOptions
	fs := newFlagSet("tracer", "closewait tracer install|status|remove [flags]",
		`Manage the BPF tracer that makes CLOSE_WAIT ages exact. "install" attaches it
to the kernel's TCP state changes and pins it under a bpffs directory (mounting
bpffs on /sys/fs/bpf if needed), then exits: the kernel keeps it running, at
the cost of a few instructions per state change, and every later listing reads
the time each socket entered CLOSE_WAIT from it. Sockets already in CLOSE_WAIT
when it is installed keep bounded ages. "install" also pins the ebpf source's
iterator programs, which later listings then open instead of loading their
own: most of a listing's cost on a quiet host. "status" says whether it is
installed and since when (exit status 1 when not). "remove" detaches it and
unpins it all.
Needs root (CAP_BPF and CAP_PERFMON); it does not survive a reboot.`,
		`  closewait tracer install
  closewait tracer status
  closewait tracer status -o json
  closewait tracer remove
  closewait tracer install --hook tracepoint   # kernels without tp_btf`)
	fs.VarP(newEnum(&o.output, "text", "text", "json"), "output", "o", "status output: text, json")
	addBPFFlags(fs, &o.bpfFlags)
	fs.args = tracerActions
	if done, err := fs.parse(args, stdout); done || err != nil {
		return err
	}
	switch fs.NArg() {
	case 0:
		return usageErrorf("tracer: missing action: install, status or remove")
	case 1:
	default:
		return usageErrorf("tracer: unexpected argument %q", fs.Arg(1))
	}
	o.action = fs.Arg(0)
	if !slices.Contains(tracerActions, o.action) {
		return usageErrorf("tracer: unknown action %q (want install, status or remove)", o.action)
	}
	if o.pinDir == "" {
		return usageErrorf("--pin-dir: empty path")
	}
	return tracerAction(ctx, o, stdout)
}

// tracerActions are the actions of closewait tracer.
var tracerActions = []string{"install", "status", "remove"}

// tracerStatusJSON is the output of "closewait tracer status -o json".
type tracerStatusJSON struct {
	Installed bool       `json:"installed"`
	Hook      string     `json:"hook,omitempty"`
	PinDir    string     `json:"pin_dir"`
	Since     *time.Time `json:"since,omitempty"`
	ProgramID uint32     `json:"program_id,omitempty"`
	Iterators bool       `json:"iterators"`
}

func printTracerStatus(w io.Writer, st ebpf.TracerStatus, output string, now time.Time) error {
	if output == "json" {
		doc := tracerStatusJSON{Installed: st.Installed, Hook: string(st.Mode), PinDir: st.PinDir, ProgramID: st.ProgramID,
			Iterators: st.Iterators}
		if !st.Since.IsZero() {
			since := st.Since.UTC().Truncate(time.Second)
			doc.Since = &since
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(doc)
	}
	if !st.Installed {
		_, err := fmt.Fprintf(w, "tracer not installed (%s)\n", st.PinDir)
		return err
	}
	since := "unknown"
	if !st.Since.IsZero() {
		since = fmt.Sprintf("%s (%s ago)", st.Since.Format(time.RFC3339), report.FormatAge(now.Sub(st.Since), true, true))
	}
	iters := "listing iterators pinned"
	if !st.Iterators {
		iters = "listing iterators not pinned (closewait tracer install pins them)"
	}
	_, err := fmt.Fprintf(w, "tracer installed: hook %s, pinned at %s, since %s, program id %d; %s\n",
		st.Mode, st.PinDir, since, st.ProgramID, iters)
	return err
}

// bpfWarning is a one-line warning that a BPF program could not load and
// what that costs; verbose adds the whole cause (the verifier log) on
// the lines after.
func bpfWarning(err error, cost string, verbose bool) string {
	msg := err.Error() + ": " + cost
	var be *ebpf.Error
	if verbose && errors.As(err, &be) {
		msg += fmt.Sprintf("\n%+v", be)
	}
	return msg
}

// bpfError prints the whole cause of a BPF failure (the verifier log)
// when asked to; otherwise the one-line reason.
func bpfError(err error, verbose bool) error {
	var be *ebpf.Error
	if verbose && errors.As(err, &be) {
		return fmt.Errorf("%+v", be)
	}
	return err
}
