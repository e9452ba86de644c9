package collector

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
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

// TestPrefaultHuge: prefaultHuge does what prefault does, and where the
// kernel's transparent huge pages are not off, the 2 MiB pages wholly
// within the array are huge pages.
func TestPrefaultHuge(t *testing.T) {
	s := make([]Socket, 0, (8<<20)/unsafe.Sizeof(Socket{})) // 8 MiB: three huge pages at least
	s = s[:1]
	s[0].Inode = 42
	prefaultHuge(s)
	checkPrefaulted(t, s)
	mode, err := os.ReadFile("/sys/kernel/mm/transparent_hugepage/enabled")
	if err != nil || bytes.Contains(mode, []byte("[never]")) {
		t.Logf("transparent huge pages off (%q, %v): small pages only", bytes.TrimSpace(mode), err)
		return
	}
	huge, err := anonHugeKiB(uintptr(unsafe.Pointer(unsafe.SliceData(s))), uintptr(cap(s))*unsafe.Sizeof(Socket{}))
	if err != nil {
		t.Fatal(err)
	}
	if huge < 3*2048 {
		t.Errorf("%d KiB of huge pages in the array's mappings, want at least 3 huge pages (THP %q)", huge, bytes.TrimSpace(mode))
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

// anonHugeKiB sums AnonHugePages over this process's mappings that
// overlap [addr, addr+size), from /proc/self/smaps.
func anonHugeKiB(addr, size uintptr) (int, error) {
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sum, in := 0, false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		var lo, hi uintptr
		if n, _ := fmt.Sscanf(line, "%x-%x ", &lo, &hi); n == 2 {
			in = lo < addr+size && addr < hi
			continue
		}
		if rest, ok := bytes.CutPrefix([]byte(line), []byte("AnonHugePages:")); ok && in {
			kib, err := strconv.Atoi(string(bytes.Fields(rest)[0]))
			if err != nil {
				return 0, fmt.Errorf("smaps: %q: %w", line, err)
			}
			sum += kib
		}
	}
	return sum, sc.Err()
}
