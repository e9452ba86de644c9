package cli

import (
	"context"
	"fmt"
	"io"

	"github.com/closewait/closewait/collector"
	"github.com/closewait/closewait/report"
)

func runList(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var opts collector.Options
	var output string
	var summary, verbose, wide bool
	var top int
	fs := newFlagSet("list", "closewait [list] [flags]",
		`List TCP sockets in CLOSE_WAIT: which process and fd hold each one, how long
it has been stuck and why. Ages marked ">=" are lower bounds; the tracer
("closewait tracer install") makes them exact.`,
		`  closewait                          # every CLOSE_WAIT socket, oldest first
  closewait --port 8080 --older-than 5m
  closewait --comm nginx --summary   # one line per process
  closewait -w                       # with each owner's command line
  closewait -o json | jq '.summary'
  closewait --state close-wait,last-ack -6
  closewait --source procfs          # no netlink (e.g. restricted containers)`)
	addCollectFlags(fs, &opts)
	fs.VarP(newEnum(&output, "table", "table", "json"), "output", "o", "output format: table, json")
	fs.BoolVar(&summary, "summary", false, "print only the per-process summary")
	fs.BoolVarP(&wide, "wide", "w", false, "add a COMMAND LINE column")
	fs.IntVar(&top, "top", 0, "only the N oldest sockets (0: all); the summary still counts every one")
	addVerboseFlag(fs, &verbose)
	if done, err := parseCollect(fs, args, stdout, &opts); done || err != nil {
		return err
	}
	if top < 0 {
		return usageErrorf("--top: %d is negative", top)
	}
	// Every output names the owners' containers (a read of each process's
	// cgroup); JSON and --wide tell more of each process.
	opts.Processes, opts.Containers = output == "json" || wide, true
	printWarnings(stderr, longCommNotes(opts.Filter)...)
	defer oneShotGC()()
	opts.OneShot = true
	snap, err := collector.Collect(ctx, opts)
	if err != nil {
		return err
	}
	if verbose {
		if snap.Choice != "" {
			fmt.Fprintf(stderr, "closewait: %s\n", snap.Choice)
		}
		printWarnings(stderr, snap.Fallbacks...)
	}
	printWarnings(stderr, snap.Warnings...)
	if output == "json" {
		switch {
		case summary:
			return report.JSONSome(stdout, snap, nil)
		case top > 0 && top < len(snap.Sockets):
			return report.JSONSome(stdout, snap, snap.Sockets[:top])
		}
		return report.JSON(stdout, snap)
	}
	return report.Table(stdout, snap, report.TableOptions{SummaryOnly: summary, States: opts.States, Wide: wide, Top: top})
}

// printWarnings writes warnings to stderr, one line each.
func printWarnings(stderr io.Writer, warnings ...string) {
	for _, w := range warnings {
		warn(stderr, w)
	}
}

// warn writes one warning line to stderr.
func warn(stderr io.Writer, msg string) {
	fmt.Fprintf(stderr, "closewait: warning: %s\n", msg)
}
