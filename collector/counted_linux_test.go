package collector

import (
	"context"
	"fmt"
	"maps"
	"net"
	"os"
	"testing"
	"time"

	"github.com/closewait/closewait/internal/leaktest"
	"golang.org/x/sys/unix"
)

// TestCollectCounted builds sockets in four states on one listener's port
// and checks the counts from every source. Other tests make sockets at the
// same time, so everything is narrowed to that port.
func TestCollectCounted(t *testing.T) {
	for _, network := range []string{"tcp4", "tcp6"} {
		ln := leaktest.Listen(t, network)
		leaktest.CloseWait(t, ln, 3) // 3 CLOSE_WAIT here, 3 FIN_WAIT2 clients
		leaktest.Accepted(t, ln, 2)  // 2 ESTABLISHED each side
		port := uint16(ln.Addr().(*net.TCPAddr).Port)
		want := StateCounts{}
		for _, st := range AllStates {
			want[st] = 0
		}
		want[StateListen] = 1
		want[StateCloseWait] = 3
		want[StateFinWait2] = 3
		want[StateEstablished] = 4

		for _, src := range []string{SourceAuto, SourceNetlink, SourceProcfs} {
			// serve's states: closed sockets are looked for, and netlink's
			// dump that confirms them counts the other states.
			for _, states := range []StateSet{StatesCloseWait, StatesCloseWait.With(StateClose)} {
				name := network + "/" + src
				if states.Has(StateClose) {
					name += "/with CLOSE"
				}
				t.Run(name, func(t *testing.T) {
					// A connection that used this port as its ephemeral port
					// before the listener took it may linger in TIME_WAIT. A
					// client is in FIN_WAIT1 until the server's ACK of its
					// FIN, which may be delayed: counted again until then.
					var snap *Snapshot
					var counts, got StateCounts
					retryFor(2*time.Second, func() bool {
						var err error
						snap, counts, err = CollectCounted(context.Background(), Options{Source: src, States: states, Filter: Filter{Ports: []uint16{port}}})
						if err != nil {
							t.Fatal(err)
						}
						got = maps.Clone(counts)
						got[StateTimeWait] = 0
						return maps.Equal(got, want)
					})
					if !maps.Equal(got, want) {
						t.Errorf("counts %v, want %v (TIME_WAIT not compared)", counts, want)
					}
					if len(snap.Sockets) != 3 {
						t.Fatalf("%d sockets listed, want the 3 in CLOSE_WAIT", len(snap.Sockets))
					}
					for _, s := range snap.Sockets {
						if s.State != StateCloseWait || len(s.Owners) == 0 {
							t.Errorf("listed %v with owners %v, want CLOSE_WAIT sockets with owners", s.State, s.Owners)
						}
					}
				})
			}
		}
		t.Run(network+"/other family", func(t *testing.T) {
			f := Filter{Ports: []uint16{port}, IPv4: network == "tcp6", IPv6: network == "tcp4"}
			for _, opts := range []Options{{Filter: f}, {Source: SourceNetlink, States: StatesCloseWait.With(StateClose), Filter: f}} {
				_, counts, err := CollectCounted(context.Background(), opts)
				if err != nil {
					t.Fatal(err)
				}
				for st, n := range counts {
					// As above, TIME_WAIT is not compared: any earlier
					// connection of that family may have used the port
					// number (a CI run after a churn failed on one).
					if n != 0 && st != StateTimeWait {
						t.Errorf("source %q, states %v: %v: %d sockets of the other family", opts.Source, opts.States, st, n)
					}
				}
			}
		})
	}
}

// TestCollectCountedInKernel checks that, without port filters, the ebpf
// source counts every state in its own walk: no second dump. The kernel's
// counting itself is checked exactly, in a network namespace of its own,
// by the ebpf package's TestStateCounts; here other tests' sockets come
// and go, so the counts are checked against what this test holds.
func TestCollectCountedInKernel(t *testing.T) {
	leaktest.RequireRoot(t)
	made := [2]StateCounts{{}, {}}
	for af, network := range []string{"tcp4", "tcp6"} {
		ln := leaktest.Listen(t, network)
		leaktest.CloseWait(t, ln, 3)
		leaktest.Accepted(t, ln, 2)
		made[af][StateListen], made[af][StateCloseWait], made[af][StateEstablished] = 1, 3, 4
	}
	snap, all, err := gather(context.Background(), Options{Source: SourceEBPF}, true, nil)
	if err != nil {
		leaktest.Missing(t, fmt.Sprintf("ebpf source: %v", err))
	}
	if all == nil {
		t.Fatal("the ebpf source did not count")
	}
	for af := range all {
		for _, st := range AllStates {
			if n, ok := all[af][st]; !ok || n < made[af][st] {
				t.Errorf("family %d, %v: counted %d (present %v), this test alone holds %d", af, st, n, ok, made[af][st])
			}
		}
	}
	cw := 0
	for _, s := range snap.Sockets {
		if s.State == StateCloseWait {
			cw++
		}
	}
	if cw == 0 {
		t.Error("no CLOSE_WAIT sockets listed")
	}

	for _, tt := range []struct {
		name   string
		filter Filter
		family Family
	}{{"all", Filter{}, 0}, {"IPv4", Filter{IPv4: true}, FamilyIPv4}, {"IPv6", Filter{IPv6: true}, FamilyIPv6}} {
		t.Run(tt.name, func(t *testing.T) {
			snap, counts, err := CollectCounted(context.Background(), Options{Source: SourceEBPF, Filter: tt.filter})
			if err != nil {
				t.Fatal(err)
			}
			if len(counts) != len(AllStates) {
				t.Errorf("counts %v: want every state", counts)
			}
			if counts[StateCloseWait] != len(snap.Sockets) {
				t.Errorf("%d CLOSE_WAIT counted, %d listed", counts[StateCloseWait], len(snap.Sockets))
			}
			for _, s := range snap.Sockets {
				if tt.family != 0 && s.Family != tt.family {
					t.Fatalf("listed a socket of family %v", s.Family)
				}
			}
			af := 0
			if tt.family == FamilyIPv6 {
				af = 1
			}
			if n := counts[StateEstablished]; n < made[af][StateEstablished] {
				t.Errorf("%d ESTABLISHED counted, this test alone holds %d", n, made[af][StateEstablished])
			}
		})
	}
}

// TestCountingDumpConfirmsClosed: with serve's states and the netlink
// source, the dump that confirms closed sockets, after the fd scan, is the
// one that counts the other states. The sockets the kernel closed under
// this process's fds are listed, exactly, and the counts of the port's
// other sockets are exact.
func TestCountingDumpConfirmsClosed(t *testing.T) {
	for _, network := range []string{"tcp4", "tcp6"} {
		t.Run(network, func(t *testing.T) {
			ln := leaktest.Listen(t, network)
			conns := leaktest.Accepted(t, ln, 3)
			closed := map[uint64]bool{}
			for _, c := range conns[:2] {
				if err := c.Client().(*net.TCPConn).SetLinger(0); err != nil {
					t.Fatal(err)
				}
				c.Client().Close() // RST: the server end is closed under its fd
				waitState(t, c.File, StateClose)
				var st unix.Stat_t
				if err := unix.Fstat(int(c.File.Fd()), &st); err != nil {
					t.Fatal(err)
				}
				closed[st.Ino] = true
			}
			// FIN_WAIT2 clients that keep their fds: a closed one may go to a
			// timewait bucket, or nowhere when the table is full.
			for _, c := range leaktest.Accepted(t, ln, 2) {
				client := c.Client().(*net.TCPConn)
				if err := client.CloseWrite(); err != nil {
					t.Fatal(err)
				}
				f, err := client.File()
				if err != nil {
					t.Fatal(err)
				}
				waitState(t, f, StateFinWait2) // the FIN's ACK came back
				f.Close()
			}
			port := uint16(ln.Addr().(*net.TCPAddr).Port)
			tc := &tableCount{states: StatesAll &^ setOf(StateCloseWait, StateClose), filter: Filter{Ports: []uint16{port}}}
			opts := Options{Source: SourceNetlink, States: StatesCloseWait.With(StateClose), Filter: Filter{PIDs: []int{os.Getpid()}}}
			snap, _, err := gather(context.Background(), opts, false, tc)
			if err != nil {
				t.Fatal(err)
			}
			listed := map[uint64]bool{}
			for _, s := range snap.Sockets {
				if s.State == StateClose {
					listed[s.Inode] = true
				}
			}
			if !maps.Equal(listed, closed) {
				t.Errorf("closed sockets listed %v, want %v", listed, closed)
			}
			if tc.counts == nil {
				t.Fatal("the dump that confirmed closed sockets did not count")
			}
			got := maps.Clone(tc.counts)
			delete(got, StateTimeWait) // a connection that had the port as its ephemeral one
			if want := (StateCounts{StateListen: 1, StateEstablished: 2, StateFinWait2: 2}); !maps.Equal(got, want) {
				t.Errorf("counted %v, want %v (TIME_WAIT not compared)", tc.counts, want)
			}
		})
	}
}
