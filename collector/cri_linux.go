package collector

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
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
	ctx, cancel := context.WithTimeout(ctx, criTimeout)
	defer cancel()
	c := newCRIClient(sock)
	defer c.close()
	var runtime string // "containerd", "cri-o", "docker"
	err := c.call(ctx, "Version", func(num int, v []byte) bool {
		if num == 2 { // VersionResponse.runtime_name
			runtime = string(v)
		}
		return true
	})
	if err != nil {
		return err
	}
	byPod := map[string]*criNames{}
	err = c.call(ctx, "ListPodSandbox", func(num int, v []byte) bool {
		if num != 1 { // ListPodSandboxResponse.items
			return true
		}
		var id string
		var pod *criNames
		ok := protoFields(v, func(num int, v []byte) bool {
			switch num {
			case 1: // PodSandbox.id
				id = string(v)
			case 2: // PodSandbox.metadata
				pod = &criNames{Runtime: runtime}
				return protoFields(v, func(num int, v []byte) bool {
					switch num {
					case 1:
						pod.Pod = string(v)
					case 2:
						pod.PodUID = string(v)
					case 3:
						pod.Namespace = string(v)
					}
					return true
				})
			}
			return true
		})
		byPod[id] = pod
		return ok
	})
	if err != nil {
		return err
	}
	err = c.call(ctx, "ListContainers", func(num int, v []byte) bool {
		if num != 1 { // ListContainersResponse.containers
			return true
		}
		var id, podID string
		n := criNames{Runtime: runtime}
		ok := protoFields(v, func(num int, v []byte) bool {
			switch num {
			case 1: // Container.id
				id = string(v)
			case 2: // Container.pod_sandbox_id
				podID = string(v)
			case 3: // Container.metadata
				return protoFields(v, func(num int, v []byte) bool {
					if num == 1 { // ContainerMetadata.name
						n.Name = string(v)
					}
					return true
				})
			}
			return true
		})
		if p := byPod[podID]; p != nil {
			n.Pod, n.Namespace, n.PodUID = p.Pod, p.Namespace, p.PodUID
		}
		names[id] = n
		return ok
	})
	if err != nil {
		return err
	}
	// A pod's sandbox (pause) process is in a container of its own.
	for id, p := range byPod {
		if _, ok := names[id]; !ok && p != nil {
			names[id] = *p
		}
	}
	return nil
}

// criClient makes the CRI's unary calls to one runtime with no more of
// gRPC than they need: HTTP/2 without TLS over the runtime's unix socket,
// each message behind a 5-byte prefix, the status in the trailers, and the
// few protobuf fields criAsk reads taken from the wire (protoFields). grpc-go
// and the CRI's generated types, which every run of the binary used to
// initialize, cost ~5 ms of a listing's start (descriptor registration,
// grpc's and x/net/trace's own inits), though only a Kubernetes node has a
// runtime to ask.
type criClient struct {
	tr *http.Transport
}

// criMaxMessage bounds a response, as grpc.MaxCallRecvMsgSize did.
const criMaxMessage = 64 << 20

func newCRIClient(sock string) *criClient {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	return &criClient{tr: &http.Transport{
		Protocols: &p,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
	}}
}

func (c *criClient) close() { c.tr.CloseIdleConnections() }

// call sends RuntimeService's method an empty request and calls field
// with each length-delimited field of the response (see protoFields).
func (c *criClient) call(ctx context.Context, method string, field func(num int, v []byte) bool) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://localhost/runtime.v1.RuntimeService/"+method,
		bytes.NewReader(make([]byte, 5))) // uncompressed, 0 bytes long
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/grpc")
	req.Header.Set("TE", "trailers")
	resp, err := c.tr.RoundTrip(req)
	if err != nil {
		if ue := (*url.Error)(nil); errors.As(err, &ue) {
			err = ue.Err
		}
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 5+criMaxMessage+1))
	if err != nil {
		return err
	}
	// The status is in the trailers, or in the headers of a response
	// that has no message.
	status, msg := resp.Trailer.Get("Grpc-Status"), resp.Trailer.Get("Grpc-Message")
	if status == "" {
		status, msg = resp.Header.Get("Grpc-Status"), resp.Header.Get("Grpc-Message")
	}
	switch {
	case status != "" && status != "0":
		if m, err := url.PathUnescape(msg); err == nil {
			msg = m
		}
		if msg == "" {
			msg = "gRPC status " + status
		}
		return errors.New(msg)
	case resp.StatusCode != http.StatusOK:
		return fmt.Errorf("HTTP status %s", resp.Status)
	case status == "":
		return errors.New("no gRPC status")
	case len(body) < 5 || body[0] != 0 || int(binary.BigEndian.Uint32(body[1:5])) != len(body)-5:
		if len(body) > 5+criMaxMessage {
			return fmt.Errorf("response larger than %d MiB", criMaxMessage>>20)
		}
		return errors.New("malformed gRPC response")
	}
	if !protoFields(body[5:], field) {
		return errors.New("malformed " + method + " response")
	}
	return nil
}

// protoFields calls fn with the number and the bytes of each
// length-delimited field (string, bytes, message) of the protobuf message
// b, in order, and skips the others. It returns false when b is malformed
// or fn returns false, which fn does for a malformed field.
func protoFields(b []byte, fn func(num int, v []byte) bool) bool {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		if typ == protowire.BytesType {
			v, m := protowire.ConsumeBytes(b)
			if m < 0 || !fn(int(num), v) {
				return false
			}
			b = b[m:]
			continue
		}
		m := protowire.ConsumeFieldValue(num, typ, b)
		if m < 0 {
			return false
		}
		b = b[m:]
	}
	return true
}
