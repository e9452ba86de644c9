package main

import (
	"bytes"
	"cmp"
	"debug/buildinfo"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// stdModule names the Go standard library in suiteStart's table.
const stdModule = "Go standard library and runtime"

// suiteStart shows where a start of closewait goes before it does any work:
// the package initialisers, summed by module (GODEBUG=inittrace=1, which
// inflates them), and the page faults of a start, against ss's.
func suiteStart(c config) error {
	info, err := buildinfo.ReadFile(c.closewait)
	if err != nil {
		return err
	}
	mods := []string{info.Main.Path}
	for _, d := range info.Deps {
		mods = append(mods, d.Path)
	}
	group := func(pkg string) string { return moduleOf(mods, pkg) }
	rounds := max(c.rounds, 21)
	byModule := map[string][]float64{}
	var totals []float64
	commands := []struct {
		name string
		args []string
	}{
		{"closewait --version", []string{c.closewait, "--version"}},
		{"closewait (a listing)", []string{c.closewait}},
		{"ss -tanpH state close-wait", []string{"ss", "-tanpH", "state", "close-wait"}},
	}
	faults := make([][]int64, len(commands))
	for range rounds {
		cmd := exec.Command(c.closewait, "--version")
		cmd.Env = append(os.Environ(), "GODEBUG=inittrace=1")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("%s --version: %w", c.closewait, err)
		}
		sums, total, err := initClock(stderr.String(), group)
		if err != nil {
			return fmt.Errorf("%s --version: %w", c.closewait, err)
		}
		for m := range sums {
			byModule[m] = append(byModule[m], sums[m])
		}
		totals = append(totals, total)
		for i, k := range commands {
			cmd := exec.Command(k.args[0], k.args[1:]...)
			if err := cmd.Run(); err != nil {
				return fmt.Errorf("%s: %w", k.name, err)
			}
			faults[i] = append(faults[i], cmd.ProcessState.SysUsage().(*syscall.Rusage).Minflt)
		}
	}
	type row struct {
		module string
		clock  float64
	}
	var rows []row
	for m, v := range byModule {
		rows = append(rows, row{m, medianFloat(v)})
	}
	slices.SortFunc(rows, func(a, b row) int { return cmp.Or(cmp.Compare(b.clock, a.clock), cmp.Compare(a.module, b.module)) })
	total := medianFloat(totals)
	fmt.Printf("### Start: package initialisers by module, page faults\n\n")
	fmt.Printf("`closewait --version` with `GODEBUG=inittrace=1`, %d runs: the initialisers' clock summed by module, medians "+
		"(tracing inflates them; the rows need not add up to the total's median). Page faults (minor, from rusage) of runs without tracing.\n\n", rounds)
	fmt.Println("| module | init clock | share of the total |")
	fmt.Println("|---|---:|---:|")
	rest := 0.0
	for i, r := range rows {
		if i >= 12 {
			rest += r.clock
			continue
		}
		fmt.Printf("| %s | %.2f ms | %.0f%% |\n", r.module, r.clock, 100*r.clock/total)
	}
	if rest > 0 {
		fmt.Printf("| %d other modules | %.2f ms | %.0f%% |\n", len(rows)-12, rest, 100*rest/total)
	}
	fmt.Printf("| **all initialisers** | %.2f ms | 100%% |\n\n", total)
	fmt.Println("| command | page faults (median) |")
	fmt.Println("|---|---:|")
	for i, k := range commands {
		fmt.Printf("| `%s` | %d |\n", k.name, median(faults[i]))
	}
	fmt.Println()
	return nil
}

// moduleOf is the module of mods that holds package pkg: the longest
// prefix; stdModule when none does.
func moduleOf(mods []string, pkg string) string {
	best := stdModule
	for _, m := range mods {
		if (pkg == m || strings.HasPrefix(pkg, m+"/")) && (best == stdModule || len(m) > len(best)) {
			best = m
		}
	}
	return best
}

// initClock sums the clock of the initialisers in a GODEBUG=inittrace=1
// output by group (of their package), and in all.
func initClock(trace string, group func(pkg string) string) (map[string]float64, float64, error) {
	sums := map[string]float64{}
	total := 0.0
	for l := range strings.SplitSeq(trace, "\n") {
		// init PKG @T ms, C ms clock, B bytes, N allocs
		f := strings.Fields(l)
		if len(f) < 7 || f[0] != "init" || f[6] != "clock," {
			continue
		}
		v, err := strconv.ParseFloat(f[4], 64)
		if err != nil {
			return nil, 0, fmt.Errorf("inittrace line %q: %w", l, err)
		}
		sums[group(f[1])] += v
		total += v
	}
	if total == 0 {
		return nil, 0, errors.New("no inittrace lines")
	}
	return sums, total, nil
}
