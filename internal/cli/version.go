package cli

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"

	"github.com/closewait/closewait/ebpf"
)

// commit is the commit the binary was built from, set with -ldflags
// "-X github.com/closewait/closewait/internal/cli.commit=..." (make build,
// make dist): GOFLAGS may carry -buildvcs=false, which drops Go's own stamp.
var commit string

// printVersion prints the version, the commit the binary was built from
// (-X, else the Go toolchain's VCS stamp), the Go version and the hash of
// the embedded BPF object.
func printVersion(w io.Writer) {
	built := commit
	if bi, ok := debug.ReadBuildInfo(); ok && built == "" {
		var rev, modified string
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				modified = s.Value
			}
		}
		if rev != "" {
			built = rev
			if modified == "true" {
				built += " (modified)"
			}
		}
	}
	if built == "" {
		built = "unknown"
	}
	bpf := "none (no BPF on " + runtime.GOOS + ")"
	if h := ebpf.ObjectSHA256(); h != "" {
		bpf = "sha256:" + h
	}
	fmt.Fprintf(w, "closewait %s\ncommit: %s\ngo: %s %s/%s\nbpf object: %s\n",
		version, built, runtime.Version(), runtime.GOOS, runtime.GOARCH, bpf)
}
