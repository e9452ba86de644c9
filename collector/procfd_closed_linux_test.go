package collector

import (
	"context"
	"maps"
	"net"
	"os"
	"slices"
	"testing"

	"github.com/closewait/closewait/internal/leaktest"
	"golang.org/x/sys/unix"
)

// TestClosedTableInodes: the dump closedSockets confirms candidates with
// holds an ESTABLISHED socket and a listener, whatever states the listing
// asked for, and not a socket the kernel closed, through sock_diag and
// /proc/net/tcp alike. This is what keeps a socket opened after the
// listing's dump from being taken for closed.
func TestClosedTableInodes(t *testing.T) {
	ln := leaktest.Listen(t, "tcp6")
	conns := leaktest.Accepted(t, ln, 2)
	if err := conns[0].Client().(*net.TCPConn).SetLinger(0); err != nil {
		t.Fatal(err)
	}
	conns[0].Client().Close() // RST
	waitState(t, conns[0].File, StateClose)
	ino := func(f interface{ Fd() uintptr }) uint64 {
		var st unix.Stat_t
		if err := unix.Fstat(int(f.Fd()), &st); err != nil {
			t.Fatal(err)
		}
		return st.Ino
	}
	lf, err := ln.File()
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	closed, est, lis := ino(conns[0].File), ino(conns[1].File), ino(lf)
	for _, src := range sources {
		t.Run(src, func(t *testing.T) {
			inos, err := tableInodes(context.Background(), "/proc", src)
			if err != nil {
				t.Fatal(err)
			}
			if !inos[est] || !inos[lis] {
				t.Errorf("ESTABLISHED inode %d in dump %v, listener %d %v: want both", est, inos[est], lis, inos[lis])
			}
			if inos[closed] {
				t.Errorf("CLOSE inode %d in the dump", closed)
			}
		})
	}
}

// TestClosedCandidates: closedSockets, given the fds of a closed socket,
// an ESTABLISHED one, a UDP socket and a TCP socket never connected,
// keeps the closed one alone, with its holder's command.
func TestClosedCandidates(t *testing.T) {
	ln := leaktest.Listen(t, "tcp4")
	conns := leaktest.Accepted(t, ln, 2)
	if err := conns[0].Client().(*net.TCPConn).SetLinger(0); err != nil {
		t.Fatal(err)
	}
	conns[0].Client().Close()
	waitState(t, conns[0].File, StateClose)
	udp, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(udp)
	never, err := unix.Socket(unix.AF_INET6, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(never)
	pid := int32(os.Getpid())
	var cands []closedFD
	for _, fd := range []int{int(conns[0].File.Fd()), int(conns[1].File.Fd()), udp, never} {
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			t.Fatal(err)
		}
		cands = append(cands, closedFD{ino: st.Ino, pid: pid, fd: int32(fd)})
	}
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	for _, src := range sources {
		for _, count := range []bool{false, true} {
			name := src
			var tc *tableCount
			if count {
				name += "/counting"
				tc = &tableCount{states: StatesAll &^ setOf(StateClose), filter: Filter{Ports: []uint16{port}}}
			}
			t.Run(name, func(t *testing.T) {
				socks, warnings, err := closedSockets(context.Background(), "/proc", src, slices.Clone(cands), nil, tc)
				if err != nil {
					t.Fatal(err)
				}
				// The procfs source confirms from /proc/net/tcp and counts
				// nothing; sock_diag's dump counts the port's sockets: the
				// listener and the ESTABLISHED pair, not the closed one.
				if tc != nil && src == SourceProcfs && tc.counts != nil {
					t.Errorf("procfs counted %v", tc.counts)
				}
				if want := (StateCounts{StateListen: 1, StateEstablished: 2}); tc != nil && src != SourceProcfs && !maps.Equal(tc.counts, want) {
					t.Errorf("counted %v, want %v", tc.counts, want)
				}
				if len(warnings) > 0 {
					t.Errorf("warnings %q", warnings)
				}
				if len(socks) != 1 || socks[0].Inode != cands[0].ino || socks[0].Family != FamilyIPv4 || socks[0].State != StateClose {
					t.Fatalf("got %+v, want the CLOSE socket of inode %d alone", socks, cands[0].ino)
				}
				if o := socks[0].Owners; len(o) != 1 || o[0].PID != int(pid) || o[0].FD != int(cands[0].fd) || o[0].Comm != readComm("/proc", int(pid)) {
					t.Errorf("owners %+v", o)
				}
			})
		}
	}
}

// waitState waits until the socket of f is in state st.
func waitState(t *testing.T, f *os.File, st State) {
	t.Helper()
	for range 5000 {
		info, err := unix.GetsockoptTCPInfo(int(f.Fd()), unix.IPPROTO_TCP, unix.TCP_INFO)
		if err != nil {
			t.Fatal(err)
		}
		if State(info.State) == st {
			return
		}
		unix.Nanosleep(&unix.Timespec{Nsec: 1e6}, nil)
	}
	t.Fatalf("socket not in %v", st)
}

// TestClosedUnderChurn: while this process opens, accepts and closes
// connections in a loop, sockets opened after a listing's dump (in no
// table it read) are never listed as closed by the netlink and procfs
// sources: the dump after the fd scan and the pidfd check drop them.
func TestClosedUnderChurn(t *testing.T) {
	ln := leaktest.Listen(t, "tcp4")
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			c, err := net.Dial("tcp4", ln.Addr().String())
			if err != nil {
				continue
			}
			s, err := ln.Accept()
			if err == nil {
				s.Close()
			}
			c.Close()
		}
	}()
	defer func() { close(stop); <-done }()
	for _, src := range sources {
		t.Run(src, func(t *testing.T) {
			for range 20 {
				snap := collect(t, Options{Source: src, States: setOf(StateClose), Filter: Filter{PIDs: []int{os.Getpid()}}})
				for _, s := range snap.Sockets {
					t.Errorf("listed as closed: %+v", s)
				}
			}
		})
	}
}
