package collector

import (
	"bufio"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/closewait/closewait/internal/leaktest"
)

// cgroupMount is where a cgroup hierarchy is mounted: cgroup2 when v1 is
// "", else the v1 hierarchy with that controller (or "name=systemd").
func cgroupMount(t *testing.T, v1 string) string {
	t.Helper()
	f, err := os.Open("/proc/self/mounts")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 4 {
			continue
		}
		switch {
		case v1 == "" && fields[2] == "cgroup2":
			return fields[1]
		case v1 != "" && fields[2] == "cgroup" && slices.Contains(strings.Split(fields[3], ","), v1):
			return fields[1]
		}
	}
	return ""
}

// moveToCgroup creates the cgroup rel (and its parents) under mount, moves
// pid into it, and at the end moves pid back to the mount's root and
// removes the directories it made, deepest first.
func moveToCgroup(t *testing.T, mount, rel string, pid int) {
	t.Helper()
	var made []string
	dir := mount
	for part := range strings.SplitSeq(strings.Trim(rel, "/"), "/") {
		dir = filepath.Join(dir, part)
		if err := os.Mkdir(dir, 0o755); err != nil {
			if os.IsExist(err) {
				continue
			}
			leaktest.Missing(t, "creating a cgroup needs root and a writable cgroup mount: "+err.Error())
		}
		made = append(made, dir)
	}
	t.Cleanup(func() {
		// The holder may be gone already; then the write fails harmlessly.
		os.WriteFile(filepath.Join(mount, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0)
		for i := len(made) - 1; i >= 0; i-- {
			if err := os.Remove(made[i]); err != nil {
				t.Errorf("removing cgroup: %v", err)
			}
		}
	})
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0); err != nil {
		t.Fatalf("moving %d into %s: %v", pid, dir, err)
	}
}

// TestContainerFromRealCgroup moves a process holding a CLOSE_WAIT socket
// into cgroups at the paths each runtime makes, on the cgroup2 mount and
// on a v1 hierarchy where the host has one, and checks the owner's
// Container in Collect's listing.
func TestContainerFromRealCgroup(t *testing.T) {
	if os.Geteuid() != 0 {
		leaktest.Missing(t, "creating cgroups needs root")
	}
	// A uid and id no real runtime would have made here.
	const (
		id     = "c105e3a17c105e3a17c105e3a17c105e3a17c105e3a17c105e3a17c105e3a17a"
		uid    = "c105e3a1-7e57-4c0d-8e57-c105e3a17e57"
		uidSys = "c105e3a1_7e57_4c0d_8e57_c105e3a17e57"
	)
	tests := []struct {
		name, v1, path string
		want           Container
	}{
		{"v2 kubelet systemd containerd", "",
			"kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + uidSys + ".slice/cri-containerd-" + id + ".scope",
			Container{Runtime: "containerd", ID: id, PodUID: uid}},
		{"v2 kubelet cgroupfs", "", "kubepods/besteffort/pod" + uid + "/" + id,
			Container{ID: id, PodUID: uid}},
		{"v2 docker systemd", "", "system.slice/docker-" + id + ".scope",
			Container{Runtime: "docker", ID: id}},
		{"v2 podman cgroupfs", "", "libpod_parent/libpod-" + id,
			Container{Runtime: "podman", ID: id}},
		{"v1 pids kubelet cgroupfs", "pids", "kubepods/burstable/pod" + uid + "/" + id,
			Container{ID: id, PodUID: uid}},
		{"v1 pids kubelet systemd cri-o", "pids",
			"kubepods.slice/kubepods-pod" + uidSys + ".slice/crio-" + id + ".scope",
			Container{Runtime: "cri-o", ID: id, PodUID: uid}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mount := cgroupMount(t, tt.v1)
			if mount == "" {
				what := "cgroup2"
				if tt.v1 != "" {
					what = "cgroup v1 " + tt.v1
				}
				t.Skip("no " + what + " hierarchy mounted (not a failure: hosts have one or the other)")
			}
			ln := leaktest.Listen(t, "tcp4")
			c := leaktest.CloseWait(t, ln, 1)[0]
			holder := leaktest.Hold(t, []*os.File{c.File})
			moveToCgroup(t, mount, tt.path, holder.PID)

			snap := collect(t, Options{Source: SourceNetlink, Processes: true,
				Filter: Filter{SPorts: []uint16{port(ln.Addr())}}})
			if len(snap.Sockets) != 1 {
				t.Fatalf("%d sockets, want 1", len(snap.Sockets))
			}
			var found bool
			for _, o := range snap.Sockets[0].Owners {
				switch {
				case o.PID != holder.PID:
					if o.Proc != nil && o.Proc.Container != nil {
						t.Errorf("test process %d has container %+v", o.PID, *o.Proc.Container)
					}
				case o.Proc == nil || o.Proc.Container == nil:
					t.Fatalf("holder %d: process %+v, want container %+v", o.PID, o.Proc, tt.want)
				default:
					found = true
					if *o.Proc.Container != tt.want {
						t.Errorf("holder container %+v, want %+v", *o.Proc.Container, tt.want)
					}
				}
			}
			if !found {
				t.Fatalf("holder %d not among owners %v", holder.PID, snap.Sockets[0].Owners)
			}
		})
	}
}

// TestContainersByCgroupSet: the ebpf source reads one cgroup file for the
// owners the kernel keeps in one set of cgroups, and each set its own:
// one holder in one container's cgroup, two in another's, this process
// in none.
func TestContainersByCgroupSet(t *testing.T) {
	if os.Geteuid() != 0 {
		leaktest.Missing(t, "creating cgroups needs root")
	}
	requireEBPF(t)
	mount := cgroupMount(t, "")
	if mount == "" {
		leaktest.Missing(t, "no cgroup2 hierarchy mounted")
	}
	ids := []string{strings.Repeat("c105e3a1", 8), strings.Repeat("c105e3a2", 8)}
	ln := leaktest.Listen(t, "tcp4")
	conns := leaktest.CloseWait(t, ln, 3)
	want := map[int]string{}
	for i, c := range conns {
		id := ids[min(i, 1)] // holder 0 in the first, 1 and 2 in the second
		h := leaktest.Hold(t, []*os.File{c.File})
		moveToCgroup(t, mount, "system.slice/docker-"+id+".scope", h.PID)
		want[h.PID] = id
	}
	snap := collect(t, Options{Source: SourceEBPF, Containers: true, TracerPinDir: t.TempDir(),
		Filter: Filter{SPorts: []uint16{port(ln.Addr())}}})
	got := map[int]string{}
	for _, s := range snap.Sockets {
		for _, o := range s.Owners {
			id := ""
			if o.Proc != nil && o.Proc.Container != nil {
				id = o.Proc.Container.ID
			}
			if _, ok := want[o.PID]; ok {
				got[o.PID] = id
			} else if id != "" {
				t.Errorf("test process %d in container %s", o.PID, id)
			}
		}
	}
	if !maps.Equal(got, want) {
		t.Errorf("containers by pid %v, want %v", got, want)
	}
}
