package ebpf

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/bits"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// "closewait tracer install" also pins the listing's iterators, in a
// directory named for the object they came from, beside the tracer's
// pins. A listing of the same object opens them instead of loading its
// own: no kernel BTF to decode, no relocation, no verifier. Their
// settings are in the iter_cfg map, and their maps keep state between
// walks, so listings take turns: each holds an flock on the directory
// from LoadIterators to Close.

const (
	pinIterPrefix = "iter-"
	pinFiles      = "task_file" // iter/task_file's link
	pinTCP        = "tcp"       // iter/tcp's link
)

// lockWait is how long a listing waits for another's turn before it loads
// its own programs.
var lockWait = 2 * time.Second

// pinnedMaps are the maps pinned beside the iterators' links.
var pinnedMaps = []string{"iter_cfg", "sent", "held_counts", "held_walk", "state_counts"}

// iterPinName names the directory of this object's pinned iterators.
var iterPinName = sync.OnceValue(func() string {
	sum := sha256.Sum256(_ClosewaitBytes)
	return pinIterPrefix + hex.EncodeToString(sum[:6])
})

// pinIterators loads the iterators, reading the stamps of the tracer just
// installed in dir, and pins them there.
func pinIterators(dir string) (err error) {
	it, err := loadIterators(IterOptions{PinDir: dir, AllNetNS: true}, closewaitIterCfg{}, sentSlots(true))
	if err != nil {
		return err
	}
	defer it.Close() // the pins keep what they name
	if it.waitTCP(); it.filesErr != nil || it.tcpErr != nil {
		return errors.Join(it.filesErr, it.tcpErr)
	}
	p := filepath.Join(dir, iterPinName())
	if err := os.Mkdir(p, 0o700); err != nil {
		return fmt.Errorf("creating pin directory: %w", err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(p)
		}
	}()
	objs := map[string]interface{ Pin(string) error }{pinFiles: it.files, pinTCP: it.tcp,
		"iter_cfg": it.cfg, "sent": it.sent, "held_counts": it.held, "held_walk": it.heldWalk, "state_counts": it.counts}
	for name, o := range objs {
		if err := o.Pin(filepath.Join(p, name)); err != nil {
			return fmt.Errorf("pinning %s: %w", name, err)
		}
	}
	return nil
}

// HasPinnedIterators says whether this object's iterators are pinned under
// dir ("" the default): whether a listing would open them rather than load.
func HasPinnedIterators(dir string) bool {
	_, err := os.Stat(filepath.Join(pinDirOr(dir), iterPinName()))
	return err == nil
}

// openPinned opens this object's iterators pinned under dir, and waits for
// their turn. It returns nil when there are none (with a warning when
// they are another object's, or busy or broken).
func openPinned(dir string) (*Iterators, string) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, ""
	}
	found, other := false, false
	for _, e := range ents {
		found = found || e.Name() == iterPinName()
		other = other || strings.HasPrefix(e.Name(), pinIterPrefix)
	}
	if !found {
		if other {
			return nil, "the pinned iterators are from another closewait version, this listing loads its own: " +
				"run closewait tracer remove, then closewait tracer install"
		}
		return nil, ""
	}
	p := filepath.Join(dir, iterPinName())
	it := &Iterators{tcpLoaded: make(chan struct{})}
	close(it.tcpLoaded)
	if err := it.openPins(p); err != nil {
		it.Close()
		return nil, fmt.Sprintf("pinned iterators unusable (%v): this listing loads its own", err)
	}
	it.tracer = pinnedTracer(dir)
	return it, ""
}

// openPins takes the turn on the pins in p and opens them.
func (it *Iterators) openPins(p string) error {
	var err error
	if it.lock, err = lockDir(p, lockWait); err != nil {
		return err
	}
	links := map[string]**link.Iter{pinFiles: &it.files, pinTCP: &it.tcp}
	for name, dst := range links {
		l, err := link.LoadPinnedLink(filepath.Join(p, name), nil)
		if err != nil {
			return fmt.Errorf("opening %s: %w", name, err)
		}
		var ok bool
		if *dst, ok = l.(*link.Iter); !ok {
			l.Close()
			return fmt.Errorf("%s is not an iterator", name)
		}
	}
	ms := []**ebpf.Map{&it.cfg, &it.sent, &it.held, &it.heldWalk, &it.counts}
	for i, name := range pinnedMaps {
		if *ms[i], err = ebpf.LoadPinnedMap(filepath.Join(p, name), nil); err != nil {
			return fmt.Errorf("opening %s: %w", name, err)
		}
	}
	// Empty what a listing killed in its walk may have left.
	err = it.readHeld()
	it.lastHeld = nil
	if err != nil {
		return err
	}
	return it.emptyHeldWalk()
}

// pinnedTracer is the mode of the tracer installed in dir, whose stamps
// the pinned iterators read.
func pinnedTracer(dir string) TracerMode {
	for _, mode := range []TracerMode{ModeBTF, ModeTracepoint} {
		if _, err := os.Stat(filepath.Join(dir, stampMapName(mode))); err == nil {
			return mode
		}
	}
	return ""
}

// lockDir holds an exclusive flock on the directory p, waiting at most
// wait for it; closing the file returned releases it.
func lockDir(p string, wait time.Duration) (*os.File, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(wait)
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return f, nil
		}
		if err != unix.EWOULDBLOCK || time.Now().After(deadline) {
			f.Close()
			if err == unix.EWOULDBLOCK {
				return nil, fmt.Errorf("busy for %v", wait)
			}
			return nil, fmt.Errorf("locking: %w", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// removeIterators removes every version's pinned iterators under dir,
// and reports whether there were any.
func removeIterators(dir string) (bool, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return false, nil
	}
	found := false
	var errs []error
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), pinIterPrefix) {
			found = true
			if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
				errs = append(errs, fmt.Errorf("unpinning iterators: %w", err))
			}
		}
	}
	return found, errors.Join(errs...)
}

// sentSlots sizes the table of what iter/task_file sent: room for twice
// the TCP sockets the kernel has allocated; for pinned iterators, which
// serve the host as it grows, four times and at least 2^18 (4 MiB). A
// socket that finds no room is sent twice, which costs only time.
func sentSlots(pinned bool) uint32 {
	n, least := 2*tcpAllocated(), 1<<12
	if pinned {
		n, least = 2*n, 1<<18
	}
	n = min(max(n, least), 1<<20)
	return 1 << bits.Len32(uint32(n-1))
}

// tcpAllocated is the kernel's count of TCP sockets, in every namespace
// (sockstat's alloc); 0 when unknown.
func tcpAllocated() int {
	b, err := os.ReadFile("/proc/net/sockstat")
	if err != nil {
		return 0
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 || f[0] != "TCP:" {
			continue
		}
		for i := 1; i+1 < len(f); i += 2 {
			if f[i] == "alloc" {
				n, _ := strconv.Atoi(f[i+1])
				return n
			}
		}
	}
	return 0
}
