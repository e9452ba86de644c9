package report

import (
	"io"
	"net/netip"
	"testing"
	"time"

	"github.com/closewait/closewait/collector"
)

// benchSnapshot is the benchmark load as the renderers see it:
// 45,000 CLOSE_WAIT sockets held by 5 processes.
func benchSnapshot() *collector.Snapshot {
	const n = 45_000
	snap := &collector.Snapshot{Host: "bench", Time: snapTime, Source: "ebpf", Sockets: make([]collector.Socket, n)}
	local := netip.MustParseAddrPort("127.0.0.1:8080")
	for i := range snap.Sockets {
		snap.Sockets[i] = collector.Socket{
			State: collector.StateCloseWait, Family: collector.FamilyIPv4,
			Local: local, Remote: netip.AddrPortFrom(local.Addr(), uint16(i)),
			RecvQ: 1, Inode: uint64(1_000_000 + i), Cookie: uint64(4096 + i),
			Age: time.Duration(i) * time.Second, AgeKnown: true,
			Owners: []collector.Owner{{PID: 1000 + i%5, Comm: "holder", FD: i}},
			Causes: []collector.Cause{collector.CauseFINNotRead},
		}
	}
	return snap
}

func BenchmarkTable(b *testing.B) {
	snap := benchSnapshot()
	b.ReportAllocs()
	for b.Loop() {
		if err := Table(io.Discard, snap, TableOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkJSON(b *testing.B) {
	snap := benchSnapshot()
	b.ReportAllocs()
	for b.Loop() {
		if err := JSON(io.Discard, snap); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSummarize(b *testing.B) {
	snap := benchSnapshot()
	b.ReportAllocs()
	for b.Loop() {
		collector.Summarize(snap)
	}
}
