package collector

import (
	"os"
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
