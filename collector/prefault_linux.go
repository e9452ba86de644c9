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

// prefaultHuge is prefault for an array a one-shot process keeps to its
// exit (a listing's sockets): the 2 MiB pages that lie wholly within it
// are asked for as huge pages first (MADV_HUGEPAGE), each mapped in at
// once (the bench's faults suite). Where transparent huge pages are off,
// or the kernel has none free, they come in small pages as before. The
// range stays marked: later faults there take huge pages too, which a
// process that runs on should not pay for in memory.
func prefaultHuge[E any](s []E) {
	if os.Getpagesize() == 4096 { // 2 MiB huge pages (x86-64, arm64)
		if b := whole(s, 2<<20); b != nil {
			unix.Madvise(b, unix.MADV_HUGEPAGE)
		}
	}
	prefault(s)
}

// wholePages returns the pages that lie wholly within s's backing array.
func wholePages[E any](s []E) []byte {
	return whole(s, uintptr(os.Getpagesize()))
}

// whole returns the aligned units of size unit (a power of two) that lie
// wholly within s's backing array; nil when none does.
func whole[E any](s []E, unit uintptr) []byte {
	var e E
	size := uintptr(cap(s)) * unsafe.Sizeof(e)
	p := unsafe.Pointer(unsafe.SliceData(s))
	skip := (unit - uintptr(p)%unit) % unit
	if size < skip+unit {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Add(p, skip)), (size-skip)&^(unit-1))
}

// prefaultMin is the smallest array prefault maps in.
const prefaultMin = 16 << 10
