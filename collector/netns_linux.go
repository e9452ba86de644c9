package collector

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// hostNetNSName names the initial network namespace (that of pid 1).
const hostNetNSName = "host"

// initNetNSInode is the initial network namespace's inode on kernels that
// fix it (PROC_NET_INIT_INO, Linux 6.18); older ones number it as any.
const initNetNSInode = 0xEFFFFFF9

// netnsDirs hold `ip netns` bind mounts, which keep a namespace alive
// with no process in it.
var netnsDirs = []string{"/run/netns", "/var/run/netns"}

// findNetNamespaces returns every network namespace of the host: the
// distinct ones of /proc/*/ns/net and the bind mounts of netnsDirs. The
// caller's comes first. workers read the processes' links.
func findNetNamespaces(procRoot string, workers int) ([]netNamespace, error) {
	own := netnsInode(procRoot)
	if own == 0 {
		return nil, errors.New("reading this thread's network namespace")
	}
	host := linkNetNS(procRoot + "/1/ns/net")
	if host == 0 {
		host = initNetNSInode // pid 1 hidden (a sandbox): kernels from 6.18 fix it
	}
	all := []netNamespace{{inode: own, own: true, path: procRoot + "/thread-self/ns/net"}}
	byInode := map[uint64]int{own: 0}
	for _, dir := range netnsDirs {
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			p := dir + "/" + e.Name()
			ino := mountNetNS(p)
			if ino == 0 {
				continue // a file left by a deleted namespace, or not one
			}
			if i, ok := byInode[ino]; ok {
				if all[i].name == "" {
					all[i].name = e.Name()
				}
				continue
			}
			byInode[ino] = len(all)
			all = append(all, netNamespace{inode: ino, name: e.Name(), path: p})
		}
	}
	pids, err := listPIDs(procRoot)
	if err != nil {
		return nil, err
	}
	// A readlink of a namespace link costs a few microseconds: spread them.
	inos := make([]uint64, len(pids))
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; i < len(pids); i += workers {
				inos[i] = linkNetNS(procRoot + "/" + strconv.Itoa(pids[i]) + "/ns/net")
			}
		})
	}
	wg.Wait()
	for i, ino := range inos {
		if _, ok := byInode[ino]; ok || ino == 0 {
			continue // known, or gone meanwhile, or hidden from us
		}
		byInode[ino] = len(all)
		all = append(all, netNamespace{inode: ino, path: procRoot + "/" + strconv.Itoa(pids[i]) + "/ns/net"})
	}
	if i, ok := byInode[host]; ok && host != 0 {
		all[i].name = hostNetNSName
	}
	return all, nil
}

// linkNetNS reads the inode from a net namespace link ("net:[N]"); 0 when
// it cannot.
func linkNetNS(path string) uint64 {
	l, err := os.Readlink(path)
	if err != nil {
		return 0
	}
	s, ok := strings.CutPrefix(l, "net:[")
	if !ok {
		return 0
	}
	n, _ := strconv.ParseUint(strings.TrimSuffix(s, "]"), 10, 64)
	return n
}

// mountNetNS returns the inode of the namespace bind-mounted at path; 0
// when path is not one.
func mountNetNS(path string) uint64 {
	var fs unix.Statfs_t
	if unix.Statfs(path, &fs) != nil || fs.Type != unix.NSFS_MAGIC {
		return 0
	}
	var st unix.Stat_t
	if unix.Stat(path, &st) != nil {
		return 0
	}
	return st.Ino
}

// selectNetNamespaces narrows all to those named by sel (a name under
// /run/netns, an inode number, or "host"); an empty sel keeps all.
func selectNetNamespaces(all []netNamespace, sel []string) ([]netNamespace, error) {
	if len(sel) == 0 {
		return all, nil
	}
	var out []netNamespace
	for _, s := range sel {
		i := slices.IndexFunc(all, func(n netNamespace) bool {
			return n.name == s || strconv.FormatUint(n.inode, 10) == s
		})
		if i < 0 {
			return nil, fmt.Errorf("--netns %s: no such network namespace (a name under /run/netns, an inode, or host)", s)
		}
		if !slices.ContainsFunc(out, func(n netNamespace) bool { return n.inode == all[i].inode }) {
			out = append(out, all[i])
		}
	}
	return out, nil
}

// inNetNS runs fn on an OS thread moved into the namespace at path, and
// moves the thread back after; a thread that cannot go back is discarded.
// What fn opens there (sockets, iterators, /proc/thread-self/net files)
// stays bound to that namespace.
func inNetNS(path string, fn func() error) error {
	var err error
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		back, oerr := os.Open("/proc/thread-self/ns/net")
		if oerr != nil {
			runtime.UnlockOSThread()
			err = oerr
			return
		}
		defer back.Close()
		ns, oerr := os.Open(path)
		if oerr != nil {
			runtime.UnlockOSThread()
			err = oerr
			return
		}
		serr := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET)
		ns.Close()
		if serr != nil {
			runtime.UnlockOSThread()
			err = fmt.Errorf("entering network namespace: %w", serr)
			return
		}
		err = fn()
		if unix.Setns(int(back.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		} // else the thread ends with the goroutine, still locked
	}()
	<-done
	return err
}

// forEachNetNS runs fn for each namespace, at most limit at once, and
// returns the first error of each, in order.
func forEachNetNS(nss []netNamespace, limit int, fn func(i int, ns netNamespace) error) []error {
	errs := make([]error, len(nss))
	sem := make(chan struct{}, limit)
	var wg sync.WaitGroup
	for i, ns := range nss {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			errs[i] = fn(i, ns)
		})
	}
	wg.Wait()
	return errs
}

// gone reports whether err says that a namespace or process vanished
// while it was being listed, which skips it without an error.
func gone(err error) bool {
	return errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ESRCH) || errors.Is(err, unix.ENOENT)
}

// withinNetNS runs fn in ns: at once for the caller's (nil).
func withinNetNS(ns *netNamespace, fn func() error) error {
	if ns == nil || ns.own {
		return fn()
	}
	return inNetNS(ns.path, fn)
}

// netnsParallel bounds the namespaces read at once: each read is mostly
// the kernel's walk of the shared TCP hash, on one core.
const netnsParallel = 4

// dumpEachNetNS runs dump for each namespace of q (once, with nil, when q
// names none) and merges the results. A namespace gone meanwhile is
// skipped; another that fails is a warning, unless it is the caller's or
// all fail.
func dumpEachNetNS(ctx context.Context, q query, dump func(ns *netNamespace) (dumpResult, error)) (dumpResult, error) {
	if len(q.netns) == 0 {
		return dump(nil)
	}
	results := make([]dumpResult, len(q.netns))
	errs := forEachNetNS(q.netns, netnsParallel, func(i int, ns netNamespace) error {
		var err error
		results[i], err = dump(&ns)
		return err
	})
	if err := ctx.Err(); err != nil {
		return dumpResult{}, err
	}
	n := 0
	for i := range results {
		n += len(results[i].sockets)
	}
	out := dumpResult{sockets: make([]Socket, 0, n)}
	var failed error
	ok := 0
	for i, ns := range q.netns {
		if err := errs[i]; err != nil {
			switch {
			case ns.own:
				return dumpResult{}, err
			case gone(err):
			default:
				failed = cmp.Or(failed, err)
				out.warnings = append(out.warnings, fmt.Sprintf("network namespace %s not listed: %v", ns.label(), err))
			}
			continue
		}
		ok++
		r := &results[i]
		out.sockets = append(out.sockets, r.sockets...)
		r.sockets = nil
		out.listeners = append(out.listeners, r.listeners...)
		for _, w := range r.warnings {
			if !slices.Contains(out.warnings, w) {
				out.warnings = append(out.warnings, w)
			}
		}
	}
	if ok == 0 && failed != nil {
		return dumpResult{}, failed
	}
	return out, nil
}

// resolveNetNS returns the namespaces that sel names (see Options.NetNS),
// nil for the caller's alone, and the names of those that have one.
func resolveNetNS(procRoot string, sel []string, warnings *[]string) ([]netNamespace, map[uint64]string, error) {
	if procRoot != "/proc" {
		return nil, nil, nil // a copy of /proc: no namespaces to enter
	}
	if !canEnterNetNS() {
		if len(sel) > 0 {
			return nil, nil, errors.New("--netns: listing another network namespace needs root (CAP_SYS_ADMIN)")
		}
		*warnings = append(*warnings, "not root (no CAP_SYS_ADMIN): only this process's network namespace is listed")
		return nil, nil, nil
	}
	all, err := findNetNamespaces(procRoot, max(runtime.GOMAXPROCS(0), 2))
	if err != nil {
		return nil, nil, err
	}
	return selectNamed(all, sel)
}

// selectNamed returns selectNetNamespaces(all, sel), nil for the caller's
// alone, and the names of all that have one.
func selectNamed(all []netNamespace, sel []string) ([]netNamespace, map[uint64]string, error) {
	names := map[uint64]string{}
	for _, ns := range all {
		if ns.name != "" {
			names[ns.inode] = ns.name
		}
	}
	nss, err := selectNetNamespaces(all, sel)
	if err != nil {
		return nil, nil, err
	}
	if len(nss) == 1 && nss[0].own {
		return nil, names, nil
	}
	return nss, names, nil
}

// searchNetNS starts resolveNetNS. The default selection, every namespace
// where the caller may enter them, is searched beside the listing's start
// (a readlink per process: 12% of a 1000-process listing's time), since
// the ebpf source needs the list only after its walk of the fds.
func searchNetNS(procRoot string, sel []string, warnings *[]string) *netnsSearch {
	s := &netnsSearch{done: make(chan struct{})}
	if len(sel) > 0 || procRoot != "/proc" || !canEnterNetNS() {
		s.nss, s.names, s.err = resolveNetNS(procRoot, sel, warnings)
		close(s.done)
		return s
	}
	s.every = true
	go func() {
		defer close(s.done)
		all, err := findNetNamespaces(procRoot, 1) // the walk has the other core
		if err != nil {
			s.err = err
			return
		}
		s.nss, s.names, s.err = selectNamed(all, nil)
	}()
	return s
}

// CheckNetNS reports whether each of sel names a network namespace.
func CheckNetNS(sel []string) error {
	if len(sel) == 0 {
		return nil
	}
	var w []string
	_, _, err := resolveNetNS("/proc", sel, &w)
	return err
}

// canEnterNetNS reports whether this thread has CAP_SYS_ADMIN, which
// setns needs. capget, not /proc/thread-self/status: one syscall, not a
// file the kernel formats in full for one line.
func canEnterNetNS() bool {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData // version 3: two, capabilities 0-31 and 32-63
	if unix.Capget(&hdr, &data[0]) != nil {
		return false
	}
	return data[0].Effective&(1<<unix.CAP_SYS_ADMIN) != 0
}

// familiesToWalk says which families ([0] IPv4, [1] IPv6) of ns (nil: the
// caller's, always both) a listing of q must walk; called in ns.
func familiesToWalk(ns *netNamespace, q query) [2]bool {
	if ns == nil || ns.own {
		return [2]bool{true, true}
	}
	v4, v6 := tcpInUse(q.procRoot, q.states)
	return [2]bool{v4, v6}
}

// tcpInUse reports which families of the calling thread's namespace hold
// TCP sockets that a listing of states could show, from its sockstat and
// sockstat6 counters: each walk of a namespace costs a walk of the TCP
// hash that all namespaces share, so one with none is not walked. Both
// are true when the counters cannot be read.
func tcpInUse(procRoot string, states StateSet) (v4, v6 bool) {
	dir := procRoot + "/thread-self/net/"
	in4, ok4 := sockstatField(dir+"sockstat", "TCP:", "inuse")
	in6, ok6 := sockstatField(dir+"sockstat6", "TCP6:", "inuse")
	tw := 0
	if states.Has(StateTimeWait) || states.Has(StateFinWait2) {
		var ok bool
		if tw, ok = sockstatField(dir+"sockstat", "TCP:", "tw"); !ok {
			tw = 1
		}
	}
	return !ok4 || in4 > 0 || tw > 0, !ok6 || in6 > 0 || tw > 0
}

// sockstatField reads one counter of a sockstat file: the value after
// field on the line that starts with prefix.
func sockstatField(path, prefix, field string) (int, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	for _, line := range strings.Split(string(b), "\n") {
		rest, ok := strings.CutPrefix(line, prefix)
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		for i := 0; i+1 < len(f); i += 2 {
			if f[i] == field {
				n, err := strconv.Atoi(f[i+1])
				return n, err == nil
			}
		}
	}
	return 0, false
}

// nsTCPInUse returns the kernel's count of hashed TCP sockets in ns, by
// family ([0] IPv4, [1] IPv6): sockstat's and sockstat6's inuse. A
// process's /proc/PID/net is its namespace's, so only a namespace found
// by its bind mount is entered. ok is false when a count cannot be read;
// without IPv6 there is no sockstat6, and no IPv6 socket.
func nsTCPInUse(procRoot string, ns *netNamespace) (in [2]uint32, ok bool) {
	read := func(dir string) {
		v4, ok4 := sockstatField(dir+"sockstat", "TCP:", "inuse")
		v6, ok6 := sockstatField(dir+"sockstat6", "TCP6:", "inuse")
		if !ok6 {
			if _, err := os.Stat(dir + "sockstat6"); errors.Is(err, os.ErrNotExist) {
				ok6 = true
			}
		}
		in, ok = [2]uint32{uint32(v4), uint32(v6)}, ok4 && ok6
	}
	switch dir, isProc := strings.CutSuffix(ns.path, "/ns/net"); {
	case ns.own:
		read(procRoot + "/thread-self/net/")
	case isProc && strings.HasPrefix(ns.path, procRoot+"/"):
		read(dir + "/net/")
	default:
		if inNetNS(ns.path, func() error { read(procRoot + "/thread-self/net/"); return nil }) != nil {
			return in, false
		}
	}
	return in, ok
}
