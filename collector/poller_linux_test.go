package collector

import (
	"context"
	"errors"
	"fmt"
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
	ch, err := p.ResolvePending(context.Background())
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
