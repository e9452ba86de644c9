package collector

import (
	"bufio"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TestPrefault: prefault leaves the whole pages of an array resident and
// its contents as they were.
func TestPrefault(t *testing.T) {
	s := make([]Socket, 0, 4096) // ~1 MiB: a fresh span, not yet touched
	s = s[:1]
	s[0].Inode = 42
	prefault(s)
	checkPrefaulted(t, s)
}

// TestPrefaultHuge: prefaultHuge does what prefault does, and asks for
// huge pages for the 2 MiB units wholly within the array (the mappings
// there are marked hg). Whether the kernel then has huge pages to give
// (none where the range was used before) is the bench's to show.
func TestPrefaultHuge(t *testing.T) {
	s := make([]Socket, 0, (8<<20)/unsafe.Sizeof(Socket{})) // 8 MiB: three 2 MiB units at least
	s = s[:1]
	s[0].Inode = 42
	prefaultHuge(s)
	checkPrefaulted(t, s)
	if _, err := os.Stat("/sys/kernel/mm/transparent_hugepage"); err != nil {
		t.Logf("no transparent huge pages in this kernel (%v): small pages only", err)
		return
	}
	marked, huge, err := hugeMarked(uintptr(unsafe.Pointer(unsafe.SliceData(s))), uintptr(cap(s))*unsafe.Sizeof(Socket{}))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d KiB marked for huge pages, %d KiB in huge pages", marked>>10, huge)
	if marked < 3*(2<<20) {
		t.Errorf("%d KiB of the array marked for huge pages, want at least three 2 MiB units", marked>>10)
	}
}

// checkPrefaulted fails t unless the whole pages of s's backing array are
// resident, and the array holds 42 as the first socket's inode and zeros
// elsewhere.
func checkPrefaulted(t *testing.T, s []Socket) {
	t.Helper()
	full := s[:cap(s)]
	pages := wholePages(full)
	page := os.Getpagesize()
	vec := make([]byte, len(pages)/page)
	if _, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(unsafe.SliceData(pages))), uintptr(len(pages)), uintptr(unsafe.Pointer(&vec[0]))); errno != 0 {
		t.Fatal(errno)
	}
	missing := 0
	for _, v := range vec {
		if v&1 == 0 {
			missing++
		}
	}
	if missing > 0 {
		t.Errorf("%d of %d pages not resident after prefault", missing, len(vec))
	}
	for i := range full {
		if want := map[bool]uint64{true: 42}[i == 0]; full[i].Inode != want {
			t.Fatalf("socket %d changed: inode %d, want %d", i, full[i].Inode, want)
		}
	}
}

// hugeMarked returns how much of [addr, addr+size) lies in mappings
// marked for huge pages (VmFlags hg), and the AnonHugePages (KiB) of the
// mappings that overlap it, from /proc/self/smaps.
func hugeMarked(addr, size uintptr) (marked uintptr, hugeKiB int, err error) {
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	var overlap uintptr
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		var lo, hi uintptr
		if n, _ := fmt.Sscanf(line, "%x-%x ", &lo, &hi); n == 2 {
			overlap = 0
			if lo < addr+size && addr < hi {
				overlap = min(hi, addr+size) - max(lo, addr)
			}
			continue
		}
		if overlap == 0 {
			continue
		}
		if rest, ok := strings.CutPrefix(line, "AnonHugePages:"); ok {
			kib, err := strconv.Atoi(strings.Fields(rest)[0])
			if err != nil {
				return 0, 0, fmt.Errorf("smaps: %q: %w", line, err)
			}
			hugeKiB += kib
		}
		if rest, ok := strings.CutPrefix(line, "VmFlags:"); ok && slices.Contains(strings.Fields(rest), "hg") {
			marked += overlap
		}
	}
	return marked, hugeKiB, sc.Err()
}
