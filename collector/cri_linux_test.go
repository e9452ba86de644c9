package collector

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/closewait/closewait/internal/leaktest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// criPod is a pod the test runs through a real containerd's CRI.
type criPod struct {
	sock          string
	uid, sandbox  string
	container     string
	name, ns, ctr string
}

// startContainerd runs containerd (Debian's package, with runc) with its
// state in a temporary directory and its CRI plugin on, and returns its
// socket. Nothing of the host's containerd, if any, is touched.
func startContainerd(t *testing.T) string {
	t.Helper()
	leaktest.RequireRoot(t)
	for _, bin := range []string{"containerd", "ctr", "runc"} {
		if _, err := exec.LookPath(bin); err != nil {
			leaktest.Missing(t, fmt.Sprintf("needs %s (Debian packages containerd, runc; make deps installs them)", bin))
		}
	}
	// containerd's socket path must be short (sun_path): not t.TempDir.
	dir, err := os.MkdirTemp("", "cwctrd-")
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "containerd.sock")
	// The sandbox image is the test's own; a negative oom_score_adj
	// (the sandbox's default) needs CAP_SYS_RESOURCE, which a container
	// running these tests may lack.
	config := fmt.Sprintf(`version = 2
root = %q
state = %q
[grpc]
  address = %q
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "closewait.test/crileak:1"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), sock)
	if err := os.WriteFile(filepath.Join(dir, "config.toml"), []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("containerd", "--config", filepath.Join(dir, "config.toml"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		logf.Close()
		// Its shims outlive it: they hold the tasks (stopped by then).
		exec.Command("pkill", "-f", "containerd-shim.*"+dir).Run()
		os.RemoveAll(dir)
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		if out, err := exec.Command("ctr", "-a", sock, "version").CombinedOutput(); err == nil {
			break
		} else if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "log"))
			t.Fatalf("containerd did not answer: %v: %s\n%s", err, out, lastLines(string(log), 20))
		}
		time.Sleep(100 * time.Millisecond)
	}
	importImage(t, sock, dir)
	return sock
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// importImage builds the image closewait.test/crileak:1 (testdata/crileak,
// static, alone in one layer) as a docker-save archive and imports it
// into containerd's k8s.io namespace, where the CRI looks.
func importImage(t *testing.T, sock, dir string) {
	t.Helper()
	bin := filepath.Join(dir, "crileak")
	build := exec.Command("go", "build", "-o", bin, "./testdata/crileak")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the image's program: %v: %s", err, out)
	}
	prog, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	tarOf := func(files map[string][]byte, mode int64) []byte {
		var b bytes.Buffer
		tw := tar.NewWriter(&b)
		for _, name := range sortedKeys(files) {
			if err := tw.WriteHeader(&tar.Header{Name: name, Mode: mode, Size: int64(len(files[name])), ModTime: time.Unix(0, 0)}); err != nil {
				t.Fatal(err)
			}
			tw.Write(files[name])
		}
		if err := tw.Close(); err != nil {
			t.Fatal(err)
		}
		return b.Bytes()
	}
	layer := tarOf(map[string][]byte{"crileak": prog}, 0o755)
	sum := sha256.Sum256(layer)
	cfg, _ := json.Marshal(map[string]any{
		"architecture": goarch(), "os": "linux",
		"config": map[string]any{"Entrypoint": []string{"/crileak"}},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{"sha256:" + hex.EncodeToString(sum[:])}},
	})
	manifest, _ := json.Marshal([]map[string]any{{
		"Config": "config.json", "RepoTags": []string{"closewait.test/crileak:1"}, "Layers": []string{"layer.tar"},
	}})
	archive := filepath.Join(dir, "image.tar")
	if err := os.WriteFile(archive, tarOf(map[string][]byte{"layer.tar": layer, "config.json": cfg, "manifest.json": manifest}, 0o644), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("ctr", "-a", sock, "-n", "k8s.io", "images", "import", archive).CombinedOutput(); err != nil {
		t.Fatalf("ctr images import: %v: %s", err, out)
	}
}

func goarch() string {
	out, err := exec.Command("go", "env", "GOARCH").Output()
	if err != nil {
		return "amd64"
	}
	return strings.TrimSpace(string(out))
}

func sortedKeys(m map[string][]byte) []string {
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	// Deterministic order; the set is tiny.
	for i := range keys {
		for j := i + 1; j < len(keys); j++ {
			if keys[j] < keys[i] {
				keys[i], keys[j] = keys[j], keys[i]
			}
		}
	}
	return keys
}

// runCRIPod runs, through the CRI, a pod in the host's network namespace
// (no CNI needed) under the cgroup parent kubelet's cgroupfs driver makes,
// with one container that leaves n connections to 127.0.0.1:port in
// CLOSE_WAIT. Everything is removed when the test ends.
func runCRIPod(t *testing.T, sock string, port, n int) *criPod {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	rs := cri.NewRuntimeServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p := &criPod{sock: sock, uid: "5e0c2a4e-7b1d-4c3e-9d1a-" + fmt.Sprintf("%012d", os.Getpid()), name: "api-7d9f", ns: "shop", ctr: "api"}
	parent := "/kubepods/besteffort/pod" + p.uid
	pcfg := &cri.PodSandboxConfig{
		Metadata: &cri.PodSandboxMetadata{Name: p.name, Namespace: p.ns, Uid: p.uid},
		Linux: &cri.LinuxPodSandboxConfig{
			CgroupParent:    parent,
			SecurityContext: &cri.LinuxSandboxSecurityContext{NamespaceOptions: &cri.NamespaceOption{Network: cri.NamespaceMode_NODE}},
		},
	}
	ps, err := rs.RunPodSandbox(ctx, &cri.RunPodSandboxRequest{Config: pcfg})
	if err != nil {
		t.Fatalf("RunPodSandbox: %v", err)
	}
	p.sandbox = ps.PodSandboxId
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		rs.StopPodSandbox(ctx, &cri.StopPodSandboxRequest{PodSandboxId: p.sandbox})
		rs.RemovePodSandbox(ctx, &cri.RemovePodSandboxRequest{PodSandboxId: p.sandbox})
		removeCgroups(parent)
	})
	c, err := rs.CreateContainer(ctx, &cri.CreateContainerRequest{PodSandboxId: p.sandbox, SandboxConfig: pcfg,
		Config: &cri.ContainerConfig{
			Metadata: &cri.ContainerMetadata{Name: p.ctr},
			Image:    &cri.ImageSpec{Image: "closewait.test/crileak:1"},
			Args:     []string{"leak", fmt.Sprint(port), fmt.Sprint(n)},
		}})
	if err != nil {
		t.Fatalf("CreateContainer: %v", err)
	}
	p.container = c.ContainerId
	if _, err := rs.StartContainer(ctx, &cri.StartContainerRequest{ContainerId: p.container}); err != nil {
		t.Fatalf("StartContainer: %v", err)
	}
	return p
}

// removeCgroups removes the cgroup directory parent (and what is left
// under it) in every hierarchy mounted under /sys/fs/cgroup, deepest first.
func removeCgroups(parent string) {
	roots := []string{"/sys/fs/cgroup"}
	if ents, err := os.ReadDir("/sys/fs/cgroup"); err == nil {
		for _, e := range ents {
			roots = append(roots, filepath.Join("/sys/fs/cgroup", e.Name()))
		}
	}
	for _, root := range roots {
		var dirs []string
		filepath.WalkDir(filepath.Join(root, parent), func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			os.Remove(dirs[i])
		}
		// The empty parents kubelet would have made: only if empty.
		for d := filepath.Dir(filepath.Join(root, parent)); d != root && strings.HasPrefix(d, root); d = filepath.Dir(d) {
			if os.Remove(d) != nil {
				break
			}
		}
	}
}

// TestCRIContainerd runs a pod through a real containerd's CRI, with a
// container that leaks, and lists its sockets: each owner is named by its
// container's id (from the cgroup path kubelet's cgroupfs driver makes)
// and by the pod and container names the runtime gives.
func TestCRIContainerd(t *testing.T) {
	sock := startContainerd(t)
	const port, n = 18431, 3
	p := runCRIPod(t, sock, port, n)
	names, warnings := criLookup(context.Background(), []string{"/nonexistent/containerd.sock", sock})
	if len(warnings) > 0 {
		t.Errorf("warnings %q", warnings)
	}
	want := criNames{Runtime: "containerd", Pod: p.name, Namespace: p.ns, PodUID: p.uid, Name: p.ctr}
	if got := names[p.container]; got != want {
		t.Errorf("container %s: %+v, want %+v", p.container, got, want)
	}
	if got := names[p.sandbox]; got.Pod != p.name || got.Name != "" {
		t.Errorf("sandbox %s: %+v, want pod %s and no container name", p.sandbox, got, p.name)
	}

	wantC := Container{Runtime: "containerd", ID: p.container, PodUID: p.uid, Pod: p.name, Namespace: p.ns, Name: p.ctr}
	for _, src := range append([]string{SourceEBPF}, sources...) {
		t.Run(src, func(t *testing.T) {
			opts := Options{Source: src, Processes: true, CRISockets: []string{sock}, Filter: Filter{SPorts: []uint16{port}}}
			snap := waitOwned(t, opts, n)
			if len(snap.Sockets) != n {
				t.Fatalf("%d sockets, want %d (warnings %q)", len(snap.Sockets), n, snap.Warnings)
			}
			for _, s := range snap.Sockets {
				if len(s.Owners) != 1 || s.Owners[0].Proc == nil || s.Owners[0].Proc.Container == nil {
					t.Fatalf("owners %+v: want one in a container", s.Owners)
				}
				if c := *s.Owners[0].Proc.Container; c != wantC {
					t.Errorf("container %+v, want %+v", c, wantC)
				}
			}
			// No runtime to ask: the id and pod UID still, no names.
			opts.CRISockets = []string{}
			snap = collect(t, opts)
			if len(snap.Sockets) == 0 || snap.Sockets[0].Owners[0].Proc.Container == nil {
				t.Fatalf("without the CRI: %+v", snap.Sockets)
			}
			if c := *snap.Sockets[0].Owners[0].Proc.Container; c.ID != p.container || c.PodUID != p.uid || c.Pod != "" || c.Name != "" {
				t.Errorf("without the CRI: %+v, want id and pod UID only", c)
			}
		})
	}
}

// fakeRuntime is a CRI runtime made with grpc-go and the CRI's generated
// types: what criClient, which uses neither, must understand.
type fakeRuntime struct {
	cri.UnimplementedRuntimeServiceServer
	err   error // every call fails with it
	pods  []*cri.PodSandbox
	ctrs  []*cri.Container
	asked []string
}

func (f *fakeRuntime) Version(_ context.Context, r *cri.VersionRequest) (*cri.VersionResponse, error) {
	f.asked = append(f.asked, "Version")
	if f.err != nil {
		return nil, f.err
	}
	return &cri.VersionResponse{Version: "0.1.0", RuntimeName: "containerd", RuntimeVersion: "v2.1.4", RuntimeApiVersion: "v1"}, nil
}

func (f *fakeRuntime) ListPodSandbox(context.Context, *cri.ListPodSandboxRequest) (*cri.ListPodSandboxResponse, error) {
	f.asked = append(f.asked, "ListPodSandbox")
	return &cri.ListPodSandboxResponse{Items: f.pods}, nil
}

func (f *fakeRuntime) ListContainers(context.Context, *cri.ListContainersRequest) (*cri.ListContainersResponse, error) {
	f.asked = append(f.asked, "ListContainers")
	return &cri.ListContainersResponse{Containers: f.ctrs}, nil
}

// serveFakeRuntime serves f on a unix socket until the test ends.
func serveFakeRuntime(t *testing.T, f *fakeRuntime) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "cwcri-") // short: sun_path
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "cri.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	cri.RegisterRuntimeServiceServer(s, f)
	go s.Serve(ln)
	t.Cleanup(s.Stop)
	return sock
}

// TestCRIFakeRuntime asks a runtime made with grpc-go: the names of its
// containers and pods, whatever else its messages hold, and its errors.
func TestCRIFakeRuntime(t *testing.T) {
	labels := map[string]string{"io.kubernetes.pod.name": "web-0", "app": "web"}
	f := &fakeRuntime{
		pods: []*cri.PodSandbox{
			{Id: "pod1", Metadata: &cri.PodSandboxMetadata{Name: "web-0", Uid: "u-1", Namespace: "shop", Attempt: 2},
				State: cri.PodSandboxState_SANDBOX_READY, CreatedAt: 1733300000123456789, Labels: labels, RuntimeHandler: "runc"},
			{Id: "pod2", Metadata: &cri.PodSandboxMetadata{Name: "数据库-0", Uid: "u-2", Namespace: "db"}},
			{Id: "pod3"}, // no metadata
		},
		ctrs: []*cri.Container{
			{Id: "c1", PodSandboxId: "pod1", Metadata: &cri.ContainerMetadata{Name: "nginx", Attempt: 1},
				Image: &cri.ImageSpec{Image: "nginx:1"}, State: cri.ContainerState_CONTAINER_RUNNING, CreatedAt: -1, Labels: labels},
			{Id: "c2", PodSandboxId: "pod2", Metadata: &cri.ContainerMetadata{Name: "pg"}},
			{Id: "c3", PodSandboxId: "gone", Metadata: &cri.ContainerMetadata{Name: "orphan"}},
		},
	}
	sock := serveFakeRuntime(t, f)
	names, warnings := criLookup(context.Background(), []string{sock})
	if len(warnings) > 0 {
		t.Errorf("warnings %q", warnings)
	}
	want := map[string]criNames{
		"c1":   {Runtime: "containerd", Pod: "web-0", Namespace: "shop", PodUID: "u-1", Name: "nginx"},
		"c2":   {Runtime: "containerd", Pod: "数据库-0", Namespace: "db", PodUID: "u-2", Name: "pg"},
		"c3":   {Runtime: "containerd", Name: "orphan"},
		"pod1": {Runtime: "containerd", Pod: "web-0", Namespace: "shop", PodUID: "u-1"},
		"pod2": {Runtime: "containerd", Pod: "数据库-0", Namespace: "db", PodUID: "u-2"},
	}
	if fmt.Sprint(names) != fmt.Sprint(want) {
		t.Errorf("names\n%v\nwant\n%v", names, want)
	}

	f = &fakeRuntime{err: status.Error(codes.Unavailable, "runtime 100% down")}
	sock = serveFakeRuntime(t, f)
	_, warnings = criLookup(context.Background(), []string{sock})
	if w := "container runtime at " + sock + ": runtime 100% down: pods and containers are not named"; len(warnings) != 1 || warnings[0] != w {
		t.Errorf("warnings %q, want %q", warnings, w)
	}
	if len(f.asked) != 1 {
		t.Errorf("asked %q after the first error", f.asked)
	}

	// A socket no runtime listens on any more.
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(filepath.Dir(sock), "stale.sock"), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	stale := ln.Addr().String()
	_, warnings = criLookup(context.Background(), []string{stale})
	if w := "container runtime at " + stale + ": dial unix " + stale + ": connect: connection refused: pods and containers are not named"; len(warnings) != 1 || warnings[0] != w {
		t.Errorf("warnings %q, want %q", warnings, w)
	}
}

// TestProtoFields feeds protoFields what it must skip and what it must
// refuse.
func TestProtoFields(t *testing.T) {
	for _, tt := range []struct {
		name string
		b    []byte
		want string // fields as num=value, or "malformed"
	}{
		{"empty", nil, ""},
		{"string", []byte{0x12, 3, 'a', 'b', 'c'}, "2=abc"},
		{"skips", []byte{0x08, 0x96, 0x01, 0x11, 1, 2, 3, 4, 5, 6, 7, 8, 0x1d, 1, 2, 3, 4, 0x0a, 0}, "1="},
		{"big number", []byte{0xfa, 0xff, 0xff, 0xff, 0x0f, 1, 'x'}, "536870911=x"},
		{"short string", []byte{0x12, 3, 'a'}, "malformed"},
		{"short fixed64", []byte{0x09, 1, 2}, "malformed"},
		{"short varint", []byte{0x08, 0x80}, "malformed"},
		{"group", []byte{0x0b, 0x0c, 0x12, 1, 'y'}, "2=y"},
		{"open group", []byte{0x0b, 0x12, 1, 'y'}, "malformed"},
		{"huge length", []byte{0x12, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, "malformed"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var fields []string
			ok := protoFields(tt.b, func(num int, v []byte) bool {
				fields = append(fields, fmt.Sprintf("%d=%s", num, v))
				return true
			})
			got := "malformed"
			if ok {
				got = strings.Join(fields, " ")
			}
			if got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}
