package ebpf

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/closewait/closewait/internal/leaktest"
	"golang.org/x/sys/unix"
)

// readEvents reads tr's events until done says it has what it needs or 10
// seconds pass, and returns those keep accepts.
func readEvents(t *testing.T, tr *Trace, keep func(*Event) bool, done func([]Event) bool) []Event {
	t.Helper()
	var got []Event
	deadline := time.Now().Add(10 * time.Second)
	for !done(got) {
		if time.Now().After(deadline) {
			t.Fatalf("events so far: %+v", got)
		}
		var e Event
		err := tr.Read(&e, time.Now().Add(100*time.Millisecond))
		if errors.Is(err, os.ErrDeadlineExceeded) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if keep(&e) {
			got = append(got, e)
		}
	}
	return got
}

func hasTransition(events []Event, remote netip.AddrPort, from, to uint8) bool {
	return slices.ContainsFunc(events, func(e Event) bool {
		return e.Remote == remote && e.OldState == from && e.NewState == to
	})
}

// TestTraceAddresses follows one connection through its life, with every
// transition traced, and checks each event's local and remote address.
// The server socket leaves CLOSE_WAIT by an RST (its write reaches the
// closed client) or by close() (LAST_ACK, then CLOSE on the last ACK): at
// TCP_CLOSE the kernel has already released the local port, which the
// event must still name. Entering SYN_SENT, an unbound client has no port
// yet; a bound one has.
func TestTraceAddresses(t *testing.T) {
	requireBPF(t)
	const (
		synSent   = 2
		finWait1  = 4
		finWait2  = 5
		estab     = 1
		closed    = stateClose
		closeWait = stateCloseWait
		lastAck   = 9
	)
	for _, mode := range []TracerMode{ModeBTF, ModeTracepoint} {
		for _, network := range []string{"tcp4", "tcp6"} {
			for _, c := range []struct{ bound, reset bool }{{false, true}, {true, true}, {false, false}} {
				bound, reset := c.bound, c.reset
				t.Run(fmt.Sprintf("%s/%s/bound=%v/reset=%v", mode, network, bound, reset), func(t *testing.T) {
					ln := leaktest.Listen(t, network) // before the trace: no LISTEN event
					tr, err := OpenTrace(TraceOptions{Mode: mode, AllStates: true, PinDir: t.TempDir()})
					if err != nil {
						t.Fatalf("%+v", err)
					}
					defer tr.Close()

					d := net.Dialer{KeepAlive: -1}
					if bound {
						ip := net.IPv4(127, 0, 0, 1)
						if network == "tcp6" {
							ip = net.IPv6loopback
						}
						d.LocalAddr = &net.TCPAddr{IP: ip}
					}
					cl, err := d.Dial(network, ln.Addr().String())
					if err != nil {
						t.Fatal(err)
					}
					defer cl.Close()
					sc, err := ln.AcceptTCP()
					if err != nil {
						t.Fatal(err)
					}
					defer sc.Close()
					server := sc.LocalAddr().(*net.TCPAddr).AddrPort()
					client := cl.LocalAddr().(*net.TCPAddr).AddrPort()

					cl.Close() // FIN: the server socket enters CLOSE_WAIT
					if _, err := io.ReadAll(sc); err != nil {
						t.Fatal(err)
					}
					var last uint8 = lastAck
					if reset {
						// The closed client answers data with an RST: the
						// server socket goes from CLOSE_WAIT to CLOSE under
						// its open fd.
						if _, err := sc.Write([]byte("x")); err != nil {
							t.Fatal(err)
						}
						last = closeWait
					} else {
						sc.Close()
					}

					events := readEvents(t, tr, func(e *Event) bool {
						return e.Remote == client || e.Remote == server
					}, func(got []Event) bool {
						return hasTransition(got, client, last, closed) && hasTransition(got, server, finWait2, closed)
					})
					for _, e := range events {
						want := server // the server's socket: its remote is the client
						if e.Remote == server {
							want = client
						}
						if e.Local == want {
							continue
						}
						if e.OldState == closed && e.NewState == synSent && !bound && e.Local == netip.AddrPortFrom(client.Addr(), 0) {
							continue // connect() picks the port after entering SYN_SENT
						}
						t.Errorf("%d -> %d: local %v remote %v, want local %v", e.OldState, e.NewState, e.Local, e.Remote, want)
					}
					for _, w := range []struct {
						remote   netip.AddrPort
						from, to uint8
					}{
						{server, closed, synSent}, {server, synSent, estab}, {server, estab, finWait1},
						{server, finWait1, finWait2}, {client, estab, closeWait},
					} {
						if !hasTransition(events, w.remote, w.from, w.to) {
							t.Errorf("no %d -> %d event with remote %v", w.from, w.to, w.remote)
						}
					}
				})
			}
		}
	}
}

// TestTraceNotedOwner: a server that closes a socket as soon as it reads
// the peer's EOF keeps it in CLOSE_WAIT for microseconds, too short for any
// fd snapshot. The kernel's note from accept4(2) names the owner.
func TestTraceNotedOwner(t *testing.T) {
	requireBPF(t)
	ln := leaktest.Listen(t, "tcp4")
	tr, err := OpenTrace(TraceOptions{Mode: ModeBTF, PinDir: t.TempDir(), NoteOwners: true})
	if err != nil {
		t.Fatalf("%+v", err)
	}
	defer tr.Close()
	if !tr.NotesOwners() {
		t.Fatal("the trace does not note owners with tp_btf")
	}
	plain, err := OpenTrace(TraceOptions{Mode: ModeBTF, PinDir: t.TempDir()})
	if err != nil {
		t.Fatalf("%+v", err)
	}
	if plain.NotesOwners() {
		t.Error("a trace that did not ask notes owners")
	}
	plain.Close()
	cl, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	sc, err := ln.AcceptTCP()
	if err != nil {
		t.Fatal(err)
	}
	fd, inode := fdOf(t, sc)
	client := cl.LocalAddr().(*net.TCPAddr).AddrPort()
	cl.Close()
	if _, err := io.ReadAll(sc); err != nil {
		t.Fatal(err)
	}
	sc.Close()

	events := readEvents(t, tr, func(e *Event) bool { return e.Remote == client }, func(got []Event) bool {
		return hasTransition(got, client, 1, stateCloseWait) && hasTransition(got, client, stateCloseWait, 9)
	})
	want := Owner{PID: os.Getpid(), Comm: leaktest.SelfComm(t), FD: fd}
	for _, e := range events {
		if e.Inode != inode {
			t.Errorf("%d -> %d: inode %d, want %d", e.OldState, e.NewState, e.Inode, inode)
		}
		if got, ok := tr.NotedOwner(e.Inode); !ok || got != want {
			t.Errorf("%d -> %d: noted owner %+v %v, want %+v", e.OldState, e.NewState, got, ok, want)
		}
	}
}

// fdOf returns the fd and inode of a connection's socket, without the dup
// that File makes.
func fdOf(t *testing.T, c *net.TCPConn) (int, uint64) {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var fd int
	var st unix.Stat_t
	var serr error
	if err := rc.Control(func(s uintptr) {
		fd = int(s)
		serr = unix.Fstat(fd, &st)
	}); err != nil {
		t.Fatal(err)
	}
	if serr != nil {
		t.Fatal(serr)
	}
	return fd, st.Ino
}
