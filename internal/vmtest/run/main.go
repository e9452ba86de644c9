// Command run boots a Debian kernel under qemu and runs Go test binaries in
// it (see package vmtest). It exits 0 only when the guest reports that every
// test binary passed, or, outside CI, when a prerequisite is missing and it
// says which.
//
//	go run ./internal/vmtest/run --arch arm64 --pkg ./ebpf --pkg ./collector --run 'TestIterators'
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/closewait/closewait/internal/vmtest"
	"github.com/spf13/pflag"
)

func main() {
	err := run(context.Background(), os.Args[1:], os.Stdout, os.Stderr)
	var skip *skipError
	switch {
	case errors.As(err, &skip):
		fmt.Fprintln(os.Stderr, "vmtest:", err)
	case errors.Is(err, pflag.ErrHelp):
	case err != nil:
		fmt.Fprintln(os.Stderr, "vmtest:", err)
		os.Exit(1)
	}
}

type options struct {
	Arch        string
	Pkgs        []string
	Run, Skip   string
	Tags        string
	Series      string
	Modules     []string
	Tools       []string
	Timeout     time.Duration
	TestTimeout time.Duration
	Mem         string
	SMP         int
	Cache       string
	Keep        bool

	ModRoot string
	log     func(format string, args ...any)
}

// skipError is a missing prerequisite outside CI: reported, not a failure.
type skipError struct{ missing []string }

func (e *skipError) Error() string {
	return "skipped, missing: " + strings.Join(e.missing, "; ")
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o := options{log: func(format string, a ...any) {
		fmt.Fprintf(stderr, "vmtest: "+format+"\n", a...)
	}}
	fs := pflag.NewFlagSet("vmtest", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.Arch, "arch", hostDebArch(), "guest architecture: amd64 or arm64")
	fs.StringArrayVar(&o.Pkgs, "pkg", []string{"./ebpf", "./collector"}, "package whose tests run in the guest (repeat)")
	fs.StringVar(&o.Run, "run", "", "-test.run regexp")
	fs.StringVar(&o.Skip, "skip", "", "-test.skip regexp")
	fs.StringVar(&o.Tags, "tags", "", "build tags for the test binaries")
	fs.StringVar(&o.Series, "series", "6.1.0", "Debian kernel ABI series: linux-image-SERIES-N-ARCH")
	fs.StringSliceVar(&o.Modules, "module", []string{"inet_diag", "tcp_diag"}, "kernel modules to load, with their dependencies")
	fs.StringSliceVar(&o.Tools, "host-tool", []string{"ss"}, "host programs to copy with their libraries (same architecture only)")
	fs.DurationVar(&o.Timeout, "timeout", 30*time.Minute, "wall-clock limit of the qemu run")
	fs.DurationVar(&o.TestTimeout, "test-timeout", 20*time.Minute, "-test.timeout of each test binary")
	fs.StringVar(&o.Mem, "mem", "1G", "guest memory")
	fs.IntVar(&o.SMP, "smp", 2, "guest CPUs")
	fs.StringVar(&o.Cache, "cache", "", "cache of kernel packages (default .cache/vmtest in the module)")
	fs.BoolVar(&o.Keep, "keep", false, "keep the initramfs and its folder")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if _, ok := machines[o.Arch]; !ok {
		return fmt.Errorf("--arch %q: want amd64 or arm64", o.Arch)
	}
	if err := prerequisites(ctx, &o); err != nil {
		return err
	}

	start := time.Now()
	k, err := fetchKernel(ctx, o.Cache, o.Series, o.Arch, o.log)
	if err != nil {
		return err
	}
	o.log("kernel package %s %s (%s)", k.Pkg, k.Version, o.Arch)
	work, err := os.MkdirTemp(o.Cache, "run-"+o.Arch+"-")
	if err != nil {
		return err
	}
	if o.Keep {
		o.log("keeping %s", work)
	} else {
		defer os.RemoveAll(work)
	}
	if err := stage(ctx, &o, k, filepath.Join(work, "root")); err != nil {
		return err
	}
	initrd := filepath.Join(work, "initramfs.cpio")
	if err := pack(ctx, filepath.Join(work, "root"), initrd); err != nil {
		return err
	}

	bootCtx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	booted := time.Now()
	st, err := boot(bootCtx, &o, k, initrd, stdout)
	o.log("%s guest: package %s %s, uname %q; qemu ran %s, whole run %s",
		o.Arch, k.Pkg, k.Version, st.Kernel, time.Since(booted).Round(time.Second), time.Since(start).Round(time.Second))
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%s guest: no result within --timeout %s", o.Arch, o.Timeout)
	case st.Result == vmtest.Pass:
		o.log("%s guest: pass", o.Arch)
		return nil
	case st.Result == vmtest.Fail:
		return fmt.Errorf("%s guest: fail", o.Arch)
	case err != nil:
		return fmt.Errorf("%s guest: no result: %w", o.Arch, err)
	}
	return fmt.Errorf("%s guest: no result line before qemu exited", o.Arch)
}

// prerequisites finds the module's root and the cache, and returns nil
// when the host has everything a run needs. Else, under CI=true it returns
// an error; outside CI, a *skipError.
func prerequisites(ctx context.Context, o *options) error {
	var missing []string
	for _, t := range []struct{ bin, pkg string }{
		{"go", "Go"},
		{machines[o.Arch].qemu, map[string]string{"amd64": "qemu-system-x86", "arm64": "qemu-system-arm"}[o.Arch]},
		{"cpio", "cpio"},
		{"apt-get", "apt"},
		{"dpkg-deb", "dpkg"},
	} {
		if _, err := exec.LookPath(t.bin); err != nil {
			missing = append(missing, fmt.Sprintf("%s (Debian package %s; make deps installs it)", t.bin, t.pkg))
		}
	}
	if o.Arch == hostDebArch() {
		for _, t := range o.Tools {
			if _, err := exec.LookPath(t); err != nil {
				missing = append(missing, fmt.Sprintf("%s (--host-tool; for ss, make deps installs iproute2)", t))
			}
		}
	}
	if len(missing) == 0 {
		root, err := exec.CommandContext(ctx, "go", "list", "-m", "-f", "{{.Dir}}").Output()
		if err != nil {
			return fmt.Errorf("go list -m: %w", err)
		}
		o.ModRoot = strings.TrimSpace(string(root))
		if o.Cache == "" {
			o.Cache = filepath.Join(o.ModRoot, ".cache", "vmtest")
		}
		if o.Arch != hostDebArch() && !foreignArch(ctx, o.Arch) {
			if debs, _ := cachedDebs(filepath.Join(o.Cache, "debs"), o.Arch); len(debs) == 0 {
				missing = append(missing, fmt.Sprintf("apt knows no %s packages and none is cached: %s", o.Arch, aptHint(o.Arch)))
			}
		}
	}
	switch {
	case len(missing) == 0:
		return nil
	case os.Getenv("CI") == "true":
		return fmt.Errorf("prerequisite missing in CI: %s", strings.Join(missing, "; "))
	}
	return &skipError{missing}
}

// foreignArch tells whether dpkg (and so apt) knows arch.
func foreignArch(ctx context.Context, arch string) bool {
	out, err := exec.CommandContext(ctx, "dpkg", "--print-foreign-architectures").Output()
	return err == nil && slices.Contains(strings.Fields(string(out)), arch)
}
