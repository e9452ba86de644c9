package ebpf

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// IterOptions configures LoadIterators.
type IterOptions struct {
	// States is the set of TCP states to report, as a mask of 1<<state in
	// kernel numbering (sock_diag's idiag_states); 0 means CLOSE_WAIT.
	States uint32
	// PinDir is where "closewait tracer install" pinned the tracer; ""
	// means DefaultPinDir. When a tracer is installed there, CLOSE_WAIT
	// records carry exact ages from its stamps.
	PinDir string
	// AllNetNS reports sockets of every network namespace; by default only
	// this process's, the one sock_diag and iter/tcp see.
	AllNetNS bool
	// OwnersOnly loads iter/task_file alone, for owner lookups (trace);
	// TCP then fails.
	OwnersOnly bool
	// CountStates makes TCP count every socket it walks past, in any
	// state: see Iterators.StateCounts. Off, the walk skips unwanted
	// sockets after reading their state alone.
	CountStates bool
}

// StateCounts counts sockets by address family ([0] IPv4, [1] IPv6, where
// dual-stack sockets are) and state, in kernel numbering, as sock_diag
// reports them: time-wait sockets by their substate (TIME_WAIT or
// FIN_WAIT2), request sockets as SYN_RECV.
type StateCounts [2][16]uint32

// Iterators are the loaded snapshot programs. Each Files or TCP call walks
// the kernel's tables afresh. Close releases everything.
type Iterators struct {
	files, tcp *link.Iter
	progs      []*ebpf.Program
	tcpPass    *ebpf.Map
	tcpLoaded  chan struct{}  // closed once loadTCP is done, nil with OwnersOnly
	tcpErr     error          // from loadTCP
	counts     *ebpf.Variable // state_counts, with CountStates
	lastCounts StateCounts
	counted    bool
	tracer     TracerMode
	warnings   []string
}

// readBuf is the read size: bpf_iter returns at most its 32 KiB seq_file
// buffer per read, so this takes every read whole.
const readBuf = 64 << 10

// LoadIterators loads and attaches iter/task_file and iter/tcp. It does
// not touch the tracer except to read the stamps of an installed one.
// iter/tcp is loaded in the background, so that Files may start at once:
// an error loading it comes from TCP.
func LoadIterators(opts IterOptions) (_ *Iterators, err error) {
	if err := preflight(); err != nil {
		return nil, err
	}
	// Decoding the kernel's BTF, which relocating and attaching need, is
	// the larger part of loading: start it now, on another core, while this
	// one parses the objects.
	kernelTypes := btf.NewCache()
	decoded := make(chan struct{})
	go func() {
		defer close(decoded)
		kernelTypes.Kernel() // an error comes again from the loader
	}()
	defer func() { <-decoded }() // leave nothing running, not even on errors
	if opts.States == 0 {
		opts.States = 1 << stateCloseWait
	}
	spec, err := loadClosewait()
	if err != nil {
		return nil, fmt.Errorf("parsing objects: %w", err)
	}
	netns := uint32(0)
	if !opts.AllNetNS {
		if netns, err = ownNetNS(); err != nil {
			return nil, err
		}
	}
	seen := uint32(1)
	if !opts.OwnersOnly {
		seen = seenSize()
	}
	consts := map[string]any{
		"state_mask":   opts.States,
		"target_netns": netns,
		"mark_seen":    boolByte(!opts.OwnersOnly),
		"seen_mask":    seen - 1,
		"count_states": boolByte(opts.CountStates && !opts.OwnersOnly),
	}
	if err := setVars(spec, consts); err != nil {
		return nil, err
	}
	spec.Maps["seen"].MaxEntries = seen

	it := &Iterators{}
	defer func() {
		if err != nil {
			it.Close()
		}
	}()
	copts := &ebpf.CollectionOptions{MapReplacements: map[string]*ebpf.Map{}, Cache: kernelTypes}
	mode, stamps, warn := openStamps(opts.PinDir)
	if warn != "" {
		it.warnings = append(it.warnings, warn)
	}
	if stamps != nil {
		// The programs keep their own references; iter/tcp's load may
		// still be using this one when LoadIterators returns.
		defer func() {
			if it.tcpLoaded == nil {
				stamps.Close()
			}
		}()
		copts.MapReplacements[stampMapName(mode)] = stamps
		it.tracer = mode
	}
	if mode != ModeTracepoint {
		// Only a stand-in for a map that no tracer fills: keep it small.
		spec.Maps["stamps_by_sk"].MaxEntries = 1
	}
	if err := setVars(spec, map[string]any{"read_stamps": readStamps(it.tracer)}); err != nil {
		return nil, err
	}

	// iter/task_file first: its walk, the longer one, can start while
	// iter/tcp is relocated and verified on another core.
	var files struct {
		Prog *ebpf.Program `ebpf:"dump_task_file"`
		Seen *ebpf.Map     `ebpf:"seen"`
	}
	err = spec.LoadAndAssign(&files, copts)
	if err != nil && stamps != nil && isIncompatible(err) {
		// A tracer pinned by another closewait version: list without it.
		it.warnings = append(it.warnings, "the installed tracer is from another closewait version, ages are bounds: "+
			"run closewait tracer remove, then closewait tracer install")
		it.tracer = ""
		copts.MapReplacements = map[string]*ebpf.Map{}
		spec.Maps["stamps_by_sk"].MaxEntries = 1
		if err := setVars(spec, map[string]any{"read_stamps": readStamps("")}); err != nil {
			return nil, err
		}
		err = spec.LoadAndAssign(&files, copts)
	}
	if err != nil {
		return nil, loadError("iterators", err)
	}
	it.progs = append(it.progs, files.Prog)
	if it.files, err = link.AttachIter(link.IterOptions{Program: files.Prog}); err != nil {
		files.Seen.Close()
		return nil, loadError("iter/task_file", err)
	}
	if opts.OwnersOnly {
		files.Seen.Close()
		return it, nil
	}
	copts.MapReplacements["seen"] = files.Seen
	it.tcpLoaded = make(chan struct{})
	go func() {
		defer close(it.tcpLoaded)
		it.tcpErr = it.loadTCP(spec, copts, opts.CountStates)
		files.Seen.Close() // the programs hold their own references
		if stamps != nil {
			stamps.Close()
		}
	}()
	return it, nil
}

// loadTCP loads and attaches iter/tcp, sharing seen with iter/task_file.
func (it *Iterators) loadTCP(spec *ebpf.CollectionSpec, copts *ebpf.CollectionOptions, count bool) error {
	var tcp struct {
		Prog   *ebpf.Program  `ebpf:"dump_tcp"`
		Pass   *ebpf.Map      `ebpf:"tcp_pass"`
		Counts *ebpf.Variable `ebpf:"state_counts"`
	}
	if err := spec.LoadAndAssign(&tcp, copts); err != nil {
		return loadError("iter/tcp", err)
	}
	it.progs = append(it.progs, tcp.Prog)
	it.tcpPass = tcp.Pass
	if count {
		it.counts = tcp.Counts
	}
	var err error
	if it.tcp, err = link.AttachIter(link.IterOptions{Program: tcp.Prog}); err != nil {
		return loadError("iter/tcp", err)
	}
	return nil
}

// Tracer returns the mode of the installed tracer whose stamps the
// iterators read, or "" when none is installed.
func (it *Iterators) Tracer() TracerMode { return it.tracer }

// StateCounts returns the counts of the last TCP walk, when LoadIterators
// was asked to count; ok is false otherwise, or before a walk.
func (it *Iterators) StateCounts() (c StateCounts, ok bool) {
	return it.lastCounts, it.counted
}

// Warnings returns what the user should know about this load, such as an
// installed tracer that could not be used.
func (it *Iterators) Warnings() []string { return it.warnings }

// ReadFiles runs iter/task_file like Files but keeps the records, raw, for
// the caller to count before it decodes them: so it can size its storage
// once.
func (it *Iterators) ReadFiles() (*Records, error) {
	return readAll(it.files, "iter/task_file")
}

// Files walks every task's fds and calls fn with each TCP socket in the
// requested states, owner included; a socket held by several fds comes
// once per fd. It also calls fn with one RecMPTCP record per fd holding
// an MPTCP socket. fn must copy what it keeps.
func (it *Iterators) Files(fn func(*Record)) error {
	return read(it.files, "iter/task_file", fn)
}

// TCP walks the TCP hash tables and calls fn with each listener (flag
// RecListener, whatever the requested states) and each socket in the
// requested states that Files does not report whole: sockets in accept
// queues, orphans, time-wait and request sockets, kernel sockets, MPTCP
// subflows. A socket that has a file, which Files nearly always reports,
// comes as a cookie-only RecHasFile record unless Files has already
// reported it, so TCP may run alongside Files; if Files did not report
// such a cookie, TCPUnowned gives the whole socket. With
// IterOptions.CountStates, TCP also counts every socket it walks past:
// see StateCounts.
func (it *Iterators) TCP(fn func(*Record)) error {
	return it.tcpPassRun(1, fn)
}

// TCPUnowned walks the TCP hash tables again, after Files has finished,
// and calls fn with what TCP sends, except that sockets with a file that
// Files did not report (held through io_uring fixed files, in flight in
// SCM_RIGHTS, or by tasks of another pid namespace) come whole.
func (it *Iterators) TCPUnowned(fn func(*Record)) error {
	return it.tcpPassRun(2, fn)
}

func (it *Iterators) tcpPassRun(pass uint32, fn func(*Record)) error {
	if it.tcpLoaded == nil {
		return errors.New("iter/tcp not loaded")
	}
	if <-it.tcpLoaded; it.tcpErr != nil {
		return it.tcpErr
	}
	if it.tcp == nil {
		return errors.New("iterators closed")
	}
	if err := it.tcpPass.Update(uint32(0), pass, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("setting iter/tcp pass: %w", err)
	}
	if it.counts == nil || pass != 1 {
		return read(it.tcp, "iter/tcp", fn)
	}
	it.counted = false
	if err := it.counts.Set(StateCounts{}); err != nil {
		return fmt.Errorf("zeroing state counts: %w", err)
	}
	if err := read(it.tcp, "iter/tcp", fn); err != nil {
		return err
	}
	if err := it.counts.Get(&it.lastCounts); err != nil {
		return fmt.Errorf("reading state counts: %w", err)
	}
	it.counted = true
	return nil
}

// Records are iterator records kept raw, in blocks.
type Records struct {
	blocks [][]byte
	n      int
}

// Len returns the number of records.
func (rs *Records) Len() int { return rs.n }

// Range decodes records lo to hi-1 in order and calls fn with each and
// its index; the Record is reused. Calls for distinct ranges may run at
// once.
func (rs *Records) Range(lo, hi int, fn func(int, *Record)) error {
	i := 0 // index of the block's first record
	for _, b := range rs.blocks {
		n := len(b) / RecordSize
		if i+n > lo && i < hi {
			from, to := max(lo-i, 0), min(hi-i, n)
			k := i + from
			if _, err := DecodeRecords(b[from*RecordSize:to*RecordSize], func(r *Record) {
				fn(k, r)
				k++
			}); err != nil {
				return err
			}
		}
		i += n
	}
	return nil
}

// recordBlock is the size of the blocks ReadFiles reads into; each read
// gets at least readBuf of room, more than the iterator's 32 KiB buffer.
const recordBlock = 1 << 20

func readAll(l *link.Iter, name string) (*Records, error) {
	rd, err := l.Open()
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", name, err)
	}
	defer rd.Close()
	rs := &Records{}
	b := make([]byte, 0, recordBlock)
	for {
		if cap(b)-len(b) < readBuf {
			// Keep whole records; a partial one starts the next block.
			whole := len(b) - len(b)%RecordSize
			next := make([]byte, len(b)-whole, recordBlock)
			copy(next, b[whole:])
			rs.blocks = append(rs.blocks, b[:whole])
			b = next
		}
		m, rerr := rd.Read(b[len(b):cap(b)])
		b = b[:len(b)+m]
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return nil, fmt.Errorf("reading %s: %w", name, rerr)
		}
	}
	if len(b)%RecordSize != 0 {
		return nil, fmt.Errorf("reading %s: %d trailing bytes", name, len(b)%RecordSize)
	}
	rs.blocks = append(rs.blocks, b)
	for _, blk := range rs.blocks {
		rs.n += len(blk) / RecordSize
	}
	return rs, nil
}

// read runs one instance of an iterator, decoding records as they come.
// Each call has its own buffer, so Files and TCP can run at once.
func read(l *link.Iter, name string, fn func(*Record)) error {
	rd, err := l.Open()
	if err != nil {
		return fmt.Errorf("opening %s: %w", name, err)
	}
	defer rd.Close()
	buf := make([]byte, readBuf)
	n := 0 // bytes held in buf
	for {
		m, rerr := rd.Read(buf[n:])
		n += m
		used, err := DecodeRecords(buf[:n], fn)
		if err != nil {
			return fmt.Errorf("decoding %s: %w", name, err)
		}
		n = copy(buf, buf[used:n])
		switch {
		case rerr == io.EOF:
			if n != 0 {
				return fmt.Errorf("reading %s: %d trailing bytes", name, n)
			}
			return nil
		case rerr != nil:
			return fmt.Errorf("reading %s: %w", name, rerr)
		}
	}
}

// Close detaches and unloads the iterators.
func (it *Iterators) Close() error {
	if it.tcpLoaded != nil {
		<-it.tcpLoaded
	}
	var errs []error
	for _, l := range []*link.Iter{it.files, it.tcp} {
		if l != nil {
			errs = append(errs, l.Close())
		}
	}
	for _, p := range it.progs {
		if p != nil {
			errs = append(errs, p.Close())
		}
	}
	if it.tcpPass != nil {
		errs = append(errs, it.tcpPass.Close())
	}
	it.files, it.tcp, it.progs, it.tcpPass = nil, nil, nil, nil
	return errors.Join(errs...)
}

// setVars sets the loader-time constants of spec.
func setVars(spec *ebpf.CollectionSpec, vars map[string]any) error {
	for name, v := range vars {
		vs, ok := spec.Variables[name]
		if !ok {
			return fmt.Errorf("object has no variable %s", name)
		}
		if err := vs.Set(v); err != nil {
			return fmt.Errorf("setting %s: %w", name, err)
		}
	}
	return nil
}

// readStamps is the read_stamps constant for a tracer mode: which map
// holds the stamps the iterators read.
func readStamps(mode TracerMode) uint8 {
	switch mode {
	case ModeBTF:
		return 1
	case ModeTracepoint:
		return 2
	}
	return 0
}

func boolByte(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}

// ownNetNS returns the inode number of the calling thread's network
// namespace: /proc/self names the main thread's, which a test that moved
// a locked thread elsewhere can leave behind.
func ownNetNS() (uint32, error) {
	var st unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
		return 0, fmt.Errorf("reading network namespace: %w", err)
	}
	return uint32(st.Ino), nil
}

// seenSize sizes the table of sockets iter/task_file reported: a power of
// two above the number of TCP sockets allocated (/proc/net/sockstat counts
// IPv4 and IPv6 together), so that few inodes share a slot. 8 bytes a
// slot: 2 MiB at 150k sockets.
func seenSize() uint32 {
	const lo, hi = 1 << 12, 1 << 22
	n := uint64(0)
	if f, err := os.Open("/proc/net/sockstat"); err == nil {
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) == 0 || fields[0] != "TCP:" {
				continue
			}
			for i := 1; i+1 < len(fields); i += 2 {
				if fields[i] == "alloc" {
					n, _ = strconv.ParseUint(fields[i+1], 10, 64)
				}
			}
		}
	}
	size := uint64(lo)
	for size < n+n/2 && size < hi {
		size <<= 1
	}
	return uint32(size)
}
