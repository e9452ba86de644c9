package collector

import (
	"cmp"
	"context"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// readProcesses sets Proc on every owner and listener owner of socks,
// reading each process once: all of it when full, else its container
// alone, and then once for all the processes that sets (when known, see
// dumpResult.cgroupSets) say share their cgroups. A process gone
// meanwhile keeps Proc nil. The containers the processes run in are named
// by the container runtimes at cri (see Options.CRISockets); a runtime
// that does not answer is a warning.
func readProcesses(ctx context.Context, procRoot string, socks []Socket, full bool, sets map[int]uint64, cri []string) []string {
	seen := map[int]*Process{}
	var pids []int
	for i := range socks {
		for _, l := range [][]Owner{socks[i].Owners, socks[i].Listener} {
			for _, o := range l {
				if _, ok := seen[o.PID]; !ok {
					seen[o.PID] = nil
					pids = append(pids, o.PID)
				}
			}
		}
	}
	// Of the processes in one set of cgroups, read the first, whose
	// cgroup file says all the others' would: they take what it read
	// (read themselves only if it is gone).
	var same map[int]int // pid -> the pid read for it
	if !full && sets != nil {
		same = map[int]int{}
		first := map[uint64]int{}
		read := pids[:0:0]
		for _, pid := range pids {
			set := sets[pid]
			if p, ok := first[set]; ok && set != 0 {
				same[pid] = p
				continue
			}
			first[set] = pid
			read = append(read, pid)
		}
		pids = read
	}
	// Reading /proc/PID/cgroup costs some 10 us a process: spread them.
	procs := make([]*Process, len(pids))
	var wg sync.WaitGroup
	workers := min(max(runtime.GOMAXPROCS(0), 2), max(len(pids)/64, 1))
	for w := range workers {
		wg.Go(func() {
			for i := w; i < len(pids); i += workers {
				procs[i] = readProcess(procRoot, pids[i], full)
			}
		})
	}
	wg.Wait()
	for i, pid := range pids {
		seen[pid] = procs[i]
	}
	for pid, p := range same {
		if seen[pid] = seen[p]; seen[p] == nil { // gone: read this one
			seen[pid] = readProcess(procRoot, pid, full)
		}
	}
	for i := range socks {
		for _, l := range [][]Owner{socks[i].Owners, socks[i].Listener} {
			for j := range l {
				l[j].Proc = seen[l[j].PID]
			}
		}
	}
	return nameContainers(ctx, procRoot, seen, cri)
}

// nameContainers fills in the pod and container names of the processes'
// containers from the container runtimes' CRI, asked once, only when some
// process runs in a container.
func nameContainers(ctx context.Context, procRoot string, procs map[int]*Process, sockets []string) []string {
	if !slices.ContainsFunc(slices.Collect(maps.Values(procs)), func(p *Process) bool { return p != nil && p.Container != nil }) {
		return nil
	}
	names, warnings := criLookup(ctx, criSockets(procRoot, sockets))
	for _, p := range procs {
		if p == nil || p.Container == nil {
			continue
		}
		n, ok := names[p.Container.ID]
		if !ok {
			continue
		}
		c := p.Container
		c.Pod, c.Namespace, c.Name = n.Pod, n.Namespace, n.Name
		c.Runtime = cmp.Or(c.Runtime, n.Runtime)
		c.PodUID = cmp.Or(c.PodUID, n.PodUID)
	}
	return warnings
}

// readProcess reads /proc/PID, all of it when full, else only its cgroup;
// nil when the process is gone.
func readProcess(procRoot string, pid int, full bool) *Process {
	dir := procRoot + "/" + strconv.Itoa(pid)
	if !full {
		b, err := readProcFile(dir + "/cgroup")
		if err != nil {
			return nil
		}
		return &Process{UID: -1, Unit: cgroupUnit(string(b)), Container: cgroupContainer(string(b))}
	}
	var st syscall.Stat_t
	if err := syscall.Stat(dir, &st); err != nil {
		return nil
	}
	p := &Process{UID: int(st.Uid)}
	if b, err := os.ReadFile(dir + "/stat"); err == nil {
		p.PPID = parsePPID(b)
	}
	if f, err := os.Open(dir + "/cmdline"); err == nil {
		b := make([]byte, maxCmdline)
		n, _ := f.Read(b)
		f.Close()
		p.Cmdline = strings.TrimSpace(strings.ReplaceAll(string(b[:n]), "\x00", " "))
	}
	if exe, err := os.Readlink(dir + "/exe"); err == nil {
		p.Exe = filepath.Base(strings.TrimSuffix(exe, " (deleted)"))
	}
	if b, err := readProcFile(dir + "/cgroup"); err == nil {
		p.Unit = cgroupUnit(string(b))
		p.Container = cgroupContainer(string(b))
	}
	return p
}

// readProcFile reads a small /proc file with plain syscalls: os.ReadFile
// would also try to add it to the runtime's poller, four calls more a file,
// which count when a listing reads a thousand of them.
func readProcFile(path string) ([]byte, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	b := make([]byte, 0, 4096)
	for {
		n, err := unix.Read(fd, b[len(b):cap(b)])
		if err != nil {
			return nil, err
		}
		if n == 0 {
			return b, nil
		}
		b = b[:len(b)+n]
		if len(b) == cap(b) {
			b = slices.Grow(b, len(b))
		}
	}
}

// cgroupUnit is the innermost systemd unit of a /proc/PID/cgroup text:
// "0::/system.slice/nginx.service" gives "nginx.service".
func cgroupUnit(text string) string {
	for _, line := range strings.Split(text, "\n") {
		// cgroup v2 ("0::path"), else systemd's own v1 hierarchy.
		_, path, ok := strings.Cut(line, "::")
		if !ok {
			if _, rest, found := strings.Cut(line, ":name=systemd:"); found {
				path, ok = rest, true
			}
		}
		if !ok {
			continue
		}
		parts := strings.Split(path, "/")
		for i := len(parts) - 1; i >= 0; i-- {
			if strings.HasSuffix(parts[i], ".service") || strings.HasSuffix(parts[i], ".scope") {
				return parts[i]
			}
		}
	}
	return ""
}
