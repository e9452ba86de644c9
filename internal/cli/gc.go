package cli

import (
	"os"
	"runtime/debug"
)

// oneShotGC tunes the garbage collector for a command that collects once
// and exits (list, check, serve --textfile), unless GOGC is set. Such a
// process's heap stays nearly all live to the end, so at the default
// GOGC=100 the collector marks again and again while the sockets are
// built, freeing almost nothing: at 45k sockets that is a tenth of a
// listing's time. At 400 it runs about once there, and the peak RSS does
// not move (41 MiB with the ebpf source; the netlink source collects its
// dump's garbage itself and peaks at 45 MiB). The returned func restores the
// setting, for tests that call run.
func oneShotGC() (restore func()) {
	if os.Getenv("GOGC") != "" {
		return func() {}
	}
	old := debug.SetGCPercent(400)
	return func() { debug.SetGCPercent(old) }
}

// watchGC returns watch.Config.Settle, and a func that restores the
// setting it changes, for tests that call run. Settle collects a full
// poll's garbage and returns what is free to the OS, where the heap's peak
// would stay mapped; from its first call on (unless GOGC is set), the heap
// grows by a tenth between collections, not the default whole. A watch's
// heap is nearly all its sockets, live as long as it runs, and a poll makes
// little garbage, so collections stay rare; at the default the process kept
// twice the sockets' memory. The first poll, which fills the heap, runs at
// the default.
func watchGC() (settle, restore func()) {
	tune := os.Getenv("GOGC") == ""
	old := -1
	settle = func() {
		if tune && old < 0 {
			old = debug.SetGCPercent(10)
		}
		debug.FreeOSMemory()
	}
	restore = func() {
		if old >= 0 {
			debug.SetGCPercent(old)
		}
	}
	return settle, restore
}
