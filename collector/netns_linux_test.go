package collector

import (
	"context"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/closewait/closewait/internal/leaktest"
)

// everyNetNS has collect list every namespace, as Options' default does.
var everyNetNS = []string{}

// Fixed ports in the test's namespaces: below the ephemeral range, so no
// socket of the host's tests has them.
const (
	nsServerPort = 4242
	nsClientPort = 4243
	nsQueuePort  = 4244
)

// nsLeak makes, in the namespace name, a listener on 127.0.0.1:4242 with
// n CLOSE_WAIT connections from 127.0.0.1:4243 onwards, and a listener
// on :4244 with one connection left in its accept queue, all held by a
// child process started there. It returns the child's pid.
func nsLeak(t *testing.T, name string, n int) int {
	t.Helper()
	var pid int
	leaktest.InNetNS(t, name, func() {
		ln := leaktest.ListenOn(t, "tcp4", fmt.Sprintf("127.0.0.1:%d", nsServerPort))
		var conns []*leaktest.Conn
		for i := range n {
			d := net.Dialer{KeepAlive: -1, LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: nsClientPort + 10*i}}
			c, err := d.Dial("tcp4", ln.Addr().String())
			if err != nil {
				t.Fatalf("dial in %s: %v", name, err)
			}
			s, err := ln.AcceptTCP()
			if err != nil {
				t.Fatal(err)
			}
			f, err := s.File()
			s.Close()
			if err != nil {
				t.Fatal(err)
			}
			c.Close() // the FIN
			t.Cleanup(func() { f.Close() })
			conns = append(conns, &leaktest.Conn{Local: netip.MustParseAddrPort(ln.Addr().String()), File: f})
		}
		qln := leaktest.ListenOn(t, "tcp4", fmt.Sprintf("127.0.0.1:%d", nsQueuePort))
		leaktest.Queue(t, qln, 1)
		files := leaktest.Files(conns)
		for _, l := range []*net.TCPListener{ln, qln} {
			lf, err := l.File()
			if err != nil {
				t.Fatal(err)
			}
			files = append(files, lf)
		}
		pid = leaktest.Hold(t, files).PID // started here: in the namespace
		for _, f := range files {
			f.Close()
		}
		qln.Close()
		ln.Close()
	})
	return pid
}

// TestNetNSListing lists sockets in namespaces the test makes, next to the
// host's own: by default every namespace, each socket with its namespace,
// name, owner and causes; the same addresses in two namespaces are two
// sockets; --netns narrows.
func TestNetNSListing(t *testing.T) {
	a, b := fmt.Sprintf("cwtest-a-%d", os.Getpid()), fmt.Sprintf("cwtest-b-%d", os.Getpid())
	leaktest.NetNS(t, a)
	leaktest.NetNS(t, b)
	inoA, inoB := leaktest.NetNSInode(t, a), leaktest.NetNSInode(t, b)
	pidA, pidB := nsLeak(t, a, 2), nsLeak(t, b, 1)

	hostLn := leaktest.Listen(t, "tcp4")
	host := leaktest.CloseWait(t, hostLn, 1)
	own := netnsInode("/proc")
	ports := []uint16{nsServerPort, nsQueuePort, port(hostLn.Addr())}

	for _, src := range append([]string{SourceEBPF}, sources...) {
		t.Run(src, func(t *testing.T) {
			snap := waitSockets(t, Options{Source: src, NetNS: everyNetNS, Filter: Filter{SPorts: ports}}, 2+1+2+1)
			got := map[uint64][]Socket{}
			for _, s := range snap.Sockets {
				got[s.NetNS] = append(got[s.NetNS], s)
			}
			if n := len(got[inoA]); n != 3 {
				t.Errorf("namespace %s: %d sockets, want 2 held and 1 queued: %+v", a, n, got[inoA])
			}
			if n := len(got[inoB]); n != 2 {
				t.Errorf("namespace %s: %d sockets, want 1 held and 1 queued: %+v", b, n, got[inoB])
			}
			if n := len(got[own]); n != len(host) {
				t.Errorf("own namespace: %d sockets, want %d", n, len(host))
			}
			if snap.NetNSNames[inoA] != a || snap.NetNSNames[inoB] != b {
				t.Errorf("names %v, want %d=%s %d=%s", snap.NetNSNames, inoA, a, inoB, b)
			}
			for ino, pid := range map[uint64]int{inoA: pidA, inoB: pidB} {
				for _, s := range got[ino] {
					switch s.Local.Port() {
					case nsServerPort:
						if len(s.Owners) != 1 || s.Owners[0].PID != pid {
							t.Errorf("%v in %d: owners %+v, want pid %d", s.Local, ino, s.Owners, pid)
						}
						if !slices.Contains(s.Causes, CauseFINNotRead) {
							t.Errorf("%v in %d: causes %v, want fin-not-read", s.Local, ino, s.Causes)
						}
						if !s.Inbound {
							t.Errorf("%v in %d: not inbound: its namespace's listener was not matched", s.Local, ino)
						}
					case nsQueuePort:
						if !slices.Contains(s.Causes, CauseNotAccepted) {
							t.Errorf("queued %v in %d: causes %v, want not-accepted", s.Local, ino, s.Causes)
						}
						if len(s.Listener) != 1 || s.Listener[0].PID != pid {
							t.Errorf("queued %v in %d: listener holders %+v, want pid %d", s.Local, ino, s.Listener, pid)
						}
					default:
						t.Errorf("unexpected socket %v in %d", s.Local, ino)
					}
				}
			}
			// 127.0.0.1:4242 <- 127.0.0.1:4243 in both: two sockets.
			same := 0
			for _, s := range snap.Sockets {
				if s.Local.Port() == nsServerPort && s.Remote.Port() == nsClientPort {
					same++
				}
			}
			if same != 2 {
				t.Errorf("the same 4-tuple in two namespaces: %d sockets, want 2", same)
			}

			only := collect(t, Options{Source: src, NetNS: []string{a}, Filter: Filter{SPorts: ports}})
			for _, s := range only.Sockets {
				if s.NetNS != inoA {
					t.Errorf("--netns %s: socket %v of namespace %d", a, s.Local, s.NetNS)
				}
			}
			if len(only.Sockets) != 3 {
				t.Errorf("--netns %s: %d sockets, want 3", a, len(only.Sockets))
			}
		})
	}
}

// TestNetNSGone lists namespaces found and then deleted, as a pod that
// goes away mid-listing: skipped, without an error or a warning.
func TestNetNSGone(t *testing.T) {
	name := fmt.Sprintf("cwtest-gone-%d", os.Getpid())
	leaktest.NetNS(t, name)
	all, err := findNetNamespaces("/proc", 2)
	if err != nil {
		t.Fatal(err)
	}
	nss, err := selectNetNamespaces(all, []string{"host", name})
	if err != nil {
		t.Fatal(err)
	}
	leaktest.DeleteNetNS(t, name)
	// A process that exited after its namespace was found.
	nss = append(nss, netNamespace{inode: 1, path: "/proc/999999999/ns/net"})
	for _, src := range []source{netlinkSource{}, procfsSource{}, ebpfSource{}} {
		q := Options{}.query(false)
		q.netns = nss
		res, err := src.dump(context.Background(), q)
		if err != nil {
			t.Errorf("%s: %v", src.name(), err)
		}
		for _, w := range res.warnings {
			if strings.Contains(w, "namespace") {
				t.Errorf("%s: warning %q", src.name(), w)
			}
		}
	}
}

// TestNetNSKeptBySocket lists a CLOSE_WAIT socket this process made in a
// namespace it then deleted, which the socket alone keeps: no process
// link or mount finds it. The ebpf source lists it by default, as
// iter/task_file sees every fd; the others, which enter a namespace to read
// it, do not (README, Network namespaces).
func TestNetNSKeptBySocket(t *testing.T) {
	requireEBPF(t)
	name := fmt.Sprintf("cwtest-kept-%d", os.Getpid())
	leaktest.NetNS(t, name)
	ino := leaktest.NetNSInode(t, name)
	var held []*leaktest.Conn
	leaktest.InNetNS(t, name, func() {
		ln := leaktest.Listen(t, "tcp4")
		held = leaktest.CloseWait(t, ln, 1)
		ln.Close()
	})
	leaktest.DeleteNetNS(t, name)
	mine := func(snap *Snapshot) []Socket {
		return slices.DeleteFunc(slices.Clone(snap.Sockets), func(s Socket) bool { return s.NetNS != ino })
	}
	opts := Options{NetNS: everyNetNS, Filter: Filter{SPorts: []uint16{held[0].Local.Port()}}}
	opts.Source = SourceEBPF
	got := mine(waitFor(t, opts, func(snap *Snapshot) bool { return len(mine(snap)) > 0 }))
	if len(got) != 1 || got[0].Remote != held[0].Remote || len(got[0].Owners) != 1 || got[0].Owners[0].PID != os.Getpid() {
		t.Errorf("ebpf: sockets of namespace %d: %+v, want the one from %v held by pid %d", ino, got, held[0].Remote, os.Getpid())
	}
	for _, src := range sources {
		opts.Source = src
		if got := mine(collect(t, opts)); len(got) != 0 {
			t.Errorf("%s: lists %d sockets of a namespace it cannot enter: README says it does not", src, len(got))
		}
	}
}

// TestTCPInUse reads a new namespace's counters: nothing to walk, then a
// family to walk once it has a socket of it.
func TestTCPInUse(t *testing.T) {
	name := fmt.Sprintf("cwtest-inuse-%d", os.Getpid())
	leaktest.NetNS(t, name)
	leaktest.InNetNS(t, name, func() {
		if v4, v6 := tcpInUse("/proc", StatesCloseWait); v4 || v6 {
			t.Errorf("empty namespace: walk IPv4 %v, IPv6 %v; want neither", v4, v6)
		}
		leaktest.ListenOn(t, "tcp4", "127.0.0.1:0")
		if v4, v6 := tcpInUse("/proc", StatesCloseWait); !v4 || v6 {
			t.Errorf("an IPv4 listener: walk IPv4 %v, IPv6 %v; want IPv4 only", v4, v6)
		}
		leaktest.ListenOn(t, "tcp6", "[::1]:0")
		if v4, v6 := tcpInUse("/proc", StatesCloseWait); !v4 || !v6 {
			t.Errorf("and an IPv6 one: walk IPv4 %v, IPv6 %v; want both", v4, v6)
		}
	})
}

// TestNetNSClosed: a connection reset by its peer in another namespace,
// whose server end a process there still holds, is listed by --state
// closed through every source, in its namespace.
func TestNetNSClosed(t *testing.T) {
	name := fmt.Sprintf("cwtest-closed-%d", os.Getpid())
	leaktest.NetNS(t, name)
	ino := leaktest.NetNSInode(t, name)
	var pid int
	leaktest.InNetNS(t, name, func() {
		ln := leaktest.ListenOn(t, "tcp4", "127.0.0.1:0")
		c := leaktest.Accepted(t, ln, 1)[0]
		if err := c.Client().(*net.TCPConn).SetLinger(0); err != nil {
			t.Fatal(err)
		}
		c.Client().Close() // RST
		waitState(t, c.File, StateClose)
		pid = leaktest.Hold(t, leaktest.Files([]*leaktest.Conn{c})).PID
		leaktest.Release([]*leaktest.Conn{c})
	})
	for _, src := range append([]string{SourceEBPF}, sources...) {
		t.Run(src, func(t *testing.T) {
			snap := collect(t, Options{Source: src, NetNS: everyNetNS, States: setOf(StateClose), Filter: Filter{PIDs: []int{pid}}})
			if len(snap.Sockets) != 1 {
				t.Fatalf("%d closed sockets of pid %d, want 1: %+v (warnings %q)", len(snap.Sockets), pid, snap.Sockets, snap.Warnings)
			}
			s := snap.Sockets[0]
			if s.NetNS != ino || len(s.Owners) != 1 || s.Owners[0].PID != pid || s.Owners[0].FD != 3 {
				t.Errorf("netns %d owners %+v, want netns %d, pid %d fd 3", s.NetNS, s.Owners, ino, pid)
			}
		})
	}
	// serve's collection of that namespace alone: the netlink dump that
	// confirms the closed socket, made in the namespace, counts its
	// other sockets too (the listener), exactly.
	t.Run("counted", func(t *testing.T) {
		opts := Options{Source: SourceNetlink, NetNS: []string{name}, States: StatesCloseWait.With(StateClose), Filter: Filter{PIDs: []int{pid}}}
		snap, counts, err := CollectCounted(context.Background(), opts)
		if err != nil {
			t.Fatal(err)
		}
		if len(snap.Sockets) != 1 || snap.Sockets[0].NetNS != ino || snap.Sockets[0].State != StateClose {
			t.Fatalf("listed %+v, want the closed socket in netns %d", snap.Sockets, ino)
		}
		want := newStateCounts()
		want[StateListen], want[StateClose] = 1, 1
		if !maps.Equal(counts, want) {
			t.Errorf("counts %v, want %v", counts, want)
		}
	})
}

// TestNetNSEvents: the tracer's events come from every namespace by
// default, with their namespace, and --netns narrows them.
func TestNetNSEvents(t *testing.T) {
	requireEBPF(t)
	a, b := fmt.Sprintf("cwtest-eva-%d", os.Getpid()), fmt.Sprintf("cwtest-evb-%d", os.Getpid())
	leaktest.NetNS(t, a)
	leaktest.NetNS(t, b)
	inoA := leaktest.NetNSInode(t, a)
	for _, tc := range []struct {
		netns []string
		want  map[uint64]bool // namespaces whose entry is seen
	}{
		{nil, map[uint64]bool{inoA: true, leaktest.NetNSInode(t, b): true}},
		{[]string{a}, map[uint64]bool{inoA: true}},
	} {
		es, err := OpenEvents(EventOptions{Hook: "tp_btf", PinDir: t.TempDir(), NetNS: tc.netns, Filter: Filter{SPorts: []uint16{nsServerPort}}})
		if err != nil {
			t.Fatalf("%+v", err)
		}
		for _, name := range []string{a, b} {
			leaktest.InNetNS(t, name, func() {
				ln := leaktest.ListenOn(t, "tcp4", fmt.Sprintf("127.0.0.1:%d", nsServerPort))
				leaktest.CloseWait(t, ln, 1)
				ln.Close()
			})
		}
		seen := map[uint64]bool{}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		for ctx.Err() == nil && len(seen) < 2 {
			batch, err := es.Next(ctx)
			if err != nil {
				break
			}
			for _, ev := range batch {
				if ev.Kind() == "enter" {
					seen[ev.Socket.NetNS] = true
				}
			}
		}
		cancel()
		es.Close()
		if len(seen) != len(tc.want) || !seen[inoA] {
			t.Errorf("--netns %v: entries seen in %v, want %v", tc.netns, seen, tc.want)
		}
		for ino := range tc.want {
			if !seen[ino] {
				t.Errorf("--netns %v: no entry from namespace %d", tc.netns, ino)
			}
		}
	}
}
