package cli

import (
	"context"
	"io"

	"github.com/closewait/closewait/collector"
	"github.com/closewait/closewait/report"
)

func runKeepalive(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var opts collector.Options
	var kf collector.KeepaliveFilter
	var output string
	var summary bool
	fs := newFlagSet("keepalive", "closewait keepalive [flags]",
		`Audit connections for dead peers: which would never notice a peer that
vanished without a FIN (keepalive off), and how long the others take
(keepalive idle + interval x probes, or TCP_USER_TIMEOUT). The timers and
user timeouts need the ebpf source; other sources leave them null.`,
		`  closewait keepalive                    # ESTABLISHED and CLOSE_WAIT
  closewait keepalive --no-keepalive --port 8080
  closewait keepalive --detect-over 10m --summary
  closewait keepalive --state closed     # fds of connections the kernel closed
  closewait keepalive -o json | jq '.processes'`)
	addSourceFlag(fs, &opts.Source, "socket table source (the timers need ebpf)")
	addNetNSFlag(fs, &opts.NetNS)
	addCRIFlag(fs, &opts.CRISockets)
	addStateFlag(fs, &opts.States, collector.StatesKeepalive)
	addPortFlags(fs, &opts.Filter)
	addNetFlags(fs, &opts.Filter)
	addOwnerFlags(fs, &opts.Filter)
	addFamilyFlags(fs, &opts.Filter)
	fs.BoolVar(&kf.NoKeepalive, "no-keepalive", false, "only connections known to have keepalive off")
	fs.Var(durationValue{&kf.DetectOver}, "detect-over", "only connections slower than this to notice a dead peer, or never")
	fs.Var(durationValue{&kf.IdleOver}, "idle-over", "only connections idle longer than this (90s, 5m, 1d)")
	fs.VarP(newEnum(&output, "table", "table", "json"), "output", "o", "output format: table, json")
	fs.BoolVar(&summary, "summary", false, "print only the per-process summary lines")
	if done, err := parseCollect(fs, args, stdout, &opts); done || err != nil {
		return err
	}
	defer oneShotGC()()
	opts.OneShot = true
	audit, err := collector.CollectKeepalive(ctx, opts, kf)
	if err != nil {
		return err
	}
	printWarnings(stderr, audit.Warnings...)
	if output == "json" {
		return report.KeepaliveJSON(stdout, audit)
	}
	return report.KeepaliveTable(stdout, audit, summary)
}
