package collector

import (
	"strings"
	"testing"
)

const (
	testID     = "3f1c2a7d9b8e4f60a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718"
	testPodUID = "8d1e3b6a-2f4c-4b1e-9a7d-5c6b7a8f9e0d"
)

// testPodUIDSystemd is testPodUID as kubelet's systemd driver writes it.
var testPodUIDSystemd = strings.ReplaceAll(testPodUID, "-", "_")

// cgroupForms are /proc/PID/cgroup texts in the layouts each runtime
// makes, cgroup v2 and v1, with the container they must give (nil: none).
var cgroupForms = []struct {
	name string
	text string
	want *Container
}{
	{"v2 host process", "0::/system.slice/sshd.service\n", nil},
	{"v2 root", "0::/\n", nil},
	{"v2 user session", "0::/user.slice/user-1000.slice/session-3.scope\n", nil},
	{"v2 kubelet systemd containerd besteffort",
		"0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + testPodUIDSystemd + ".slice/cri-containerd-" + testID + ".scope\n",
		&Container{Runtime: "containerd", ID: testID, PodUID: testPodUID}},
	{"v2 kubelet systemd containerd burstable",
		"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + testPodUIDSystemd + ".slice/cri-containerd-" + testID + ".scope\n",
		&Container{Runtime: "containerd", ID: testID, PodUID: testPodUID}},
	{"v2 kubelet systemd guaranteed cri-o",
		"0::/kubepods.slice/kubepods-pod" + testPodUIDSystemd + ".slice/crio-" + testID + ".scope\n",
		&Container{Runtime: "cri-o", ID: testID, PodUID: testPodUID}},
	{"v2 cri-o conmon is no container",
		"0::/kubepods.slice/kubepods-pod" + testPodUIDSystemd + ".slice/crio-conmon-" + testID + ".scope\n", nil},
	{"v2 cri-o container's own subtree",
		"0::/kubepods.slice/kubepods-pod" + testPodUIDSystemd + ".slice/crio-" + testID + ".scope/container\n",
		&Container{Runtime: "cri-o", ID: testID, PodUID: testPodUID}},
	{"v2 kubelet systemd docker",
		"0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + testPodUIDSystemd + ".slice/docker-" + testID + ".scope\n",
		&Container{Runtime: "docker", ID: testID, PodUID: testPodUID}},
	{"v2 kubelet cgroupfs besteffort",
		"0::/kubepods/besteffort/pod" + testPodUID + "/" + testID + "\n",
		&Container{ID: testID, PodUID: testPodUID}},
	{"v2 kubelet cgroupfs guaranteed",
		"0::/kubepods/pod" + testPodUID + "/" + testID + "\n",
		&Container{ID: testID, PodUID: testPodUID}},
	{"v2 kubelet cgroupfs cri-o",
		"0::/kubepods/burstable/pod" + testPodUID + "/crio-" + testID + "\n",
		&Container{Runtime: "cri-o", ID: testID, PodUID: testPodUID}},
	{"v2 kubelet pod slice only", "0::/kubepods.slice/kubepods-pod" + testPodUIDSystemd + ".slice\n", nil},
	{"v2 containerd default namespace", "0::/default/" + testID + "\n",
		&Container{Runtime: "containerd", ID: testID}},
	{"v2 containerd short name is no container", "0::/default/web\n", nil},
	{"v2 nerdctl systemd", "0::/system.slice/nerdctl-" + testID + ".scope\n",
		&Container{Runtime: "containerd", ID: testID}},
	{"v2 docker systemd", "0::/system.slice/docker-" + testID + ".scope\n",
		&Container{Runtime: "docker", ID: testID}},
	{"v2 docker cgroupfs", "0::/docker/" + testID + "\n",
		&Container{Runtime: "docker", ID: testID}},
	{"v2 docker daemon itself", "0::/system.slice/docker.service\n", nil},
	{"v2 podman root", "0::/machine.slice/libpod-" + testID + ".scope\n",
		&Container{Runtime: "podman", ID: testID}},
	{"v2 podman conmon", "0::/machine.slice/libpod-conmon-" + testID + ".scope\n", nil},
	{"v2 podman systemd container subtree", "0::/machine.slice/libpod-" + testID + ".scope/container\n",
		&Container{Runtime: "podman", ID: testID}},
	{"v2 podman cgroupfs", "0::/libpod_parent/libpod-" + testID + "\n",
		&Container{Runtime: "podman", ID: testID}},
	{"v2 podman rootless",
		"0::/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-" + testID + ".scope\n",
		&Container{Runtime: "podman", ID: testID}},
	{"v2 other 64-hex directory is no container", "0::/a/b/" + testID + "\n", nil},
	{"v2 upper-case hex is no id", "0::/docker/" + strings.ToUpper(testID) + "\n", nil},
	{"v1 kubelet cgroupfs",
		"12:pids:/kubepods/besteffort/pod" + testPodUID + "/" + testID + "\n" +
			"11:memory:/kubepods/besteffort/pod" + testPodUID + "/" + testID + "\n" +
			"1:name=systemd:/kubepods/besteffort/pod" + testPodUID + "/" + testID + "\n",
		&Container{ID: testID, PodUID: testPodUID}},
	{"v1 kubelet systemd containerd",
		"10:cpu,cpuacct:/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + testPodUIDSystemd + ".slice/cri-containerd-" + testID + ".scope\n" +
			"1:name=systemd:/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + testPodUIDSystemd + ".slice/cri-containerd-" + testID + ".scope\n",
		&Container{Runtime: "containerd", ID: testID, PodUID: testPodUID}},
	{"v1 docker cgroupfs", "9:pids:/docker/" + testID + "\n4:memory:/docker/" + testID + "\n",
		&Container{Runtime: "docker", ID: testID}},
	{"hybrid v2 root, v1 docker",
		"9:name=systemd:/system.slice/docker-" + testID + ".scope\n8:pids:/system.slice/docker-" + testID + ".scope\n0::/\n",
		&Container{Runtime: "docker", ID: testID}},
	{"hybrid this sandbox", "9:name=systemd:/\n4:memory:/process_api/22f78c9ca5a3ec44e16dd2d3e7188335\n0::/\n", nil},
	{"docker in docker: innermost",
		"0::/docker/" + strings.Repeat("a", 64) + "/docker/" + testID + "\n",
		&Container{Runtime: "docker", ID: testID}},
	{"cgroup namespace, kubelet systemd",
		"0::/../../kubepods-besteffort-pod" + testPodUIDSystemd + ".slice/cri-containerd-" + testID + ".scope\n",
		&Container{Runtime: "containerd", ID: testID, PodUID: testPodUID}},
	{"cgroup namespace, kubelet cgroupfs",
		"0::/../../../burstable/pod" + testPodUID + "/" + testID + "\n",
		&Container{ID: testID, PodUID: testPodUID}},
	{"pod directory without a UUID", "0::/kubepods/besteffort/podnotauuid/" + testID + "\n", nil},
	{"empty", "", nil},
	{"garbage", "not a cgroup file\n:::\n", nil},
}

func TestCgroupContainer(t *testing.T) {
	for _, tt := range cgroupForms {
		t.Run(tt.name, func(t *testing.T) {
			got := cgroupContainer(tt.text)
			switch {
			case got == nil && tt.want == nil:
			case got == nil || tt.want == nil || *got != *tt.want:
				t.Errorf("cgroupContainer(%q) = %+v, want %+v", tt.text, got, tt.want)
			}
		})
	}
}

func TestContainerShortID(t *testing.T) {
	c := &Container{ID: testID}
	if got := c.ShortID(); got != testID[:12] {
		t.Errorf("ShortID = %q, want %q", got, testID[:12])
	}
}

// FuzzCgroupContainer holds the parser to its promises on any text: no
// panic, and a container only with a 64-hex id and a well-formed pod UID,
// both written in the text.
func FuzzCgroupContainer(f *testing.F) {
	for _, tt := range cgroupForms {
		f.Add(tt.text)
	}
	f.Fuzz(func(t *testing.T, text string) {
		c := cgroupContainer(text)
		if c == nil {
			return
		}
		if !isContainerID(c.ID) || !strings.Contains(text, c.ID) {
			t.Fatalf("id %q from %q", c.ID, text)
		}
		if c.PodUID != "" {
			if !isUUID(c.PodUID) {
				t.Fatalf("pod uid %q from %q", c.PodUID, text)
			}
			if !strings.Contains(strings.ReplaceAll(text, "_", "-"), c.PodUID) {
				t.Fatalf("pod uid %q not in %q", c.PodUID, text)
			}
		}
		if c.Pod != "" || c.Namespace != "" || c.Name != "" {
			t.Fatalf("names %+v from a cgroup path", c)
		}
	})
}
