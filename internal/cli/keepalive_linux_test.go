package cli

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/closewait/closewait/internal/leaktest"
	"github.com/closewait/closewait/report"
	"golang.org/x/sys/unix"
)

// TestKeepaliveCommand runs closewait keepalive over two accepted sockets,
// one with keepalive off and one with 5s/5s/3, through each source: the
// table fits 80 columns, the JSON has the values the source can know and
// null for the rest, and --no-keepalive keeps only the first.
func TestKeepaliveCommand(t *testing.T) {
	ln := leaktest.Listen(t, "tcp4")
	conns := leaktest.Accepted(t, ln, 2)
	fd := int(conns[1].File.Fd())
	for _, o := range [][3]int{
		{unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1},
		{unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, 5},
		{unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, 5},
		{unix.IPPROTO_TCP, unix.TCP_KEEPCNT, 3},
	} {
		if err := unix.SetsockoptInt(fd, o[0], o[1], o[2]); err != nil {
			t.Fatal(err)
		}
	}
	off, on := conns[0].Remote.String(), conns[1].Remote.String()
	for _, src := range []string{"ebpf", "netlink"} {
		t.Run(src, func(t *testing.T) {
			if src == "ebpf" {
				leaktest.RequireRoot(t)
			}
			stdout, stderr, code := runArgs(t, "keepalive", "--source", src, "--sport", port(ln))
			if code != 0 {
				if src == "ebpf" {
					leaktest.Missing(t, stderr)
				}
				t.Fatalf("exit %d: %s", code, stderr)
			}
			for _, line := range strings.Split(stdout, "\n") {
				if len(line) > 80 {
					t.Errorf("line of %d columns: %q", len(line), line)
				}
			}
			if !strings.Contains(stdout, "  1 without keepalive: a dead peer keeps them forever\n") {
				t.Errorf("no summary line for the socket without keepalive:\n%s", stdout)
			}
			if src == "ebpf" && !strings.Contains(stdout, "  1 with keepalive after 5s, dead peers noticed after ~20s\n") {
				t.Errorf("no summary line for 5s/5s/3:\n%s", stdout)
			}
			if src != "ebpf" && !strings.Contains(stderr, "cannot read keepalive timers") {
				t.Errorf("no warning that the timers are unknown: %q", stderr)
			}

			stdout, _, code = runArgs(t, "keepalive", "--source", src, "--sport", port(ln), "-o", "json")
			if code != 0 {
				t.Fatalf("exit %d", code)
			}
			var doc report.KeepaliveDocument
			if err := json.Unmarshal([]byte(stdout), &doc); err != nil {
				t.Fatalf("decoding: %v\n%s", err, stdout)
			}
			if doc.Schema != "closewait/keepalive/v1" || len(doc.Sockets) != 2 {
				t.Fatalf("schema %q, %d sockets:\n%s", doc.Schema, len(doc.Sockets), stdout)
			}
			for _, s := range doc.Sockets {
				if s.Keepalive == nil || *s.Keepalive != (s.Remote == on) {
					t.Errorf("%s: keepalive %v", s.Remote, s.Keepalive)
				}
				if len(s.Owners) != 1 || s.Owners[0].PID != os.Getpid() {
					t.Errorf("%s: owners %+v", s.Remote, s.Owners)
				}
				if s.IdleSeconds == nil {
					t.Errorf("%s: idle_seconds null", s.Remote)
				}
				switch {
				case s.Remote == off:
					if s.DetectsDeadPeer == nil || *s.DetectsDeadPeer || s.DeadPeerDetectSeconds != nil {
						t.Errorf("off: detects %v after %v, want false, null", s.DetectsDeadPeer, s.DeadPeerDetectSeconds)
					}
				case src == "ebpf":
					if s.DeadPeerDetectSeconds == nil || *s.DeadPeerDetectSeconds != 20 ||
						*s.KeepaliveIdleSeconds != 5 || *s.KeepaliveIntervalSeconds != 5 || *s.KeepaliveProbes != 3 {
						t.Errorf("5s/5s/3: %s", stdout)
					}
				default:
					if s.DetectsDeadPeer != nil || s.DeadPeerDetectSeconds != nil || s.KeepaliveIdleSeconds != nil ||
						s.KeepaliveIntervalSeconds != nil || s.KeepaliveProbes != nil || s.UserTimeoutSeconds != nil {
						t.Errorf("%s knows no timers, yet: %s", src, stdout)
					}
				}
			}

			stdout, _, _ = runArgs(t, "keepalive", "--source", src, "--sport", port(ln), "--no-keepalive", "-o", "json")
			doc = report.KeepaliveDocument{}
			if err := json.Unmarshal([]byte(stdout), &doc); err != nil {
				t.Fatal(err)
			}
			if len(doc.Sockets) != 1 || doc.Sockets[0].Remote != off {
				t.Errorf("--no-keepalive: %s", stdout)
			}
		})
	}
}

// resetHeld returns a connection whose peer reset it while the test holds
// the server end: the kernel has closed the socket (CLOSE), the fd stays.
func resetHeld(t *testing.T) *leaktest.Conn {
	t.Helper()
	ln := leaktest.Listen(t, "tcp4")
	c := leaktest.Accepted(t, ln, 1)[0]
	if err := c.Client().(*net.TCPConn).SetLinger(0); err != nil {
		t.Fatal(err)
	}
	c.Client().Close() // RST
	fd := int(c.File.Fd())
	for deadline := time.Now().Add(5 * time.Second); ; {
		info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
		if err != nil {
			t.Fatal(err)
		}
		if info.State == 7 { // CLOSE
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("socket in state %d, not CLOSE", info.State)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestServeCountsClosed: serve's textfile counts a socket the kernel
// closed while the test holds its fd in closewait_closed_socket_fds under
// the test's command, through each Linux source.
func TestServeCountsClosed(t *testing.T) {
	leaktest.RequireRoot(t)
	resetHeld(t)
	comm := leaktest.SelfComm(t)
	re := regexp.MustCompile(`(?m)^closewait_closed_socket_fds\{comm="` + regexp.QuoteMeta(comm) + `",container="",namespace="",pod=""\} ([0-9]+)$`)
	for _, src := range []string{"ebpf", "netlink", "procfs"} {
		t.Run(src, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "closewait.prom")
			_, stderr, code := runArgs(t, "serve", "--source", src, "--textfile", path)
			if code != 0 {
				leaktest.Missing(t, stderr)
			}
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			m := re.FindSubmatch(b)
			if m == nil {
				t.Fatalf("no closewait_closed_socket_fds for %s:\n%s", comm, b)
			}
			if n, _ := strconv.Atoi(string(m[1])); n < 1 {
				t.Errorf("closewait_closed_socket_fds{comm=%q} = %d, want at least 1", comm, n)
			}
		})
	}
}

// TestCheckClosed: check --state closed warns of a socket the kernel
// closed while the test holds its fd, naming the process and the cause,
// through each Linux source. The netlink and procfs sources know no
// addresses of a closed socket: the test's pid selects it.
func TestCheckClosed(t *testing.T) {
	leaktest.RequireRoot(t)
	c := resetHeld(t)
	for _, tt := range []struct{ src, flag, value string }{
		{"ebpf", "--dport", strconv.Itoa(int(c.Remote.Port()))},
		{"netlink", "--pid", strconv.Itoa(os.Getpid())},
		{"procfs", "--pid", strconv.Itoa(os.Getpid())},
	} {
		t.Run(tt.src, func(t *testing.T) {
			stdout, stderr, code := runArgs(t, "check", "--source", tt.src, "--state", "closed", tt.flag, tt.value, "--warn-count", "0")
			if code == 3 {
				leaktest.Missing(t, stdout+stderr)
			}
			// Other tests of this process may hold closed sockets too.
			want := regexp.MustCompile(fmt.Sprintf(`pid %d: [0-9]+ sockets?, oldest -, closed-not-released:[0-9]+`, os.Getpid()))
			if code != 1 || !want.MatchString(stdout) {
				t.Errorf("exit %d, want 1 and %q in:\n%s%s", code, want, stdout, stderr)
			}
		})
	}
}

// TestListClosedJSON: list -o json gives a closed socket's error, as the
// keepalive JSON does, with the ebpf source, which reads it; null with
// the others, which find the socket through /proc and cannot.
func TestListClosedJSON(t *testing.T) {
	leaktest.RequireRoot(t)
	c := resetHeld(t)
	fd := int(c.File.Fd())
	for _, tt := range []struct {
		src  string
		want *string
	}{{"ebpf", ptr("ECONNRESET")}, {"netlink", nil}, {"procfs", nil}} {
		t.Run(tt.src, func(t *testing.T) {
			stdout, stderr, code := runArgs(t, "list", "--source", tt.src, "--state", "closed", "--pid", strconv.Itoa(os.Getpid()), "-o", "json")
			if code != 0 {
				leaktest.Missing(t, stderr)
			}
			var doc report.Document
			if err := json.Unmarshal([]byte(stdout), &doc); err != nil {
				t.Fatal(err)
			}
			var found *report.SocketJSON
			for i, s := range doc.Sockets {
				if len(s.Owners) == 1 && s.Owners[0].FD == fd {
					found = &doc.Sockets[i]
				}
			}
			if found == nil {
				t.Fatalf("no socket held by fd %d:\n%s", fd, stdout)
			}
			if found.State != "CLOSE" || (found.Error == nil) != (tt.want == nil) || (found.Error != nil && *found.Error != *tt.want) {
				t.Errorf("state %s error %v, want CLOSE %v:\n%s", found.State, deref(found.Error), deref(tt.want), stdout)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

func deref(p *string) any {
	if p == nil {
		return nil
	}
	return *p
}
