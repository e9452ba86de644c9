package collector

import (
	"cmp"
	"context"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// readProcesses sets Proc on every owner and listener owner of socks,
// reading each process once. A process gone meanwhile keeps Proc nil. The
// containers the processes run in are named by the container runtimes at
// cri (see Options.CRISockets); a runtime that does not answer is a
// warning.
func readProcesses(ctx context.Context, procRoot string, socks []Socket, cri []string) []string {
	seen := map[int]*Process{}
	get := func(pid int) *Process {
		p, ok := seen[pid]
		if !ok {
			p = readProcess(procRoot, pid)
			seen[pid] = p
		}
		return p
	}
	for i := range socks {
		for _, l := range [][]Owner{socks[i].Owners, socks[i].Listener} {
			for j := range l {
				l[j].Proc = get(l[j].PID)
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

// readProcess reads /proc/PID; nil when the process is gone.
func readProcess(procRoot string, pid int) *Process {
	dir := procRoot + "/" + strconv.Itoa(pid)
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
	if b, err := os.ReadFile(dir + "/cgroup"); err == nil {
		p.Unit = cgroupUnit(string(b))
		p.Container = cgroupContainer(string(b))
	}
	return p
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
