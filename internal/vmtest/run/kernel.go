package main

import (
	"bufio"
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// kernel is one Debian kernel package, fetched and extracted.
type kernel struct {
	Pkg     string // e.g. linux-image-6.1.0-57-amd64-unsigned
	Version string // the package's version, e.g. 6.1.192-3
	Release string // uname -r, the folder under lib/modules
	Root    string // the extracted package
	Image   string // the vmlinuz file
}

// pickKernel returns the newest of names that is a plain Debian kernel image
// of series for arch (no cloud or rt flavour), preferring the unsigned
// package of an ABI, since the signed one only adds a Secure Boot signature.
func pickKernel(names []string, series, arch string) (string, bool) {
	re := regexp.MustCompile(`^linux-image-` + regexp.QuoteMeta(series) + `-(\d+)-` + regexp.QuoteMeta(arch) + `(-unsigned)?$`)
	best, bestABI, bestUnsigned := "", -1, false
	for _, n := range names {
		m := re.FindStringSubmatch(n)
		if m == nil {
			continue
		}
		abi, err := strconv.Atoi(m[1])
		if err != nil {
			continue
		}
		unsigned := m[2] != ""
		if abi > bestABI || abi == bestABI && unsigned && !bestUnsigned {
			best, bestABI, bestUnsigned = n, abi, unsigned
		}
	}
	return best, best != ""
}

// fetchKernel finds the newest kernel apt offers, downloads it into
// cache/debs unless it is there already, and extracts it into
// cache/kernels. With no apt answer it falls back to the newest .deb in the
// cache, so a run needs no network once the cache is warm.
func fetchKernel(ctx context.Context, cache, series, arch string, log func(string, ...any)) (*kernel, error) {
	debs := filepath.Join(cache, "debs")
	if err := os.MkdirAll(debs, 0o755); err != nil {
		return nil, err
	}
	var k kernel
	out, _ := exec.CommandContext(ctx, "apt-cache", "pkgnames", "linux-image-"+series+"-").Output()
	if name, ok := pickKernel(strings.Fields(string(out)), series, arch); ok {
		v, err := candidate(ctx, name+":"+arch)
		if err != nil {
			return nil, err
		}
		k.Pkg, k.Version = name, v
	} else {
		cached, err := cachedDebs(debs, arch)
		if err != nil {
			return nil, err
		}
		name, ok := pickKernel(slices.Collect(maps.Keys(cached)), series, arch)
		if !ok {
			return nil, fmt.Errorf("apt offers no linux-image-%s-*-%s and none is cached in %s: %s", series, arch, debs, aptHint(arch))
		}
		k.Pkg, k.Version = name, cached[name]
		log("apt offers no linux-image-%s-*-%s; using the cached %s %s", series, arch, k.Pkg, k.Version)
	}

	deb := filepath.Join(debs, fmt.Sprintf("%s_%s_%s.deb", k.Pkg, k.Version, arch))
	if _, err := os.Stat(deb); err != nil {
		log("downloading %s:%s %s", k.Pkg, arch, k.Version)
		tmp, err := os.MkdirTemp(debs, "download-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(tmp)
		cmd := exec.CommandContext(ctx, "apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", k.Pkg+":"+arch+"="+k.Version)
		cmd.Dir = tmp
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("apt-get download %s: %w\n%s", k.Pkg, err, out)
		}
		got, err := filepath.Glob(filepath.Join(tmp, "*.deb"))
		if err != nil || len(got) != 1 {
			return nil, fmt.Errorf("apt-get download %s left %d .deb files", k.Pkg, len(got))
		}
		if err := os.Rename(got[0], deb); err != nil {
			return nil, err
		}
	}

	k.Root = filepath.Join(cache, "kernels", fmt.Sprintf("%s_%s_%s", k.Pkg, k.Version, arch))
	if _, err := os.Stat(k.Root); err != nil {
		log("extracting %s", filepath.Base(deb))
		if err := os.MkdirAll(filepath.Dir(k.Root), 0o755); err != nil {
			return nil, err
		}
		tmp, err := os.MkdirTemp(filepath.Dir(k.Root), "extract-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(tmp)
		if out, err := exec.CommandContext(ctx, "dpkg-deb", "-x", deb, tmp).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("dpkg-deb -x %s: %w\n%s", deb, err, out)
		}
		if err := os.Rename(tmp, k.Root); err != nil {
			return nil, err
		}
	}
	rels, err := os.ReadDir(filepath.Join(k.Root, "lib", "modules"))
	if err != nil || len(rels) != 1 {
		return nil, fmt.Errorf("%s: want one folder in lib/modules (%v)", k.Root, err)
	}
	k.Release = rels[0].Name()
	k.Image = filepath.Join(k.Root, "boot", "vmlinuz-"+k.Release)
	if _, err := os.Stat(k.Image); err != nil {
		return nil, err
	}
	return &k, nil
}

func aptHint(arch string) string {
	if arch == hostDebArch() {
		return "run apt-get update"
	}
	return fmt.Sprintf("run dpkg --add-architecture %s && apt-get update (make vmtest-deps does)", arch)
}

// candidate returns the version apt would download for pkg.
func candidate(ctx context.Context, pkg string) (string, error) {
	out, err := exec.CommandContext(ctx, "apt-cache", "policy", pkg).Output()
	if err != nil {
		return "", fmt.Errorf("apt-cache policy %s: %w", pkg, err)
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "Candidate:"); ok {
			if v = strings.TrimSpace(v); v != "" && v != "(none)" {
				return v, nil
			}
		}
	}
	return "", fmt.Errorf("apt has no candidate version of %s", pkg)
}

// cachedDebs maps package names to versions of the .deb files in dir for
// arch, named as fetchKernel names them.
func cachedDebs(dir, arch string) (map[string]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	debs := map[string]string{}
	for _, e := range ents {
		f := strings.Split(strings.TrimSuffix(e.Name(), ".deb"), "_")
		if len(f) == 3 && f[2] == arch && strings.HasSuffix(e.Name(), ".deb") {
			if old, ok := debs[f[0]]; !ok || newer(f[1], old) {
				debs[f[0]] = f[1]
			}
		}
	}
	return debs, nil
}

// newer tells whether Debian version a sorts after b.
func newer(a, b string) bool {
	return exec.Command("dpkg", "--compare-versions", a, "gt", b).Run() == nil
}

// module is a kernel module file ready for finit_module.
type module struct {
	Name string
	Data []byte // uncompressed ELF
}

// modules returns the named modules and what they depend on, dependencies
// first. The .deb has no modules.dep (depmod writes it on install), so the
// dependencies come from each module's .modinfo "depends=" field.
func (k *kernel) modules(names []string) ([]module, error) {
	files := map[string]string{}
	root := filepath.Join(k.Root, "lib", "modules", k.Release)
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if n, ok := moduleName(d.Name()); ok && !d.IsDir() {
			files[n] = path
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	var order []module
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(string) error
	visit = func(name string) error {
		name = strings.ReplaceAll(name, "-", "_")
		switch state[name] {
		case 1:
			return fmt.Errorf("module %s depends on itself", name)
		case 2:
			return nil
		}
		state[name] = 1
		path, ok := files[name]
		if !ok {
			return fmt.Errorf("module %s not in %s (built in? then drop it from --module)", name, root)
		}
		data, err := readModule(path)
		if err != nil {
			return err
		}
		deps, err := moduleDepends(data)
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		for _, d := range deps {
			if err := visit(d); err != nil {
				return err
			}
		}
		state[name] = 2
		order = append(order, module{Name: name, Data: data})
		return nil
	}
	for _, n := range names {
		if err := visit(n); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// moduleName returns the module name of a file name: tcp_diag.ko.xz is
// tcp_diag; the kernel treats - and _ alike in module names.
func moduleName(file string) (string, bool) {
	for _, ext := range []string{".ko", ".ko.xz", ".ko.zst", ".ko.gz"} {
		if n, ok := strings.CutSuffix(file, ext); ok {
			return strings.ReplaceAll(n, "-", "_"), true
		}
	}
	return "", false
}

// readModule returns a module file's ELF, decompressed with the xz, zstd or
// gzip tool when the distribution compressed it.
func readModule(path string) ([]byte, error) {
	var tool string
	switch filepath.Ext(path) {
	case ".ko":
		return os.ReadFile(path)
	case ".xz":
		tool = "xz"
	case ".zst":
		tool = "zstd"
	case ".gz":
		tool = "gzip"
	}
	out, err := exec.Command(tool, "-dc", path).Output()
	if err != nil {
		return nil, fmt.Errorf("%s -dc %s: %w", tool, path, err)
	}
	return out, nil
}

// moduleDepends reads the "depends=" entry of a module's .modinfo section.
func moduleDepends(ko []byte) ([]string, error) {
	f, err := elf.NewFile(bytes.NewReader(ko))
	if err != nil {
		return nil, err
	}
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil, errors.New("no .modinfo section")
	}
	info, err := sec.Data()
	if err != nil {
		return nil, err
	}
	for _, kv := range bytes.Split(info, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte("depends=")); ok {
			if len(v) == 0 {
				return nil, nil
			}
			return strings.Split(string(v), ","), nil
		}
	}
	return nil, nil
}
