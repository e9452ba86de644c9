package collector

import "strings"

// Container is the container a process runs in, as its cgroup path tells.
// Pod, Namespace and Name come only from the container runtime's CRI API
// (criLookup): "" when no runtime answered for it.
type Container struct {
	// Runtime is "containerd", "cri-o", "docker" or "podman"; "" when the
	// path does not say (kubelet's cgroupfs driver names the container by
	// its id alone).
	Runtime string
	ID      string // the full 64-hex container id
	// PodUID is the Kubernetes pod's UID with dashes, "" outside a pod.
	PodUID    string
	Pod       string // pod name; "" when unknown
	Namespace string // Kubernetes namespace; "" when unknown
	Name      string // container name; "" when unknown
}

// ShortID is the id as docker ps and crictl ps show it: 12 hex digits.
func (c *Container) ShortID() string {
	return c.ID[:min(12, len(c.ID))]
}

// cgroupContainer finds the container in a /proc/PID/cgroup text, nil
// when the process is in none. The cgroup v2 line ("0::path") is tried
// first, then each v1 hierarchy: on a hybrid host the v2 path may be "/"
// while the v1 ones carry the runtime's path.
func cgroupContainer(text string) *Container {
	var paths []string
	for line := range strings.SplitSeq(text, "\n") {
		// hierarchy-ID:controllers:path; the path may hold colons.
		id, rest, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		_, path, ok := strings.Cut(rest, ":")
		if !ok {
			continue
		}
		if id == "0" {
			paths = append([]string{path}, paths...)
		} else {
			paths = append(paths, path)
		}
	}
	for _, p := range paths {
		if c := pathContainer(p); c != nil {
			return c
		}
	}
	return nil
}

// scopePrefixes are the prefixes runtimes give a container's cgroup
// (a systemd scope, or a cgroupfs directory for crio- and libpod-).
var scopePrefixes = []struct{ prefix, runtime string }{
	{"cri-containerd-", "containerd"},
	{"crio-", "cri-o"},
	{"docker-", "docker"},
	{"libpod-", "podman"},
	{"nerdctl-", "containerd"},
}

// pathContainer finds the innermost container in one cgroup path. A path
// component is a container when it is a runtime's scope
// ("docker-<id>.scope"), or a bare 64-hex id under a Kubernetes pod
// ("pod<uid>", cgroupfs driver), under /docker, or in containerd's
// "/<namespace>/<id>".
func pathContainer(path string) *Container {
	parts := strings.Split(strings.Trim(path, "/"), "/")
	for i := len(parts) - 1; i >= 0; i-- {
		c := componentContainer(parts, i)
		if c == nil {
			continue
		}
		c.PodUID = podUID(parts[:i])
		return c
	}
	return nil
}

func componentContainer(parts []string, i int) *Container {
	name := strings.TrimSuffix(parts[i], ".scope")
	for _, sp := range scopePrefixes {
		if id, ok := strings.CutPrefix(name, sp.prefix); ok && isContainerID(id) {
			return &Container{Runtime: sp.runtime, ID: id}
		}
	}
	if name != parts[i] || !isContainerID(name) || i == 0 {
		return nil
	}
	parent := parts[i-1]
	switch {
	case parent == "docker":
		return &Container{Runtime: "docker", ID: name}
	case strings.HasPrefix(parent, "pod") && isUUID(parent[len("pod"):]):
		return &Container{ID: name}
	case i == 1:
		// containerd without Kubernetes: /<namespace>/<id>.
		return &Container{Runtime: "containerd", ID: name}
	}
	return nil
}

// podUID is the pod UID a container's ancestors name: kubelet's systemd
// driver writes "kubepods-besteffort-pod<uid>.slice" with "_" for "-", its
// cgroupfs driver "pod<uid>". "" when none is there. The kubepods
// component is not required: seen from inside a cgroup namespace (a
// DaemonSet's pod) the path may start below it ("/../../burstable/pod<uid>").
func podUID(parts []string) string {
	for i := len(parts) - 1; i >= 0; i-- {
		p := parts[i]
		var uid string
		if s, ok := strings.CutSuffix(p, ".slice"); ok {
			j := strings.LastIndex(s, "-pod")
			if j < 0 {
				continue
			}
			uid = strings.ReplaceAll(s[j+len("-pod"):], "_", "-")
		} else if u, ok := strings.CutPrefix(p, "pod"); ok {
			uid = u
		}
		if isUUID(uid) {
			return uid
		}
	}
	return ""
}

// isContainerID reports whether s is 64 lowercase hex digits, the form
// of every runtime's container ids.
func isContainerID(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := range len(s) {
		if !isHex(s[i]) {
			return false
		}
	}
	return true
}

// isUUID reports whether s has the 8-4-4-4-12 hex form of a pod UID.
func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := range len(s) {
		switch i {
		case 8, 13, 18, 23:
			if s[i] != '-' {
				return false
			}
		default:
			if !isHex(s[i]) {
				return false
			}
		}
	}
	return true
}

func isHex(b byte) bool {
	return '0' <= b && b <= '9' || 'a' <= b && b <= 'f'
}
