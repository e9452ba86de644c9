package ebpf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"
)

// Trace is a running tracer that sends events to this process. It is
// independent of an installed tracer: both run side by side.
type Trace struct {
	mode    TracerMode
	shared  bool
	prog    *ebpf.Program
	events  *ebpf.Map
	lost    *ebpf.Map // .bss, holding events_lost
	lostOff uint32    // offset of events_lost in .bss
	lnk     link.Link
	notes   []link.Link // the fd owner notes' tracepoints (ModeBTF)
	nprogs  []*ebpf.Program
	owners  *ebpf.Map // fd_owners, nil without notes
	rd      *ringbuf.Reader
	rec     ringbuf.Record
	base    time.Time // wall time at CLOCK_MONOTONIC zero

	closeOnce sync.Once
	closeErr  error
}

// OpenTrace loads and attaches a tracer that sends events through a ring
// buffer. Read them with Read; Close detaches it.
func OpenTrace(opts TraceOptions) (_ *Trace, err error) {
	if !canLoadBPF() {
		return nil, &Error{Reason: "not root (BPF needs CAP_BPF and CAP_PERFMON)", Err: ErrPermission}
	}
	netns := uint32(0)
	if !opts.AllNetNS {
		if netns, err = ownNetNS(); err != nil {
			return nil, err
		}
	}
	c := traceConsts{events: 1, netns: netns, ringBytes: opts.RingBytes, notes: opts.NoteOwners}
	if opts.AllStates {
		c.events = 2
	}
	modes := []TracerMode{ModeBTF, ModeTracepoint}
	if opts.Mode != "" {
		modes = []TracerMode{opts.Mode}
	}
	var errs []error
	for _, mode := range modes {
		t, err := openTrace(mode, c, opts.PinDir)
		if err == nil {
			return t, nil
		}
		errs = append(errs, err)
		if errors.Is(err, ErrPermission) {
			break
		}
	}
	if len(errs) == 1 {
		return nil, errs[0]
	}
	return nil, &Error{Reason: fmt.Sprintf("%v; fallback: %v", errs[0], errs[1]), Err: errors.Join(errs...)}
}

func openTrace(mode TracerMode, c traceConsts, pinDir string) (_ *Trace, err error) {
	if mode == ModeBTF {
		if err := preflight(); err != nil {
			return nil, err
		}
	}
	t := &Trace{mode: mode}
	defer func() {
		if err != nil {
			t.Close()
		}
	}()
	// With a tracer installed in the same mode, stamp nothing and read its
	// stamps; otherwise stamp into a map of our own.
	c.stamp = true
	var stamps *ebpf.Map
	if m, pinned, _ := openStamps(pinDir); pinned != nil {
		if m == mode {
			stamps, c.stamp = pinned, false
			defer pinned.Close()
		} else {
			pinned.Close()
		}
	}
	err = t.load(c, stamps)
	if err != nil && stamps != nil && isIncompatible(err) {
		c.stamp = true // an installed tracer from another version
		err = t.load(c, nil)
		stamps = nil
	}
	if err != nil {
		return nil, err
	}
	t.shared = stamps != nil
	if t.lnk, err = attachTracer(mode, t.prog); err != nil {
		return nil, err
	}
	if mode == ModeBTF && c.notes {
		// Best effort: without them, owners come from snapshots only.
		if t.attachNotes(c) != nil {
			t.closeNotes()
			t.notes, t.nprogs, t.owners = nil, nil, nil
		}
	}
	if t.rd, err = ringbuf.NewReader(t.events); err != nil {
		return nil, fmt.Errorf("opening ring buffer: %w", err)
	}
	var ts unix.Timespec
	now := time.Now()
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return nil, fmt.Errorf("reading the monotonic clock: %w", err)
	}
	t.base = now.Add(-time.Duration(ts.Nano()))
	return t, nil
}

// load loads the tracer program of t.mode, its ring buffer and the .bss
// map holding events_lost.
func (t *Trace) load(c traceConsts, stamps *ebpf.Map) error {
	objs, err := loadTracer(t.mode, c, stamps)
	if err != nil {
		return err
	}
	objs.stamps.Close() // the program holds its own reference
	t.prog, t.events, t.lost, t.lostOff = objs.prog, objs.events, objs.bss, objs.lostOff
	return nil
}

// attachNotes loads and attaches the programs that note, at accept(2),
// accept4(2) and socket(2) exit, which task and fd got each new TCP
// socket: the only owner record of a socket that closes before a snapshot
// sees its fd. They read the fd table through CO-RE, so ModeBTF only.
func (t *Trace) attachNotes(c traceConsts) error {
	spec, err := loadClosewait()
	if err != nil {
		return err
	}
	v, err := vars(spec)
	if err != nil {
		return err
	}
	if err := v.TargetNetns.Set(c.netns); err != nil {
		return err
	}
	var o struct {
		Accept4 *ebpf.Program `ebpf:"on_accept4_exit"`
		Accept  *ebpf.Program `ebpf:"on_accept_exit"`
		Socket  *ebpf.Program `ebpf:"on_socket_exit"`
		Owners  *ebpf.Map     `ebpf:"fd_owners"`
	}
	if err := loadProgram(spec, &o, "on_accept4_exit", nil); err != nil {
		return err
	}
	t.nprogs, t.owners = []*ebpf.Program{o.Accept4, o.Accept, o.Socket}, o.Owners
	if err := ensureTracefs(); err != nil {
		return err
	}
	for i, name := range []string{"sys_exit_accept4", "sys_exit_accept", "sys_exit_socket"} {
		l, err := link.Tracepoint("syscalls", name, t.nprogs[i], nil)
		if err != nil {
			return err
		}
		t.notes = append(t.notes, l)
	}
	return nil
}

func (t *Trace) closeNotes() error {
	var errs []error
	for _, l := range t.notes {
		errs = append(errs, l.Close())
	}
	for _, p := range t.nprogs {
		errs = append(errs, p.Close())
	}
	if t.owners != nil {
		errs = append(errs, t.owners.Close())
	}
	return errors.Join(errs...)
}

// NotesOwners reports whether the trace notes the owners of new sockets in
// the kernel (see NotedOwner).
func (t *Trace) NotesOwners() bool { return t.owners != nil }

// NotedOwner returns the task and fd that accept(2), accept4(2) or
// socket(2) gave the socket with this inode while the trace ran: its
// owner when no snapshot saw it, e.g. a socket that entered and left
// CLOSE_WAIT between two snapshots. The fd may have been passed on or
// closed since.
func (t *Trace) NotedOwner(inode uint64) (Owner, bool) {
	if t.owners == nil || inode == 0 {
		return Owner{}, false
	}
	var o closewaitFdOwner
	if err := t.owners.Lookup(inode, &o); err != nil {
		return Owner{}, false
	}
	comm := make([]byte, 0, len(o.Comm))
	for _, c := range o.Comm {
		if c == 0 {
			break
		}
		comm = append(comm, byte(c))
	}
	return Owner{PID: int(o.Tgid), Comm: string(comm), FD: int(o.Fd)}, true
}

// Mode returns the hook in use.
func (t *Trace) Mode() TracerMode { return t.mode }

// SharedStamps reports whether durations come from an installed tracer's
// stamps (so sockets that entered CLOSE_WAIT before the trace have them).
func (t *Trace) SharedStamps() bool { return t.shared }

// Read waits until deadline (zero: forever) for the next event and decodes
// it into e. It returns os.ErrDeadlineExceeded on timeout and
// ErrTraceClosed once Close was called.
func (t *Trace) Read(e *Event, deadline time.Time) error {
	t.rd.SetDeadline(deadline)
	if err := t.rd.ReadInto(&t.rec); err != nil {
		if errors.Is(err, os.ErrClosed) {
			return ErrTraceClosed
		}
		return err
	}
	return DecodeEvent(t.rec.RawSample, e)
}

// ErrTraceClosed is returned by Read after Close.
var ErrTraceClosed = errors.New("trace closed")

// Time converts an event's CLOCK_MONOTONIC stamp to wall-clock time.
func (t *Trace) Time(mono uint64) time.Time { return t.base.Add(time.Duration(mono)) }

// Lost returns how many events the ring buffer had no room for.
func (t *Trace) Lost() uint64 {
	if t.lost == nil {
		return 0
	}
	b := make([]byte, t.lost.ValueSize())
	if err := t.lost.Lookup(uint32(0), b); err != nil || len(b) < int(t.lostOff)+8 {
		return 0
	}
	return binary.LittleEndian.Uint64(b[t.lostOff:])
}

// Close detaches the tracer and releases every fd. It interrupts Read, and
// may be called while another goroutine reads: it changes no field that
// Read, Lost or NotedOwner use, which fail with the objects closed.
func (t *Trace) Close() error {
	t.closeOnce.Do(func() { t.closeErr = t.release() })
	return t.closeErr
}

func (t *Trace) release() error {
	var errs []error
	if t.rd != nil {
		errs = append(errs, t.rd.Close())
	}
	if t.lnk != nil {
		errs = append(errs, t.lnk.Close())
	}
	errs = append(errs, t.closeNotes())
	if t.prog != nil {
		errs = append(errs, t.prog.Close())
	}
	for _, m := range []*ebpf.Map{t.events, t.lost} {
		if m != nil {
			errs = append(errs, m.Close())
		}
	}
	return errors.Join(errs...)
}

// Monotonic returns CLOCK_MONOTONIC in nanoseconds, the clock of
// Event.Time.
func Monotonic() uint64 {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return uint64(ts.Nano())
}
