package ebpf

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/closewait/closewait/internal/leaktest"
	"golang.org/x/sys/unix"
)

var (
	bpfOnce sync.Once
	bpfErr  error
)

// requireBPF skips the test (fails it in CI) when this machine cannot load
// the iterators: not root, no BTF, an old kernel.
func requireBPF(t *testing.T) {
	t.Helper()
	leaktest.RequireRoot(t)
	bpfOnce.Do(func() {
		it, err := LoadIterators(IterOptions{})
		if err == nil {
			it.Close()
		}
		bpfErr = err
	})
	if bpfErr != nil {
		leaktest.Missing(t, fmt.Sprintf("BPF iterators cannot load: %+v", bpfErr))
	}
}

// testPinDir returns a pin directory of this test's own, so that a real
// "closewait tracer install" is never touched, and removes any tracer
// left there when the test ends.
func testPinDir(t *testing.T) string {
	t.Helper()
	name := strings.NewReplacer("/", "-", " ", "-").Replace(t.Name())
	dir := filepath.Join(bpffsRoot, fmt.Sprintf("closewait-test-%d-%s", os.Getpid(), name))
	t.Cleanup(func() { RemoveTracer(dir) })
	return dir
}

const closeWaitMask = 1 << stateCloseWait

func portOf(a net.Addr) uint16 { return a.(*net.TCPAddr).AddrPort().Port() }

// collectRecords runs both iterators and returns the records touching
// port, iter/tcp's with RecOwned clear.
func collectRecords(t *testing.T, it *Iterators, port uint16) (files, other []Record) {
	t.Helper()
	mine := func(r *Record) bool { return r.Local.Port() == port || r.Remote.Port() == port }
	if err := it.Files(func(r *Record) {
		if mine(r) {
			files = append(files, *r)
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := it.TCP(func(r *Record) {
		if mine(r) {
			other = append(other, *r)
		}
	}); err != nil {
		t.Fatal(err)
	}
	return files, other
}

func TestIterators(t *testing.T) {
	requireBPF(t)
	for _, network := range []string{"tcp4", "tcp6"} {
		t.Run(network, func(t *testing.T) {
			ln := leaktest.Listen(t, network)
			port := portOf(ln.Addr())
			held := leaktest.CloseWait(t, ln, 2)
			child := leaktest.Hold(t, leaktest.Files(held))
			leaktest.Release(held) // the child holds them as fds 3 and 4
			mine := leaktest.CloseWait(t, ln, 1)[0]

			// A connection never accepted: CLOSE_WAIT in the accept queue.
			c, err := net.Dial(ln.Addr().Network(), ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			queued := c.LocalAddr().(*net.TCPAddr).AddrPort()
			c.Close()

			// iter/tcp leaves out what iter/task_file sent, unless asked.
			emit := network == "tcp6"
			it, err := LoadIterators(IterOptions{States: closeWaitMask, PinDir: t.TempDir(), EmitFiled: emit})
			if err != nil {
				t.Fatalf("%+v", err)
			}
			defer it.Close()
			var files, other []Record
			deadline := time.Now().Add(5 * time.Second)
			for {
				files, other = collectRecords(t, it, port)
				if slices.ContainsFunc(other, func(r Record) bool { return r.Remote == queued }) || time.Now().After(deadline) {
					break
				}
				time.Sleep(5 * time.Millisecond) // the FIN reaches the queued socket a moment later
			}

			// iter/task_file: a whole record per fd, with its owner.
			byRemote := map[netip.AddrPort]Record{}
			var gotListener bool
			for _, r := range files {
				if r.Flags&RecOwned == 0 || r.Inode == 0 {
					t.Errorf("task_file record %+v: want an owner record with an inode", r)
				}
				switch {
				case r.Flags&RecListener != 0 || r.Flags&RecMPTCP != 0: // Go listens with MPTCP where it can
					gotListener = gotListener || r.Local.Port() == port && r.State == stateListen && int(r.TGID) == os.Getpid()
				case r.State != stateCloseWait:
					t.Errorf("task_file record %+v: want CLOSE_WAIT or a listener", r)
				case r.Flags&RecAges == 0 || r.Flags&RecChild == 0:
					t.Errorf("task_file record %+v: want ages and an accepted socket", r)
				default:
					byRemote[r.Remote] = r
				}
			}
			// iter/tcp: every socket whole, those with a file marked.
			var gotQueued bool
			filed := map[netip.AddrPort]Record{}
			for _, r := range other {
				switch {
				case r.Flags&RecOwned != 0:
					t.Errorf("iter/tcp record %+v has an owner", r)
				case r.Flags&RecListener != 0:
				case r.Remote == queued:
					gotQueued = true
					if r.Inode != 0 || r.State != stateCloseWait || r.Cookie == 0 || r.Flags&RecAges == 0 || r.XFlags&RecXFiled != 0 {
						t.Errorf("queued socket %+v: want CLOSE_WAIT, a cookie, ages, no inode, no file", r)
					}
				default:
					if r.XFlags&RecXFiled == 0 || r.Inode == 0 || r.Cookie == 0 {
						t.Errorf("iter/tcp record %+v: want a file, an inode and a cookie", r)
					}
					filed[r.Remote] = r
				}
			}
			if !emit && len(filed) != 0 {
				t.Errorf("iter/tcp repeats %d sockets iter/task_file sent", len(filed))
			}
			for _, r := range byRemote {
				if !emit {
					break
				}
				if f, ok := filed[r.Remote]; !ok || f.Inode != r.Inode || f.RecvQ != r.RecvQ || f.Local != r.Local || f.Flags&^RecOwned != r.Flags&^RecOwned {
					t.Errorf("socket %v: iter/tcp %+v, iter/task_file %+v: want the same socket", r.Remote, f, r)
				}
			}
			for i, h := range held {
				r, ok := byRemote[h.Remote]
				if !ok {
					t.Errorf("held socket %v missing", h.Remote)
					continue
				}
				if r.Local != h.Local || r.RecvQ != 1 || int(r.TGID) != child.PID || int(r.FD) != 3+i || r.CommString() != "sleep" {
					t.Errorf("held socket %v: %+v, want local %v, recv-q 1, owner %d/%d sleep", h.Remote, r, h.Local, child.PID, 3+i)
				}
			}
			if r, ok := byRemote[mine.Remote]; !ok {
				t.Errorf("own socket %v missing", mine.Remote)
			} else if int(r.TGID) != os.Getpid() || int(r.FD) != int(mine.File.Fd()) {
				t.Errorf("own socket %v: owner %d/%d", mine.Remote, r.TGID, r.FD)
			}
			if !gotQueued || !gotListener {
				t.Errorf("queued socket seen %v (iter/tcp), listener seen %v (iter/task_file)", gotQueued, gotListener)
			}
		})
	}
}

func TestTracerRoundTrip(t *testing.T) {
	requireBPF(t)
	for _, mode := range []TracerMode{ModeBTF, ModeTracepoint} {
		t.Run(string(mode), func(t *testing.T) {
			dir := testPinDir(t)
			before := time.Now().Add(-time.Second)
			st, err := InstallTracer(TracerOptions{PinDir: dir, Mode: mode})
			if err != nil {
				t.Fatalf("install: %+v", err)
			}
			if !st.Installed || st.Mode != mode || st.PinDir != dir || st.ProgramID == 0 {
				t.Errorf("status after install %+v", st)
			}
			if st.Since.Before(before) || st.Since.After(time.Now().Add(time.Second)) {
				t.Errorf("installed since %v, want about now", st.Since)
			}
			if _, err := InstallTracer(TracerOptions{PinDir: dir, Mode: mode}); !errors.Is(err, ErrInstalled) {
				t.Errorf("second install: %v, want ErrInstalled", err)
			}
			got, err := Status(dir)
			if d := got.Since.Sub(st.Since); err != nil || d < -10*time.Millisecond || d > 10*time.Millisecond {
				t.Errorf("status %+v, %v; want %+v", got, err, st)
			}
			got.Since = st.Since // converted from boot time: jitters by microseconds
			if got != st {
				t.Errorf("status %+v; want %+v", got, st)
			}
			if err := RemoveTracer(dir); err != nil {
				t.Fatalf("remove: %v", err)
			}
			if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("pin directory left behind: %v", err)
			}
			if got, err := Status(dir); err != nil || got.Installed {
				t.Errorf("status after remove %+v, %v", got, err)
			}
			if err := RemoveTracer(dir); !errors.Is(err, ErrNotInstalled) {
				t.Errorf("second remove: %v, want ErrNotInstalled", err)
			}
			// Detaching frees the program once the kernel drops the link.
			deadline := time.Now().Add(10 * time.Second)
			for {
				p, err := ebpf.NewProgramFromID(ebpf.ProgramID(st.ProgramID))
				if err != nil {
					break
				}
				p.Close()
				if time.Now().After(deadline) {
					t.Fatalf("program %d still loaded after remove", st.ProgramID)
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
}

func TestTraceEvents(t *testing.T) {
	requireBPF(t)
	for _, mode := range []TracerMode{ModeBTF, ModeTracepoint} {
		t.Run(string(mode), func(t *testing.T) {
			tr, err := OpenTrace(TraceOptions{Mode: mode, PinDir: t.TempDir()})
			if err != nil {
				t.Fatalf("%+v", err)
			}
			defer tr.Close()
			ln := leaktest.Listen(t, "tcp4")
			port := portOf(ln.Addr())
			conns := leaktest.Accepted(t, ln, 1)
			c := conns[0]
			leaktest.CloseClients(t, conns) // server side enters CLOSE_WAIT
			time.Sleep(100 * time.Millisecond)
			c.File.Close() // and leaves it
			c.File = nil

			var enter, leave *Event
			deadline := time.Now().Add(5 * time.Second)
			for (enter == nil || leave == nil) && time.Now().Before(deadline) {
				var e Event
				err := tr.Read(&e, time.Now().Add(100*time.Millisecond))
				if errors.Is(err, os.ErrDeadlineExceeded) {
					continue
				}
				if err != nil {
					t.Fatal(err)
				}
				if e.Local.Port() != port {
					continue
				}
				switch {
				case e.NewState == stateCloseWait:
					enter = &e
				case e.OldState == stateCloseWait:
					leave = &e
				}
			}
			if enter == nil || leave == nil {
				t.Fatalf("events: enter %v, leave %v", enter, leave)
			}
			if enter.Local != c.Local || enter.Remote != c.Remote || leave.Local != c.Local || leave.Remote != c.Remote {
				t.Errorf("addresses: enter %v %v, leave %v %v; want %v %v", enter.Local, enter.Remote, leave.Local, leave.Remote, c.Local, c.Remote)
			}
			if leave.Flags&EvDuration == 0 || leave.CloseWait <= 0 {
				t.Errorf("leave event without a duration: %+v", leave)
			}
			if mode == ModeBTF && (enter.Cookie == 0 || enter.Cookie != leave.Cookie || enter.Inode == 0) {
				t.Errorf("cookie %d/%d inode %d: want the socket's", enter.Cookie, leave.Cookie, enter.Inode)
			}
			if lost := tr.Lost(); lost != 0 {
				t.Errorf("%d events lost", lost)
			}
		})
	}
}

// TestNoLeaks loads, uses and closes everything a few times and checks that
// no fd and no goroutine is left behind.
func TestNoLeaks(t *testing.T) {
	requireBPF(t)
	dir := testPinDir(t)
	once := func() {
		it, err := LoadIterators(IterOptions{States: ^uint32(0), PinDir: dir})
		if err != nil {
			t.Fatalf("%+v", err)
		}
		if err := it.Files(func(*Record) {}); err != nil {
			t.Fatal(err)
		}
		if err := it.TCP(func(*Record) {}); err != nil {
			t.Fatal(err)
		}
		if err := it.Close(); err != nil {
			t.Error(err)
		}
		if _, err := InstallTracer(TracerOptions{PinDir: dir}); err != nil {
			t.Fatalf("%+v", err)
		}
		if _, err := Status(dir); err != nil {
			t.Fatal(err)
		}
		// With the tracer installed, the trace and iterators use its map.
		tr, err := OpenTrace(TraceOptions{PinDir: dir, AllStates: true})
		if err != nil {
			t.Fatalf("%+v", err)
		}
		if !tr.SharedStamps() {
			t.Error("trace did not use the installed tracer's stamps")
		}
		var e Event
		tr.Read(&e, time.Now().Add(10*time.Millisecond))
		tr.Lost()
		if err := tr.Close(); err != nil {
			t.Error(err)
		}
		if err := tr.Close(); err != nil { // twice is harmless
			t.Error(err)
		}
		it, err = LoadIterators(IterOptions{PinDir: dir})
		if err != nil {
			t.Fatalf("%+v", err)
		}
		if it.Tracer() != ModeBTF {
			t.Errorf("iterators read tracer %q, want %q", it.Tracer(), ModeBTF)
		}
		it.Close()
		it, err = LoadIterators(IterOptions{States: ^uint32(0), OwnersOnly: true})
		if err != nil {
			t.Fatalf("%+v", err)
		}
		if err := it.Files(func(*Record) {}); err != nil {
			t.Error(err)
		}
		it.Close()
		if err := RemoveTracer(dir); err != nil {
			t.Fatal(err)
		}
	}
	once() // warm up: lazily opened runtime fds (epoll) and cilium's caches
	runtime.GC()
	fds, goroutines := leaktest.CountFDs(t), runtime.NumGoroutine()
	for range 3 {
		once()
	}
	runtime.GC()
	if got := leaktest.CountFDs(t); got != fds {
		t.Errorf("%d fds open, %d before", got, fds)
	}
	if got := runtime.NumGoroutine(); got > goroutines {
		t.Errorf("%d goroutines, %d before", got, goroutines)
	}
}

// TestIteratorStamps checks exact ages at the iterator: the window around
// the kernel's walk is narrow, so this bounds the stamp error tightly.
func TestIteratorStamps(t *testing.T) {
	requireBPF(t)
	for _, mode := range []TracerMode{ModeBTF, ModeTracepoint} {
		t.Run(string(mode), func(t *testing.T) {
			dir := testPinDir(t)
			if _, err := InstallTracer(TracerOptions{PinDir: dir, Mode: mode}); err != nil {
				t.Fatalf("%+v", err)
			}
			ln := leaktest.Listen(t, "tcp6")
			port := portOf(ln.Addr())
			conns := leaktest.Accepted(t, ln, 2)
			fin := time.Now()
			leaktest.CloseClients(t, conns[:1])
			time.Sleep(200 * time.Millisecond)

			it, err := LoadIterators(IterOptions{PinDir: dir})
			if err != nil {
				t.Fatalf("%+v", err)
			}
			defer it.Close()
			if it.Tracer() != mode {
				t.Errorf("iterators use tracer %q, want %q", it.Tracer(), mode)
			}
			start := time.Now()
			// iter/task_file reads the stamps of either map, and iter/tcp
			// leaves out what it sent.
			files, other := collectRecords(t, it, port)
			end := time.Now()
			if len(other) != 1 || other[0].Flags&RecListener == 0 {
				t.Errorf("iter/tcp sent %d records, want the listener alone", len(other))
			}
			var socks []Record
			for _, r := range files {
				if r.Flags&(RecListener|RecMPTCP) == 0 && r.State != stateListen {
					socks = append(socks, r)
				}
			}
			if len(socks) != 1 { // the other connection is ESTABLISHED
				t.Fatalf("%d records, want 1", len(socks))
			}
			r := socks[0]
			lo, hi := start.Sub(fin)-50*time.Millisecond, end.Sub(fin)+50*time.Millisecond
			if r.Flags&RecStamp == 0 || r.CloseWaitAge < lo || r.CloseWaitAge > hi {
				t.Errorf("stamped %v, age %v; want between %v and %v", r.Flags&RecStamp != 0, r.CloseWaitAge, lo, hi)
			}
		})
	}
}

// TestUnownedWithFile: a socket whose only reference is in flight in
// SCM_RIGHTS has a file but no fd: no owner record, and iter/tcp sends it
// whole, with its inode.
func TestUnownedWithFile(t *testing.T) {
	requireBPF(t)
	ln := leaktest.Listen(t, "tcp4")
	c := leaktest.CloseWait(t, ln, 1)[0]
	sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(sp[0])
	defer unix.Close(sp[1])
	if err := unix.Sendmsg(sp[0], []byte{0}, unix.UnixRights(int(c.File.Fd())), nil, 0); err != nil {
		t.Fatal(err)
	}
	c.File.Close()
	c.File = nil

	it, err := LoadIterators(IterOptions{PinDir: t.TempDir()})
	if err != nil {
		t.Fatalf("%+v", err)
	}
	defer it.Close()
	owned := map[uint64]bool{}
	if err := it.Files(func(r *Record) {
		owned[r.Inode] = true
		if r.Remote == c.Remote && r.Local == c.Local {
			t.Errorf("iter/task_file reported the in-flight socket: %+v", r)
		}
	}); err != nil {
		t.Fatal(err)
	}
	var whole []Record
	if err := it.TCP(func(r *Record) {
		if r.Remote == c.Remote && r.Local == c.Local {
			whole = append(whole, *r)
		}
	}); err != nil {
		t.Fatal(err)
	}
	if len(whole) != 1 || whole[0].Flags&RecOwned != 0 || whole[0].Flags&RecAges == 0 ||
		whole[0].RecvQ != 1 || whole[0].Inode == 0 || owned[whole[0].Inode] {
		t.Errorf("iter/tcp: %+v, want the whole socket, with an inode no fd holds", whole)
	}
}

// TestIncompatibleTracer: stamps pinned by another closewait version (a map
// of another shape) must not break listings: they go on with bounded ages
// and a warning.
func TestIncompatibleTracer(t *testing.T) {
	requireBPF(t)
	dir := testPinDir(t)
	if err := ensureBPFFS(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, pinLink), 0o700); err != nil { // stands in for the link
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(filepath.Join(dir, pinLink)) })
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.Pin(filepath.Join(dir, "stamps")); err != nil {
		t.Fatal(err)
	}
	defer m.Unpin()
	it, err := LoadIterators(IterOptions{PinDir: dir})
	if err != nil {
		t.Fatalf("%+v", err)
	}
	defer it.Close()
	if it.Tracer() != "" || len(it.Warnings()) != 1 || !strings.Contains(it.Warnings()[0], "another closewait version") {
		t.Errorf("tracer %q, warnings %q", it.Tracer(), it.Warnings())
	}
	if err := it.Files(func(*Record) {}); err != nil {
		t.Error(err)
	}
}

// TestPinnedIterators: "tracer install" pins the iterators; listings use
// them one at a time, each with its own settings and its own marks in
// sent; another version's pins are left alone with a warning, and
// install again replaces them.
func TestPinnedIterators(t *testing.T) {
	requireBPF(t)
	dir := testPinDir(t)
	// The classic tracepoint's stamps leave iter/tcp to skip what
	// iter/task_file sent; sk_storage's make it send everything.
	st, err := InstallTracer(TracerOptions{PinDir: dir, Mode: ModeTracepoint})
	if err != nil {
		t.Fatalf("%+v", err)
	}
	if !st.Iterators || st.IteratorsErr != nil {
		t.Fatalf("install pinned no iterators: %v", st.IteratorsErr)
	}
	ln := leaktest.Listen(t, "tcp4")
	port := portOf(ln.Addr())
	conns := leaktest.Accepted(t, ln, 2)
	leaktest.CloseClients(t, conns[:1]) // one CLOSE_WAIT, one ESTABLISHED
	time.Sleep(50 * time.Millisecond)
	// sockets returns the states of the port's accepted sockets that a
	// listing of states sees, and whether it used the pins.
	sockets := func(t *testing.T, states uint32, filesFirst bool) ([]uint8, bool) {
		t.Helper()
		it, err := LoadIterators(IterOptions{States: states, PinDir: dir})
		if err != nil {
			t.Fatalf("%+v", err)
		}
		defer it.Close()
		var got []uint8
		keep := func(r *Record) {
			if r.Local.Port() == port && r.Flags&(RecListener|RecMPTCP) == 0 && r.State != stateListen {
				got = append(got, r.State)
			}
		}
		if filesFirst {
			if err := it.Files(keep); err != nil {
				t.Fatal(err)
			}
		}
		if err := it.TCP(keep); err != nil {
			t.Fatal(err)
		}
		slices.Sort(got)
		return got, it.Pinned()
	}
	const established = 1
	for _, c := range []struct {
		states     uint32
		filesFirst bool
		want       []uint8
	}{
		{closeWaitMask, true, []uint8{stateCloseWait}},
		// iter/tcp alone: the last listing's marks in sent are stale.
		{closeWaitMask, false, []uint8{stateCloseWait}},
		{1 << established, true, []uint8{established}},
		{closeWaitMask | 1<<established, false, []uint8{established, stateCloseWait}},
	} {
		if got, pinned := sockets(t, c.states, c.filesFirst); !pinned || !slices.Equal(got, c.want) {
			t.Errorf("states %#x, Files first %v: pinned %v, states %v; want pinned, %v", c.states, c.filesFirst, pinned, got, c.want)
		}
	}

	// What a listing killed in its walk left is not counted by the next.
	stale, err := ebpf.LoadPinnedMap(filepath.Join(dir, iterPinName(), "held_counts"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := stale.Put(uint32(12345), [2]uint32{7, 7}); err != nil {
		t.Fatal(err)
	}
	stale.Close()
	it, err := LoadIterators(IterOptions{PinDir: dir})
	if err != nil {
		t.Fatalf("%+v", err)
	}
	if err := it.Files(func(*Record) {}); err != nil {
		t.Fatal(err)
	}
	if held, ok := it.Held(); !ok || held[12345] != [2]uint32{} {
		t.Errorf("held counts %v (%v) after a stale entry; want it gone", held[12345], ok)
	}
	it.Close()

	// A listing waits for the one before it.
	first, err := LoadIterators(IterOptions{PinDir: dir})
	if err != nil {
		t.Fatalf("%+v", err)
	}
	firstPinned := first.Pinned()
	go func() {
		time.Sleep(100 * time.Millisecond)
		first.Close()
	}()
	second, err := LoadIterators(IterOptions{PinDir: dir})
	if err != nil {
		t.Fatalf("%+v", err)
	}
	if !firstPinned || !second.Pinned() || len(second.Notes()) != 0 {
		t.Errorf("pinned %v then %v, notes %q; want both pinned, in turn", firstPinned, second.Pinned(), second.Notes())
	}
	second.Close()

	// A listing that holds its turn too long: the next loads its own.
	lock, err := lockDir(filepath.Join(dir, iterPinName()), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer func(d time.Duration) { lockWait = d }(lockWait)
	lockWait = 50 * time.Millisecond
	it, err = LoadIterators(IterOptions{PinDir: dir})
	lock.Close()
	if err != nil {
		t.Fatalf("%+v", err)
	}
	if w := it.Notes(); it.Pinned() || len(w) != 1 || !strings.Contains(w[0], "busy") || len(it.Warnings()) != 0 {
		t.Errorf("pinned iterators busy: pinned %v, notes %q, warnings %q; want its own and a note", it.Pinned(), w, it.Warnings())
	}
	it.Close()

	// Another version's pins: this one loads its own, and says so.
	if err := os.Rename(filepath.Join(dir, iterPinName()), filepath.Join(dir, pinIterPrefix+"000000000000")); err != nil {
		t.Fatal(err)
	}
	it, err = LoadIterators(IterOptions{PinDir: dir})
	if err != nil {
		t.Fatalf("%+v", err)
	}
	if w := it.Notes(); it.Pinned() || len(w) != 1 || !strings.Contains(w[0], "another closewait version") || len(it.Warnings()) != 0 {
		t.Errorf("beside another version's pins: pinned %v, notes %q, warnings %q", it.Pinned(), w, it.Warnings())
	}
	it.Close()
	if st, err := InstallTracer(TracerOptions{PinDir: dir}); !errors.Is(err, ErrInstalled) || !st.Iterators {
		t.Errorf("install again: %v, iterators %v; want ErrInstalled and this version's pinned", err, st.Iterators)
	}
	if got, pinned := sockets(t, closeWaitMask, true); !pinned || !slices.Equal(got, []uint8{stateCloseWait}) {
		t.Errorf("after install again: pinned %v, states %v", pinned, got)
	}
	if ents, _ := os.ReadDir(dir); slices.ContainsFunc(ents, func(e os.DirEntry) bool { return e.Name() == pinIterPrefix+"000000000000" }) {
		t.Error("install again left the other version's pins")
	}
	if err := RemoveTracer(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("remove left %s: %v", dir, err)
	}
}
