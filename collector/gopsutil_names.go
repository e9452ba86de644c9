//go:build !linux

package collector

import (
	"context"

	"github.com/shirou/gopsutil/v4/process"
)

// nameOwners fills each owner's Comm with its process name, looking each
// of pids up once. A process gone or hidden keeps an empty name.
func nameOwners(ctx context.Context, socks []Socket, pids []int) {
	names := make(map[int]string, len(pids))
	for _, pid := range pids {
		if _, done := names[pid]; done {
			continue
		}
		names[pid] = ""
		if p, err := process.NewProcessWithContext(ctx, int32(pid)); err == nil {
			names[pid], _ = p.NameWithContext(ctx)
		}
	}
	for i := range socks {
		for j := range socks[i].Owners {
			o := &socks[i].Owners[j]
			o.Comm = names[o.PID]
		}
	}
}
