package collector

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// resolveOwners fills Owners of every socket with an inode, from a scan of
// every process's fds under procRoot: every holder of every socket, so
// that a socket held by several processes (inherited across fork, passed
// over a unix socket) names them all, whichever the listing shows. It
// returns the holders of the extra inodes too (listeners', say).
func resolveOwners(ctx context.Context, procRoot string, socks []Socket, extra []uint64) (map[uint64][]Owner, []string, error) {
	owners, _, warnings, err := resolveOwnersClosed(ctx, procRoot, socks, extra, false, nil)
	return owners, warnings, err
}

// resolveOwnersClosed is resolveOwners that, with closed, also returns
// the socket fds of processes in the namespaces nets (nil: this one) whose
// inodes are neither in socks nor in extra: candidates for closedSockets.
func resolveOwnersClosed(ctx context.Context, procRoot string, socks []Socket, extra []uint64, closed bool, nets []netNamespace) (map[uint64][]Owner, []closedFD, []string, error) {
	want := make(map[uint64]bool, len(socks)+len(extra))
	for i := range socks {
		if ino := socks[i].Inode; ino != 0 {
			want[ino] = true
		}
	}
	for _, ino := range extra {
		want[ino] = true
	}
	if len(want) == 0 && !closed {
		return nil, nil, nil, nil
	}
	sc := &ownerScan{procRoot: procRoot, want: want, closed: closed}
	if len(nets) > 0 {
		sc.nets = make(map[uint64]bool, len(nets))
		for _, ns := range nets {
			sc.nets[ns.inode] = true
		}
	}
	held, cands, warnings, err := sc.run(ctx)
	if err != nil {
		return nil, nil, nil, err
	}
	given := make([]bool, len(held.matches)) // by the first match of each inode
	for i := range socks {
		first, o := held.get(socks[i].Inode)
		if o == nil {
			continue
		}
		if given[first] { // the same socket listed twice: no shared slice
			o = slices.Clone(o)
		}
		socks[i].Owners, given[first] = o, true
	}
	var owners map[uint64][]Owner
	for _, ino := range extra {
		if _, o := held.get(ino); o != nil {
			if owners == nil {
				owners = make(map[uint64][]Owner, len(extra))
			}
			owners[ino] = o
		}
	}
	return owners, cands, warnings, nil
}

// ownerTable is what an owner scan found: the holders of each socket inode
// in one array, rather than a map and a slice per socket (45k allocations
// at 45k sockets).
type ownerTable struct {
	matches []ownerMatch // by inode, then pid and fd
	owners  []Owner      // owners[i] holds matches[i]
}

// get returns the holders of ino, in pid and fd order, and the index of
// the first; nil if none.
func (t *ownerTable) get(ino uint64) (int, []Owner) {
	i, found := slices.BinarySearchFunc(t.matches, ino, func(m ownerMatch, ino uint64) int { return cmp.Compare(m.ino, ino) })
	if !found || ino == 0 {
		return 0, nil
	}
	j := i + 1
	for j < len(t.matches) && t.matches[j].ino == ino {
		j++
	}
	return i, t.owners[i:j:j] // full: an append copies
}

// byInode returns the holders of every inode in t.
func (t *ownerTable) byInode() map[uint64][]Owner {
	m := make(map[uint64][]Owner)
	for i, j := 0, 0; i < len(t.matches); i = j {
		for j = i + 1; j < len(t.matches) && t.matches[j].ino == t.matches[i].ino; j++ {
		}
		m[t.matches[i].ino] = t.owners[i:j:j]
	}
	return m
}

// scanOwners reads the fd table of every process under procRoot, in
// parallel, and returns the holders of the socket inodes in want (of every
// socket when want is nil), in pid and fd order.
func scanOwners(ctx context.Context, procRoot string, want map[uint64]bool) (map[uint64][]Owner, []string, error) {
	held, _, warnings, err := (&ownerScan{procRoot: procRoot, want: want}).run(ctx)
	if err != nil {
		return nil, nil, err
	}
	return held.byInode(), warnings, nil
}

// run scans as scanOwners does and, with sc.closed, returns the closed
// candidates too.
func (sc *ownerScan) run(ctx context.Context) (ownerTable, []closedFD, []string, error) {
	procRoot := sc.procRoot
	pids, err := listPIDs(procRoot)
	if err != nil {
		return ownerTable{}, nil, nil, fmt.Errorf("listing processes: %w", err)
	}
	sc.comms = make(map[int]string)
	if sc.closed && sc.nets == nil {
		sc.nets = map[uint64]bool{netnsInode(procRoot): true}
	}
	// Not capped by the number of pids: chunks of one large fd table
	// keep every worker busy.
	nw := max(runtime.GOMAXPROCS(0), 2)
	workers := make([]*scanWorker, nw)
	jobs := make(chan int)
	chunks := make(chan fdChunk, 256)
	var wg sync.WaitGroup
	for i := range workers {
		w := &scanWorker{
			sc:      sc,
			chunks:  chunks,
			dirents: make([]byte, 32<<10),
			link:    make([]byte, 64),
		}
		workers[i] = w
		wg.Go(func() { w.run(ctx, jobs, chunks) })
	}
	sc.dispatch(ctx, pids, jobs)
	close(jobs)
	// Chunks are queued only while a pid is being scanned: once every
	// scan is over, none can come, and the workers may stop.
	sc.scans.Wait()
	close(chunks)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return ownerTable{}, nil, nil, err
	}

	n := 0
	for _, w := range workers {
		n += len(w.matches)
	}
	held := ownerTable{matches: make([]ownerMatch, 0, n), owners: make([]Owner, n)}
	for _, w := range workers {
		held.matches = append(held.matches, w.matches...)
	}
	slices.SortFunc(held.matches, func(a, b ownerMatch) int {
		return cmp.Or(cmp.Compare(a.ino, b.ino), cmp.Compare(a.pid, b.pid), cmp.Compare(a.fd, b.fd))
	})
	for i, m := range held.matches {
		held.owners[i] = Owner{PID: int(m.pid), Comm: sc.comms[int(m.pid)], FD: int(m.fd)}
	}
	var warnings []string
	if n := sc.denied.Load(); n > 0 && os.Geteuid() != 0 {
		warnings = append(warnings, fmt.Sprintf("not root: owners of other users' sockets are hidden (%d processes unreadable)", n))
	}
	var cands []closedFD
	if sc.closed {
		n := 0
		for _, w := range workers {
			n += len(w.closed)
		}
		cands = make([]closedFD, 0, n) // one copy, at its size: tens of thousands at a large load
		for _, w := range workers {
			cands = append(cands, w.closed...)
		}
		// No count: serve says each distinct warning once.
		if sc.otherNet.Load() > 0 {
			warnings = append(warnings, "closed sockets are looked for in the listed network namespaces only: processes in others are passed over")
		}
	}
	return held, cands, warnings, nil
}

// ownerScan is the state the workers of one scanOwners share.
type ownerScan struct {
	procRoot string
	want     map[uint64]bool // socket inodes to look for, nil for all; read-only
	denied   atomic.Int64    // processes whose fds we may not read
	// closed asks for the socket fds of processes in nets (namespace
	// inodes) whose inode is not in want; otherNet counts the processes
	// passed over.
	closed   bool
	nets     map[uint64]bool
	otherNet atomic.Int64

	scans sync.WaitGroup // pids handed out and not yet scanned

	mu    sync.Mutex
	comms map[int]string // command names of the owners
}

// dispatch hands every pid to the workers.
func (sc *ownerScan) dispatch(ctx context.Context, pids []int, jobs chan<- int) {
	for _, pid := range pids {
		sc.scans.Add(1)
		select {
		case jobs <- pid:
		case <-ctx.Done():
			sc.scans.Done()
			return
		}
	}
}

// parsePPID takes the fourth field of /proc/PID/stat; the command name in
// the second may hold spaces and parentheses, so count from the last ')'.
func parsePPID(stat []byte) int {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0
	}
	fields := bytes.Fields(stat[i+1:])
	if len(fields) < 2 {
		return 0
	}
	p, err := strconv.Atoi(string(fields[1]))
	if err != nil || p < 0 {
		return 0
	}
	return p
}

// scanWorker scans the fd tables of processes handed to it. A large table
// is cut into chunks that idle workers take, so one process holding most of
// the sockets does not leave the other workers waiting.
type scanWorker struct {
	sc      *ownerScan
	chunks  chan<- fdChunk
	dirents []byte
	link    []byte
	name    []byte
	fds     []int32 // the listing's current chunk
	matches []ownerMatch
	closed  []closedFD // socket fds not in want, with ownerScan.closed
}

type ownerMatch struct {
	ino     uint64
	pid, fd int32
}

// fdDir is an open procRoot/PID/fd shared by the chunks of its listing.
type fdDir struct {
	pid        int
	fd         int
	refs       atomic.Int32 // chunks not yet done; the last one closes fd
	registered atomic.Bool  // the comm of pid is in ownerScan.comms
	look       bool         // in ownerScan.nets: look for closed sockets
	netns      uint64       // which
}

// release drops one hold; the last closes the directory.
func (d *fdDir) release() {
	if d.refs.Add(-1) == 0 {
		unix.Close(d.fd)
	}
}

// fdChunk is a run of fds of one process to readlink.
type fdChunk struct {
	dir *fdDir
	fds []int32
}

// fdChunkSize is the number of fds a chunk holds: under a millisecond of
// readlinks, so a second worker joins a large table soon after its listing
// starts, and few enough channel sends to cost nothing.
const fdChunkSize = 256

// run takes chunks before pids, so a process already opened is finished
// first, and stops when both channels are closed.
func (w *scanWorker) run(ctx context.Context, jobs <-chan int, chunks <-chan fdChunk) {
	for jobs != nil || chunks != nil {
		select {
		case c, ok := <-chunks:
			if ok {
				w.readlinks(ctx, c)
			} else {
				chunks = nil
			}
			continue
		default:
		}
		select {
		case c, ok := <-chunks:
			if !ok {
				chunks = nil
				continue
			}
			w.readlinks(ctx, c)
		case pid, ok := <-jobs:
			if !ok {
				jobs = nil
				continue
			}
			w.scan(ctx, pid)
			w.sc.scans.Done()
		}
	}
}

// direntNameOff is offsetof(struct linux_dirent64, d_name).
const direntNameOff = 19

// scan lists the fd table of pid and reads its links. Each full chunk of
// the listing is queued for idle workers as soon as it is listed; the
// scanning worker keeps the last, partial one (all of a small table).
func (w *scanWorker) scan(ctx context.Context, pid int) {
	if ctx.Err() != nil {
		return
	}
	dfd, err := unix.Open(w.sc.procRoot+"/"+strconv.Itoa(pid)+"/fd", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		// ENOENT and ESRCH: the process exited; nothing to say.
		if errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM) {
			w.sc.denied.Add(1)
		}
		return
	}
	dir := &fdDir{pid: pid, fd: dfd}
	if w.sc.closed {
		dir.netns, dir.look = w.sc.listedNetNS(pid)
	}
	dir.refs.Store(1) // the listing's own hold
	defer dir.release()
	var mine []fdChunk
	fds := w.fds[:0]
	listFDs(dfd, w.dirents, func(fd int32, _ []byte) bool {
		fds = append(fds, fd)
		if len(fds) == fdChunkSize {
			dir.refs.Add(1)
			c := fdChunk{dir, slices.Clone(fds)}
			fds = fds[:0]
			select {
			case w.chunks <- c:
			default:
				mine = append(mine, c) // queue full: others have enough
			}
		}
		return true
	})
	w.fds = fds
	for _, c := range mine {
		w.readlinks(ctx, c)
	}
	dir.refs.Add(1)
	w.readlinks(ctx, fdChunk{dir, fds})
}

// listFDs lists the fd directory open at dfd, with getdents64 into buf,
// and calls fn with each fd's number and name until fn returns false.
func listFDs(dfd int, buf []byte, fn func(fd int32, name []byte) bool) {
	for {
		n, err := unix.Getdents(dfd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil || n <= 0 {
			return
		}
		for b := buf[:n]; len(b) >= direntNameOff; {
			reclen := int(binary.NativeEndian.Uint16(b[16:18]))
			if reclen < direntNameOff || reclen > len(b) {
				break
			}
			name := b[direntNameOff:reclen]
			b = b[reclen:]
			if i := bytes.IndexByte(name, 0); i >= 0 {
				name = name[:i]
			}
			fd, ok := atoi32(name)
			if !ok {
				continue // "." and ".."
			}
			if !fn(fd, name) {
				return
			}
		}
	}
}

// readlinks reads the links of a chunk's fds and records the wanted sockets.
func (w *scanWorker) readlinks(ctx context.Context, c fdChunk) {
	dir := c.dir
	defer dir.release()
	if ctx.Err() != nil {
		return
	}
	for _, fd := range c.fds {
		nl, err := readFDLink(dir.fd, fd, &w.name, w.link)
		if err != nil {
			continue // closed meanwhile
		}
		ino, ok := socketInode(w.link[:nl])
		if !ok {
			continue
		}
		if w.sc.want != nil && !w.sc.want[ino] {
			if dir.look {
				w.closed = append(w.closed, closedFD{ino: ino, pid: int32(dir.pid), fd: fd, netns: dir.netns})
			}
			continue
		}
		if !dir.registered.Load() {
			w.sc.register(dir)
		}
		w.matches = append(w.matches, ownerMatch{ino: ino, pid: int32(dir.pid), fd: fd})
	}
}

// register records the command name of dir's process, an owner; the
// mutex makes chunks of one process wait for it.
func (sc *ownerScan) register(dir *fdDir) {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if dir.registered.Load() {
		return
	}
	sc.comms[dir.pid] = readComm(sc.procRoot, dir.pid)
	dir.registered.Store(true)
}

// readFDLink reads the link of fd in the fd directory open at dirfd into
// link, building the fd's name in *name: no allocation per fd.
func readFDLink(dirfd int, fd int32, name *[]byte, link []byte) (int, error) {
	*name = append(strconv.AppendInt((*name)[:0], int64(fd), 10), 0)
	return readlinkat(dirfd, *name, link)
}

// readlinkat is unix.Readlinkat for a name already NUL-terminated, which
// spares two allocations per fd on the hot path.
func readlinkat(dirfd int, name, buf []byte) (int, error) {
	if len(name) == 0 || name[len(name)-1] != 0 || len(buf) == 0 {
		return 0, unix.EINVAL
	}
	n, _, errno := unix.Syscall6(unix.SYS_READLINKAT, uintptr(dirfd), uintptr(unsafe.Pointer(&name[0])),
		uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)), 0, 0)
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}

// socketInode parses the link text "socket:[12345]".
func socketInode(link []byte) (uint64, bool) {
	const prefix = "socket:["
	if len(link) < len(prefix)+2 || string(link[:len(prefix)]) != prefix || link[len(link)-1] != ']' {
		return 0, false
	}
	var ino uint64
	for _, c := range link[len(prefix) : len(link)-1] {
		d := uint64(c - '0')
		if c < '0' || c > '9' || ino > (math.MaxUint64-d)/10 {
			return 0, false
		}
		ino = ino*10 + d
	}
	return ino, true
}

// atoi32 parses a non-negative decimal without allocating.
func atoi32(b []byte) (int32, bool) {
	if len(b) == 0 || len(b) > 10 {
		return 0, false
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	if n > math.MaxInt32 {
		return 0, false
	}
	return int32(n), true
}

func readComm(procRoot string, pid int) string {
	b, err := os.ReadFile(procRoot + "/" + strconv.Itoa(pid) + "/comm")
	if err != nil {
		return ""
	}
	return string(bytes.TrimSuffix(b, []byte("\n")))
}

// listPIDs returns the pids under procRoot in ascending order, so parents
// usually come before their children.
func listPIDs(procRoot string) ([]int, error) {
	d, err := os.Open(procRoot)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return nil, err
	}
	pids := make([]int, 0, len(names))
	for _, n := range names {
		if pid, ok := atoi32([]byte(n)); ok && pid > 0 {
			pids = append(pids, int(pid))
		}
	}
	slices.Sort(pids)
	return pids, nil
}
