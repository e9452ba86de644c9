package cli

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"

	"github.com/closewait/closewait/ebpf"
)

// printVersion prints the version, the commit the binary was built from
// (from the Go toolchain's VCS stamp), the Go version and the hash of the
// embedded BPF object.
func printVersion(w io.Writer) {
	commit := "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
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
			commit = rev
			if modified == "true" {
				commit += " (modified)"
			}
		}
	}
	bpf := "none (no BPF on " + runtime.GOOS + ")"
	if h := ebpf.ObjectSHA256(); h != "" {
		bpf = "sha256:" + h
	}
	fmt.Fprintf(w, "closewait %s\ncommit: %s\ngo: %s %s/%s\nbpf object: %s\n",
		version, commit, runtime.Version(), runtime.GOOS, runtime.GOARCH, bpf)
}
