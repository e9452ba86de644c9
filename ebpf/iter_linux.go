package ebpf

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"

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
	// AllNetNS makes Files report the fds of sockets of every network
	// namespace; by default only this process's, the one sock_diag and
	// iter/tcp see.
	AllNetNS bool
	// NetNS, with AllNetNS, narrows Files to the sockets of this one
	// network namespace, by inode, in the kernel.
	NetNS uint32
	// OwnersOnly loads iter/task_file alone, for owner lookups (trace);
	// TCP then fails.
	OwnersOnly bool
	// CountStates makes TCP count every socket it walks past, in any
	// state: see Iterators.StateCounts. Off, the walk skips unwanted
	// sockets after reading their state alone.
	CountStates bool
	// EmitFiled makes TCP report the sockets Files reported too, for
	// their cookies.
	EmitFiled bool
	// Unmarked makes Files leave unmarked the sockets it reports, which
	// a walk of TCP after it then reports again (RecXFiled), as with
	// EmitFiled: for a listing that likely walks no TCP, to which the
	// marks are a cost.
	Unmarked bool
	// OneShot says the process lists once and exits: FilesSized then
	// holds the walk in blocks mapped apart, each unmapped once decoded,
	// not in the Go heap, which a process that runs on reuses with its
	// pages mapped in.
	OneShot bool
}

// StateCounts counts sockets by address family ([0] IPv4, [1] IPv6, where
// dual-stack sockets are) and state, in kernel numbering, as sock_diag
// reports them: time-wait sockets by their substate (TIME_WAIT or
// FIN_WAIT2), request sockets as SYN_RECV.
type StateCounts [2][16]uint32

// HeldCounts counts, by network namespace inode and family ([0] IPv4,
// [1] IPv6), the TCP sockets in a hashed state (any but CLOSE) that one fd
// holds, as one Files walk saw them. Sockets whose file has more
// references are not in it: their records carry RecXShared instead.
type HeldCounts map[uint32][2]uint32

// Iterators are the snapshot programs, loaded by this process or pinned by
// "closewait tracer install" (see openPinned). Each Files or TCP call walks
// the kernel's tables afresh. Close releases everything.
//
// The programs load one by one: a kernel that refuses one leaves the
// others working, and the refused one's calls return its load error.
type Iterators struct {
	files, tcp  *link.Iter
	oneShot     bool  // IterOptions.OneShot
	filesErr    error // why iter/task_file is not loaded
	filesProg   *ebpf.Program
	cfg         *ebpf.Map // iter_cfg, the walks' settings
	held        *ebpf.Map // held_counts of iter/task_file
	heldWalk    *ebpf.Map // held_walk: its overflow flag
	sent        *ebpf.Map // what Files sent, which TCP leaves out
	lastHeld    HeldCounts
	tcpProg     *ebpf.Program // set by the background loadTCP only
	tcpLoaded   chan struct{} // closed once loadTCP is done
	tcpErr      error         // from loadTCP
	counts      *ebpf.Map     // state_counts
	countStates bool          // TCP fills counts
	lastCounts  StateCounts
	counted     bool
	mu          sync.Mutex // tracer and warnings, while the programs load
	tracer      TracerMode
	warnings    []string
	notes       []string // what costs only time: pinned programs not used
	lock        *os.File // pinned programs: their directory, locked
}

// readBuf is the read size: bpf_iter returns at most its 32 KiB seq_file
// buffer per read, so this takes every read whole.
const readBuf = 64 << 10

// LoadIterators opens the iterators that "closewait tracer install" pinned
// under opts.PinDir when they are this version's, or loads its own:
// iter/task_file, then iter/tcp in the background, so that Files may start
// at once (an error loading it comes from TCP). It fails only when neither
// program loads (with OwnersOnly, when iter/task_file does not); otherwise
// the refused program's error comes from its calls and from FilesErr.
func LoadIterators(opts IterOptions) (*Iterators, error) {
	if err := preflight(); err != nil {
		return nil, err
	}
	if opts.States == 0 {
		opts.States = 1 << stateCloseWait
	}
	cfg := closewaitIterCfg{StateMask: opts.States, CountStates: boolByte(opts.CountStates && !opts.OwnersOnly),
		EmitFiled: boolByte(opts.EmitFiled), MarkSent: boolByte(!opts.Unmarked)}
	if cfg.Netns = opts.NetNS; !opts.AllNetNS {
		var err error
		if cfg.Netns, err = ownNetNS(); err != nil {
			return nil, err
		}
	}
	var warn string
	// A refusal forced for tests stands for a kernel that loads neither.
	if !opts.OwnersOnly && !refused("dump_task_file") && !refused("dump_tcp") {
		var it *Iterators
		if it, warn = openPinned(pinDirOr(opts.PinDir)); it != nil {
			err := it.configure(cfg)
			if err == nil {
				it.countStates, it.oneShot = cfg.CountStates != 0, opts.OneShot
				return it, nil
			}
			it.Close()
			warn = fmt.Sprintf("pinned iterators unusable (%v): this listing loads its own", err)
		}
	}
	it, err := loadIterators(opts, cfg, sentSlots(false))
	if err != nil {
		return nil, err
	}
	it.countStates, it.oneShot = cfg.CountStates != 0, opts.OneShot
	if warn != "" {
		it.notes = append(it.notes, warn)
	}
	return it, nil
}

// configure writes the walks' settings, with a new mark for sent.
func (it *Iterators) configure(c closewaitIterCfg) error {
	var old closewaitIterCfg
	if err := it.cfg.Lookup(uint32(0), &old); err != nil {
		return fmt.Errorf("reading iter_cfg: %w", err)
	}
	if c.Gen = old.Gen + 1; c.Gen == 0 {
		c.Gen = 1
	}
	if it.sent != nil {
		c.SentMask = it.sent.MaxEntries() - 1
	}
	if err := it.cfg.Update(uint32(0), &c, ebpf.UpdateExist); err != nil {
		return fmt.Errorf("writing iter_cfg: %w", err)
	}
	return nil
}

// loadIterators loads this closewait's programs, configured with c, with a
// sent table of slots slots.
func loadIterators(opts IterOptions, c closewaitIterCfg, slots uint32) (_ *Iterators, err error) {
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
	spec, err := loadClosewait()
	if err != nil {
		return nil, fmt.Errorf("parsing objects: %w", err)
	}
	if err := errors.Join(setVar(spec, "config_hz", kernelHZ()), setVar(spec, "full_records", boolByte(!opts.OwnersOnly))); err != nil {
		return nil, err
	}
	it := &Iterators{}
	if kernelHZ() == 0 && !opts.OwnersOnly {
		it.warnings = append(it.warnings, "kernel tick rate (CONFIG_HZ) unknown: ages and timers need the tracer")
	}
	defer func() {
		if err != nil {
			it.Close()
		}
	}()
	copts := &ebpf.CollectionOptions{MapReplacements: map[string]*ebpf.Map{}, Cache: kernelTypes}
	var stamps *ebpf.Map
	if !opts.OwnersOnly {
		if stamps, err = it.useStamps(spec, copts, opts.PinDir); err != nil {
			return nil, err
		}
	}
	defer func() {
		if stamps != nil {
			stamps.Close() // the programs hold their own references
		}
	}()
	// The maps both programs use are made here, so that the two load at
	// once: relocating and verifying iter/tcp takes about as long as
	// iter/task_file, whose walk can start meanwhile.
	if opts.OwnersOnly {
		slots = 1 // only full records mark it
	}
	spec.Maps["sent"].MaxEntries = slots
	for _, name := range []string{"iter_cfg", "sent"} {
		m, err := ebpf.NewMap(spec.Maps[name])
		if err != nil {
			return nil, fmt.Errorf("creating map %s: %w", name, err)
		}
		copts.MapReplacements[name] = m
	}
	it.cfg, it.sent = copts.MapReplacements["iter_cfg"], copts.MapReplacements["sent"]
	if err := it.configure(c); err != nil {
		return nil, err
	}
	if !opts.OwnersOnly {
		tspec, tcopts := spec.Copy(), &ebpf.CollectionOptions{MapReplacements: maps.Clone(copts.MapReplacements), Cache: kernelTypes}
		var tstamps *ebpf.Map // iter/tcp's, closed once it is loaded
		if stamps != nil {
			if tstamps, err = stamps.Clone(); err != nil {
				return nil, fmt.Errorf("opening the stamp map again: %w", err)
			}
			tcopts.MapReplacements[stampMapName(it.tracer)] = tstamps
		}
		it.tcpLoaded = make(chan struct{})
		go func() {
			defer close(it.tcpLoaded)
			if tstamps != nil {
				defer tstamps.Close()
			}
			it.tcpErr = it.loadTCP(tspec, tcopts)
			if errors.Is(it.tcpErr, ebpf.ErrMapIncompatible) && tstamps != nil {
				it.dropTracer(tspec, tcopts)
				it.tcpErr = it.loadTCP(tspec, tcopts)
			}
		}()
	}
	err = it.loadFiles(spec, copts)
	if errors.Is(err, ebpf.ErrMapIncompatible) && stamps != nil {
		it.dropTracer(spec, copts)
		err = it.loadFiles(spec, copts)
	}
	if opts.OwnersOnly {
		if err != nil {
			return nil, err
		}
		return it, nil
	}
	it.filesErr = err
	if it.filesErr != nil {
		if <-it.tcpLoaded; it.tcpErr != nil {
			return nil, fmt.Errorf("%w; %w", it.filesErr, it.tcpErr)
		}
	}
	return it, nil
}

// loadFiles loads and attaches iter/task_file.
func (it *Iterators) loadFiles(spec *ebpf.CollectionSpec, copts *ebpf.CollectionOptions) error {
	var files struct {
		Prog     *ebpf.Program `ebpf:"dump_task_file"`
		Held     *ebpf.Map     `ebpf:"held_counts"`
		HeldWalk *ebpf.Map     `ebpf:"held_walk"`
	}
	if err := loadProgram(spec, &files, "dump_task_file", copts); err != nil {
		return err
	}
	it.filesProg, it.held, it.heldWalk = files.Prog, files.Held, files.HeldWalk
	var err error
	if it.files, err = link.AttachIter(link.IterOptions{Program: files.Prog}); err != nil {
		return loadError("iter/task_file", err)
	}
	return nil
}

// dropTracer lists without a tracer pinned by another closewait version,
// whose maps the programs cannot take.
func (it *Iterators) dropTracer(spec *ebpf.CollectionSpec, copts *ebpf.CollectionOptions) {
	it.mu.Lock() // the two programs load at once
	defer it.mu.Unlock()
	delete(copts.MapReplacements, stampMapName(ModeBTF))
	delete(copts.MapReplacements, stampMapName(ModeTracepoint))
	if it.tracer == "" {
		return
	}
	it.warnings = append(it.warnings, "the installed tracer is from another closewait version, ages are bounds: "+
		"run closewait tracer remove, then closewait tracer install")
	it.tracer = ""
	setVar(spec, "read_stamps", readStamps("")) //nolint:errcheck // the object has it: vars reads it
}

// useStamps points the iterators at the stamp map of an installed tracer,
// if there is one. The caller closes the map returned, once the programs
// that use it are loaded.
func (it *Iterators) useStamps(spec *ebpf.CollectionSpec, copts *ebpf.CollectionOptions, pinDir string) (*ebpf.Map, error) {
	mode, stamps, warn := openStamps(pinDir)
	if warn != "" {
		it.warnings = append(it.warnings, warn)
	}
	if stamps != nil {
		copts.MapReplacements[stampMapName(mode)] = stamps
		it.tracer = mode
	}
	if mode != ModeTracepoint {
		// Only a stand-in for a map that no tracer fills: keep it small.
		spec.Maps["stamps_by_sk"].MaxEntries = 1
	}
	if err := setVar(spec, "read_stamps", readStamps(it.tracer)); err != nil {
		if stamps != nil {
			stamps.Close()
		}
		return nil, err
	}
	return stamps, nil
}

// loadProgram loads the program named name, and what it uses, into obj
// (a struct with ebpf tags, as for LoadAndAssign).
func loadProgram(spec *ebpf.CollectionSpec, obj any, name string, copts *ebpf.CollectionOptions) error {
	if refused(name) {
		spec = spec.Copy()
		spoil(spec.Programs[name])
	}
	if err := spec.LoadAndAssign(obj, copts); err != nil {
		return loadError(name, err)
	}
	return nil
}

// loadTCP loads and attaches iter/tcp.
func (it *Iterators) loadTCP(spec *ebpf.CollectionSpec, copts *ebpf.CollectionOptions) error {
	var tcp struct {
		Prog   *ebpf.Program `ebpf:"dump_tcp"`
		Counts *ebpf.Map     `ebpf:"state_counts"`
	}
	if err := loadProgram(spec, &tcp, "dump_tcp", copts); err != nil {
		return err
	}
	it.tcpProg, it.counts = tcp.Prog, tcp.Counts
	var err error
	if it.tcp, err = link.AttachIter(link.IterOptions{Program: tcp.Prog}); err != nil {
		return loadError("iter/tcp", err)
	}
	return nil
}

// Tracer returns the mode of the installed tracer whose stamps the
// iterators read, or "" when none is installed.
func (it *Iterators) Tracer() TracerMode {
	it.waitTCP()
	return it.tracer
}

// waitTCP waits for the background load of iter/tcp, which may change
// what Tracer and Warnings return.
func (it *Iterators) waitTCP() {
	if it.tcpLoaded != nil {
		<-it.tcpLoaded
	}
}

// StateCounts returns the counts of the last TCP walk, when LoadIterators
// was asked to count; ok is false otherwise, or before a walk.
func (it *Iterators) StateCounts() (c StateCounts, ok bool) {
	return it.lastCounts, it.counted
}

// Warnings returns what the user should know about this load, such as an
// installed tracer that could not be used.
func (it *Iterators) Warnings() []string {
	it.waitTCP()
	return it.warnings
}

// Pinned reports whether these are the iterators "closewait tracer
// install" pinned, rather than this process's own.
func (it *Iterators) Pinned() bool { return it.lock != nil }

// Notes returns what the user may want to know that costs only time: why
// pinned iterators were not used.
func (it *Iterators) Notes() []string { return it.notes }

// FilesErr returns why iter/task_file did not load, or nil when it did.
func (it *Iterators) FilesErr() error { return it.filesErr }

// Files walks every task's fds and calls fn with a record (RecOwned) for
// each fd holding a TCP socket in the requested states or listening:
// everything iter/tcp would tell of the socket (with OwnersOnly, only
// what struct sock holds), and its owner. Each fd holding an MPTCP socket
// comes as an owner record (RecMPTCP, whatever its state: its subflows'
// states decide). A socket held by several fds comes once per fd; so
// does a socket not in the requested states whose file has other
// references than its fd (RecXCount), for the count of Held. fn must
// copy what it keeps.
func (it *Iterators) Files(fn func(*Record)) error {
	if it.files == nil {
		return cmp.Or(it.filesErr, errors.New("iter/task_file not loaded"))
	}
	if err := read(context.Background(), it.files, "iter/task_file", nil, fn, false); err != nil {
		return err
	}
	return it.readHeld()
}

// FilesSized is Files, but reads the whole walk before it decodes, so that
// size gets the number of records first (no fewer than the sockets fn
// will see): the caller can then allocate once what it keeps, and copy
// nothing. The walk's bytes are held meanwhile, RecordSize a record, in
// blocks the garbage collector does not scan. In a one-shot process
// (IterOptions.OneShot) each block is mapped apart and unmapped once
// decoded: at 45k sockets they would otherwise stay in the peak RSS beside
// the sockets until the next collection.
//
// With split, the walk is read in two parts at once, on two threads (see
// SplitWalk).
func (it *Iterators) FilesSized(split bool, size func(n int), fn func(*Record)) error {
	if it.files == nil {
		return cmp.Or(it.filesErr, errors.New("iter/task_file not loaded"))
	}
	mem := heapBlocks
	if it.oneShot {
		mem = mappedBlocks
	}
	read := readBlocks
	if split {
		read = it.readSplit
	}
	blocks, err := read(it.files, "iter/task_file", mem)
	if err != nil {
		return err
	}
	defer mem.free(blocks)
	n := 0
	for _, b := range blocks {
		n += len(b) / RecordSize
	}
	size(n)
	for i, b := range blocks {
		if _, err := DecodeRecords(b, fn); err != nil {
			return fmt.Errorf("decoding iter/task_file: %w", err)
		}
		mem.free(blocks[i : i+1])
	}
	return it.readHeld()
}

// readHeld takes the counts of the last Files walk out of held_counts,
// leaving it empty for the next.
func (it *Iterators) readHeld() error {
	it.lastHeld = nil
	if it.held == nil {
		return nil
	}
	var ws [2]closewaitHeldWalk
	for i := range ws {
		if err := it.heldWalk.Lookup(uint32(i), &ws[i]); err != nil {
			return fmt.Errorf("reading held_walk: %w", err)
		}
	}
	held := HeldCounts{}
	var ns uint32
	var n [2]uint32
	iter := it.held.Iterate()
	for iter.Next(&ns, &n) {
		held[ns] = n
	}
	if err := iter.Err(); err != nil {
		return fmt.Errorf("reading held_counts: %w", err)
	}
	for ns := range held {
		if err := it.held.Delete(ns); err != nil {
			return fmt.Errorf("emptying held_counts: %w", err)
		}
	}
	overflow := ws[0].Overflow != 0 || ws[1].Overflow != 0
	if overflow || ws[0].Tid != 0 || ws[1].Tid != 0 {
		if err := it.emptyHeldWalk(); err != nil {
			return err
		}
	}
	if !overflow { // else the counts stay unknown
		it.lastHeld = held
	}
	return nil
}

// emptyHeldWalk zeroes both entries of held_walk: the next walk is whole
// until split again.
func (it *Iterators) emptyHeldWalk() error {
	for i := range uint32(2) {
		if err := it.heldWalk.Update(i, closewaitHeldWalk{}, ebpf.UpdateExist); err != nil {
			return fmt.Errorf("emptying held_walk: %w", err)
		}
	}
	return nil
}

// Held returns the counts of the last Files walk; ok is false when there
// are none: before a walk, with OwnersOnly, or when the walk found more
// namespaces than the count has room for.
func (it *Iterators) Held() (HeldCounts, bool) { return it.lastHeld, it.lastHeld != nil }

// TCP walks the TCP hash tables of this process's network namespace and
// calls fn with each listener (flag RecListener, whatever the requested
// states) and each socket in the requested states: everything the kernel
// knows of it, and its inode (0 for a socket no fd can hold: in an accept
// queue, orphaned, time-wait or request). A socket with a file has
// RecXFiled; one that Files reported is left out, unless
// IterOptions.EmitFiled. Call Files first. With IterOptions.CountStates,
// TCP also counts every socket it walks past: see StateCounts.
func (it *Iterators) TCP(fn func(*Record)) error {
	return it.TCPIn(context.Background(), nil, fn)
}

// TCPIn is TCP in another network namespace: within runs the function it
// is given (which makes the walk's instance, bound to the namespace of
// the thread that makes it) in that namespace. nil runs it here. The walk
// stops with ctx's error when ctx is done.
func (it *Iterators) TCPIn(ctx context.Context, within func(func() error) error, fn func(*Record)) error {
	if err := it.tcpReady(); err != nil {
		return err
	}
	if !it.countStates {
		return read(ctx, it.tcp, "iter/tcp", within, fn, false)
	}
	it.counted = false
	if err := it.counts.Update(uint32(0), StateCounts{}, ebpf.UpdateExist); err != nil {
		return fmt.Errorf("zeroing state counts: %w", err)
	}
	if err := read(ctx, it.tcp, "iter/tcp", within, fn, false); err != nil {
		return err
	}
	if err := it.counts.Lookup(uint32(0), &it.lastCounts); err != nil {
		return fmt.Errorf("reading state counts: %w", err)
	}
	it.counted = true
	return nil
}

// tcpReady waits for iter/tcp's load, and says why it cannot walk.
func (it *Iterators) tcpReady() error {
	if it.tcpLoaded == nil {
		return errors.New("iter/tcp not loaded")
	}
	if <-it.tcpLoaded; it.tcpErr != nil {
		return it.tcpErr
	}
	if it.tcp == nil {
		return errors.New("iterators closed")
	}
	return nil
}

// ListenersIn is TCPIn that walks only the listening hash, and so
// reports only listeners (none that Files reported, unless
// IterOptions.EmitFiled) and counts nothing. Files must not run meanwhile.
func (it *Iterators) ListenersIn(ctx context.Context, within func(func() error) error, fn func(*Record)) error {
	if err := it.tcpReady(); err != nil {
		return err
	}
	var c closewaitIterCfg
	if err := it.cfg.Lookup(uint32(0), &c); err != nil {
		return fmt.Errorf("reading iter_cfg: %w", err)
	}
	set := func(listenOnly, count uint8) error {
		c.ListenOnly, c.CountStates = listenOnly, count
		if err := it.cfg.Update(uint32(0), &c, ebpf.UpdateExist); err != nil {
			return fmt.Errorf("writing iter_cfg: %w", err)
		}
		return nil
	}
	count := c.CountStates
	if err := set(1, 0); err != nil {
		return err
	}
	return errors.Join(read(ctx, it.tcp, "iter/tcp", within, fn, true), set(0, count))
}

// read runs one instance of an iterator, made by within (nil: here),
// decoding records as they come, until the end or until ctx is done; with
// stops, the program may end it early (EAGAIN). Each call has its own
// buffer, so Files and TCP can run at once.
func read(ctx context.Context, l *link.Iter, name string, within func(func() error) error, fn func(*Record), stops bool) error {
	var rd io.ReadCloser
	open := func() (err error) {
		rd, err = l.Open()
		return err
	}
	if within == nil {
		within = func(f func() error) error { return f() }
	}
	if err := within(open); err != nil {
		if rd != nil {
			rd.Close()
		}
		return fmt.Errorf("opening %s: %w", name, err)
	}
	defer rd.Close()
	buf := make([]byte, readBuf)
	n := 0 // bytes held in buf
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		m, rerr := rd.Read(buf[n:])
		n += m
		used, err := DecodeRecords(buf[:n], fn)
		if err != nil {
			return fmt.Errorf("decoding %s: %w", name, err)
		}
		n = copy(buf, buf[used:n])
		switch {
		case rerr == io.EOF, stops && errors.Is(rerr, unix.EAGAIN):
			if n != 0 {
				return fmt.Errorf("reading %s: %d trailing bytes", name, n)
			}
			return nil
		case rerr != nil:
			return fmt.Errorf("reading %s: %w", name, rerr)
		}
	}
}

// readBlocks runs one instance of l to its end, and returns what it sent
// in blocks of whole records, from mem.
func readBlocks(l *link.Iter, name string, mem blockMemory) (blocks [][]byte, err error) {
	rd, err := l.Open()
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", name, err)
	}
	defer rd.Close()
	b, err := mem.alloc(true)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			mem.free(append(blocks, b))
			blocks = nil
		}
	}()
	for {
		if len(b) == cap(b) { // a partial record at the end starts the next
			whole := len(b) - len(b)%RecordSize
			next, err := mem.alloc(false)
			if err != nil {
				return blocks, err
			}
			next = next[:len(b)-whole]
			copy(next, b[whole:])
			blocks, b = append(blocks, b[:whole]), next
		}
		m, err := rd.Read(b[len(b):cap(b)])
		b = b[:len(b)+m]
		if err == io.EOF {
			break
		}
		if err != nil {
			return blocks, fmt.Errorf("reading %s: %w", name, err)
		}
	}
	if r := len(b) % RecordSize; r != 0 {
		return blocks, fmt.Errorf("reading %s: %d trailing bytes", name, r)
	}
	return append(blocks, b), nil
}

// splitMin is the open files (fs.file-nr) from which SplitWalk says to
// split a walk of iter/task_file in two, one part read on each of two
// cores. Each part still steps over the other's fds and every task, which
// costs less than reading their sockets, but only pays where the other
// core is free.
var splitMin = 4000

// splitPerTask is the open files a task (thread) from which SplitWalk
// says to split: each part steps over every task, which a host of many
// small processes pays for. By hand, pinned, side by side (BENCHMARKS.md):
// 1,000 processes of 10 sockets (27 open files a task) 72-76 ms split,
// 67-70 whole; 100 of 100 (57) 57-60 split, 66-69 whole.
var splitPerTask = 40

// SplitWalk says whether FilesSized should split its walk: the host has
// the cores, and open files enough, and not in too many tasks.
func SplitWalk() bool {
	if runtime.GOMAXPROCS(0) < 2 {
		return false
	}
	n, ok := OpenFiles("/proc")
	return ok && n >= splitMin && n >= splitPerTask*tasks()
}

// tasks is the kernel's count of tasks (threads), from /proc/loadavg; 0
// when unknown.
func tasks() int {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f := bytes.Fields(b)
	if len(f) < 4 {
		return 0
	}
	_, total, _ := bytes.Cut(f[3], []byte("/"))
	n, _ := strconv.Atoi(string(total))
	return n
}

// OpenFiles is the kernel's count of open files (fs.file-nr), read under
// procRoot. It is a per-CPU counter's quick read, off by up to a batch a
// CPU.
func OpenFiles(procRoot string) (int, bool) {
	b, err := os.ReadFile(filepath.Join(procRoot, "sys/fs/file-nr"))
	if err != nil {
		return 0, false
	}
	f := bytes.Fields(b)
	if len(f) == 0 {
		return 0, false
	}
	n, err := strconv.Atoi(string(f[0]))
	return n, err == nil
}

// readSplit is readBlocks over two instances of l read at once, by two
// threads that held_walk names: each gets the fds of one parity.
func (it *Iterators) readSplit(l *link.Iter, name string, mem blockMemory) ([][]byte, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	type part struct {
		blocks [][]byte
		err    error
	}
	tid1, start, done := make(chan uint32), make(chan bool), make(chan part)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		tid1 <- uint32(unix.Gettid())
		var p part
		if <-start {
			p.blocks, p.err = readBlocks(l, name, mem)
		}
		done <- p
	}()
	for i, tid := range [2]uint32{uint32(unix.Gettid()), <-tid1} {
		if err := it.heldWalk.Update(uint32(i), closewaitHeldWalk{Tid: tid}, ebpf.UpdateExist); err != nil {
			start <- false
			<-done
			return nil, fmt.Errorf("splitting %s: %w", name, err)
		}
	}
	start <- true
	blocks, err := readBlocks(l, name, mem)
	other := <-done
	if err = cmp.Or(err, other.err); err != nil {
		mem.free(blocks)
		mem.free(other.blocks)
		return nil, err
	}
	return append(blocks, other.blocks...), nil
}

// blockSize is readBlocks' block: 4096 records, 608 KiB.
const blockSize = 4096 * RecordSize

// blockMemory is where readBlocks' blocks come from: alloc returns an
// empty block, free lets go of blocks not yet let go of and marks them so.
type blockMemory struct {
	alloc func(first bool) ([]byte, error)
	free  func(blocks [][]byte)
}

// heapBlocks are blocks of the Go heap.
var heapBlocks = blockMemory{
	alloc: func(bool) ([]byte, error) { return make([]byte, 0, blockSize), nil },
	free:  func(blocks [][]byte) { clear(blocks) },
}

// mappedBlocks are blocks mapped apart. Those after the first, of a walk
// that is a large one, have their pages mapped in at once, not a fault
// each (see collector's prefault).
var mappedBlocks = blockMemory{
	alloc: func(first bool) ([]byte, error) {
		b, err := unix.Mmap(-1, 0, blockSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
		if err != nil {
			return nil, fmt.Errorf("mapping a block of the walk: %w", err)
		}
		if !first {
			unix.Madvise(b, unix.MADV_POPULATE_WRITE)
		}
		blocksMapped.Add(1)
		return b[:0], nil
	},
	free: func(blocks [][]byte) {
		for i, b := range blocks {
			if cap(b) > 0 {
				unix.Munmap(b[:cap(b)]) // cannot fail: b is a whole mapping of ours
				blocksMapped.Add(-1)
			}
			blocks[i] = nil
		}
	},
}

// blocksMapped counts the blocks mapped and not yet unmapped.
var blocksMapped atomic.Int64

// Close detaches and unloads the iterators.
func (it *Iterators) Close() error {
	it.waitTCP()
	var errs []error
	for _, l := range []*link.Iter{it.files, it.tcp} {
		if l != nil {
			errs = append(errs, l.Close())
		}
	}
	for _, p := range []*ebpf.Program{it.filesProg, it.tcpProg} {
		if p != nil {
			errs = append(errs, p.Close())
		}
	}
	for _, m := range []*ebpf.Map{it.cfg, it.held, it.heldWalk, it.sent, it.counts} {
		if m != nil {
			errs = append(errs, m.Close())
		}
	}
	if it.lock != nil {
		errs = append(errs, it.lock.Close()) // and with it the lock
	}
	it.files, it.tcp, it.filesProg, it.tcpProg, it.lock = nil, nil, nil, nil, nil
	it.cfg, it.held, it.heldWalk, it.sent, it.counts = nil, nil, nil, nil, nil
	return errors.Join(errs...)
}

// vars returns the load-time constants of spec, typed as bpf2go made them.
func vars(spec *ebpf.CollectionSpec) (*closewaitVariableSpecs, error) {
	var v closewaitVariableSpecs
	if err := spec.Assign(&v); err != nil {
		return nil, fmt.Errorf("object variables: %w", err)
	}
	return &v, nil
}

// setVar sets the load-time constant name of spec.
func setVar(spec *ebpf.CollectionSpec, name string, value any) error {
	v, ok := spec.Variables[name]
	if !ok {
		return fmt.Errorf("object has no variable %s", name)
	}
	if err := v.Set(value); err != nil {
		return fmt.Errorf("setting %s: %w", name, err)
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
