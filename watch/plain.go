package watch

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// Plain runs the watch for a pipe, a log or cron: one plain text snapshot
// per interval, no escape codes, until ctx ends or cfg.Count snapshots are
// written. Warnings, and errors after the first poll, go to cfg.Warn once
// each, and the watch goes on.
func Plain(ctx context.Context, cfg Config, w io.Writer) error {
	cfg.defaults()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	m := NewModel(cfg.Interval, cfg.Highlight)
	var failed error
	written := 0
	warned := map[string]bool{}
	warn := func(msg string) {
		if cfg.Warn != nil && !warned[msg] {
			warned[msg] = true
			cfg.Warn(msg)
		}
	}
	bw := bufio.NewWriter(w)
	feed(ctx, &cfg, func(u update) bool {
		if u.err != nil {
			if errors.Is(u.err, errFirstPoll) {
				failed = firstPollError(u.err)
				return false
			}
			warn(u.err.Error())
		}
		if u.changes != nil {
			for _, w := range u.changes.Warnings {
				warn(w)
			}
		}
		u.apply(m)
		if !u.sample {
			return true
		}
		rows := m.Rows(SortCount, "")
		readFDs(m, &cfg, rows)
		writeSnapshot(bw, m.Header(), rows, cfg.Label, feedLabel(&cfg, u.events))
		if err := bw.Flush(); err != nil {
			failed = err
			return false
		}
		written++
		return cfg.Count == 0 || written < cfg.Count
	})
	if failed != nil {
		return failed
	}
	if ctx.Err() != nil && (cfg.Count == 0 || written < cfg.Count) {
		return ctx.Err()
	}
	return nil
}

// firstPollError strips the errFirstPoll marker.
func firstPollError(err error) error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			if e != errFirstPoll {
				return e
			}
		}
	}
	return err
}

// readFDs reads the fd usage of the processes in rows into the model and
// the rows.
func readFDs(m *Model, cfg *Config, rows []Row) {
	if cfg.FDUsage == nil {
		return
	}
	for i := range rows {
		r := &rows[i]
		if r.PID == 0 {
			continue
		}
		u, err := cfg.FDUsage(r.PID)
		m.SetFDs(r.PID, u, err == nil)
		m.fill(r)
	}
}

// writeSnapshot writes one plain snapshot: a time and header line, the
// process table, a blank line.
func writeSnapshot(w io.Writer, h Header, rows []Row, label, every string) {
	fmt.Fprintf(w, "%s  %s\n", h.Time.Format(time.RFC3339), headerLine(h, label, every))
	if len(rows) == 0 {
		fmt.Fprintf(w, "no %s sockets\n\n", label)
		return
	}
	cols := shownColumns(label, rows)
	cells := make([]string, len(cols))
	for i, c := range cols {
		cells[i] = fit(c.title, c.width, c.right)
	}
	fmt.Fprintln(w, strings.TrimRight(strings.Join(cells, " "), " "))
	for i := range rows {
		for j, c := range cols {
			cells[j] = fit(c.cell(&rows[i]), c.width, c.right)
		}
		fmt.Fprintln(w, strings.TrimRight(strings.Join(cells, " "), " "))
	}
	fmt.Fprintln(w)
}
