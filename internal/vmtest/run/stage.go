package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"

	"github.com/closewait/closewait/internal/vmtest"
)

// stage fills dir with the guest's files: the init, the test binaries with
// their testdata, the modules, the host tools and the config.
func stage(ctx context.Context, o *options, k *kernel, dir string) error {
	goEnv := append(os.Environ(), "GOOS=linux", "GOARCH="+o.Arch, "CGO_ENABLED=0")
	build := func(args ...string) error {
		cmd := exec.CommandContext(ctx, "go", args...)
		cmd.Dir = o.ModRoot
		cmd.Env = goEnv
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, out)
		}
		return nil
	}
	if err := build("build", "-trimpath", "-o", filepath.Join(dir, "init"), "./internal/vmtest/init"); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(dir, "bin"), 0o755); err != nil {
		return err
	}
	if err := os.Symlink("/init", filepath.Join(dir, "bin", "sleep")); err != nil {
		return err
	}

	cfg := vmtest.Config{Env: []string{
		"CI=true", "PATH=/bin:/usr/bin:/sbin:/usr/sbin", "HOME=/tmp", "TMPDIR=/tmp", vmtest.GuestEnv + "=1",
	}}
	args := []string{"-test.v", "-test.timeout=" + o.TestTimeout.String()}
	if o.Run != "" {
		args = append(args, "-test.run="+o.Run)
	}
	if o.Skip != "" {
		args = append(args, "-test.skip="+o.Skip)
	}

	pkgs, err := listPackages(ctx, o, goEnv)
	if err != nil {
		return err
	}
	for i, p := range pkgs {
		guestDir := fmt.Sprintf("/vmtest/pkg/%d-%s", i, path.Base(p.ImportPath))
		hostDir := filepath.Join(dir, guestDir)
		bin := path.Base(p.ImportPath) + ".test"
		if err := os.MkdirAll(hostDir, 0o755); err != nil {
			return err
		}
		o.log("building %s for linux/%s", p.ImportPath, o.Arch)
		b := []string{"test", "-c", "-vet=off", "-o", filepath.Join(hostDir, bin)}
		if o.Tags != "" {
			b = append(b, "-tags", o.Tags)
		}
		if err := build(append(b, p.ImportPath)...); err != nil {
			return err
		}
		if _, err := os.Stat(filepath.Join(hostDir, bin)); err != nil {
			o.log("%s has no tests for linux/%s", p.ImportPath, o.Arch)
			continue
		}
		if err := copyTree(filepath.Join(p.Dir, "testdata"), filepath.Join(hostDir, "testdata")); err != nil {
			return err
		}
		cfg.Tests = append(cfg.Tests, vmtest.Test{Name: p.ImportPath, Dir: guestDir, Path: path.Join(guestDir, bin), Args: args})
	}
	if len(cfg.Tests) == 0 {
		return fmt.Errorf("no test binaries in %q", o.Pkgs)
	}

	mods, err := k.modules(o.Modules)
	if err != nil {
		return err
	}
	for _, m := range mods {
		guest := path.Join("/lib/modules", k.Release, m.Name+".ko")
		if err := writeFile(filepath.Join(dir, guest), m.Data, 0o644); err != nil {
			return err
		}
		cfg.Modules = append(cfg.Modules, guest)
	}

	// As an installed Debian kernel has it: cilium/ebpf reads kconfig
	// values (CONFIG_HZ) from there, and Debian sets no /proc/config.gz.
	kconfig := path.Join("/boot", "config-"+k.Release)
	b, err := os.ReadFile(filepath.Join(k.Root, kconfig))
	if err != nil {
		return err
	}
	if err := writeFile(filepath.Join(dir, kconfig), b, 0o644); err != nil {
		return err
	}

	for _, t := range o.Tools {
		if o.Arch != hostDebArch() {
			o.log("not copying %s: the host's binaries are %s, the guest is %s", t, hostDebArch(), o.Arch)
			continue
		}
		if err := copyHostTool(ctx, t, dir); err != nil {
			return err
		}
	}

	b, err = json.MarshalIndent(cfg, "", "\t")
	if err != nil {
		return err
	}
	return writeFile(filepath.Join(dir, vmtest.ConfigPath), b, 0o644)
}

type goPackage struct{ ImportPath, Dir string }

// listPackages resolves the package patterns as the guest's build sees them.
func listPackages(ctx context.Context, o *options, env []string) ([]goPackage, error) {
	args := []string{"list", "-f", "{{.ImportPath}}\t{{.Dir}}"}
	if o.Tags != "" {
		args = append(args, "-tags", o.Tags)
	}
	cmd := exec.CommandContext(ctx, "go", append(append(args, "--"), o.Pkgs...)...)
	cmd.Dir = o.ModRoot
	cmd.Env = env
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go list %q: %w\n%s", o.Pkgs, err, stderr.Bytes())
	}
	var pkgs []goPackage
	for line := range strings.Lines(string(out)) {
		ip, dir, ok := strings.Cut(strings.TrimSpace(line), "\t")
		if ok {
			pkgs = append(pkgs, goPackage{ip, dir})
		}
	}
	return pkgs, nil
}

// copyHostTool copies a host program and the shared libraries ldd lists to
// the same paths in the guest, so that the program finds them where it
// found them on the host.
func copyHostTool(ctx context.Context, name, dir string) error {
	bin, err := exec.LookPath(name)
	if err != nil {
		return fmt.Errorf("host tool: %w", err)
	}
	if bin, err = filepath.Abs(bin); err != nil {
		return err
	}
	out, err := exec.CommandContext(ctx, "ldd", bin).CombinedOutput()
	if err != nil && !bytes.Contains(out, []byte("not a dynamic executable")) {
		return fmt.Errorf("ldd %s: %w\n%s", bin, err, out)
	}
	files := append([]string{bin}, lddPaths(string(out))...)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		if err := writeFile(filepath.Join(dir, f), b, 0o755); err != nil {
			return err
		}
	}
	if b := filepath.Join("/bin", name); bin != b {
		if err := os.Symlink(bin, filepath.Join(dir, b)); err != nil && !os.IsExist(err) {
			return err
		}
	}
	return nil
}

// lddPaths returns the absolute paths in ldd's output: "libx.so.1 =>
// /lib/.../libx.so.1 (0x...)" and "/lib64/ld-linux-x86-64.so.2 (0x...)".
func lddPaths(out string) []string {
	var paths []string
	for line := range strings.Lines(out) {
		f := strings.Fields(line)
		if i := strings.Index(line, "=>"); i >= 0 {
			f = strings.Fields(line[i+2:])
		}
		if len(f) > 0 && strings.HasPrefix(f[0], "/") {
			paths = append(paths, f[0])
		}
	}
	return paths
}

// copyTree copies the regular files and folders under src, if it exists.
func copyTree(src, dst string) error {
	if _, err := os.Stat(src); os.IsNotExist(err) {
		return nil
	}
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		case d.Type().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			return writeFile(filepath.Join(dst, rel), b, 0o644)
		}
		return nil
	})
}

func writeFile(name string, b []byte, perm os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		return err
	}
	return os.WriteFile(name, b, perm)
}

// pack writes dir as a newc cpio archive, the format the kernel unpacks
// into its initramfs, with every file owned by root.
func pack(ctx context.Context, dir, archive string) error {
	var names bytes.Buffer
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		names.WriteString(rel)
		names.WriteByte(0)
		return err
	})
	if err != nil {
		return err
	}
	f, err := os.Create(archive)
	if err != nil {
		return err
	}
	defer f.Close()
	w := bufio.NewWriter(f)
	cmd := exec.CommandContext(ctx, "cpio", "--create", "--null", "--format=newc", "--owner=0:0", "--quiet")
	cmd.Dir = dir
	cmd.Stdin = &names
	cmd.Stdout = w
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("cpio: %w\n%s", err, stderr.Bytes())
	}
	if err := w.Flush(); err != nil {
		return err
	}
	return f.Close()
}
