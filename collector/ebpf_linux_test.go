package collector

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/closewait/closewait/ebpf"
	"github.com/closewait/closewait/internal/leaktest"
	"golang.org/x/sys/unix"
)

// requireEBPF skips the test (fails it in CI) when the ebpf source cannot
// load here, with the reason.
func requireEBPF(t *testing.T) {
	t.Helper()
	leaktest.RequireRoot(t)
	it, err := ebpf.LoadIterators(ebpf.IterOptions{PinDir: t.TempDir()})
	if err != nil {
		leaktest.Missing(t, fmt.Sprintf("ebpf source: %+v", err))
	}
	it.Close()
}

// ebpfPinDir returns a tracer pin directory of this test's own, removed
// when the test ends, so that a real install is never touched.
func ebpfPinDir(t *testing.T) string {
	t.Helper()
	name := strings.NewReplacer("/", "-", " ", "-").Replace(t.Name())
	dir := filepath.Join("/sys/fs/bpf", fmt.Sprintf("closewait-test-%d-%s", os.Getpid(), name))
	t.Cleanup(func() { ebpf.RemoveTracer(dir) })
	return dir
}

// comparableSocket is what both sources must agree on for one socket.
type comparableSocket struct {
	Family         Family
	State          State
	Local, Remote  netip.AddrPort
	RecvQ, SendQ   uint32
	Inode, Cookie  uint64
	UID            uint32
	NetNS          uint64
	Timer          string
	Inbound        bool
	Owners, Causes string
}

func comparableOf(s *Socket) comparableSocket {
	owners := slices.Clone(s.Owners)
	slices.SortFunc(owners, func(a, b Owner) int {
		if a.PID != b.PID {
			return a.PID - b.PID
		}
		return a.FD - b.FD
	})
	return comparableSocket{
		Family: s.Family, State: s.State, Local: s.Local, Remote: s.Remote,
		RecvQ: s.RecvQ, SendQ: s.SendQ, Inode: s.Inode, Cookie: s.Cookie, UID: s.UID,
		NetNS: s.NetNS, Timer: s.Timer, Inbound: s.Inbound,
		Owners: fmt.Sprint(owners), Causes: fmt.Sprint(s.Causes),
	}
}

// TestEBPFMatchesNetlink holds sockets in several ways and checks that the
// ebpf and netlink sources report the same sockets with the same owners.
func TestEBPFMatchesNetlink(t *testing.T) {
	requireEBPF(t)
	var ports []uint16
	var want int
	for _, network := range []string{"tcp4", "tcp6"} {
		ln := leaktest.Listen(t, network)
		ports = append(ports, port(ln.Addr()))

		// Held by a child only.
		a := leaktest.CloseWait(t, ln, 3)
		leaktest.Hold(t, leaktest.Files(a))
		leaktest.Release(a)
		// Inherited: held by two children and by this process.
		b := leaktest.CloseWait(t, ln, 2)
		leaktest.Hold(t, leaktest.Files(b))
		leaktest.Hold(t, leaktest.Files(b))
		// Still ESTABLISHED, for the wider state set.
		leaktest.Accepted(t, ln, 2)
		// Never accepted: CLOSE_WAIT in the accept queue, no fd.
		c, err := net.Dial(ln.Addr().Network(), ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
		// In flight in SCM_RIGHTS: a file, but no fd in any task.
		inFlight(t, leaktest.CloseWait(t, ln, 1)[0])
		want += 3 + 2 + 1 + 1
	}
	filter := Filter{Ports: ports}
	opts := Options{Source: SourceEBPF, Filter: filter, TracerPinDir: t.TempDir()}
	waitSockets(t, opts, want) // the queued sockets get their FIN a moment later

	for _, states := range []StateSet{StatesCloseWait, StatesCloseWait.With(StateEstablished).With(StateListen), StatesAll} {
		t.Run(states.String(), func(t *testing.T) {
			opts.States = states
			opts.Source = SourceEBPF
			got := collect(t, opts)
			opts.Source = SourceNetlink
			wantSnap := collect(t, opts)
			index := func(snap *Snapshot) map[[2]netip.AddrPort]comparableSocket {
				m := map[[2]netip.AddrPort]comparableSocket{}
				for i := range snap.Sockets {
					s := &snap.Sockets[i]
					m[[2]netip.AddrPort{s.Local, s.Remote}] = comparableOf(s)
				}
				return m
			}
			g, w := index(got), index(wantSnap)
			if states == StatesCloseWait && len(g) != want {
				t.Errorf("ebpf: %d sockets, want %d", len(g), want)
			}
			for k, ws := range w {
				gs, ok := g[k]
				if ok && gs.Cookie == 0 {
					gs.Cookie = ws.Cookie // none made yet when iter/tcp did not walk: see needWalk
				}
				if !ok {
					t.Errorf("ebpf misses %+v", ws)
				} else if gs != ws {
					t.Errorf("socket %v:\nebpf    %+v\nnetlink %+v", k, gs, ws)
				}
			}
			for k, gs := range g {
				if _, ok := w[k]; !ok {
					t.Errorf("ebpf has extra %+v", gs)
				}
			}
			for i := range got.Sockets {
				s := &got.Sockets[i]
				if s.State == StateCloseWait && s.Keepalive == nil {
					t.Errorf("socket %v: no keepalive settings", s.Local)
				}
			}
		})
	}
}

// inFlight sends c's socket over a unix socket pair that nobody reads and
// closes this process's fd: the socket then has a file (and an inode) but
// no fd, as with io_uring fixed files.
func inFlight(t *testing.T, c *leaktest.Conn) {
	t.Helper()
	sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(sp[0]); unix.Close(sp[1]) })
	if err := unix.Sendmsg(sp[0], []byte{0}, unix.UnixRights(int(c.File.Fd())), nil, 0); err != nil {
		t.Fatal(err)
	}
	c.File.Close()
	c.File = nil
}

// TestEBPFExactAges installs the tracer, sends FINs at known times and
// checks that the ages are exact to within 50 ms; sockets that entered
// CLOSE_WAIT before the install, and every socket without the tracer,
// keep bounded ages.
// TestExactAges installs the tracer and checks that both the ebpf source
// (iterators) and the netlink source (sock_diag's socket storage) report
// exact ages from its stamps, also for a socket whose tcp_info bounds
// disagree: the peer half-closes, then the server sends a byte that the
// peer ACKs, so last_ack_recv restarts while the FIN's time does not.
func TestExactAges(t *testing.T) {
	requireEBPF(t)
	ln := leaktest.Listen(t, "tcp4")
	conns := leaktest.Accepted(t, ln, 4)
	filter := Filter{SPorts: []uint16{port(ln.Addr())}}
	time.Sleep(50 * time.Millisecond) // so the last data and the FIN differ

	early := conns[0]
	leaktest.CloseClients(t, conns[:1]) // before the tracer: bounds only

	dir := ebpfPinDir(t)
	if _, err := ebpf.InstallTracer(ebpf.TracerOptions{PinDir: dir}); err != nil {
		t.Fatalf("installing tracer: %+v", err)
	}
	fin := map[netip.AddrPort]time.Time{}
	for i, c := range conns[1:3] {
		if i > 0 {
			time.Sleep(150 * time.Millisecond)
		}
		fin[c.Remote] = time.Now()
		leaktest.CloseClients(t, []*leaktest.Conn{c})
	}
	// The half-closed one: FIN now, an ACK from the peer 200 ms later.
	acked := conns[3]
	fin[acked.Remote] = time.Now()
	if err := acked.Client().(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if _, err := acked.File.Write([]byte{1}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // the peer's ACK

	for _, src := range []string{SourceEBPF, SourceNetlink} {
		t.Run(src, func(t *testing.T) {
			// The kernel computes ages while Collect runs: the truth lies
			// between the start and the end of the call.
			start := time.Now()
			snap := collect(t, Options{Source: src, Filter: filter, TracerPinDir: dir})
			end := time.Now()
			if len(snap.Sockets) != len(conns) {
				t.Fatalf("%d sockets, want %d", len(snap.Sockets), len(conns))
			}
			for _, s := range snap.Sockets {
				if s.Remote == early.Remote {
					if !s.AgeKnown || s.AgeMax < s.Age {
						t.Errorf("socket closed before the install: age %v max %v known %v, want bounds", s.Age, s.AgeMax, s.AgeKnown)
					}
					continue
				}
				lo, hi := start.Sub(fin[s.Remote]), end.Sub(fin[s.Remote])
				if !s.AgeExact || !s.AgeKnown {
					t.Errorf("socket %v: age %v not exact", s.Remote, s.Age)
				}
				if s.Age < lo-50*time.Millisecond || s.Age > hi+50*time.Millisecond {
					t.Errorf("socket %v: age %v, truth between %v and %v", s.Remote, s.Age, lo, hi)
				}
			}
		})
	}

	// Without the tracer the half-closed socket's bounds disagree: a lower
	// bound from the peer's ACK, an upper one from the last data.
	for _, src := range []string{SourceEBPF, SourceNetlink} {
		t.Run(src+" without tracer", func(t *testing.T) {
			snap := collect(t, Options{Source: src, Filter: filter, TracerPinDir: t.TempDir()})
			for _, s := range snap.Sockets {
				if !s.AgeKnown || s.AgeMax < s.Age {
					t.Errorf("socket %v: age %v max %v known %v; want bounds", s.Remote, s.Age, s.AgeMax, s.AgeKnown)
				}
				// The peer's ACK came at least 200 ms after the FIN.
				if s.Remote == acked.Remote && (s.AgeExact || s.AgeMax-s.Age < 150*time.Millisecond) {
					t.Errorf("half-closed socket: age %v max %v exact %v; want bounds 200 ms apart", s.Age, s.AgeMax, s.AgeExact)
				}
			}
		})
	}
}

// TestListenersOnlyWalk: in a namespace where the only TCP sockets no fd
// holds are listeners (here one in flight in SCM_RIGHTS), the ebpf source
// walks the listening hash alone; a CLOSE_WAIT socket left in an accept
// queue there makes it walk the whole hash, and list that socket too.
func TestListenersOnlyWalk(t *testing.T) {
	requireEBPF(t)
	name := fmt.Sprintf("cwtest-lonly-%d", os.Getpid())
	leaktest.NetNS(t, name)
	var ln *net.TCPListener
	leaktest.InNetNS(t, name, func() {
		var lc net.ListenConfig
		lc.SetMultipathTCP(false) // one TCP socket, as a kernel's listener
		l, err := lc.Listen(context.Background(), "tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		f, err := l.(*net.TCPListener).File()
		l.Close()
		if err != nil {
			t.Fatal(err)
		}
		sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Close(sp[0]); unix.Close(sp[1]) })
		if err := unix.Sendmsg(sp[0], []byte{0}, unix.UnixRights(int(f.Fd())), nil, 0); err != nil {
			t.Fatal(err)
		}
		f.Close()
		ln = leaktest.Listen(t, "tcp4")
		leaktest.CloseWait(t, ln, 2)
	})
	inode := leaktest.NetNSInode(t, name)
	all, err := findNetNamespaces("/proc", 2)
	if err != nil {
		t.Fatal(err)
	}
	nss, err := selectNetNamespaces(all, []string{name})
	if err != nil {
		t.Fatal(err)
	}
	list := func() (closeWait int, walked bool) {
		t.Helper()
		q := Options{TracerPinDir: t.TempDir()}.query(false)
		q.netns = nss
		res, err := ebpfSource{}.dump(context.Background(), q)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range res.sockets {
			if s.NetNS == inode && s.State == StateCloseWait {
				closeWait++
			}
		}
		return closeWait, slices.Contains(res.fullWalks, inode)
	}
	if n, walked := list(); n != 2 || walked {
		t.Errorf("listener in flight: %d CLOSE_WAIT sockets, whole hash walked %v; want 2, not walked", n, walked)
	}
	leaktest.InNetNS(t, name, func() {
		c, err := net.Dial("tcp4", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
	})
	time.Sleep(100 * time.Millisecond) // the FIN reaches the queued socket
	if n, walked := list(); n != 3 || !walked {
		t.Errorf("and a socket in the accept queue: %d CLOSE_WAIT sockets, whole hash walked %v; want 3, walked", n, walked)
	}
}

// TestAutoSmallHost: where no iterators are pinned and the host has fewer
// open files than smallHost, auto takes netlink and says why, and lists
// the same sockets with the same owners; it keeps ebpf on a larger host,
// with pinned iterators, for keepalive's timers and for closed sockets.
func TestAutoSmallHost(t *testing.T) {
	requireEBPF(t)
	ln := leaktest.Listen(t, "tcp4")
	conns := leaktest.CloseWait(t, ln, 3)
	filter := Filter{SPorts: []uint16{port(ln.Addr())}}
	unpinned := t.TempDir()
	defer func(n int) { smallHost = n }(smallHost)
	smallHost = 1 << 30

	auto := collect(t, Options{Filter: filter, TracerPinDir: unpinned})
	if auto.Source != SourceNetlink || !strings.Contains(auto.Choice, "open files") {
		t.Fatalf("small host: source %s, choice %q; want netlink and why", auto.Source, auto.Choice)
	}
	want := collect(t, Options{Source: SourceEBPF, Filter: filter, TracerPinDir: unpinned})
	if len(auto.Sockets) != len(conns) || len(want.Sockets) != len(conns) {
		t.Fatalf("auto listed %d sockets, ebpf %d; want %d", len(auto.Sockets), len(want.Sockets), len(conns))
	}
	for i := range want.Sockets {
		j := slices.IndexFunc(auto.Sockets, func(s Socket) bool { return s.Inode == want.Sockets[i].Inode })
		if j < 0 || !slices.Equal(auto.Sockets[j].Holders(), want.Sockets[i].Holders()) {
			t.Errorf("socket %d: auto's holders differ from ebpf's (%v)", want.Sockets[i].Inode, want.Sockets[i].Holders())
		}
	}

	ka, err := CollectKeepalive(context.Background(), Options{Filter: filter, TracerPinDir: unpinned, NetNS: []string{strconv.FormatUint(netnsInode("/proc"), 10)}}, KeepaliveFilter{})
	if err != nil {
		t.Fatal(err)
	}
	closed := collect(t, Options{Filter: filter, TracerPinDir: unpinned, States: StatesCloseWait.With(StateClose)})
	dir := ebpfPinDir(t)
	if _, err := ebpf.InstallTracer(ebpf.TracerOptions{PinDir: dir}); err != nil {
		t.Fatalf("installing tracer: %+v", err)
	}
	pinned := collect(t, Options{Filter: filter, TracerPinDir: dir})
	smallHost = 0 // file-nr is a per-CPU counter's rough read: 0 in a quiet guest
	large := collect(t, Options{Filter: filter, TracerPinDir: unpinned})
	for name, s := range map[string]*Snapshot{"keepalive": ka.Snapshot, "closed": closed, "pinned": pinned, "large host": large} {
		if s.Source != SourceEBPF || s.Choice != "" {
			t.Errorf("%s: source %s, choice %q; want ebpf", name, s.Source, s.Choice)
		}
	}
}
