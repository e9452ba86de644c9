package collector

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/closewait/closewait/internal/leaktest"
	"golang.org/x/sys/unix"
)

// Other packages' tests create CLOSE_WAIT sockets on this machine at the
// same time, so every assertion here looks only at the ports it made.

// collect runs Collect and skips (or fails in CI) when the source is
// missing from this kernel. Unless opts name namespaces (everyNetNS for
// all), it lists this process's alone: other packages' tests run at the
// same time, some in namespaces of their own.
func collect(t *testing.T, opts Options) *Snapshot {
	t.Helper()
	if opts.NetNS == nil {
		opts.NetNS = []string{strconv.FormatUint(netnsInode("/proc"), 10)}
	}
	snap, err := Collect(context.Background(), opts)
	if errors.Is(err, ErrUnsupported) {
		leaktest.Missing(t, fmt.Sprintf("%s source: %v", opts.Source, err))
	}
	if err != nil {
		t.Fatalf("Collect(%s): %v", opts.Source, err)
	}
	if opts.Source != "" && snap.Source != opts.Source {
		t.Fatalf("source %q, want %q", snap.Source, opts.Source)
	}
	return snap
}

// waitSockets collects until n sockets match opts, for states the kernel
// reaches on its own a moment after the test acts (an accept-queue FIN).
func waitSockets(t *testing.T, opts Options, n int) *Snapshot {
	t.Helper()
	return waitFor(t, opts, func(snap *Snapshot) bool { return len(snap.Sockets) >= n })
}

// waitOwned is waitSockets for n sockets that each have an owner: one
// still in its listener's accept queue has none yet.
func waitOwned(t *testing.T, opts Options, n int) *Snapshot {
	t.Helper()
	return waitFor(t, opts, func(snap *Snapshot) bool {
		return len(snap.Sockets) >= n && !slices.ContainsFunc(snap.Sockets, func(s Socket) bool { return len(s.Owners) == 0 })
	})
}

// waitFor collects until ok says the snapshot will do, for up to 5
// seconds, and returns the last.
func waitFor(t *testing.T, opts Options, ok func(*Snapshot) bool) *Snapshot {
	t.Helper()
	var snap *Snapshot
	retryFor(5*time.Second, func() bool {
		snap = collect(t, opts)
		return ok(snap)
	})
	return snap
}

// retryFor calls try until it returns true or d has passed.
func retryFor(d time.Duration, try func() bool) {
	for end := time.Now().Add(d); !try() && time.Now().Before(end); {
		time.Sleep(5 * time.Millisecond)
	}
}

func port(a net.Addr) uint16 { return a.(*net.TCPAddr).AddrPort().Port() }

func connFD(t *testing.T, c syscall.Conn) int {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var fd int
	if err := rc.Control(func(f uintptr) { fd = int(f) }); err != nil {
		t.Fatal(err)
	}
	return fd
}

var sources = []string{SourceNetlink, SourceProcfs}

// TestCauses builds each cause on loopback and checks what Collect says of
// it through every source, the ebpf one included: where it cannot load,
// its subtests skip with the reason, or fail in CI.
func TestCauses(t *testing.T) {
	self := os.Getpid()
	type situation struct {
		filter Filter
		want   Socket // Local, Remote, RecvQ, Inbound, Inode zero-ness, Owners, Causes
	}
	tests := []struct {
		name  string
		build func(t *testing.T) situation
		// causes by source, where sources know different things
		causes map[string][]Cause
	}{{
		name: "eof-not-closed",
		build: func(t *testing.T) situation {
			ln := leaktest.Listen(t, "tcp4")
			c := leaktest.CloseWait(t, ln, 1)[0]
			if n, err := c.File.Read(make([]byte, 16)); n != 0 || err != io.EOF {
				t.Fatalf("server read %d, %v; want EOF", n, err)
			}
			return situation{Filter{SPorts: []uint16{port(ln.Addr())}}, Socket{
				Local: c.Local, Remote: c.Remote, RecvQ: 0, Inbound: true,
				Owners: []Owner{{PID: self, Comm: "", FD: int(c.File.Fd())}},
				Causes: []Cause{CauseEOFNotClosed},
			}}
		},
	}, {
		name: "fin-not-read",
		build: func(t *testing.T) situation {
			ln := leaktest.Listen(t, "tcp6")
			c := leaktest.CloseWait(t, ln, 1)[0]
			return situation{Filter{SPorts: []uint16{port(ln.Addr())}}, Socket{
				Local: c.Local, Remote: c.Remote, RecvQ: 1, Inbound: true,
				Owners: []Owner{{PID: self, Comm: "", FD: int(c.File.Fd())}},
				Causes: []Cause{CauseFINNotRead},
			}}
		},
	}, {
		name: "unread-data",
		build: func(t *testing.T) situation {
			ln := leaktest.Listen(t, "tcp4")
			conns := leaktest.Accepted(t, ln, 1)
			if _, err := conns[0].Client().Write([]byte("hello")); err != nil {
				t.Fatal(err)
			}
			leaktest.CloseClients(t, conns)
			c := conns[0]
			return situation{Filter{SPorts: []uint16{port(ln.Addr())}}, Socket{
				Local: c.Local, Remote: c.Remote, RecvQ: 5 + 1, Inbound: true,
				Owners: []Owner{{PID: self, Comm: "", FD: int(c.File.Fd())}},
				Causes: []Cause{CauseUnreadData},
			}}
		},
	}, {
		name: "inherited",
		build: func(t *testing.T) situation {
			ln := leaktest.Listen(t, "tcp6")
			conns := leaktest.CloseWait(t, ln, 1)
			child := leaktest.Hold(t, leaktest.Files(conns))
			c := conns[0]
			return situation{Filter{SPorts: []uint16{port(ln.Addr())}}, Socket{
				Local: c.Local, Remote: c.Remote, RecvQ: 1, Inbound: true,
				Owners: []Owner{{PID: self, Comm: "", FD: int(c.File.Fd())}, {PID: child.PID, Comm: "sleep", FD: 3}},
				Causes: []Cause{CauseInherited, CauseFINNotRead},
			}}
		},
	}, {
		name: "not-accepted",
		build: func(t *testing.T) situation {
			// The listener is handed to a child that never accepts: the
			// stalled accept loop is the child's, and --pid finds it.
			ln := leaktest.Listen(t, "tcp4")
			f, err := ln.File()
			if err != nil {
				t.Fatal(err)
			}
			child := leaktest.Hold(t, []*os.File{f})
			f.Close()
			addr := ln.Addr().String()
			ln.Close()
			c, err := net.Dial("tcp4", addr)
			if err != nil {
				t.Fatal(err)
			}
			local, remote := c.RemoteAddr().(*net.TCPAddr).AddrPort(), c.LocalAddr().(*net.TCPAddr).AddrPort()
			c.Close() // the FIN reaches a socket nobody accepted
			return situation{Filter{SPorts: []uint16{local.Port()}, PIDs: []int{child.PID}}, Socket{
				Local: local, Remote: remote, RecvQ: 1, Inbound: true,
				Listener: []Owner{{PID: child.PID, Comm: "sleep", FD: 3}},
				Causes:   []Cause{CauseNotAccepted, CauseFINNotRead},
			}}
		},
	}, {
		name: "pooled-client",
		build: func(t *testing.T) situation {
			ln := leaktest.Listen(t, "tcp4")
			c, err := net.Dial("tcp4", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			srv, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			srv.Close() // the server hangs up on our idle pooled connection
			return situation{Filter{DPorts: []uint16{port(ln.Addr())}, PIDs: []int{self}}, Socket{
				Local:  c.LocalAddr().(*net.TCPAddr).AddrPort(),
				Remote: c.RemoteAddr().(*net.TCPAddr).AddrPort(), RecvQ: 1, Inbound: false,
				Owners: []Owner{{PID: self, FD: connFD(t, c.(*net.TCPConn))}},
				Causes: []Cause{CausePooledClient, CauseFINNotRead},
			}}
		},
	}, {
		// A graceful drain: the server closes its listener, keeps its
		// connections. Its port is outside the ephemeral range, so no
		// source takes it for a client.
		name: "drained server",
		build: func(t *testing.T) situation {
			ln := listenOutsideEphemeral(t)
			c := leaktest.CloseWait(t, ln, 1)[0]
			ln.Close()
			return situation{Filter{SPorts: []uint16{c.Local.Port()}}, Socket{
				Local: c.Local, Remote: c.Remote, RecvQ: 1,
				Owners: []Owner{{PID: self, Comm: "", FD: int(c.File.Fd())}},
				Causes: []Cause{CauseFINNotRead},
			}}
		},
	}, {
		// On an ephemeral port only the iterator can tell (a listener's
		// child); the other sources see no listener on an ephemeral port
		// and take the socket for a client's.
		name: "drained server, ephemeral port",
		build: func(t *testing.T) situation {
			ln := leaktest.Listen(t, "tcp4")
			c := leaktest.CloseWait(t, ln, 1)[0]
			ln.Close()
			return situation{Filter{SPorts: []uint16{c.Local.Port()}}, Socket{
				Local: c.Local, Remote: c.Remote, RecvQ: 1,
				Owners: []Owner{{PID: self, Comm: "", FD: int(c.File.Fd())}},
				Causes: []Cause{CauseFINNotRead},
			}}
		},
		causes: map[string][]Cause{
			SourceNetlink: {CausePooledClient, CauseFINNotRead},
			SourceProcfs:  {CausePooledClient, CauseFINNotRead},
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sit := tt.build(t)
			want := sit.want
			for _, src := range append([]string{SourceEBPF}, sources...) {
				t.Run(src, func(t *testing.T) {
					opts := Options{Source: src, Filter: sit.filter}
					if src == SourceEBPF {
						requireEBPF(t)
						opts.TracerPinDir = t.TempDir() // no tracer: ages from tcp_info
					}
					snap := waitSockets(t, opts, 1)
					if len(snap.Sockets) != 1 {
						t.Fatalf("got %d sockets, want 1: %+v", len(snap.Sockets), snap.Sockets)
					}
					s := snap.Sockets[0]
					if s.State != StateCloseWait || s.Local != want.Local || s.Remote != want.Remote {
						t.Errorf("socket %v %v -> %v, want CLOSE_WAIT %v -> %v", s.State, s.Local, s.Remote, want.Local, want.Remote)
					}
					if s.RecvQ != want.RecvQ || s.Inbound != want.Inbound {
						t.Errorf("recv-q %d inbound %v, want %d %v", s.RecvQ, s.Inbound, want.RecvQ, want.Inbound)
					}
					if (s.Inode == 0) != (len(want.Owners) == 0) {
						t.Errorf("inode %d with owners %v", s.Inode, want.Owners)
					}
					if !sameOwners(s.Owners, want.Owners) {
						t.Errorf("owners %v, want %v", s.Owners, want.Owners)
					}
					if !sameOwners(s.Listener, want.Listener) {
						t.Errorf("listener %v, want %v", s.Listener, want.Listener)
					}
					wantCauses := want.Causes
					if c, ok := tt.causes[src]; ok {
						wantCauses = c
					}
					if !slices.Equal(s.Causes, wantCauses) {
						t.Errorf("causes %v, want %v", s.Causes, wantCauses)
					}
					// The ebpf source reads a cookie only once something has made
					// one, which its listing may not: see needWalk.
					if src != SourceProcfs && (src != SourceEBPF && s.Cookie == 0 || !s.AgeKnown || s.NetNS == 0) {
						t.Errorf("%s socket without cookie, age or netns: %+v", src, s)
					}
					if src == SourceProcfs && (s.Cookie != 0 || s.AgeKnown) {
						t.Errorf("procfs socket with cookie or age: %+v", s)
					}
				})
			}
		})
	}
}

// listenOutsideEphemeral listens on 127.0.0.1 at a port below
// ip_local_port_range, as servers usually do.
func listenOutsideEphemeral(t *testing.T) *net.TCPListener {
	t.Helper()
	eph := readEphemeralPorts("/proc")
	if eph.lo < 2000 {
		t.Fatalf("ephemeral ports %+v leave no room below", eph)
	}
	for p := eph.lo - 1; p > eph.lo-1000; p-- {
		ln, err := net.Listen("tcp4", fmt.Sprintf("127.0.0.1:%d", p))
		if err == nil {
			t.Cleanup(func() { ln.Close() })
			return ln.(*net.TCPListener)
		}
	}
	t.Fatal("no free port below the ephemeral range")
	return nil
}

// sameOwners compares pids and fds, and comms where want names one (the
// test binary's own comm is whatever go test named it).
// Owners come in pid order, and a child's pid may be below its parent's
// once pids wrap.
func sameOwners(got, want []Owner) bool {
	want = slices.Clone(want)
	sortOwners(want)
	return slices.EqualFunc(got, want, func(g, w Owner) bool {
		return g.PID == w.PID && g.FD == w.FD && (w.Comm == "" || g.Comm == w.Comm)
	})
}

// TestAgeBounds checks the tcp_info ages against the FIN's known time: the
// FIN left after t0 and had arrived by t1.
func TestAgeBounds(t *testing.T) {
	const slack = 25 * time.Millisecond // tcp_info counts in jiffies
	ln := leaktest.Listen(t, "tcp4")
	conns := leaktest.Accepted(t, ln, 3)
	t0 := time.Now()
	leaktest.CloseClients(t, conns)
	t1 := time.Now()
	time.Sleep(100 * time.Millisecond)
	start := time.Now()
	snap := collect(t, Options{Source: SourceNetlink, Filter: Filter{SPorts: []uint16{port(ln.Addr())}}})
	since := time.Since(t0)
	if len(snap.Sockets) != len(conns) {
		t.Fatalf("got %d sockets, want %d", len(snap.Sockets), len(conns))
	}
	for _, s := range snap.Sockets {
		if !s.AgeKnown {
			t.Errorf("%v: age unknown", s.Local)
			continue
		}
		if s.Age > since+slack {
			t.Errorf("%v: age %v, but the FIN was sent %v before the collection ended", s.Remote, s.Age, since)
		}
		if min := start.Sub(t1); s.Age+slack < min {
			t.Errorf("%v: age %v, but the FIN had arrived %v before the collection began", s.Remote, s.Age, min)
		}
		if s.AgeMax != 0 && s.AgeMax < s.Age {
			t.Errorf("%v: upper bound %v below age %v", s.Remote, s.AgeMax, s.Age)
		}
		if s.AgeExact && s.AgeMax != s.Age {
			t.Errorf("%v: exact age %v with upper bound %v", s.Remote, s.Age, s.AgeMax)
		}
	}

	// --older-than uses the lower bound: a day-old filter keeps nothing.
	snap = collect(t, Options{Source: SourceNetlink, Filter: Filter{SPorts: []uint16{port(ln.Addr())}, OlderThan: 24 * time.Hour}})
	if len(snap.Sockets) != 0 {
		t.Errorf("older-than 24h kept %d sockets", len(snap.Sockets))
	}
}

// TestPIDFilterKeepsHolders: a pid filter chooses the sockets shown, but
// their owners and causes come from the whole host.
func TestPIDFilterKeepsHolders(t *testing.T) {
	ln := leaktest.Listen(t, "tcp4")
	conns := leaktest.CloseWait(t, ln, 4)
	child := leaktest.Hold(t, leaktest.Files(conns[:2])) // inherited: both hold these two
	for _, src := range append([]string{SourceEBPF}, sources...) {
		t.Run(src, func(t *testing.T) {
			if src == SourceEBPF {
				requireEBPF(t)
			}
			snap := collect(t, Options{Source: src, Filter: Filter{SPorts: []uint16{port(ln.Addr())}, PIDs: []int{child.PID}}})
			if len(snap.Sockets) != 2 {
				t.Fatalf("got %d sockets, want the child's 2", len(snap.Sockets))
			}
			for _, s := range snap.Sockets {
				pids := map[int]string{}
				for _, o := range s.Owners {
					pids[o.PID] = o.Comm
				}
				if _, self := pids[os.Getpid()]; len(s.Owners) != 2 || !self || pids[child.PID] != "sleep" ||
					!slices.Contains(s.Causes, CauseInherited) {
					t.Errorf("%v: owners %v, causes %v; want this process and the child, inherited", s.Remote, s.Owners, s.Causes)
				}
			}
		})
	}

	snap := collect(t, Options{Source: SourceNetlink, NoOwners: true, Filter: Filter{SPorts: []uint16{port(ln.Addr())}}})
	if len(snap.Sockets) != 4 {
		t.Fatalf("no owners: got %d sockets, want 4", len(snap.Sockets))
	}
	for _, s := range snap.Sockets {
		if len(s.Owners) != 0 {
			t.Errorf("%v: owners %v with NoOwners", s.Remote, s.Owners)
		}
	}
}

// ownerRow is one (socket, holder) pair as ss -p prints it.
type ownerRow struct {
	Local, Remote netip.AddrPort
	RecvQ         uint32
	PID, FD       int
}

// TestOracleSS compares Collect with ss on several hundred CLOSE_WAIT
// sockets, IPv4, IPv6 and dual-stack, held by the test and by children.
func TestOracleSS(t *testing.T) {
	ssPath, err := exec.LookPath("ss")
	if err != nil {
		leaktest.Missing(t, "needs ss(8) from iproute2")
	}
	ln4 := leaktest.Listen(t, "tcp4")
	ln6 := leaktest.Listen(t, "tcp6")
	dual, err := net.Listen("tcp", "[::]:0")
	if err != nil {
		leaktest.Missing(t, fmt.Sprintf("needs a dual-stack listener: %v", err))
	}
	t.Cleanup(func() { dual.Close() })
	dport := port(dual.Addr())
	mapped := leaktest.AcceptedFrom(t, dual.(*net.TCPListener), "tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(dport))), 80)
	leaktest.CloseClients(t, mapped)
	if a := mapped[0].Local.Addr(); !a.Is4In6() {
		leaktest.Missing(t, fmt.Sprintf("dual-stack socket has address %v, not ::ffff:", a))
	}

	var all []*leaktest.Conn
	all = append(all, leaktest.CloseWait(t, ln4, 150)...)
	all = append(all, leaktest.CloseWait(t, ln6, 150)...)
	all = append(all, mapped...)
	// Spread them: child A alone holds 120, child B holds 120 of which the
	// test keeps 20 too, child C alone holds 40, the test alone the rest.
	a, b, c := all[:120], all[120:240], all[240:280]
	leaktest.Hold(t, leaktest.Files(a))
	leaktest.Release(a)
	leaktest.Hold(t, leaktest.Files(b))
	leaktest.Release(b[20:])
	leaktest.Hold(t, leaktest.Files(c))
	leaktest.Release(c)
	ports := []uint16{port(ln4.Addr()), port(ln6.Addr()), dport}

	ssRows := ssOwners(t, ssPath, ports)
	if len(ssRows) != len(all)+20 {
		t.Errorf("ss shows %d (socket, owner) rows, want %d", len(ssRows), len(all)+20)
	}
	for _, src := range sources {
		t.Run(src, func(t *testing.T) {
			snap := collect(t, Options{Source: src, Filter: Filter{SPorts: ports}})
			if len(snap.Sockets) != len(all) {
				t.Errorf("got %d sockets, want %d", len(snap.Sockets), len(all))
			}
			got := map[ownerRow]bool{}
			for _, s := range snap.Sockets {
				for _, o := range s.Owners {
					got[ownerRow{s.Local, s.Remote, s.RecvQ, o.PID, o.FD}] = true
				}
			}
			for r := range ssRows {
				if !got[r] {
					t.Errorf("ss shows %+v, Collect does not", r)
				}
			}
			for r := range got {
				if !ssRows[r] {
					t.Errorf("Collect shows %+v, ss does not", r)
				}
			}
		})
	}
}

var ssUser = regexp.MustCompile(`\("(?:[^"\\]|\\.)*",pid=(\d+),fd=(\d+)\)`)

// ssOwners runs ss -tanpH state close-wait and returns a row per (socket,
// owner) whose local port is one of ports.
func ssOwners(t *testing.T, ssPath string, ports []uint16) map[ownerRow]bool {
	t.Helper()
	out, err := exec.Command(ssPath, "-tanpH", "state", "close-wait").Output()
	if err != nil {
		t.Fatalf("ss: %v", err)
	}
	rows := map[ownerRow]bool{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		// Recv-Q Send-Q Local Peer [users:((...),...)]; no State column
		// when one state is asked for.
		// A line that does not parse is another test's: ss prints command
		// names raw, and a hostile one may hold a newline. Ours are
		// counted by the caller.
		f := strings.Fields(sc.Text())
		if len(f) < 4 {
			continue
		}
		local, err1 := netip.ParseAddrPort(f[2])
		remote, err2 := netip.ParseAddrPort(f[3])
		recvq, err3 := strconv.ParseUint(f[0], 10, 32)
		if errors.Join(err1, err2, err3) != nil {
			continue
		}
		if !slices.Contains(ports, local.Port()) {
			continue
		}
		for _, m := range ssUser.FindAllStringSubmatch(strings.Join(f[4:], " "), -1) {
			pid, _ := strconv.Atoi(m[1])
			fd, _ := strconv.Atoi(m[2])
			rows[ownerRow{local, remote, uint32(recvq), pid, fd}] = true
		}
	}
	return rows
}

// TestNotRootWarning runs a collection as nobody: it must list what it may
// and say that owners are hidden.
func TestNotRootWarning(t *testing.T) {
	if os.Getenv("CLOSEWAIT_NOT_ROOT_HELPER") == "1" {
		snap, err := Collect(context.Background(), Options{Source: SourceNetlink, States: StatesAll})
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		for _, w := range snap.Warnings {
			fmt.Println("warning:", w)
		}
		fmt.Println("sockets:", len(snap.Sockets))
		os.Exit(0)
	}
	leaktest.RequireRoot(t)
	// A socket whose owner, this process, nobody may not read.
	leaktest.CloseWait(t, leaktest.Listen(t, "tcp4"), 1)
	// go test keeps its binary in a directory only root may enter: copy
	// it where nobody can run it.
	self, err := os.ReadFile("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "closewait-notroot-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	exe := filepath.Join(dir, "collector.test")
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(exe, self, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^TestNotRootWarning$")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CLOSEWAIT_NOT_ROOT_HELPER=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		if errors.Is(err, os.ErrPermission) || bytes.Contains(out, []byte("permission denied")) {
			leaktest.Missing(t, fmt.Sprintf("nobody cannot run the test binary: %v", err))
		}
		t.Fatalf("helper as nobody: %v\n%s", err, out)
	}
	if !regexp.MustCompile(`warning: not root: owners of other users' sockets are hidden \(\d+ processes unreadable\)`).Match(out) {
		t.Errorf("no not-root warning in:\n%s", out)
	}
	if !bytes.Contains(out, []byte("warning: not root (no CAP_SYS_ADMIN): only this process's network namespace is listed\n")) {
		t.Errorf("no warning that other namespaces are not listed in:\n%s", out)
	}
	if bytes.Contains(out, []byte("sockets: 0\n")) {
		t.Errorf("nobody listed no sockets:\n%s", out)
	}
}

// TestPortFilterInKernel checks that the kernel sends only the sockets
// that pass the port filter, in every reader of sock_diag (the netlink
// source, the poller's lean dump, the state counter), and that sockets kept
// for their remote port still find their listener for Inbound.
func TestPortFilterInKernel(t *testing.T) {
	ln1, ln2, ln3 := leaktest.Listen(t, "tcp4"), leaktest.Listen(t, "tcp6"), leaktest.Listen(t, "tcp4")
	p1, p2, p3 := port(ln1.Addr()), port(ln2.Addr()), port(ln3.Addr())
	on1 := leaktest.CloseWait(t, ln1, 3)
	on2 := leaktest.CloseWait(t, ln2, 2)
	on3 := leaktest.CloseWait(t, ln3, 2)
	// Our own client, whose server hung up: CLOSE_WAIT with p2 as its
	// remote port and no listener on its local one.
	pooled, err := net.Dial("tcp6", ln2.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pooled.Close() })
	srv, err := ln2.Accept()
	if err != nil {
		t.Fatal(err)
	}
	srv.Close()
	client := pooled.LocalAddr().(*net.TCPAddr).AddrPort()
	deadline := time.Now().Add(5 * time.Second)
	for {
		info, err := unix.GetsockoptTCPInfo(connFD(t, pooled.(*net.TCPConn)), unix.IPPROTO_TCP, unix.TCP_INFO)
		if err != nil {
			t.Fatal(err)
		}
		if State(info.State) == StateCloseWait {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the pooled client got no FIN")
		}
		time.Sleep(time.Millisecond)
	}
	// A server socket on p1 whose client port is the filter's: kept for
	// its remote port, Inbound through the listener on p1, which the
	// filter itself drops.
	byRemote := on1[0]
	rport := byRemote.Remote.Port()

	type end struct{ local, remote netip.AddrPort }
	ends := func(conns ...[]*leaktest.Conn) map[end]bool {
		m := map[end]bool{}
		for _, cs := range conns {
			for _, c := range cs {
				m[end{c.Local, c.Remote}] = true // server ends: Inbound
			}
		}
		return m
	}
	tests := []struct {
		name    string
		f       Filter
		inbound map[end]bool // the sockets wanted, with Inbound
	}{
		{"sport", Filter{SPorts: []uint16{p1, p3}}, ends(on1, on3)},
		{"port, local or remote", Filter{Ports: []uint16{p2}}, func() map[end]bool {
			m := ends(on2)
			m[end{client, pooled.RemoteAddr().(*net.TCPAddr).AddrPort()}] = false
			return m
		}()},
		{"port matching a remote end", Filter{Ports: []uint16{rport}}, ends(on1[:1])},
		{"dport", Filter{DPorts: []uint16{rport}}, ends(on1[:1])},
		{"sport and dport", Filter{SPorts: []uint16{p1}, DPorts: []uint16{rport, p3}}, ends(on1[:1])},
	}
	check := func(t *testing.T, f Filter, want map[end]bool, socks []Socket) {
		t.Helper()
		got := map[end]bool{}
		rejected := 0
		for i := range socks {
			s := &socks[i]
			if !f.matchSocket(s) {
				if rejected++; rejected == 1 {
					t.Errorf("the kernel sent %v %v -> %v, which the filter rejects", s.State, s.Local, s.Remote)
				}
				continue
			}
			got[end{s.Local, s.Remote}] = s.Inbound
		}
		if rejected > 1 {
			t.Errorf("and %d more sockets the filter rejects", rejected-1)
		}
		for e, in := range want {
			switch g, ok := got[e]; {
			case !ok:
				t.Errorf("%v -> %v missing", e.local, e.remote)
			case g != in:
				t.Errorf("%v -> %v: inbound %v, want %v", e.local, e.remote, g, in)
			}
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Straight from the source: before any filter in userspace.
			res, err := netlinkSource{}.dump(context.Background(), query{states: StatesCloseWait, filter: tt.f, procRoot: "/proc"})
			if err != nil {
				t.Fatal(err)
			}
			check(t, tt.f, tt.inbound, res.sockets)

			lean := newLeanDumper(netlinkSource{}, "/proc", StatesCloseWait, tt.f)
			defer lean.close()
			fresh, _, err := lean.dump(context.Background(), func(leanKey) bool { return false })
			if err != nil {
				t.Fatal(err)
			}
			check(t, tt.f, tt.inbound, fresh)

			counts := StateCounts{}
			if err := countStates(context.Background(), StatesCloseWait, tt.f, counts, nil); err != nil {
				t.Fatal(err)
			}
			// Other tests' sockets may share a port with ours (a client's
			// port is unique only per destination): at least ours.
			if counts[StateCloseWait] < len(tt.inbound) {
				t.Errorf("counted %d CLOSE_WAIT sockets, want at least %d", counts[StateCloseWait], len(tt.inbound))
			}
		})
	}

	// A kernel that refuses the bytecode (as one without port comparisons
	// would): the dumps go on without it, the userspace filter decides.
	t.Run("bytecode refused", func(t *testing.T) {
		f := Filter{SPorts: []uint16{p1}}
		plan := newDiagPlan(StatesCloseWait, &f)
		plan.bc = bcOps([3]int{99, 4, 8}) // no such op: EINVAL
		c, stop, err := dialSockDiag(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		defer stop()
		var d diagDump
		if err := d.run(context.Background(), c, unix.AF_INET, plan); err != nil {
			t.Fatalf("netlink source: %v", err)
		}
		if d.n == 0 {
			t.Error("netlink source: no sockets without the bytecode")
		}
		lean := &leanNetlink{fd: -1, plan: plan}
		defer lean.close()
		fresh, _, err := lean.dump(context.Background(), func(leanKey) bool { return false })
		if err != nil {
			t.Fatalf("lean dump: %v", err)
		}
		if len(fresh) == 0 || lean.plan.bc != nil {
			t.Errorf("lean dump: %d sockets, bytecode %x after the kernel refused it", len(fresh), lean.plan.bc)
		}
	})

	// Listeners asked for, with a filter that drops some of them.
	res, err := netlinkSource{}.dump(context.Background(), query{states: StatesCloseWait.With(StateListen), filter: Filter{Ports: []uint16{p2}}, procRoot: "/proc"})
	if err != nil {
		t.Fatal(err)
	}
	var listeners []netip.AddrPort
	for _, s := range res.sockets {
		if s.State == StateListen {
			listeners = append(listeners, s.Local)
		}
	}
	if !slices.Contains(listeners, netip.AddrPortFrom(netip.IPv6Loopback(), p2)) || slices.ContainsFunc(listeners, func(a netip.AddrPort) bool { return a.Port() != p2 }) {
		t.Errorf("listeners %v, want the one on port %d and none on another", listeners, p2)
	}
}

// TestEveryHolder: every process holding a socket is found, every run,
// whichever way it came to hold it: an orphan reparented away from this
// process, a process that got the fd over a unix socket, siblings whose
// parent let go of its copy. This process keeps its own copy, found first,
// so a scan that stops early or follows only relatives misses the others;
// each case runs 20 times on each source, which a 10% miss rate cannot pass.
func TestEveryHolder(t *testing.T) {
	self := os.Getpid()
	tests := []struct {
		name  string
		build func(t *testing.T, c *leaktest.Conn) []Owner
	}{
		{"orphan", func(t *testing.T, c *leaktest.Conn) []Owner {
			pid := leaktest.HoldOrphan(t, []*os.File{c.File})
			return []Owner{{PID: self, Comm: "", FD: int(c.File.Fd())}, {PID: pid, Comm: "sleep", FD: 3}}
		}},
		{"scm_rights", func(t *testing.T, c *leaktest.Conn) []Owner {
			pid, fd := leaktest.HoldPassed(t, c.File)
			return []Owner{{PID: self, Comm: "", FD: int(c.File.Fd())}, {PID: pid, Comm: "", FD: fd}}
		}},
		{"siblings", func(t *testing.T, c *leaktest.Conn) []Owner {
			sib, _ := leaktest.HoldSiblings(t, []*os.File{c.File}, 2) // their parent is no holder
			return []Owner{{PID: self, Comm: "", FD: int(c.File.Fd())}, {PID: sib[0], Comm: "sleep", FD: 3}, {PID: sib[1], Comm: "sleep", FD: 3}}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ln := leaktest.Listen(t, "tcp4")
			c := leaktest.CloseWait(t, ln, 1)[0]
			want := tt.build(t, c)
			slices.SortFunc(want, func(a, b Owner) int { return cmp.Or(a.PID-b.PID, a.FD-b.FD) })
			for _, src := range append([]string{SourceEBPF}, sources...) {
				t.Run(src, func(t *testing.T) {
					if src == SourceEBPF {
						requireEBPF(t)
					}
					for run := range 20 {
						snap := collect(t, Options{Source: src, Filter: Filter{SPorts: []uint16{port(ln.Addr())}}})
						if len(snap.Sockets) != 1 {
							t.Fatalf("run %d: %d sockets, want 1", run, len(snap.Sockets))
						}
						s := snap.Sockets[0]
						if !sameOwners(s.Owners, want) || !slices.Contains(s.Causes, CauseInherited) {
							t.Fatalf("run %d: owners %v causes %v, want %v and inherited", run, s.Owners, s.Causes, want)
						}
					}
				})
			}
		})
	}
}

// TestMPTCPListenerChildren lists the sockets a server that listens with
// MPTCP (Go's default) has in the states that hold no fd: TIME_WAIT,
// FIN_WAIT2 and SYN_RECV, from plain TCP clients. Their proto is MPTCP's
// copy of TCP's, which the ebpf source once took for no TCP socket.
func TestMPTCPListenerChildren(t *testing.T) {
	for _, network := range []string{"tcp4", "tcp6"} {
		t.Run(network, func(t *testing.T) {
			var lc net.ListenConfig
			lc.SetMultipathTCP(true)
			l, err := lc.Listen(context.Background(), network, map[string]string{"tcp4": "127.0.0.1:0", "tcp6": "[::1]:0"}[network])
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			ln := l.(*net.TCPListener)
			lfd := connFD(t, ln)
			if p, err := unix.GetsockoptInt(lfd, unix.SOL_SOCKET, unix.SO_PROTOCOL); err != nil || p != unix.IPPROTO_MPTCP {
				leaktest.Missing(t, fmt.Sprintf("an MPTCP listener (net.mptcp.enabled): protocol %d, %v", p, err))
			}
			// Defer accept: a client that sends nothing leaves its server
			// side in SYN_RECV.
			if err := unix.SetsockoptInt(lfd, unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT, 30); err != nil {
				t.Fatal(err)
			}
			want := map[[2]netip.AddrPort]State{}
			accepted := func() (*net.TCPConn, *net.TCPConn) {
				c, err := net.Dial("tcp", ln.Addr().String())
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { c.Close() })
				if _, err := c.Write([]byte{1}); err != nil {
					t.Fatal(err)
				}
				s, err := ln.AcceptTCP()
				if err != nil {
					t.Fatal(err)
				}
				if _, err := io.ReadFull(s, make([]byte, 1)); err != nil {
					t.Fatal(err) // unread, the byte would make the close an RST
				}
				s.Close() // the server closes first
				if _, err := c.Read(make([]byte, 1)); err != io.EOF {
					t.Fatalf("client read %v, want EOF", err)
				}
				return c.(*net.TCPConn), s
			}
			key := func(c net.Conn) [2]netip.AddrPort {
				a, b := c.RemoteAddr().(*net.TCPAddr).AddrPort(), c.LocalAddr().(*net.TCPAddr).AddrPort()
				return [2]netip.AddrPort{netip.AddrPortFrom(a.Addr().Unmap(), a.Port()), netip.AddrPortFrom(b.Addr().Unmap(), b.Port())}
			}
			tw, _ := accepted()
			tw.Close()
			want[key(tw)] = StateTimeWait
			fw2, _ := accepted() // the client stays: the server waits for its FIN
			want[key(fw2)] = StateFinWait2
			syn, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer syn.Close()
			want[key(syn)] = StateSynRecv

			opts := Options{
				States: StateSet(0).With(StateTimeWait).With(StateFinWait2).With(StateSynRecv),
				Filter: Filter{SPorts: []uint16{port(ln.Addr())}},
			}
			for _, src := range append([]string{SourceEBPF}, sources...) {
				t.Run(src, func(t *testing.T) {
					if src == SourceEBPF {
						requireEBPF(t)
					}
					opts.Source = src
					// The client's FIN reaches the TIME_WAIT one's server
					// side a moment after Close.
					snap := waitFor(t, opts, func(snap *Snapshot) bool {
						return slices.ContainsFunc(snap.Sockets, func(s Socket) bool { return s.State == StateTimeWait })
					})
					got := map[[2]netip.AddrPort]State{}
					for _, s := range snap.Sockets {
						got[[2]netip.AddrPort{s.Local, s.Remote}] = s.State
					}
					if !maps.Equal(got, want) {
						t.Errorf("got %v, want %v", got, want)
					}
				})
			}
		})
	}
}
