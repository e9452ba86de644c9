package collector

import "context"

// nameOwners fills each owner's Comm from /proc/PID/comm. On Linux the
// gopsutil source runs only in its tests, and this spares the binary
// gopsutil's process package, whose dependencies' init reads /proc/stat
// twice on every run.
func nameOwners(_ context.Context, socks []Socket, _ []int) {
	for i := range socks {
		for j := range socks[i].Owners {
			o := &socks[i].Owners[j]
			o.Comm = readComm("/proc", o.PID)
		}
	}
}
