package ebpf

import (
	"errors"
	"time"
)

// TracerMode says how the tracer hooks the TCP state changes.
type TracerMode string

// Tracer modes.
const (
	// ModeBTF attaches tp_btf/inet_sock_set_state and stamps in
	// BPF_MAP_TYPE_SK_STORAGE: no table to fill, freed with each socket.
	ModeBTF TracerMode = "tp_btf"
	// ModeTracepoint attaches the classic tracepoint
	// sock:inet_sock_set_state, for kernels without tp_btf. It sees only
	// the socket's address, which sk_storage cannot take, so stamps go to
	// a hash map keyed by that address: at most 65536 sockets at a time
	// (more go unstamped), events carry no cookie, inode or netns, and
	// tracefs must be mounted.
	ModeTracepoint TracerMode = "tracepoint"
)

// DefaultPinDir is where "closewait tracer install" pins the tracer.
//
// Layout: link (the attached tracer program's link) and either stamps (the
// sk_storage map, ModeBTF) or stamps_by_sk (the hash map, ModeTracepoint).
// Unpinning the link detaches the program; the maps go with their pins.
const DefaultPinDir = "/sys/fs/bpf/closewait"

// ErrInstalled is returned by InstallTracer when a tracer is already pinned.
var ErrInstalled = errors.New("tracer already installed")

// ErrNotInstalled is returned by RemoveTracer when nothing is pinned.
var ErrNotInstalled = errors.New("tracer not installed")

// TracerOptions configures InstallTracer.
type TracerOptions struct {
	// PinDir is the bpffs directory to pin into; "" means DefaultPinDir.
	PinDir string
	// Mode forces a hook; "" tries ModeBTF, then ModeTracepoint.
	Mode TracerMode
}

// TracerStatus describes a pinned tracer.
type TracerStatus struct {
	Installed bool
	Mode      TracerMode
	PinDir    string
	// Since is when the tracer's program was loaded: sockets that entered
	// CLOSE_WAIT after it have exact ages.
	Since     time.Time
	ProgramID uint32
	// Iterators says whether this version's listing iterators are pinned
	// beside the tracer, for listings to open instead of loading their
	// own; IteratorsErr, after an install, why they are not.
	Iterators    bool
	IteratorsErr error
}

// TraceOptions configures OpenTrace.
type TraceOptions struct {
	// AllStates sends every TCP state transition, not only those into and
	// out of CLOSE_WAIT.
	AllStates bool
	// PinDir is where an installed tracer is pinned ("" DefaultPinDir).
	// When one is installed, the trace reads its stamps, so that leaving
	// events have durations even for sockets that entered CLOSE_WAIT before
	// the trace started.
	PinDir string
	// Mode forces a hook; "" tries ModeBTF, then ModeTracepoint.
	Mode TracerMode
	// AllNetNS traces every network namespace; by default only this
	// process's (ModeTracepoint cannot tell them apart and sends all).
	AllNetNS bool
	// RingBytes sizes the ring buffer (a power of two, at least a page);
	// 0 means 256 KiB.
	RingBytes uint32
	// NoteOwners also attaches, with ModeBTF, the programs behind
	// Trace.NotedOwner. They run at every accept(2), accept4(2) and
	// socket(2) on the host, so only a trace that shows owners asks.
	NoteOwners bool
}
