package ebpf

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"
)

// kernelHZ returns the kernel's CONFIG_HZ, which turns the jiffies of
// tcp_info's ages and timers into milliseconds; 0 when it cannot be told.
// The kernel's config says it, where it is installed; where it is not
// (minimal images, containers without /boot), the jiffies counter and the
// monotonic clock do.
var kernelHZ = sync.OnceValue(func() uint32 {
	var uts unix.Utsname
	if unix.Uname(&uts) == nil {
		if f, err := os.Open("/boot/config-" + unix.ByteSliceToString(uts.Release[:])); err == nil {
			defer f.Close()
			if hz := configHZ(f); hz != 0 {
				return hz
			}
		}
	}
	if f, err := os.Open("/proc/config.gz"); err == nil {
		defer f.Close()
		if zr, err := gzip.NewReader(f); err == nil {
			if hz := configHZ(zr); hz != 0 {
				return hz
			}
		}
	}
	b, err := os.ReadFile("/proc/timer_list")
	if err != nil {
		return 0
	}
	var ts unix.Timespec
	if unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts) != nil {
		return 0
	}
	return hzFromJiffies(timerListJiffies(b), float64(ts.Nano())/1e9)
})

// configHZ reads CONFIG_HZ from a kernel config.
func configHZ(r io.Reader) uint32 {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if v, ok := bytes.CutPrefix(sc.Bytes(), []byte("CONFIG_HZ=")); ok {
			hz, err := strconv.ParseUint(string(v), 10, 32)
			if err != nil {
				return 0
			}
			return uint32(hz)
		}
	}
	return 0
}

// timerListJiffies takes the "jiffies: N" line of /proc/timer_list; 0 when
// there is none.
func timerListJiffies(b []byte) uint64 {
	for line := range bytes.Lines(b) {
		if v, ok := bytes.CutPrefix(line, []byte("jiffies: ")); ok {
			j, err := strconv.ParseUint(string(bytes.TrimSpace(v)), 10, 64)
			if err == nil {
				return j
			}
		}
	}
	return 0
}

// hzFromJiffies tells CONFIG_HZ from the jiffies counter of a 64-bit
// kernel and the seconds since boot. The counter starts at INITIAL_JIFFIES,
// (u32)(-300 * HZ), so jiffies = 2^32 + HZ * (uptime - 300): the rate that
// fits, among the ones kernels are built with, within two seconds and
// alone. Near 300 s of uptime every rate fits, and it says 0.
func hzFromJiffies(jiffies uint64, uptime float64) uint32 {
	if jiffies == 0 {
		return 0
	}
	const initialBase = 1 << 32
	found := uint32(0)
	for _, hz := range []uint32{100, 250, 300, 1000} {
		boot := float64(int64(jiffies-initialBase))/float64(hz) + 300
		if d := boot - uptime; d > -2 && d < 2 {
			if found != 0 {
				return 0 // ambiguous
			}
			found = hz
		}
	}
	return found
}
