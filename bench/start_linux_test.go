package main

import (
	"bytes"
	"math"
	"os"
	"os/exec"
	"runtime/debug"
	"testing"
)

func TestModuleOf(t *testing.T) {
	mods := []string{"github.com/closewait/closewait", "github.com/charmbracelet/x", "github.com/charmbracelet/x/ansi"}
	for pkg, want := range map[string]string{
		"fmt": stdModule,
		"github.com/closewait/closewait/collector": "github.com/closewait/closewait",
		"github.com/closewait/closewaitx":          stdModule, // a prefix of the path, not of its elements
		"github.com/charmbracelet/x/ansi/parser":   "github.com/charmbracelet/x/ansi",
		"github.com/charmbracelet/x/termios":       "github.com/charmbracelet/x",
	} {
		if got := moduleOf(mods, pkg); got != want {
			t.Errorf("moduleOf(%q) = %q, want %q", pkg, got, want)
		}
	}
}

// TestInitClock parses the inittrace of a real Go program: this test
// binary, started again to run no test.
func TestInitClock(t *testing.T) {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		t.Fatal("no build info")
	}
	var mods []string
	for _, d := range info.Deps {
		mods = append(mods, d.Path)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "GODEBUG=inittrace=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%v: %s", err, stderr.String())
	}
	sums, total, err := initClock(stderr.String(), func(pkg string) string { return moduleOf(mods, pkg) })
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, v := range sums {
		sum += v
	}
	if math.Abs(sum-total) > 1e-9 || total <= 0 {
		t.Errorf("groups add up to %v, total %v", sum, total)
	}
	// The bench imports cilium/ebpf, whose packages have initialisers.
	for _, m := range []string{stdModule, "github.com/cilium/ebpf"} {
		if _, ok := sums[m]; !ok {
			t.Errorf("no initialisers of %s in %v", m, sums)
		}
	}
	if _, _, err := initClock("closewait version dev\n", nil); err == nil {
		t.Error("output without inittrace lines: no error")
	}
}
