package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/closewait/closewait/ebpf"
	"github.com/closewait/closewait/watch"
)

func tracerAction(_ context.Context, o tracerOptions, stdout io.Writer) error {
	switch o.action {
	case "install":
		st, err := ebpf.InstallTracer(ebpf.TracerOptions{PinDir: o.pinDir, Mode: o.mode()})
		if errors.Is(err, ebpf.ErrInstalled) {
			fmt.Fprintf(stdout, "tracer already installed at %s (hook %s, since %s)\n",
				st.PinDir, st.Mode, st.Since.Format(time.RFC3339))
		} else if err != nil {
			return bpfError(fmt.Errorf("installing tracer: %w", err), o.verbose)
		} else {
			fmt.Fprintf(stdout, "tracer installed at %s (hook %s): sockets entering CLOSE_WAIT from now on get exact ages\n",
				st.PinDir, st.Mode)
		}
		if st.IteratorsErr != nil {
			fmt.Fprintf(stdout, "listing iterators not pinned, listings load their own: %v\n", st.IteratorsErr)
		}
		return nil
	case "status":
		st, err := ebpf.Status(o.pinDir)
		if err != nil {
			return bpfError(fmt.Errorf("reading tracer status: %w", err), o.verbose)
		}
		if err := printTracerStatus(stdout, st, o.output, time.Now()); err != nil {
			return err
		}
		if !st.Installed {
			return &exitError{code: 1}
		}
		return nil
	case "remove":
		err := ebpf.RemoveTracer(o.pinDir)
		if errors.Is(err, ebpf.ErrNotInstalled) {
			fmt.Fprintf(stdout, "tracer not installed (%s)\n", o.pinDir)
			return nil
		}
		if err != nil {
			return fmt.Errorf("removing tracer: %w", err)
		}
		fmt.Fprintf(stdout, "tracer removed from %s\n", o.pinDir)
		return nil
	}
	return fmt.Errorf("tracer: unknown action %q", o.action)
}

// tracerState says whether a tracer is installed at pinDir, for watch's
// header.
func tracerState(pinDir string) watch.TracerState {
	if st, err := ebpf.Status(pinDir); err == nil && st.Installed {
		return watch.TracerInstalled
	}
	return watch.TracerNotInstalled
}
