package collector

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// DefaultCRISockets are the CRI endpoints of the common container
// runtimes: containerd (and k3s's), CRI-O, cri-dockerd.
var DefaultCRISockets = []string{
	"/run/containerd/containerd.sock",
	"/run/k3s/containerd/containerd.sock",
	"/run/crio/crio.sock",
	"/run/cri-dockerd.sock",
}

// criNames is what a container runtime says of one container: which
// runtime it is, its pod and its name in the pod; "" when unknown.
type criNames struct {
	Runtime                      string
	Pod, Namespace, PodUID, Name string
}

// criTimeout bounds the questions to each runtime: a listing does not wait
// on a runtime that hangs.
const criTimeout = 2 * time.Second

// criSockets returns the sockets to ask: those given, else the default
// ones, each also as the host's root (procRoot/1/root) sees it.
func criSockets(procRoot string, given []string) []string {
	if given != nil {
		return given
	}
	var out []string
	for _, s := range DefaultCRISockets {
		out = append(out, s, procRoot+"/1/root"+s)
	}
	return out
}

// criLookup asks the container runtime at each of sockets that exists,
// over the CRI (RuntimeService: ListPodSandbox, ListContainers), for its
// containers and their pods, and returns their names by container id. A
// runtime that does not answer is a warning.
func criLookup(ctx context.Context, sockets []string) (map[string]criNames, []string) {
	names := map[string]criNames{}
	var warnings []string
	var asked []os.FileInfo
	for _, sock := range sockets {
		fi, err := os.Stat(sock)
		if err != nil || fi.Mode().Type() != os.ModeSocket || slices.ContainsFunc(asked, func(a os.FileInfo) bool { return os.SameFile(a, fi) }) {
			continue // none, or the same runtime seen through another path
		}
		asked = append(asked, fi)
		if err := criAsk(ctx, sock, names); err != nil {
			warnings = append(warnings, fmt.Sprintf("container runtime at %s: %v: pods and containers are not named", sock, err))
		}
	}
	return names, warnings
}

// criAsk adds the containers of the runtime at sock to names.
func criAsk(ctx context.Context, sock string, names map[string]criNames) error {
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, criTimeout)
	defer cancel()
	rs := cri.NewRuntimeServiceClient(conn)
	v, err := rs.Version(ctx, &cri.VersionRequest{})
	if err != nil {
		return criError(err)
	}
	runtime := v.GetRuntimeName() // "containerd", "cri-o", "docker"
	pods, err := rs.ListPodSandbox(ctx, &cri.ListPodSandboxRequest{})
	if err != nil {
		return criError(err)
	}
	byPod := make(map[string]*cri.PodSandboxMetadata, len(pods.GetItems()))
	for _, p := range pods.GetItems() {
		byPod[p.GetId()] = p.GetMetadata()
	}
	ctrs, err := rs.ListContainers(ctx, &cri.ListContainersRequest{})
	if err != nil {
		return criError(err)
	}
	for _, c := range ctrs.GetContainers() {
		n := criNames{Runtime: runtime, Name: c.GetMetadata().GetName()}
		if p := byPod[c.GetPodSandboxId()]; p != nil {
			n.Pod, n.Namespace, n.PodUID = p.GetName(), p.GetNamespace(), p.GetUid()
		}
		names[c.GetId()] = n
	}
	// A pod's sandbox (pause) process is in a container of its own.
	for id, p := range byPod {
		if _, ok := names[id]; !ok && p != nil {
			names[id] = criNames{Runtime: runtime, Pod: p.GetName(), Namespace: p.GetNamespace(), PodUID: p.GetUid()}
		}
	}
	return nil
}

// criError shortens a gRPC error to its message: "rpc error: code =
// Unavailable desc = ..." says little more to a user.
func criError(err error) error {
	s := err.Error()
	if _, desc, ok := strings.Cut(s, "desc = "); ok {
		return fmt.Errorf("%s", desc)
	}
	return err
}
