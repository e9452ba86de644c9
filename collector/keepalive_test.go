package collector

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// TestSortedByDetect holds sortedByDetect to a stable sort by
// compareDetect: never first, then the slowest to notice, then unknown,
// the longest idle first, and sockets that tie in the order they came.
func TestSortedByDetect(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	socks := make([]Socket, 5000)
	in := make([]KeepaliveSocket, len(socks))
	for i := range socks {
		socks[i].Inode = uint64(i) // the order they came in
		socks[i].Idle = time.Duration(r.IntN(3)) * time.Second
		d := DeadPeer{DetectKnown: r.IntN(4) > 0, Never: r.IntN(4) == 0, Detect: time.Duration(r.IntN(4)) * time.Minute}
		in[i] = KeepaliveSocket{Socket: &socks[i], DeadPeer: d}
	}
	want := slices.Clone(in)
	slices.SortStableFunc(want, func(a, b KeepaliveSocket) int { return compareDetect(&a, &b) })
	got := sortedByDetect(in)
	for i := range want {
		if got[i].Socket != want[i].Socket || got[i].DeadPeer != want[i].DeadPeer {
			t.Fatalf("position %d: socket %d, want %d (a stable sort's)", i, got[i].Inode, want[i].Inode)
		}
	}
	if got[0].Never != true || got[len(got)-1].DetectKnown {
		t.Errorf("first never %v, last detect known %v: want never first, unknown last", got[0].Never, got[len(got)-1].DetectKnown)
	}
}
