package collector

import (
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// prefault maps in the whole pages of s's backing array in one call,
// rather than a page fault each when first written: on the VM of
// BENCHMARKS.md a fault costs 11-14 µs a page, a page populated in bulk
// about half that (the bench's faults suite). Before Linux 5.14 the kernel
// refuses it, and the pages fault in as before. Small arrays are not worth
// the call.
func prefault[E any](s []E) {
	var e E
	if uintptr(cap(s))*unsafe.Sizeof(e) < prefaultMin {
		return
	}
	unix.Madvise(wholePages(s), unix.MADV_POPULATE_WRITE)
}

// wholePages returns the pages that lie wholly within s's backing array.
func wholePages[E any](s []E) []byte {
	var e E
	size := uintptr(cap(s)) * unsafe.Sizeof(e)
	p := unsafe.Pointer(unsafe.SliceData(s))
	page := uintptr(os.Getpagesize())
	skip := (page - uintptr(p)%page) % page
	if size < skip+page {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Add(p, skip)), (size-skip)&^(page-1))
}

// prefaultMin is the smallest array prefault maps in.
const prefaultMin = 16 << 10
