package collector

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/closewait/closewait/internal/leaktest"
)

func pollChanges(t *testing.T, p *Poller) *Changes {
	t.Helper()
	ch, err := p.PollChanges(context.Background())
	if err != nil {
		t.Fatalf("PollChanges: %v", err)
	}
	return ch
}

// ownedBy checks that every socket is held by pid, at the fd of the
// matching connection.
func ownedBy(t *testing.T, socks []Socket, pid int, conns []*leaktest.Conn) {
	t.Helper()
	for _, s := range socks {
		var fd int = -1
		for _, c := range conns {
			if c.Remote == s.Remote && c.File != nil {
				fd = int(c.File.Fd())
			}
		}
		if len(s.Owners) != 1 || s.Owners[0].PID != pid || s.Owners[0].FD != fd {
			t.Errorf("socket %v: owners %+v, want pid %d fd %d", s.Remote, s.Owners, pid, fd)
		}
	}
}

// TestPollerChanges follows real sockets through polls: the first is full,
// an unchanged table reports nothing, new sockets come with owners and
// exact ages, a changed Recv-Q reports a new cause, a closed socket is gone.
func TestPollerChanges(t *testing.T) {
	for _, src := range []string{SourceNetlink, SourceEBPF} {
		t.Run(src, func(t *testing.T) { testPollerChanges(t, src) })
	}
}

func testPollerChanges(t *testing.T, src string) {
	ln := leaktest.Listen(t, "tcp4")
	first := leaktest.CloseWait(t, ln, 3)
	p := NewPoller(Options{Source: src, Filter: Filter{Ports: []uint16{port(ln.Addr())}}})
	defer p.Close()

	ch, err := p.PollChanges(context.Background())
	if errors.Is(err, ErrUnsupported) {
		leaktest.Missing(t, fmt.Sprintf("%s source: %v", src, err))
	}
	if err != nil {
		t.Fatal(err)
	}
	if !ch.Full || len(ch.Sockets) != 3 || ch.Source != src {
		t.Fatalf("first poll: full %v, %d sockets, source %q; want full, 3, %s", ch.Full, len(ch.Sockets), ch.Source, src)
	}
	ownedBy(t, ch.Sockets, os.Getpid(), first)

	if ch := pollChanges(t, p); ch.Full || len(ch.Sockets) != 0 || len(ch.Gone) != 0 {
		t.Errorf("unchanged table: %+v", ch)
	}

	// New sockets: the probe above the known fds must find them, with no
	// time left for a search through every process.
	p.budget.next = time.Now().Add(time.Hour)
	more := leaktest.CloseWait(t, ln, 2)
	ch = pollChanges(t, p)
	if len(ch.Sockets) != 2 || len(ch.Gone) != 0 {
		t.Fatalf("after 2 new sockets: %d sockets, %d gone", len(ch.Sockets), len(ch.Gone))
	}
	ownedBy(t, ch.Sockets, os.Getpid(), more)
	for _, s := range ch.Sockets {
		if !s.AgeKnown || s.Age > time.Minute || !slices.Equal(s.Causes, []Cause{CauseFINNotRead}) {
			t.Errorf("new socket %v: age %v known %v, causes %v", s.Remote, s.Age, s.AgeKnown, s.Causes)
		}
	}

	// Reading the FIN: Recv-Q 1 -> 0, the cause becomes eof-not-closed.
	buf := make([]byte, 1)
	if n, _ := first[0].File.Read(buf); n != 0 {
		t.Fatalf("read %d bytes, want EOF", n)
	}
	ch = pollChanges(t, p)
	if len(ch.Sockets) != 1 || ch.Sockets[0].Remote != first[0].Remote ||
		!slices.Equal(ch.Sockets[0].Causes, []Cause{CauseEOFNotClosed}) {
		t.Errorf("after reading EOF: %+v", ch.Sockets)
	}

	gone := ch.Sockets[0].ID()
	first[0].File.Close()
	first[0].File = nil
	ch = pollChanges(t, p)
	if len(ch.Sockets) != 0 || len(ch.Gone) != 1 || ch.Gone[0] != gone {
		t.Errorf("after close: %d sockets, gone %v; want gone %v", len(ch.Sockets), ch.Gone, gone)
	}
	if snap := p.Snapshot(); len(snap.Sockets) != 4 {
		t.Errorf("snapshot has %d sockets, want 4", len(snap.Sockets))
	}
}

// TestPollerNewProcess resolves a socket held by a process the poller has
// not met: that needs a search through every process, which waits for its
// share of time; until then the socket has no owner.
func TestPollerNewProcess(t *testing.T) {
	ln := leaktest.Listen(t, "tcp4")
	leaktest.CloseWait(t, ln, 1)
	p := NewPoller(Options{Source: SourceNetlink, Filter: Filter{Ports: []uint16{port(ln.Addr())}}})
	defer p.Close()
	pollChanges(t, p)

	conns := leaktest.CloseWait(t, ln, 2)
	child := leaktest.Hold(t, leaktest.Files(conns))
	leaktest.Release(conns)
	p.budget.next = time.Now().Add(time.Hour)
	ch := pollChanges(t, p)
	if len(ch.Sockets) != 2 {
		t.Fatalf("%d new sockets, want 2", len(ch.Sockets))
	}
	for _, s := range ch.Sockets {
		if len(s.Owners) != 0 {
			t.Errorf("owners found without a search: %+v", s.Owners)
		}
	}
	p.budget.next = time.Time{}
	ch, err := p.Refresh(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(ch.Sockets) != 2 {
		t.Fatalf("resolved %d sockets, want 2", len(ch.Sockets))
	}
	for _, s := range ch.Sockets {
		if len(s.Owners) != 1 || s.Owners[0].PID != child.PID || s.Owners[0].Comm != "sleep" {
			t.Errorf("owners %+v, want the child %d", s.Owners, child.PID)
		}
	}
	if p.pending != 0 {
		t.Errorf("%d sockets still pending", p.pending)
	}
}

// TestPollerComplete completes a socket as the tracer would report it, and
// forgets one the tracer saw leave.
func TestPollerComplete(t *testing.T) {
	ln := leaktest.Listen(t, "tcp4")
	leaktest.CloseWait(t, ln, 1)
	opts := Options{Source: SourceNetlink, Filter: Filter{Ports: []uint16{port(ln.Addr())}}}
	p := NewPoller(opts)
	defer p.Close()
	known := pollChanges(t, p).Sockets[0]

	conns := leaktest.CloseWait(t, ln, 1)
	snap, err := Collect(context.Background(), Options{Source: SourceNetlink,
		Filter: Filter{SPorts: []uint16{port(ln.Addr())}, DPorts: []uint16{conns[0].Remote.Port()}}})
	if err != nil || len(snap.Sockets) != 1 {
		t.Fatalf("Collect: %v, %d sockets", err, len(snap.Sockets))
	}
	ev := snap.Sockets[0]
	ev.Owners, ev.Causes, ev.Inbound = nil, nil, false
	ev.Age, ev.AgeExact, ev.AgeMax = 0, true, 0
	ch, err := p.Complete(context.Background(), []Socket{ev})
	if err != nil {
		t.Fatal(err)
	}
	if len(ch.Sockets) != 1 {
		t.Fatalf("completed %d sockets, want 1", len(ch.Sockets))
	}
	s := ch.Sockets[0]
	if len(s.Owners) != 1 || s.Owners[0].PID != os.Getpid() || !s.Inbound || !s.AgeExact {
		t.Errorf("completed socket: owners %+v inbound %v exact %v", s.Owners, s.Inbound, s.AgeExact)
	}
	// The next poll knows it already.
	if ch := pollChanges(t, p); len(ch.Sockets) != 0 {
		t.Errorf("poll after Complete reports %d sockets", len(ch.Sockets))
	}
	p.Forget([]SocketID{known.ID()})
	if ch := pollChanges(t, p); len(ch.Sockets) != 1 || ch.Sockets[0].Cookie != known.Cookie {
		t.Errorf("a forgotten socket still there comes back as new: %+v", ch.Sockets)
	}
}

// TestPollerProcfs polls without cookies: sockets are known by inode and
// addresses.
func TestPollerProcfs(t *testing.T) {
	ln := leaktest.Listen(t, "tcp6")
	leaktest.CloseWait(t, ln, 2)
	p := NewPoller(Options{Source: SourceProcfs, Filter: Filter{Ports: []uint16{port(ln.Addr())}}})
	defer p.Close()
	if ch := pollChanges(t, p); len(ch.Sockets) != 2 || ch.Sockets[0].Cookie != 0 {
		t.Fatalf("first poll: %+v", ch.Sockets)
	}
	if ch := pollChanges(t, p); len(ch.Sockets) != 0 || len(ch.Gone) != 0 {
		t.Errorf("unchanged table: %+v", ch)
	}
	more := leaktest.CloseWait(t, ln, 1)
	ch := pollChanges(t, p)
	if len(ch.Sockets) != 1 || ch.Sockets[0].Remote != more[0].Remote {
		t.Errorf("new socket: %+v", ch.Sockets)
	}
	ownedBy(t, ch.Sockets, os.Getpid(), more)
}

func TestReadFDUsage(t *testing.T) {
	u, err := ReadFDUsage("", os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	// ReadDir's own fd may or may not be counted; the test opens no other.
	if u.Open < len(ents)-1 || u.Open > len(ents)+1 {
		t.Errorf("open fds %d, /proc/self/fd lists %d", u.Open, len(ents))
	}
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if uint64(u.Limit) != lim.Cur {
		t.Errorf("limit %d, want %d", u.Limit, lim.Cur)
	}
	if n, err := countDirents("/proc/self/fd"); err != nil || n < u.Open-1 || n > u.Open+1 {
		t.Errorf("countDirents = %d, %v; want about %d", n, err, u.Open)
	}
	if _, err := ReadFDUsage("", 1<<30); err == nil {
		t.Errorf("no error for a missing process")
	}
}

func TestParseNofileLimit(t *testing.T) {
	tests := []struct {
		in   string
		want int
		ok   bool
	}{
		{"Limit                     Soft Limit           Hard Limit           Units     \nMax open files            1024                 4096                 files     \n", 1024, true},
		{"Max open files            unlimited            unlimited            files\n", 0, true},
		{"Max processes 10 10 processes\n", 0, false},
	}
	for _, tt := range tests {
		got, err := parseNofileLimit([]byte(tt.in))
		if got != tt.want || (err == nil) != tt.ok {
			t.Errorf("parseNofileLimit(%q) = %d, %v", tt.in, got, err)
		}
	}
}

// TestPollerTolerateMisses keeps a socket missing from one poll: a dump
// under churn can skip a live socket, and it must not flicker.
func TestPollerTolerateMisses(t *testing.T) {
	ln := leaktest.Listen(t, "tcp4")
	conns := leaktest.CloseWait(t, ln, 2)
	p := NewPoller(Options{Source: SourceNetlink, Filter: Filter{Ports: []uint16{port(ln.Addr())}}})
	defer p.Close()
	p.TolerateMisses(1)
	pollChanges(t, p)
	conns[0].File.Close()
	conns[0].File = nil
	if ch := pollChanges(t, p); len(ch.Gone) != 0 || len(p.Snapshot().Sockets) != 2 {
		t.Errorf("gone after one miss: %v", ch.Gone)
	}
	if ch := pollChanges(t, p); len(ch.Gone) != 1 || len(p.Snapshot().Sockets) != 1 {
		t.Errorf("not gone after two misses: %v", ch.Gone)
	}
}

// view is what a watch shows: the sockets the changes reported.
type view map[SocketID]Socket

func (v view) apply(ch *Changes) {
	if ch.Full {
		clear(v)
	}
	for _, id := range ch.Gone {
		delete(v, id)
	}
	for _, s := range ch.Sockets {
		v[s.ID()] = s
	}
}

// byRemote returns the socket from the client at r.
func (v view) byRemote(r netip.AddrPort) (Socket, bool) {
	for _, s := range v {
		if s.Remote == r {
			return s, true
		}
	}
	return Socket{}, false
}

// pollerModes are the two ways watch drives a Poller: a poll every
// interval (--no-tracer), or tracer events with Refresh every interval.
var pollerModes = []string{"poll", "refresh"}

// eachSourceMode runs fn on both sources that read cookies, in both modes.
func eachSourceMode(t *testing.T, fn func(t *testing.T, src, mode string)) {
	for _, src := range []string{SourceNetlink, SourceEBPF} {
		for _, mode := range pollerModes {
			t.Run(src+"/"+mode, func(t *testing.T) { fn(t, src, mode) })
		}
	}
}

// await steps the poller as mode does until ok accepts the view. The
// deadline only ends a test that would hang.
func (v view) await(t *testing.T, p *Poller, mode, what string, ok func(view) bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var ch *Changes
		var err error
		if mode == "poll" {
			ch, err = p.PollChanges(context.Background())
		} else {
			ch, err = p.Refresh(context.Background())
		}
		if err != nil {
			t.Fatalf("%s: %v", mode, err)
		}
		v.apply(ch)
		if ok(v) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s; the view has %+v", what, v)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// startPoller makes a poller on src and polls once, skipping (or failing
// in CI) when the source is missing.
func startPoller(t *testing.T, src string, f Filter) (*Poller, view) {
	t.Helper()
	p := NewPoller(Options{Source: src, Filter: f})
	t.Cleanup(func() { p.Close() })
	ch, err := p.PollChanges(context.Background())
	if errors.Is(err, ErrUnsupported) {
		leaktest.Missing(t, fmt.Sprintf("%s source: %v", src, err))
	}
	if err != nil {
		t.Fatal(err)
	}
	v := view{}
	v.apply(ch)
	return p, v
}

func pids(owners []Owner) []int {
	var out []int
	for _, o := range owners {
		if !slices.Contains(out, o.PID) {
			out = append(out, o.PID)
		}
	}
	slices.Sort(out)
	return out
}

// listenerFD returns the fd of ln in this process.
func listenerFD(t *testing.T, ln *net.TCPListener) int {
	t.Helper()
	rc, err := ln.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var fd int
	rc.Control(func(f uintptr) { fd = int(f) })
	return fd
}

// accept accepts one connection from ln and keeps its fd open until the
// test ends.
func accept(t *testing.T, ln *net.TCPListener) (*os.File, netip.AddrPort) {
	t.Helper()
	c, err := ln.AcceptTCP()
	if err != nil {
		t.Fatal(err)
	}
	f, err := c.File()
	c.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f, c.RemoteAddr().(*net.TCPAddr).AddrPort()
}

// asEvent is s as the tracer reports it: no owners, causes or bounds.
func asEvent(s Socket) Socket {
	s.Owners, s.Listener, s.Causes, s.Inbound = nil, nil, nil, false
	s.Age, s.AgeKnown, s.AgeExact, s.AgeMax = 0, true, true, 0
	return s
}

// TestPollerHandoff hands the sockets of a process to its child, which
// keeps them while the parent closes its copies: the owners must follow,
// in both ways watch drives a poller.
func TestPollerHandoff(t *testing.T) {
	eachSourceMode(t, func(t *testing.T, src, mode string) {
		ln := leaktest.Listen(t, "tcp4")
		conns := leaktest.CloseWait(t, ln, 3)
		h := leaktest.HoldHandoff(t, leaktest.Files(conns))
		leaktest.Release(conns)
		p, v := startPoller(t, src, Filter{Ports: []uint16{port(ln.Addr())}})
		if len(v) != 3 {
			t.Fatalf("first poll: %d sockets, want 3", len(v))
		}
		for _, s := range v {
			if !slices.Equal(pids(s.Owners), []int{h.PID}) {
				t.Fatalf("before the handoff: owners %+v, want pid %d", s.Owners, h.PID)
			}
		}
		child := h.Handoff(t)
		v.await(t, p, mode, fmt.Sprintf("the child %d as the only owner", child), func(v view) bool {
			for _, s := range v {
				if !slices.Equal(pids(s.Owners), []int{child}) || s.Owners[0].Comm != "sleep" || slices.Contains(s.Causes, CauseInherited) {
					return false
				}
			}
			return len(v) == 3
		})
	})
}

// TestPollerQueued follows sockets in an accept queue: they are blamed on
// the listener's process (and pass its --pid), and once accepted they get
// their owner, in both ways watch drives a poller.
func TestPollerQueued(t *testing.T) {
	eachSourceMode(t, func(t *testing.T, src, mode string) {
		ln := leaktest.Listen(t, "tcp4")
		q := leaktest.Queue(t, ln, 2)
		self, lfd := os.Getpid(), listenerFD(t, ln)
		p, v := startPoller(t, src, Filter{Ports: []uint16{port(ln.Addr())}, PIDs: []int{self}})
		if len(v) != 2 {
			t.Fatalf("first poll: %d sockets, want the 2 queued ones under --pid of the listener", len(v))
		}
		for _, s := range v {
			if s.Inode != 0 || len(s.Owners) != 0 || len(s.Listener) != 1 ||
				s.Listener[0].PID != self || s.Listener[0].FD != lfd || !slices.Contains(s.Causes, CauseNotAccepted) {
				t.Fatalf("queued socket: inode %d owners %+v listener %+v causes %v; want listener pid %d fd %d",
					s.Inode, s.Owners, s.Listener, s.Causes, self, lfd)
			}
		}
		f, remote := accept(t, ln)
		if remote != q[0].Remote {
			t.Fatalf("accepted %v, want the first queued %v", remote, q[0].Remote)
		}
		v.await(t, p, mode, "the accepted socket owned by its fd", func(v view) bool {
			s, ok := v.byRemote(q[0].Remote)
			other, ok2 := v.byRemote(q[1].Remote)
			return ok && ok2 && len(s.Owners) == 1 && s.Owners[0].PID == self && s.Owners[0].FD == int(f.Fd()) &&
				len(s.Listener) == 0 && !slices.Contains(s.Causes, CauseNotAccepted) &&
				len(other.Listener) == 1 && slices.Contains(other.Causes, CauseNotAccepted)
		})
	})
}

// TestPollerCompleteAccepted completes queued sockets from events, as watch
// does with the tracer: one accepted after its event, one before its
// (late) event. Refresh must give both their owner.
func TestPollerCompleteAccepted(t *testing.T) {
	ln := leaktest.Listen(t, "tcp4")
	self := os.Getpid()
	p, _ := startPoller(t, SourceNetlink, Filter{Ports: []uint16{port(ln.Addr())}})
	q := leaktest.Queue(t, ln, 2)
	snap, err := Collect(context.Background(), Options{Source: SourceNetlink, NoOwners: true, Filter: Filter{Ports: []uint16{port(ln.Addr())}}})
	if err != nil || len(snap.Sockets) != 2 {
		t.Fatalf("Collect: %v, %d sockets", err, len(snap.Sockets))
	}
	events := []Socket{asEvent(snap.Sockets[0]), asEvent(snap.Sockets[1])}
	// The first in the queue is accepted before its event is completed.
	f1, r1 := accept(t, ln)
	ch, err := p.Complete(context.Background(), events)
	if err != nil {
		t.Fatal(err)
	}
	v := view{}
	v.apply(ch)
	if s, ok := v.byRemote(q[1].Remote); !ok || len(s.Listener) != 1 || s.Listener[0].PID != self {
		t.Fatalf("completed queued socket: %+v, want it blamed on the listener's pid %d", s, self)
	}
	f2, r2 := accept(t, ln)
	want := map[netip.AddrPort]int{r1: int(f1.Fd()), r2: int(f2.Fd())}
	v.await(t, p, "refresh", "both accepted sockets owned by their fds", func(v view) bool {
		for r, fd := range want {
			s, ok := v.byRemote(r)
			if !ok || len(s.Owners) != 1 || s.Owners[0].PID != self || s.Owners[0].FD != fd || slices.Contains(s.Causes, CauseNotAccepted) {
				return false
			}
		}
		return true
	})
}

// TestPollerFilterNotOwners makes new sockets held by this process and a
// child: under --pid or --comm the poller must still name both holders and
// see them inherited.
func TestPollerFilterNotOwners(t *testing.T) {
	self := os.Getpid()
	for _, tt := range []struct {
		name string
		f    Filter
	}{
		{"pid", Filter{PIDs: []int{self}}},
		{"comm", Filter{Comms: []string{"sleep"}}},
	} {
		for _, mode := range pollerModes {
			t.Run(tt.name+"/"+mode, func(t *testing.T) {
				ln := leaktest.Listen(t, "tcp4")
				leaktest.CloseWait(t, ln, 1) // this process holds known sockets
				f := tt.f
				f.Ports = []uint16{port(ln.Addr())}
				p, v := startPoller(t, SourceNetlink, f)
				conns := leaktest.CloseWait(t, ln, 2)
				child := leaktest.Hold(t, leaktest.Files(conns))
				if mode == "refresh" {
					var events []Socket
					for _, c := range conns {
						snap, err := Collect(context.Background(), Options{Source: SourceNetlink, NoOwners: true,
							Filter: Filter{SPorts: []uint16{port(ln.Addr())}, DPorts: []uint16{c.Remote.Port()}}})
						if err != nil || len(snap.Sockets) != 1 {
							t.Fatalf("Collect: %v, %d sockets", err, len(snap.Sockets))
						}
						events = append(events, asEvent(snap.Sockets[0]))
					}
					ch, err := p.Complete(context.Background(), events)
					if err != nil {
						t.Fatal(err)
					}
					v.apply(ch)
				}
				want := []int{self, child.PID}
				slices.Sort(want)
				v.await(t, p, mode, fmt.Sprintf("both new sockets held by %v, inherited", want), func(v view) bool {
					for _, c := range conns {
						s, ok := v.byRemote(c.Remote)
						if !ok || !slices.Equal(pids(s.Owners), want) || !slices.Contains(s.Causes, CauseInherited) {
							return false
						}
					}
					return true
				})
			})
		}
	}
}
