// Package packaging_test builds the release files with make and checks
// them: reproducible twice over, and a .deb that installs into a
// throwaway root, works there, and purges without a trace.
package packaging_test

import (
	"bytes"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"

	"github.com/closewait/closewait/internal/leaktest"
)

// run runs a command and returns its stdout; stderr goes into the error.
func run(t *testing.T, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// The files the package installs, under the root.
var debFiles = []string{
	"usr/bin/closewait",
	"usr/share/man/man1/closewait.1.gz",
	"usr/share/bash-completion/completions/closewait",
	"usr/share/zsh/vendor-completions/_closewait",
	"usr/share/fish/vendor_completions.d/closewait.fish",
	"usr/lib/systemd/system/closewait-tracer.service",
	"usr/lib/systemd/system/closewait-exporter.service",
	"usr/lib/systemd/system/closewait-check.service",
	"usr/lib/systemd/system/closewait-check.timer",
	"etc/default/closewait",
	"usr/share/doc/closewait/README.md.gz",
}

func TestDistAndDeb(t *testing.T) {
	if testing.Short() {
		t.Skip("builds every release file twice")
	}
	if runtime.GOOS != "linux" || (runtime.GOARCH != "amd64" && runtime.GOARCH != "arm64") {
		t.Skip("the .deb checks run the package's binary: linux/amd64 or linux/arm64 hosts only")
	}
	for _, tool := range []string{"make", "git", "dpkg", "dpkg-deb", "man", "bash", "zsh", "fish", "systemd-analyze"} {
		if _, err := exec.LookPath(tool); err != nil {
			leaktest.Missing(t, tool+" not installed (make deps)")
		}
	}

	// make deb twice (it runs make dist): same checksums.
	d1, d2 := t.TempDir(), t.TempDir()
	run(t, nil, "make", "-C", "..", "deb", "DIST="+d1)
	run(t, nil, "make", "-C", "..", "deb", "DIST="+d2)
	sums1, err := os.ReadFile(filepath.Join(d1, "SHA256SUMS"))
	if err != nil {
		t.Fatal(err)
	}
	sums2, err := os.ReadFile(filepath.Join(d2, "SHA256SUMS"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(sums1, sums2) {
		t.Errorf("two builds differ:\n%s\n%s", sums1, sums2)
	}
	for _, want := range []string{"_linux_amd64.tar.gz", "_linux_arm64.tar.gz", "_windows_amd64.exe",
		"_darwin_amd64.tar.gz", "_darwin_arm64.tar.gz", "_amd64.deb", "_arm64.deb"} {
		if !bytes.Contains(sums1, []byte(want+"\n")) {
			t.Errorf("SHA256SUMS lacks a %s:\n%s", want, sums1)
		}
	}

	debs, _ := filepath.Glob(filepath.Join(d1, "closewait_*_"+runtime.GOARCH+".deb"))
	if len(debs) != 1 {
		t.Fatalf("want one %s .deb, got %q", runtime.GOARCH, debs)
	}
	deb := debs[0]
	info := run(t, nil, "dpkg-deb", "-I", deb)
	for _, want := range []string{"Package: closewait", "Architecture: " + runtime.GOARCH, " prerm ", " postrm ", " postinst "} {
		if !strings.Contains(info, want) {
			t.Errorf("dpkg-deb -I lacks %q:\n%s", want, info)
		}
	}

	// Install into a throwaway root; the maintainer scripts run outside it
	// with DPKG_ROOT set, so they leave the running system alone.
	root := t.TempDir()
	for _, d := range []string{"var/lib/dpkg/info", "var/lib/dpkg/updates"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "var/lib/dpkg/status"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	dpkg := []string{"--root=" + root, "--force-script-chrootless", "--force-not-root", "--log=/dev/null"}
	run(t, nil, "dpkg", append(dpkg, "-i", deb)...)
	for _, f := range debFiles {
		if _, err := os.Stat(filepath.Join(root, f)); err != nil {
			t.Errorf("not installed: %v", err)
		}
	}
	at := func(f string) string { return filepath.Join(root, f) }

	version := run(t, nil, at("usr/bin/closewait"), "--version")
	commit := strings.TrimSpace(run(t, nil, "git", "rev-parse", "HEAD"))
	for _, re := range []string{`(?m)^closewait \S+$`, `(?m)^commit: ` + commit, `(?m)^go: go1\.\d+`, `(?m)^bpf object: sha256:[0-9a-f]{64}$`} {
		if !regexp.MustCompile(re).MatchString(version) {
			t.Errorf("installed closewait --version does not match %s:\n%s", re, version)
		}
	}

	page := run(t, []string{"MANPAGER=cat", "PAGER=cat", "MANWIDTH=80"}, "man", "-l", at("usr/share/man/man1/closewait.1.gz"))
	for _, want := range []string{"CLOSEWAIT(1)", "CLOSEWAIT TRACER", "CLOSEWAIT COMPLETION"} {
		if !strings.Contains(page, want) {
			t.Errorf("man -l output lacks %q", want)
		}
	}
	if out := run(t, nil, "bash", "-c", `source "$1" && complete -p closewait`, "bash", at(debFiles[2])); !strings.Contains(out, "_closewait closewait") {
		t.Errorf("bash completion not registered: %q", out)
	}
	run(t, nil, "zsh", "-n", at(debFiles[3]))
	run(t, nil, "fish", "-n", at(debFiles[4]))

	// systemd-analyze verify --root resolves ExecStart= and the units'
	// default dependencies (sysinit.target, ...) inside the root: a copy
	// with the host's targets and slices added, so the purge check below
	// sees only the package's files. MANPATH lets it find man:closewait(1).
	vroot := t.TempDir()
	copyFile(t, at("usr/bin/closewait"), filepath.Join(vroot, "usr/bin/closewait"), 0o755)
	units, _ := filepath.Glob(at("usr/lib/systemd/system/closewait-*"))
	host, _ := filepath.Glob("/usr/lib/systemd/system/*.target")
	hostSlices, _ := filepath.Glob("/usr/lib/systemd/system/*.slice")
	var verify []string
	for _, u := range append(units, append(host, hostSlices...)...) {
		dst := filepath.Join(vroot, "usr/lib/systemd/system", filepath.Base(u))
		copyFile(t, u, dst, 0o644)
		if strings.HasPrefix(filepath.Base(u), "closewait-") {
			verify = append(verify, dst)
		}
	}
	cmd := exec.Command("systemd-analyze", append([]string{"verify", "--root=" + vroot}, verify...)...)
	cmd.Env = append(os.Environ(), "MANPATH="+at("usr/share/man"))
	if out, err := cmd.CombinedOutput(); err != nil || len(out) > 0 || len(verify) != 4 {
		t.Errorf("systemd-analyze verify %q: %v\n%s", verify, err, out)
	}

	// Remove keeps only the conffile; purge takes that too.
	run(t, nil, "dpkg", append(dpkg, "--remove", "closewait")...)
	if left := files(t, root); len(left) != 1 || left[0] != "etc/default/closewait" {
		t.Errorf("after dpkg -r: %q, want only etc/default/closewait", left)
	}
	run(t, nil, "dpkg", append(dpkg, "--purge", "closewait")...)
	if left := files(t, root); len(left) > 0 {
		t.Errorf("left after purge: %q", left)
	}
}

// files lists the files under root, dpkg's database aside.
func files(t *testing.T, root string) []string {
	t.Helper()
	var list []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if strings.HasPrefix(rel, "var/lib/dpkg") {
			return fs.SkipDir
		}
		if !d.IsDir() {
			list = append(list, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return list
}

// copyFile copies src to dst with mode, making dst's directory.
func copyFile(t *testing.T, src, dst string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, mode); err != nil {
		t.Fatal(err)
	}
}
