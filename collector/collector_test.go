package collector

import (
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
	"time"
)

// randomSockets makes n sockets with the ties a real table has: a few
// local addresses, ages that often repeat, some unknown.
func randomSockets(rng *rand.Rand, n int) []Socket {
	locals := []netip.Addr{
		netip.MustParseAddr("127.0.10.1"), netip.MustParseAddr("10.0.0.1"),
		netip.MustParseAddr("::1"), netip.MustParseAddr("::ffff:127.0.10.1"),
		netip.MustParseAddr("fe80::1%eth0"), netip.MustParseAddr("fe80::1%eth1"), {},
	}
	socks := make([]Socket, n)
	for i := range socks {
		s := &socks[i]
		s.Local = netip.AddrPortFrom(locals[rng.IntN(len(locals))], uint16(8000+rng.IntN(3)))
		s.Remote = netip.AddrPortFrom(locals[rng.IntN(len(locals))], uint16(rng.IntN(50)))
		s.AgeKnown = rng.IntN(10) != 0
		s.Age = time.Duration(rng.IntN(20)-2) * time.Millisecond
		if rng.IntN(50) == 0 {
			s.Age = time.Duration(rng.Uint64()) // any int64, negative too
		}
		s.Inode = uint64(i) // tells the sockets apart after the sort
	}
	return socks
}

func TestSortByAge(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{0, 1, 2, 3, 10, 100, 5000} {
		random := randomSockets(rng, n)
		want := slices.Clone(random)
		slices.SortStableFunc(want, func(a, b Socket) int { return compareByAge(&a, &b) })
		// The order the ebpf source gives: a few runs already in order.
		var runs []Socket
		for k := range 3 {
			for i := k; i < n; i += 3 {
				runs = append(runs, want[i])
			}
		}
		for name, socks := range map[string][]Socket{"random": random, "runs": runs} {
			SortByAge(socks)
			for i := range socks {
				if c := compareByAge(&socks[i], &want[i]); c != 0 {
					t.Fatalf("%s, n=%d: socket %d is %v %v %v, want %v %v %v", name, n, i,
						socks[i].Age, socks[i].Local, socks[i].Remote, want[i].Age, want[i].Local, want[i].Remote)
				}
			}
			seen := make([]bool, n) // every socket still there, once
			for _, s := range socks {
				if seen[s.Inode] {
					t.Fatalf("%s, n=%d: socket %d twice", name, n, s.Inode)
				}
				seen[s.Inode] = true
			}
		}
	}
}

// BenchmarkSortByAge sorts a table like the benchmark's: 45k sockets in
// CLOSE_WAIT from 5 servers, ages in jiffies, so many ties.
func BenchmarkSortByAge(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 2))
	orig := make([]Socket, 45000)
	for i := range orig {
		ip := netip.AddrFrom4([4]byte{127, 0, byte(10 + i%5), 1})
		if i%5 == 4 {
			ip = netip.IPv6Loopback()
		}
		orig[i] = Socket{
			Local:    netip.AddrPortFrom(ip, 40000),
			Remote:   netip.AddrPortFrom(ip, uint16(rng.IntN(28000)+32768)),
			Age:      time.Duration(rng.IntN(500)) * 4 * time.Millisecond,
			AgeKnown: true,
		}
	}
	socks := make([]Socket, len(orig))
	for b.Loop() {
		copy(socks, orig)
		SortByAge(socks)
	}
}

// BenchmarkSortByAgeRuns sorts the same table in the order the ebpf source
// gives: by process, each process's sockets oldest first.
func BenchmarkSortByAgeRuns(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 2))
	orig := make([]Socket, 45000)
	for i := range orig {
		ip := netip.AddrFrom4([4]byte{127, 0, byte(10 + i%5), 1})
		orig[i] = Socket{
			Local:    netip.AddrPortFrom(ip, 40000),
			Remote:   netip.AddrPortFrom(ip, uint16(rng.IntN(28000)+32768)),
			Age:      time.Duration(rng.IntN(500)) * 4 * time.Millisecond,
			AgeKnown: true,
		}
	}
	SortByAge(orig)
	slices.SortStableFunc(orig, func(a, b Socket) int { return a.Local.Compare(b.Local) })
	socks := make([]Socket, len(orig))
	for b.Loop() {
		copy(socks, orig)
		SortByAge(socks)
	}
}

// TestLongPortLists: a range of thousands of ports matches through the
// bit set that normalized builds, and the same as the plain list does.
func TestLongPortLists(t *testing.T) {
	var f Filter
	for p := uint16(8000); p <= 9000; p++ {
		f.SPorts = append(f.SPorts, p)
	}
	n := f.normalized()
	if n.sets[1] == nil {
		t.Fatal("no bit set for 1001 ports")
	}
	for _, p := range []uint16{1, 7999, 8000, 8500, 9000, 9001, 65535} {
		if got, want := n.portsMatch(p, 1), f.portsMatch(p, 1); got != want || want != (p >= 8000 && p <= 9000) {
			t.Errorf("port %d: set %v, list %v", p, got, want)
		}
	}
}
