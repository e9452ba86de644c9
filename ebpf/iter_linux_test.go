package ebpf

import (
	"context"
	"io"
	"maps"
	"net"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/closewait/closewait/internal/leaktest"
	"golang.org/x/sys/unix"
)

// TCP states the package itself does not name.
const (
	stateEstablished = 1
	stateFinWait2    = 5
)

// enterNewNetNS moves the test's goroutine, locked to its thread, into a
// new network namespace with loopback up, so that the socket tables hold
// only what the test makes. Cleanup moves the thread back: were it the
// main thread, /proc/self/ns/net would otherwise name the new namespace
// for the rest of the run. Subtests and other goroutines stay outside.
func enterNewNetNS(t *testing.T) {
	t.Helper()
	runtime.LockOSThread()
	orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		defer unix.Close(orig)
		// Go ends a locked thread with its goroutine, but wedges the main
		// thread instead; unlock only once the thread is back.
		if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
			t.Errorf("returning to the original network namespace: %v", err)
			return
		}
		runtime.UnlockOSThread()
	})
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		t.Fatalf("unshare(CLONE_NEWNET): %v", err)
	}
	if err := leaktest.LoopbackUp(); err != nil {
		t.Fatal(err)
	}
	if err := leaktest.OwnPortRange(); err != nil {
		t.Fatal(err)
	}
}

// TestStateCounts makes sockets in every state loopback can hold for a
// while, time-wait and request minisockets included, in a network
// namespace of the test's own, and checks that a counting iter/tcp walk
// counts them as sock_diag (ss) reports them.
func TestStateCounts(t *testing.T) {
	requireBPF(t)
	enterNewNetNS(t)

	plain := net.ListenConfig{KeepAlive: -1}
	plain.SetMultipathTCP(false)
	deferred := plain
	deferred.Control = func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT, 30)
		})
		if err != nil {
			return err
		}
		return serr
	}
	var keep []io.Closer
	t.Cleanup(func() {
		for _, c := range keep {
			c.Close()
		}
	})
	listen := func(lc net.ListenConfig, addr string) net.Listener {
		ln, err := lc.Listen(context.Background(), "tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		keep = append(keep, ln)
		return ln
	}
	pair := func(ln net.Listener) (client, server net.Conn) {
		client, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		if server, err = ln.Accept(); err != nil {
			t.Fatal(err)
		}
		return client, server
	}

	var want StateCounts
	for af, addr := range []string{"127.0.0.1:0", "[::1]:0"} {
		ln := listen(plain, addr)
		want[af][stateListen]++

		c, s := pair(ln) // ESTABLISHED, both ends
		keep = append(keep, c, s)
		want[af][stateEstablished] += 2

		c, s = pair(ln) // the client closes: CLOSE_WAIT here, FIN_WAIT2 there
		c.Close()
		keep = append(keep, s)
		want[af][stateCloseWait]++
		want[af][stateFinWait2]++ // a time-wait socket in substate FIN_WAIT2

		c, s = pair(ln) // both close, the client first: it ends in TIME_WAIT
		c.Close()
		s.Read(make([]byte, 1))
		s.Close()
		want[af][stateTimeWait]++

		// A handshake done without data, to a deferring listener: the
		// request socket stays, counted as SYN_RECV.
		c, err := net.Dial("tcp", listen(deferred, addr).Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		keep = append(keep, c)
		want[af][stateListen]++
		want[af][stateEstablished]++
		want[af][stateSynRecv]++
	}

	it, err := LoadIterators(IterOptions{CountStates: true})
	if err != nil {
		t.Fatalf("%+v", err)
	}
	defer it.Close()
	var got StateCounts
	for deadline := time.Now().Add(5 * time.Second); ; {
		// The walk opens on this thread, so it walks this namespace.
		if err := it.TCP(func(*Record) {}); err != nil {
			t.Fatal(err)
		}
		var ok bool
		if got, ok = it.StateCounts(); !ok {
			t.Fatal("no counts after a counting walk")
		}
		if got == want || time.Now().After(deadline) { // closing takes a few round trips
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got != want {
		t.Errorf("counts [IPv4, IPv6][state]:\n got %v\nwant %v", got, want)
	}

	// A walk that does not count leaves the last counts alone.
	plainIt, err := LoadIterators(IterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer plainIt.Close()
	if err := plainIt.TCP(func(*Record) {}); err != nil {
		t.Fatal(err)
	}
	if _, ok := plainIt.StateCounts(); ok {
		t.Error("counts from iterators loaded without CountStates")
	}
}

// TestHeldCounts: in a network namespace of the test's own, iter/task_file
// counts every hashed TCP socket that fds hold, a socket in two fds once,
// so that sockstat's inuse exceeds the count by exactly the sockets no fd
// holds: here one in an accept queue.
func TestHeldCounts(t *testing.T) {
	requireBPF(t)
	enterNewNetNS(t)
	lc := net.ListenConfig{KeepAlive: -1}
	lc.SetMultipathTCP(false) // an MPTCP listener's TCP socket is the kernel's
	var keep []io.Closer
	t.Cleanup(func() {
		for _, c := range keep {
			c.Close()
		}
	})
	ln, err := lc.Listen(context.Background(), "tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	keep = append(keep, ln)
	for range 3 {
		c, err := net.Dial("tcp4", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		s, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		keep = append(keep, c, s)
	}
	// One more fd on a socket already counted.
	dup, err := keep[1].(*net.TCPConn).File()
	if err != nil {
		t.Fatal(err)
	}
	keep = append(keep, dup)
	// A connection never accepted: its server end has no fd.
	c, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	keep = append(keep, c)

	netns, err := ownNetNS()
	if err != nil {
		t.Fatal(err)
	}
	it, err := LoadIterators(IterOptions{AllNetNS: true})
	if err != nil {
		t.Fatalf("%+v", err)
	}
	defer it.Close()
	shared := map[uint64]bool{}
	if err := it.Files(func(r *Record) {
		if r.NetNS == netns && r.XFlags&RecXShared != 0 {
			shared[r.Inode] = true
		}
	}); err != nil {
		t.Fatal(err)
	}
	held, ok := it.Held()
	if !ok {
		t.Fatal("no counts after a walk")
	}
	b, err := os.ReadFile("/proc/thread-self/net/sockstat")
	if err != nil {
		t.Fatal(err)
	}
	var inuse int
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "TCP: inuse "); ok {
			inuse, _ = strconv.Atoi(strings.Fields(rest)[0])
		}
	}
	// The listener, 3 connections' two ends, the unaccepted one's client
	// end: 8 held, the doubly held one among them once.
	if got := int(held[netns][0]) + len(shared); got != 8 || inuse != got+1 || held[netns][1] != 0 {
		t.Errorf("held %v + %d shared, inuse %d; want 8 held and inuse 9", held[netns], len(shared), inuse)
	}
	// A second walk counts afresh.
	if err := it.Files(func(*Record) {}); err != nil {
		t.Fatal(err)
	}
	if again, _ := it.Held(); again[netns] != held[netns] {
		t.Errorf("second walk: %v, first %v", again[netns], held[netns])
	}
}

// TestListenersIn: the walk of the listening hash alone reports the
// listeners of its namespace, nothing else, and not those iter/task_file
// sent.
func TestListenersIn(t *testing.T) {
	requireBPF(t)
	enterNewNetNS(t)
	ln4 := leaktest.Listen(t, "tcp4")
	ln6 := leaktest.Listen(t, "tcp6")
	leaktest.CloseWait(t, ln4, 2)
	leaktest.Accepted(t, ln6, 1)
	var lc net.ListenConfig
	lc.SetMultipathTCP(false) // a plain TCP listener, which iter/task_file sends
	plain, err := lc.Listen(context.Background(), "tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	listeners := func(it *Iterators) (ports []uint16, other int) {
		t.Helper()
		err := it.ListenersIn(context.Background(), nil, func(r *Record) {
			if r.Flags&RecListener == 0 || r.State != stateListen {
				other++
				return
			}
			ports = append(ports, r.Local.Port())
		})
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(ports)
		return ports, other
	}
	want := []uint16{portOf(ln4.Addr()), portOf(ln6.Addr()), portOf(plain.Addr())}
	slices.Sort(want)
	it, err := LoadIterators(IterOptions{States: ^uint32(0), CountStates: true})
	if err != nil {
		t.Fatalf("%+v", err)
	}
	defer it.Close()
	if ports, other := listeners(it); !slices.Equal(ports, want) || other != 0 {
		t.Errorf("listening hash: listeners %v and %d other records; want %v alone", ports, other, want)
	}
	// The whole walk after it still counts, and sends every socket.
	var n int
	if err := it.TCP(func(r *Record) {
		if r.State != stateListen {
			n++
		}
	}); err != nil {
		t.Fatal(err)
	}
	c, ok := it.StateCounts()
	if !ok || n != 6 || c[0][stateCloseWait] != 2 || c[1][stateListen] != 1 || c[0][stateListen] != 2 {
		t.Errorf("walk after: %d sockets, counts %v (%v); want 6, 2 CLOSE_WAIT, 2 IPv4 listeners and 1 IPv6", n, c, ok)
	}
	// Go listens with MPTCP where it can: iter/task_file then sends the
	// MPTCP socket, and only iter/tcp the kernel's TCP listener under it.
	var mptcp []uint16
	if err := it.Files(func(r *Record) {
		if r.Flags&RecMPTCP != 0 && slices.Contains(want, r.Local.Port()) {
			mptcp = append(mptcp, r.Local.Port())
		}
	}); err != nil {
		t.Fatal(err)
	}
	slices.Sort(mptcp)
	if ports, other := listeners(it); !slices.Equal(ports, mptcp) || other != 0 {
		t.Errorf("after iter/task_file: listeners %v and %d other records; want the MPTCP ones, %v", ports, other, mptcp)
	}
}

// TestFilesSizedBlocks: a walk longer than a block is read into several:
// in a one-shot process mapped apart, and all unmapped by the end;
// otherwise in the heap. Either way FilesSized decodes every record once.
func TestFilesSizedBlocks(t *testing.T) {
	requireBPF(t)
	enterNewNetNS(t)
	const lns, per = 4, 1300 // the namespace has 4,535 client ports a listener
	n := lns * per
	if n <= blockSize/RecordSize {
		t.Fatalf("%d sockets fit in one block", n)
	}
	for range lns {
		leaktest.CloseWait(t, leaktest.Listen(t, "tcp4"), per)
	}
	for _, oneShot := range []bool{true, false} {
		it, err := LoadIterators(IterOptions{OneShot: oneShot})
		if err != nil {
			t.Fatalf("%+v", err)
		}
		size, mapped, cw := -1, int64(0), 0
		inodes := map[uint64]bool{}
		err = it.FilesSized(false, func(n int) { size, mapped = n, blocksMapped.Load() }, func(r *Record) {
			if r.State == stateCloseWait {
				cw++
				inodes[r.Inode] = true
			}
		})
		it.Close()
		if err != nil {
			t.Fatal(err)
		}
		if cw != n || len(inodes) != n || size < n {
			t.Errorf("one-shot %v: %d CLOSE_WAIT records of %d sockets, size %d; want %d once each, size >= %[5]d", oneShot, cw, len(inodes), size, n)
		}
		if oneShot && mapped < 2 || !oneShot && mapped != 0 {
			t.Errorf("one-shot %v: %d blocks mapped apart during the walk", oneShot, mapped)
		}
		if left := blocksMapped.Load(); left != 0 {
			t.Errorf("one-shot %v: %d blocks still mapped after the walk", oneShot, left)
		}
	}
}

// TestUnmarked: iter/task_file marks what it sends, so that iter/tcp
// after it leaves those sockets out; with Unmarked it does not, and the
// walk sends them again, as filed. FilesSized gives the count of the
// records it then decodes.
func TestUnmarked(t *testing.T) {
	requireBPF(t)
	enterNewNetNS(t)
	ln := leaktest.Listen(t, "tcp4")
	leaktest.CloseWait(t, ln, 2)
	for _, unmarked := range []bool{false, true} {
		it, err := LoadIterators(IterOptions{Unmarked: unmarked})
		if err != nil {
			t.Fatalf("%+v", err)
		}
		size, decoded, files := -1, 0, 0
		err = it.FilesSized(false, func(n int) { size = n }, func(r *Record) {
			decoded++
			if r.State == stateCloseWait {
				files++
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		again := 0
		if err := it.TCP(func(r *Record) {
			if r.State == stateCloseWait && r.XFlags&RecXFiled != 0 {
				again++
			}
		}); err != nil {
			t.Fatal(err)
		}
		it.Close()
		want := 0
		if unmarked {
			want = 2
		}
		if size != decoded || files != 2 || again != want {
			t.Errorf("unmarked %v: size %d for %d records, %d CLOSE_WAIT; iter/tcp sent %d of them again, want %d",
				unmarked, size, decoded, files, again, want)
		}
	}
}

// TestSplitWalk: a walk split in two, read on two threads at once, sends
// what a whole walk sends, each record once, and counts the same sockets:
// each part takes the fds of one parity. Each part also takes a reference
// to the other's files as it steps over them, so a socket one fd holds
// can be counted as shared (a record to count, once by inode) instead of
// held, as with any syscall on it meanwhile: the totals are compared.
func TestSplitWalk(t *testing.T) {
	requireBPF(t)
	enterNewNetNS(t)
	ln := leaktest.Listen(t, "tcp4")
	cw := leaktest.CloseWait(t, ln, 300)
	leaktest.Accepted(t, ln, 200) // held ESTABLISHED sockets, counted
	// A second fd on 50 of them: shared, sent once an fd.
	for _, f := range leaktest.Files(cw[:50]) {
		dup, err := unix.Dup(int(f.Fd()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Close(dup) })
	}
	netns, err := ownNetNS()
	if err != nil {
		t.Fatal(err)
	}
	type fd struct {
		inode uint64
		pid   uint32
		fd    uint32
	}
	// walk returns the records sent to list (not those only to count), and
	// the sockets counted: held, and shared ones counted once by inode.
	walk := func(split bool) (map[fd]int, [2]uint32) {
		it, err := LoadIterators(IterOptions{})
		if err != nil {
			t.Fatalf("%+v", err)
		}
		defer it.Close()
		recs, counted, size, odd := map[fd]int{}, map[uint64]uint8{}, -1, 0
		if err := it.FilesSized(split, func(n int) { size = n }, func(r *Record) {
			switch {
			case r.NetNS != netns:
			case r.XFlags&RecXCount != 0:
				counted[r.Inode] = r.Family
			default:
				recs[fd{r.Inode, r.TGID, r.FD}]++
				odd += int(r.FD & 1)
			}
		}); err != nil {
			t.Fatal(err)
		}
		held, ok := it.Held()
		if !ok || size < len(recs) || odd == 0 || odd == len(recs) {
			t.Fatalf("split %v: held counts %v, size %d for %d records, %d of odd fds", split, ok, size, len(recs), odd)
		}
		n := held[netns]
		for _, family := range counted {
			if family == unix.AF_INET6 {
				n[1]++
			} else {
				n[0]++
			}
		}
		return recs, n
	}
	whole, wholeHeld := walk(false)
	parts, partsHeld := walk(true)
	if len(whole) != 351 || !maps.Equal(whole, parts) {
		t.Errorf("split walk: %d records, whole walk %d (want 351: 300 CLOSE_WAIT, 50 more fds, the listener); the same each once: %v",
			len(parts), len(whole), maps.Equal(whole, parts))
	}
	for k, n := range parts {
		if n != 1 {
			t.Errorf("split walk sent %+v %d times", k, n)
		}
	}
	if wholeHeld != partsHeld || wholeHeld[0] == 0 {
		t.Errorf("sockets counted (IPv4, IPv6): split %v, whole %v", partsHeld, wholeHeld)
	}
}
