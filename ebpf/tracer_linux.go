package ebpf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

const (
	bpffsRoot   = "/sys/fs/bpf"
	tracefsRoot = "/sys/kernel/tracing"
	pinLink     = "link"
)

func stampMapName(m TracerMode) string {
	if m == ModeTracepoint {
		return "stamps_by_sk"
	}
	return "stamps"
}

func progName(m TracerMode) string {
	if m == ModeTracepoint {
		return "on_set_state_tp"
	}
	return "on_set_state"
}

// InstallTracer loads the tracer with stamping on and events off, attaches
// it, pins its link and stamp map under opts.PinDir (mounting bpffs on
// /sys/fs/bpf when needed) and releases everything else: the kernel keeps
// the tracer running after this process exits.
func InstallTracer(opts TracerOptions) (TracerStatus, error) {
	dir := pinDirOr(opts.PinDir)
	if !canLoadBPF() {
		return TracerStatus{}, &Error{Reason: "not root (BPF needs CAP_BPF and CAP_PERFMON)", Err: ErrPermission}
	}
	if err := ensureBPFFS(dir); err != nil {
		return TracerStatus{}, err
	}
	if st, err := Status(dir); err != nil {
		return TracerStatus{}, err
	} else if st.Installed {
		if !st.Iterators {
			// Installed by another version: pin this one's iterators.
			if _, err := removeIterators(dir); err != nil {
				return st, err
			}
			st.IteratorsErr = pinIterators(dir)
			st.Iterators = st.IteratorsErr == nil
		}
		return st, ErrInstalled
	}
	modes := []TracerMode{ModeBTF, ModeTracepoint}
	if opts.Mode != "" {
		modes = []TracerMode{opts.Mode}
	}
	var errs []error
	for _, mode := range modes {
		err := install(dir, mode)
		if err == nil {
			// The tracer works without them: a failure is only reported.
			iterErr := pinIterators(dir)
			st, err := Status(dir)
			st.IteratorsErr = iterErr
			return st, err
		}
		errs = append(errs, err)
		if errors.Is(err, ErrPermission) {
			break
		}
	}
	os.Remove(dir) // only if empty
	if len(errs) == 1 {
		return TracerStatus{}, errs[0]
	}
	// Both failed: the tp_btf reason is the telling one.
	return TracerStatus{}, &Error{Reason: fmt.Sprintf("%v; fallback: %v", errs[0], errs[1]), Err: errors.Join(errs...)}
}

func install(dir string, mode TracerMode) (err error) {
	if mode == ModeBTF {
		if err := preflight(); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating pin directory: %w", err)
	}
	// An installed tracer sends no events, and the verifier drops that
	// code, but the ring buffer must exist: one page.
	objs, err := loadTracer(mode, traceConsts{stamp: true, ringBytes: uint32(os.Getpagesize())}, nil)
	if err != nil {
		return err
	}
	defer objs.Close()
	stamps := objs.stamps
	l, err := attachTracer(mode, objs.prog)
	if err != nil {
		return err
	}
	defer l.Close() // after pinning, closing our fd leaves the link attached

	mapPin := filepath.Join(dir, stampMapName(mode))
	if err := stamps.Pin(mapPin); err != nil {
		return fmt.Errorf("pinning stamp map: %w", err)
	}
	if err := l.Pin(filepath.Join(dir, pinLink)); err != nil {
		stamps.Unpin()
		if errors.Is(err, ebpf.ErrNotSupported) {
			return &Error{Reason: string(mode) + " link pinning not supported by this kernel", Err: err}
		}
		return fmt.Errorf("pinning link: %w", err)
	}
	return nil
}

// traceConsts are the tracer's load-time switches.
type traceConsts struct {
	stamp     bool   // write entry stamps
	events    uint8  // 0 none, 1 CLOSE_WAIT in and out, 2 every transition
	netns     uint32 // events only for this netns; 0 all
	ringBytes uint32 // ring buffer size; 0 keeps the object's
	notes     bool   // Trace: attach the owner notes (ModeBTF)
}

// tracerObjs are the tracer program of one mode and the maps it uses.
type tracerObjs struct {
	prog                *ebpf.Program
	stamps, events, bss *ebpf.Map
	lostOff             uint32 // offset of events_lost in bss
}

// Close releases what was loaded.
func (o *tracerObjs) Close() error {
	var errs []error
	if o.prog != nil {
		errs = append(errs, o.prog.Close())
	}
	for _, m := range []*ebpf.Map{o.stamps, o.events, o.bss} {
		if m != nil {
			errs = append(errs, m.Close())
		}
	}
	return errors.Join(errs...)
}

// loadTracer loads the tracer program for mode with its stamp map (the
// given replacement, or a new one) and its ring buffer, of c.ringBytes
// (0: the object's size).
func loadTracer(mode TracerMode, c traceConsts, stamps *ebpf.Map) (tracerObjs, error) {
	spec, err := loadClosewait()
	if err != nil {
		return tracerObjs{}, fmt.Errorf("parsing objects: %w", err)
	}
	v, err := vars(spec)
	if err != nil {
		return tracerObjs{}, err
	}
	if err := errors.Join(v.StampEnter.Set(boolByte(c.stamp)), v.EmitEvents.Set(c.events), v.TargetNetns.Set(c.netns)); err != nil {
		return tracerObjs{}, fmt.Errorf("setting constants: %w", err)
	}
	if c.ringBytes != 0 {
		spec.Maps["events"].MaxEntries = c.ringBytes
	}
	opts := &ebpf.CollectionOptions{}
	if stamps != nil {
		opts.MapReplacements = map[string]*ebpf.Map{stampMapName(mode): stamps}
	}
	objs := tracerObjs{lostOff: spec.Variables["events_lost"].Offset}
	// LoadAndAssign loads only what is named here and what it uses.
	switch mode {
	case ModeTracepoint:
		var o struct {
			Prog   *ebpf.Program `ebpf:"on_set_state_tp"`
			Stamps *ebpf.Map     `ebpf:"stamps_by_sk"`
			Events *ebpf.Map     `ebpf:"events"`
			BSS    *ebpf.Map     `ebpf:".bss"`
		}
		err = loadProgram(spec, &o, progName(mode), opts)
		objs.prog, objs.stamps, objs.events, objs.bss = o.Prog, o.Stamps, o.Events, o.BSS
	default:
		var o struct {
			Prog   *ebpf.Program `ebpf:"on_set_state"`
			Stamps *ebpf.Map     `ebpf:"stamps"`
			Events *ebpf.Map     `ebpf:"events"`
			BSS    *ebpf.Map     `ebpf:".bss"`
		}
		err = loadProgram(spec, &o, progName(mode), opts)
		objs.prog, objs.stamps, objs.events, objs.bss = o.Prog, o.Stamps, o.Events, o.BSS
	}
	return objs, err
}

func attachTracer(mode TracerMode, prog *ebpf.Program) (link.Link, error) {
	if mode == ModeTracepoint {
		if err := ensureTracefs(); err != nil {
			return nil, err
		}
		l, err := link.Tracepoint("sock", "inet_sock_set_state", prog, nil)
		if err != nil {
			return nil, loadError("tracepoint sock:inet_sock_set_state", err)
		}
		return l, nil
	}
	l, err := link.AttachTracing(link.TracingOptions{Program: prog})
	if err != nil {
		return nil, loadError("tp_btf/inet_sock_set_state", err)
	}
	return l, nil
}

// Status reports whether a tracer is pinned under pinDir ("" means
// DefaultPinDir) and since when. A missing or unmounted bpffs means not
// installed.
func Status(pinDir string) (TracerStatus, error) {
	dir := pinDirOr(pinDir)
	st := TracerStatus{PinDir: dir}
	path := filepath.Join(dir, pinLink)
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return st, nil
	}
	l, err := link.LoadPinnedLink(path, nil)
	if err != nil {
		return st, fmt.Errorf("opening pinned tracer link: %w", err)
	}
	defer l.Close()
	st.Installed = true
	st.Mode = pinnedTracer(dir)
	if _, err := os.Stat(filepath.Join(dir, iterPinName())); err == nil {
		st.Iterators = true
	}
	info, err := l.Info()
	if err != nil {
		return st, fmt.Errorf("reading tracer link: %w", err)
	}
	st.ProgramID = uint32(info.Program)
	prog, err := ebpf.NewProgramFromID(info.Program)
	if err != nil {
		return st, fmt.Errorf("opening tracer program: %w", err)
	}
	defer prog.Close()
	pi, err := prog.Info()
	if err != nil {
		return st, fmt.Errorf("reading tracer program: %w", err)
	}
	if lt, ok := pi.LoadTime(); ok {
		st.Since = bootToWall(lt)
	}
	return st, nil
}

// RemoveTracer detaches the tracer pinned under pinDir and removes its
// pins and the directory. It returns ErrNotInstalled when nothing was
// pinned there.
func RemoveTracer(pinDir string) error {
	dir := pinDirOr(pinDir)
	found := false
	var errs []error
	path := filepath.Join(dir, pinLink)
	if _, err := os.Stat(path); err == nil {
		found = true
		l, err := link.LoadPinnedLink(path, nil)
		if err != nil {
			errs = append(errs, fmt.Errorf("opening pinned link: %w", err))
		} else {
			// The pin and this fd are the last references: unpinning and
			// closing detaches the program.
			if err := l.Unpin(); err != nil {
				errs = append(errs, fmt.Errorf("unpinning link: %w", err))
			}
			l.Close()
		}
	}
	if iters, err := removeIterators(dir); err != nil {
		errs = append(errs, err)
	} else if iters {
		found = true
	}
	for _, mode := range []TracerMode{ModeBTF, ModeTracepoint} {
		p := filepath.Join(dir, stampMapName(mode))
		if err := os.Remove(p); err == nil {
			found = true
		} else if !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("unpinning map: %w", err))
		}
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("removing pin directory: %w", err))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if !found {
		return ErrNotInstalled
	}
	return nil
}

// openStamps opens the stamp map of a tracer installed under pinDir. It
// returns no map and no warning when none is installed.
func openStamps(pinDir string) (TracerMode, *ebpf.Map, string) {
	dir := pinDirOr(pinDir)
	if _, err := os.Stat(filepath.Join(dir, pinLink)); err != nil {
		return "", nil, ""
	}
	for _, mode := range []TracerMode{ModeBTF, ModeTracepoint} {
		m, err := ebpf.LoadPinnedMap(filepath.Join(dir, stampMapName(mode)), &ebpf.LoadPinOptions{ReadOnly: true})
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return "", nil, fmt.Sprintf("installed tracer unreadable (%v): ages are bounds", err)
		}
		return mode, m, ""
	}
	return "", nil, "installed tracer has no stamp map: ages are bounds"
}

func isIncompatible(err error) bool { return errors.Is(err, ebpf.ErrMapIncompatible) }

func pinDirOr(dir string) string {
	if dir == "" {
		return DefaultPinDir
	}
	return filepath.Clean(dir)
}

// ensureBPFFS makes sure dir's parent is on a bpffs, mounting one on
// /sys/fs/bpf when dir is under it and nothing is mounted there yet.
func ensureBPFFS(dir string) error {
	parent := filepath.Dir(dir)
	if isFS(parent, unix.BPF_FS_MAGIC) {
		return nil
	}
	if dir != bpffsRoot && !strings.HasPrefix(dir, bpffsRoot+"/") {
		return fmt.Errorf("pin directory %s is not on a bpf filesystem", dir)
	}
	if !isFS(bpffsRoot, unix.BPF_FS_MAGIC) {
		if err := unix.Mount("bpf", bpffsRoot, "bpf", 0, "mode=0700"); err != nil {
			return fmt.Errorf("mounting bpffs on %s: %w", bpffsRoot, err)
		}
	}
	if err := os.MkdirAll(parent, 0o700); err != nil {
		return fmt.Errorf("creating %s: %w", parent, err)
	}
	return nil
}

// ensureTracefs mounts tracefs where cilium/ebpf looks for it, for the
// classic tracepoint's event id.
func ensureTracefs() error {
	if isFS(tracefsRoot, unix.TRACEFS_MAGIC) || isFS("/sys/kernel/debug/tracing", unix.TRACEFS_MAGIC) {
		return nil
	}
	if err := unix.Mount("tracefs", tracefsRoot, "tracefs", 0, ""); err != nil {
		return fmt.Errorf("mounting tracefs on %s: %w", tracefsRoot, err)
	}
	return nil
}

func isFS(path string, magic int64) bool {
	var st unix.Statfs_t
	return unix.Statfs(path, &st) == nil && int64(st.Type) == magic
}

// bootToWall converts a CLOCK_BOOTTIME reading (how the kernel stamps
// program load times) to wall-clock time.
func bootToWall(d time.Duration) time.Time {
	var ts unix.Timespec
	now := time.Now()
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return time.Time{}
	}
	return now.Add(d - time.Duration(ts.Nano()))
}

// Stamps is the stamp map of an installed tp_btf tracer, open so that
// sock_diag can return each socket's stamp with the socket
// (INET_DIAG_REQ_SK_BPF_STORAGES, Linux 5.2+): exact ages without the
// iterators.
type Stamps struct {
	m  *ebpf.Map
	id uint32
}

// OpenStamps opens the stamps of the tracer installed under pinDir ("":
// DefaultPinDir). It returns nil when none is installed, or when the
// installed one is the classic tracepoint's, whose hash map sock_diag
// cannot read; warning says why stamps that exist cannot be used.
func OpenStamps(pinDir string) (_ *Stamps, warning string) {
	mode, m, warn := openStamps(pinDir)
	if m == nil {
		return nil, warn
	}
	if mode != ModeBTF {
		m.Close()
		return nil, ""
	}
	info, err := m.Info()
	id, ok := ebpf.MapID(0), false
	if err == nil {
		id, ok = info.ID()
	}
	if !ok {
		m.Close()
		return nil, "installed tracer's stamp map has no id: ages are bounds"
	}
	return &Stamps{m: m, id: uint32(id)}, ""
}

// FD is the map's file descriptor, for the request.
func (s *Stamps) FD() int { return s.m.FD() }

// ID is the map's id, which names it in sock_diag's replies.
func (s *Stamps) ID() uint32 { return s.id }

// Close closes the map.
func (s *Stamps) Close() error { return s.m.Close() }

// StampAge decodes a stamp (struct stamp, as sock_diag returns it) and
// returns the time since it was written, given CLOCK_MONOTONIC now.
func StampAge(value []byte, now uint64) (time.Duration, bool) {
	if len(value) < 8 {
		return 0, false
	}
	enter := binary.LittleEndian.Uint64(value)
	if enter == 0 || enter > now {
		return 0, false
	}
	return time.Duration(now - enter), true
}
