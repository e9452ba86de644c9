package cli

import (
	"os"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// oneShotGC tunes the garbage collector for a command that collects once
// and exits (list, check, serve --textfile), unless GOGC is set. Such a
// process's heap stays nearly all live to the end, so at the default
// GOGC=100 the collector marks again and again while the sockets are
// built, freeing almost nothing: at 45k sockets that is a tenth of a
// listing's time. At 400 it runs about once there; asked to
// (collector.Options.OneShot, which these commands set), the sources give
// their large garbage back to the OS themselves (the ebpf loader's,
// netlink's datagrams), so the peak RSS does not depend on it. The
// returned func restores the setting, for tests that call run.
func oneShotGC() (restore func()) {
	if os.Getenv("GOGC") != "" {
		return func() {}
	}
	old := debug.SetGCPercent(400)
	return func() { debug.SetGCPercent(old) }
}

// watchGC returns watch.Config.Settle, and a func that restores what it
// changes, for tests that call run. Settle collects a full poll's garbage
// and returns what is free to the OS, where the heap's peak would stay
// mapped. From its first call on (unless GOGC is set) the heap grows by a
// tenth between collections, not the default whole: a watch's heap is
// nearly all its sockets, live as long as it runs, and a lean poll makes
// little garbage, so collections stay rare; at the default the process kept
// twice the sockets' memory. Polls that dump in full every time (other
// network namespaces) make garbage as large as the sockets, so the setting
// follows the collections (gcStep). The first poll runs at the default.
func watchGC() (settle, restore func()) {
	tune := os.Getenv("GOGC") == ""
	old := -1
	stop, done := make(chan struct{}), make(chan struct{})
	settle = func() {
		if tune && old < 0 {
			old = debug.SetGCPercent(gcLow)
			go followGC(stop, done)
		}
		debug.FreeOSMemory()
	}
	restore = func() {
		if old >= 0 {
			close(stop)
			<-done
			debug.SetGCPercent(old)
		}
	}
	return settle, restore
}

// gcLow is watch's GOGC while collections are rare.
const gcLow = 10

// followGC applies gcStep every gcEvery until stop closes.
func followGC(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	sample := []metrics.Sample{{Name: "/gc/cycles/automatic:gc-cycles"}}
	read := func() uint64 {
		metrics.Read(sample)
		return sample[0].Value.Uint64()
	}
	t := time.NewTicker(gcEvery)
	defer t.Stop()
	percent, last, prev := gcLow, read(), uint64(0)
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		n := read()
		if next := gcStep(percent, prev, n-last); next != percent {
			percent = next
			debug.SetGCPercent(percent)
		}
		last, prev = n, n-last
	}
}

// gcEvery is how often followGC looks at the collections.
const gcEvery = 5 * time.Second

// gcStep returns the GOGC for the next gcEvery after cycles collections at
// percent, and prev in the gcEvery before: the default when more than two
// ran in both, so polls that make much garbage cost no more CPU than at the
// default (one burst, such as the count of closed sockets, is no reason);
// halved (down to gcLow) when none did.
func gcStep(percent int, prev, cycles uint64) int {
	switch {
	case cycles > 2 && prev > 2:
		return 100
	case cycles == 0:
		return max(percent/2, gcLow)
	}
	return percent
}
