package collector

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/closewait/closewait/internal/leaktest"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// sysctlInt reads a keepalive sysctl of this namespace.
func sysctlInt(t *testing.T, name string) int {
	t.Helper()
	b, err := os.ReadFile("/proc/sys/net/ipv4/" + name)
	if err != nil {
		leaktest.Missing(t, err.Error())
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// keepaliveCase is a set of socket options and what the ebpf source reads
// of a socket with them.
type keepaliveCase struct {
	name string
	opts []struct{ level, name, value int }
	want DeadPeer
}

// keepaliveSockets accepts a connection per case on a new listener of
// network (tcp4 or tcp6) and sets the case's options on its server end;
// byRemote maps each client's address to its case.
func keepaliveSockets(t *testing.T, network string) (cases []keepaliveCase, ln *net.TCPListener, conns []*leaktest.Conn, byRemote map[string]int) {
	t.Helper()
	sec := func(n int) time.Duration { return time.Duration(n) * time.Second }
	defIdle, defIntvl, defProbes := sec(sysctlInt(t, "tcp_keepalive_time")), sec(sysctlInt(t, "tcp_keepalive_intvl")), sysctlInt(t, "tcp_keepalive_probes")
	type opt = struct{ level, name, value int }
	ka := opt{unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1}
	cases = []keepaliveCase{
		{"off", nil, DeadPeer{KeepaliveKnown: true, TimersKnown: true, Idle: defIdle, Interval: defIntvl, Probes: defProbes,
			UserTimeoutKnown: true, DetectKnown: true, Never: true}},
		{"defaults", []opt{ka}, DeadPeer{KeepaliveKnown: true, Keepalive: true, TimersKnown: true, Idle: defIdle, Interval: defIntvl,
			Probes: defProbes, UserTimeoutKnown: true, DetectKnown: true, Detect: defIdle + defIntvl*time.Duration(defProbes)}},
		{"5s-5s-3", []opt{ka, {unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, 5}, {unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, 5}, {unix.IPPROTO_TCP, unix.TCP_KEEPCNT, 3}},
			DeadPeer{KeepaliveKnown: true, Keepalive: true, TimersKnown: true, Idle: sec(5), Interval: sec(5), Probes: 3,
				Own: KeepaliveOwnAll, UserTimeoutKnown: true, DetectKnown: true, Detect: sec(20)}},
		{"own-idle-only", []opt{ka, {unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, 5}},
			DeadPeer{KeepaliveKnown: true, Keepalive: true, TimersKnown: true, Idle: sec(5), Interval: defIntvl, Probes: defProbes,
				Own: KeepaliveOwnIdle, UserTimeoutKnown: true, DetectKnown: true, Detect: sec(5) + defIntvl*time.Duration(defProbes)}},
		{"user-timeout-only", []opt{{unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, 30000}},
			DeadPeer{KeepaliveKnown: true, TimersKnown: true, Idle: defIdle, Interval: defIntvl, Probes: defProbes,
				UserTimeoutKnown: true, UserTimeout: sec(30), DetectKnown: true, Never: true}},
		{"5s-5s-3-user-timeout", []opt{ka, {unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, 5}, {unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, 5},
			{unix.IPPROTO_TCP, unix.TCP_KEEPCNT, 3}, {unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, 30000}},
			DeadPeer{KeepaliveKnown: true, Keepalive: true, TimersKnown: true, Idle: sec(5), Interval: sec(5), Probes: 3,
				Own: KeepaliveOwnAll, UserTimeoutKnown: true, UserTimeout: sec(30), DetectKnown: true, Detect: sec(30)}},
	}
	ln = leaktest.Listen(t, network)
	conns = leaktest.Accepted(t, ln, len(cases))
	byRemote = map[string]int{}
	for i, c := range cases {
		for _, o := range c.opts {
			if err := unix.SetsockoptInt(int(conns[i].File.Fd()), o.level, o.name, o.value); err != nil {
				t.Fatalf("%s: setsockopt: %v", c.name, err)
			}
		}
		byRemote[conns[i].Remote.String()] = i
	}
	return cases, ln, conns, byRemote
}

// TestKeepaliveSettings sets keepalive options on accepted sockets (IPv4
// and IPv6) and checks what each source reports: the ebpf source every value, the
// others whether keepalive is on (from the armed timer) and nulls.
func TestKeepaliveSettings(t *testing.T) {
	for _, network := range []string{"tcp4", "tcp6"} {
		t.Run(network, func(t *testing.T) {
			cases, ln, conns, byRemote := keepaliveSockets(t, network)
			opts := func(src string) Options {
				return Options{Source: src, States: StatesKeepalive, Filter: Filter{SPorts: []uint16{port(ln.Addr())}}}
			}
			audit := func(t *testing.T, src string) map[int]KeepaliveSocket {
				t.Helper()
				if src == SourceEBPF {
					requireEBPF(t)
				}
				collect(t, opts(src)) // skips where the source is missing
				a, err := CollectKeepalive(context.Background(), opts(src), KeepaliveFilter{})
				if err != nil {
					t.Fatal(err)
				}
				got := map[int]KeepaliveSocket{}
				for _, s := range a.Audited {
					i, ok := byRemote[s.Remote.String()]
					if !ok {
						t.Fatalf("unexpected socket %v", s.Remote)
					}
					got[i] = s
				}
				if len(got) != len(cases) {
					t.Fatalf("got %d sockets, want %d", len(got), len(cases))
				}
				return got
			}

			t.Run(SourceEBPF, func(t *testing.T) {
				got := audit(t, SourceEBPF)
				for i, c := range cases {
					if g := got[i]; g.DeadPeer != c.want {
						t.Errorf("%s: got %+v\nwant %+v", c.name, g.DeadPeer, c.want)
					}
					if !got[i].IdleKnown {
						t.Errorf("%s: idle time unknown", c.name)
					}
					if o := got[i].Owners; len(o) != 1 || o[0].PID != os.Getpid() || o[0].FD != int(conns[i].File.Fd()) {
						t.Errorf("%s: owners %v, want pid %d fd %d", c.name, o, os.Getpid(), conns[i].File.Fd())
					}
				}
			})
			for _, src := range sources {
				t.Run(src, func(t *testing.T) {
					got := audit(t, src)
					for i, c := range cases {
						// Whether keepalive is on comes from the armed timer;
						// nothing else is known, and no 0 stands in for it.
						want := DeadPeer{KeepaliveKnown: true, Keepalive: c.want.Keepalive, DetectKnown: c.want.Never, Never: c.want.Never}
						if g := got[i]; g.DeadPeer != want {
							t.Errorf("%s: got %+v\nwant %+v", c.name, g.DeadPeer, want)
						}
						if known := got[i].IdleKnown; known != (src == SourceNetlink) {
							t.Errorf("%s: idle known %v", c.name, known)
						}
					}
				})
			}

		})
	}
}

// TestKeepaliveOracleSS checks against ss -tanoe, which shows a keepalive
// timer exactly where keepalive is on.
func TestKeepaliveOracleSS(t *testing.T) {
	cases, ln, _, byRemote := keepaliveSockets(t, "tcp4")
	ssPath, err := exec.LookPath("ss")
	if err != nil {
		leaktest.Missing(t, "needs ss(8) from iproute2")
	}
	out, err := exec.Command(ssPath, "-tanoeH", "sport", "=", ":"+strconv.Itoa(int(port(ln.Addr())))).Output()
	if err != nil {
		t.Fatalf("ss: %v", err)
	}
	seen := 0
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 || f[0] != "ESTAB" {
			continue
		}
		i, ok := byRemote[f[4]]
		if !ok {
			continue
		}
		seen++
		if on := strings.Contains(line, "timer:(keepalive,"); on != cases[i].want.Keepalive {
			t.Errorf("%s: ss shows keepalive timer %v: %s", cases[i].name, on, line)
		}
	}
	if seen != len(cases) {
		t.Errorf("ss shows %d of %d sockets:\n%s", seen, len(cases), out)
	}
}

// TestDetectTime checks the arithmetic of the time to notice a dead peer.
func TestDetectTime(t *testing.T) {
	s := time.Second
	for _, c := range []struct {
		idle, intvl time.Duration
		probes      int
		user, want  time.Duration
	}{
		{5 * s, 5 * s, 3, 0, 20 * s},
		{7200 * s, 75 * s, 9, 0, 7875 * s},
		{5 * s, 5 * s, 3, 30 * s, 30 * s},
		{5 * s, 5 * s, 3, 2 * s, 10 * s}, // at least one probe
		{5 * s, 4 * s, 3, 14 * s, 17 * s},
	} {
		if got := detectTime(c.idle, c.intvl, c.probes, c.user); got != c.want {
			t.Errorf("detectTime(%v, %v, %d, %v) = %v, want %v", c.idle, c.intvl, c.probes, c.user, got, c.want)
		}
	}
}

// TestClosedHeldByFD has the kernel close a connection whose server end
// the test keeps open, by the peer's reset: the socket is then in CLOSE,
// in no table. The ebpf source, which walks fds, lists it with its owner,
// addresses and the error the kernel left; the netlink and procfs sources
// find it through /proc, with its owner only. None takes for closed an
// ESTABLISHED socket held meanwhile, or a socket never connected.
func TestClosedHeldByFD(t *testing.T) {
	testClosedHeldByFD(t, func(t *testing.T, c *leaktest.Conn) {
		if err := c.Client().(*net.TCPConn).SetLinger(0); err != nil {
			t.Fatal(err)
		}
		c.Client().Close() // RST
	}, unix.ECONNRESET)
}

// TestClosedBySSK is TestClosedHeldByFD with the connection killed by
// ss -K: SOCK_DESTROY (CONFIG_INET_DIAG_DESTROY). Where there is no ss (the
// arm64 test kernel's guest) the test sends SOCK_DESTROY itself, as ss does.
func TestClosedBySSK(t *testing.T) {
	testClosedHeldByFD(t, func(t *testing.T, c *leaktest.Conn) {
		ssPath, err := exec.LookPath("ss")
		if err != nil {
			sockDestroy(t, c)
			return
		}
		out, err := exec.Command(ssPath, "-K", "-tnH", "src", c.Local.String(), "dst", c.Remote.String()).CombinedOutput()
		if err != nil {
			leaktest.Missing(t, fmt.Sprintf("ss -K: %v: %s", err, out))
		}
	}, unix.ECONNABORTED)
}

// sockDestroy kills the server end of c with SOCK_DESTROY over sock_diag,
// naming it by addresses and cookie as ss -K does.
func sockDestroy(t *testing.T, c *leaktest.Conn) {
	t.Helper()
	snap := collect(t, Options{Source: SourceNetlink, NoOwners: true, States: setOf(StateEstablished),
		Filter: Filter{SPorts: []uint16{c.Local.Port()}, DPorts: []uint16{c.Remote.Port()}}})
	if len(snap.Sockets) != 1 {
		t.Fatalf("%d sockets %v -> %v, want 1", len(snap.Sockets), c.Local, c.Remote)
	}
	conn, stop, err := dialSockDiag(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	const sockDestroyMsg = 21 // SOCK_DESTROY, linux/sock_diag.h
	_, err = conn.Execute(netlink.Message{
		Header: netlink.Header{Type: sockDestroyMsg, Flags: netlink.Request | netlink.Acknowledge},
		Data:   inetDiagLookup(&snap.Sockets[0]),
	})
	if err != nil {
		leaktest.Missing(t, fmt.Sprintf("SOCK_DESTROY (CONFIG_INET_DIAG_DESTROY): %v", err))
	}
}

func testClosedHeldByFD(t *testing.T, kill func(*testing.T, *leaktest.Conn), errno unix.Errno) {
	ln := leaktest.Listen(t, "tcp4")
	conns := leaktest.Accepted(t, ln, 2)
	c, est := conns[0], conns[1]
	kill(t, c)
	fd, estFD := int(c.File.Fd()), int(est.File.Fd())
	deadline := time.Now().Add(5 * time.Second)
	for {
		info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
		if err != nil {
			t.Fatal(err)
		}
		if State(info.State) == StateClose {
			break
		}
		if time.Now().After(deadline) {
			leaktest.Missing(t, fmt.Sprintf("server socket in %v, not CLOSE (no SOCK_DESTROY?)", State(info.State)))
		}
		time.Sleep(time.Millisecond)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		t.Fatal(err)
	}
	// A socket never connected is in CLOSE too, and no leak: not listed.
	unconnected, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(unconnected)
	for _, src := range append([]string{SourceEBPF}, sources...) {
		t.Run(src, func(t *testing.T) {
			if src == SourceEBPF {
				requireEBPF(t)
			}
			snap := collect(t, Options{Source: src, States: setOf(StateClose), Filter: Filter{PIDs: []int{os.Getpid()}}})
			var found *Socket
			for i := range snap.Sockets {
				s := &snap.Sockets[i]
				for _, o := range s.Owners {
					switch o.FD {
					case fd:
						found = s
					case estFD:
						t.Errorf("lists the ESTABLISHED socket as closed: %+v", *s)
					case unconnected:
						t.Errorf("lists a socket never connected: %+v", *s)
					}
				}
			}
			if found == nil {
				t.Fatalf("no CLOSE socket held by fd %d in %+v (warnings %q)", fd, snap.Sockets, snap.Warnings)
			}
			if o := found.Owners; len(o) != 1 || o[0].PID != os.Getpid() || o[0].FD != fd {
				t.Errorf("owners %v, want pid %d fd %d", o, os.Getpid(), fd)
			}
			if found.State != StateClose || found.Inode != st.Ino || found.Family != FamilyIPv4 {
				t.Errorf("%v inode %d %v, want CLOSE inode %d ipv4", found.State, found.Inode, found.Family, st.Ino)
			}
			if len(found.Causes) != 1 || found.Causes[0] != CauseClosedNotReleased {
				t.Errorf("causes %v, want [%s]", found.Causes, CauseClosedNotReleased)
			}
			if src != SourceEBPF {
				// Addresses and error are in no table: unknown.
				if found.Remote.IsValid() || !found.SockErrUnknown || found.UIDUnknown || found.UID != st.Uid {
					t.Errorf("remote %v, error unknown %v, uid %d (unknown %v): want none, true, %d", found.Remote,
						found.SockErrUnknown, found.UID, found.UIDUnknown, st.Uid)
				}
				return
			}
			if found.Remote != c.Remote {
				t.Errorf("remote %v, want %v", found.Remote, c.Remote)
			}
			if found.SockErr != uint32(errno) {
				t.Errorf("socket error %d, want %d (%v)", found.SockErr, uint32(errno), errno)
			}
		})
	}
}

// TestPeerUnresponsive makes a peer vanish with an nftables rule that
// drops its packets on loopback, then has the server send: the data goes
// unanswered, and the ebpf and netlink sources flag the connection.
func TestPeerUnresponsive(t *testing.T) {
	leaktest.RequireRoot(t)
	nft, err := exec.LookPath("nft")
	if err != nil {
		leaktest.Missing(t, "needs nft(8)")
	}
	ln := leaktest.Listen(t, "tcp4")
	c := leaktest.Accepted(t, ln, 1)[0]
	table := fmt.Sprintf("closewait_test_%d", os.Getpid())
	peer := strconv.Itoa(int(c.Remote.Port()))
	script := fmt.Sprintf(`add table inet %[1]s
add chain inet %[1]s out { type filter hook output priority 0; }
add rule inet %[1]s out oifname "lo" tcp sport %[2]s drop
add rule inet %[1]s out oifname "lo" tcp dport %[2]s drop
`, table, peer)
	cmd := exec.Command(nft, "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		leaktest.Missing(t, fmt.Sprintf("nft: %v: %s", err, out))
	}
	t.Cleanup(func() { exec.Command(nft, "delete", "table", "inet", table).Run() })
	testPeerUnresponsive(t, ln, c, nil)
}

// TestPeerUnresponsiveLoopbackDown is TestPeerUnresponsive with the peer
// silenced another way, which needs no nft (the test kernels' guests have
// none): the connection lives in a namespace of the test's own, whose
// loopback then goes down.
func TestPeerUnresponsiveLoopbackDown(t *testing.T) {
	name := fmt.Sprintf("cwtest-dead-%d", os.Getpid())
	leaktest.NetNS(t, name)
	var ln *net.TCPListener
	var c *leaktest.Conn
	leaktest.InNetNS(t, name, func() {
		ln = leaktest.ListenOn(t, "tcp4", "127.0.0.1:0")
		c = leaktest.Accepted(t, ln, 1)[0]
		if err := leaktest.LoopbackDown(); err != nil {
			t.Fatal(err)
		}
	})
	testPeerUnresponsive(t, ln, c, []string{name})
}

// testPeerUnresponsive has the server end of c send to its silenced peer
// and checks that the sources in netns flag it.
func testPeerUnresponsive(t *testing.T, ln *net.TCPListener, c *leaktest.Conn, netns []string) {
	t.Helper()
	if _, err := c.File.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	fd := int(c.File.Fd())
	deadline := time.Now().Add(10 * time.Second)
	for {
		info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
		if err != nil {
			t.Fatal(err)
		}
		// A send dropped in the output hook, or on a loopback that is down,
		// fails locally: the kernel may count window probes (tcpi_probes)
		// rather than retransmissions.
		if info.Retransmits > 0 || info.Probes > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the data was never retransmitted or probed: %+v", info)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, src := range []string{SourceEBPF, SourceNetlink} {
		t.Run(src, func(t *testing.T) {
			if src == SourceEBPF {
				requireEBPF(t)
			}
			opts := Options{Source: src, NetNS: netns, Filter: Filter{SPorts: []uint16{port(ln.Addr())}}}
			a, err := CollectKeepalive(context.Background(), opts, KeepaliveFilter{})
			if err != nil {
				t.Fatal(err)
			}
			if len(a.Audited) != 1 {
				t.Fatalf("%d sockets, want 1", len(a.Audited))
			}
			s := a.Audited[0]
			if !s.Unresponsive || !slices.Contains(s.Causes, CausePeerUnresponsive) {
				t.Errorf("not flagged: unanswered %d, causes %v", s.Unanswered, s.Causes)
			}
			if len(a.Processes) != 1 || a.Processes[0].Unresponsive != 1 {
				t.Errorf("summary %+v", a.Processes)
			}
		})
	}
}

var ssLast = regexp.MustCompile(`\blast(rcv|ack):(\d+)`)

// ssIdle runs ss -tniH and returns the idle time (the lesser of lastrcv
// and lastack) of each established socket whose local port is lport, by
// remote address.
func ssIdle(t *testing.T, ssPath string, lport uint16) map[string]time.Duration {
	t.Helper()
	out, err := exec.Command(ssPath, "-tniH", "state", "established", "sport", "=", ":"+strconv.Itoa(int(lport))).Output()
	if err != nil {
		t.Fatalf("ss: %v", err)
	}
	idle := map[string]time.Duration{}
	remote := ""
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); !strings.HasPrefix(line, "\t") && len(f) >= 4 {
			remote = f[3]
			continue
		}
		for _, m := range ssLast.FindAllStringSubmatch(line, -1) {
			ms, _ := strconv.Atoi(m[2])
			d := time.Duration(ms) * time.Millisecond
			if v, ok := idle[remote]; !ok || d < v {
				idle[remote] = d
			}
		}
	}
	return idle
}

// TestIdleOracleSS brackets each source's idle time between two ss -tni
// readings, one taken before the collection and one after: the sockets
// stay quiet, so no value may fall outside, whatever the time between.
func TestIdleOracleSS(t *testing.T) {
	ssPath, err := exec.LookPath("ss")
	if err != nil {
		leaktest.Missing(t, "needs ss(8) from iproute2")
	}
	_, ln, conns, _ := keepaliveSockets(t, "tcp4")
	lport := port(ln.Addr())
	for _, src := range []string{SourceEBPF, SourceNetlink} {
		t.Run(src, func(t *testing.T) {
			if src == SourceEBPF {
				requireEBPF(t)
			}
			before := ssIdle(t, ssPath, lport)
			snap := collect(t, Options{Source: src, States: StatesKeepalive, Filter: Filter{SPorts: []uint16{lport}}})
			after := ssIdle(t, ssPath, lport)
			if len(snap.Sockets) != len(conns) {
				t.Fatalf("%d sockets, want %d", len(snap.Sockets), len(conns))
			}
			for _, s := range snap.Sockets {
				lo, ok1 := before[s.Remote.String()]
				hi, ok2 := after[s.Remote.String()]
				if !ok1 || !ok2 {
					t.Fatalf("ss does not show %v", s.Remote)
				}
				// ss and the sources count in the same jiffies; one jiffy of
				// rounding either way (at most 10 ms at HZ=100).
				const jiffy = 10 * time.Millisecond
				if !s.IdleKnown || s.Idle+jiffy < lo || s.Idle > hi+jiffy {
					t.Errorf("%v: idle %v (known %v), ss says %v before and %v after", s.Remote, s.Idle, s.IdleKnown, lo, hi)
				}
			}
		})
	}
}
