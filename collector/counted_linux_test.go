package collector

import (
	"context"
	"maps"
	"net"
	"testing"

	"github.com/closewait/closewait/internal/leaktest"
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
			t.Run(network+"/"+src, func(t *testing.T) {
				snap, counts, err := CollectCounted(context.Background(), Options{Source: src, Filter: Filter{Ports: []uint16{port}}})
				if err != nil {
					t.Fatal(err)
				}
				if !maps.Equal(counts, want) {
					t.Errorf("counts %v, want %v", counts, want)
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
		t.Run(network+"/other family", func(t *testing.T) {
			f := Filter{Ports: []uint16{port}, IPv4: network == "tcp6", IPv6: network == "tcp4"}
			_, counts, err := CollectCounted(context.Background(), Options{Filter: f})
			if err != nil {
				t.Fatal(err)
			}
			for st, n := range counts {
				if n != 0 {
					t.Errorf("%v: %d sockets of the other family", st, n)
				}
			}
		})
	}
}
