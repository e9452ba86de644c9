package collector

import (
	"errors"
	"time"
)

// Event is one TCP state transition that the tracer saw.
type Event struct {
	Time time.Time
	// From is the state left; Socket.State the state entered.
	From State
	// Socket has the addresses, family, cookie, inode and netns, and the
	// owners when EventOptions.Owners asked for them.
	Socket Socket
	// InCloseWait is the time spent in CLOSE_WAIT, on leaving it, when the
	// entry was stamped (InCloseWaitKnown).
	InCloseWait      time.Duration
	InCloseWaitKnown bool
	// OwnersUnknown says that a process held the socket but closed it
	// before its owner could be read. No owners without it mean that no
	// process held it (an accept queue, or already closed).
	OwnersUnknown bool
}

// Kind names the event: "enter" or "leave" CLOSE_WAIT, or "transition".
func (e *Event) Kind() string {
	switch {
	case e.Socket.State == StateCloseWait:
		return "enter"
	case e.From == StateCloseWait:
		return "leave"
	}
	return "transition"
}

// EventOptions configure OpenEvents.
type EventOptions struct {
	// AllStates streams every transition, not only those into and out of
	// CLOSE_WAIT.
	AllStates bool
	// PinDir is the bpffs directory of an installed tracer, whose stamps
	// give InCloseWait for sockets that entered before the stream began.
	PinDir string
	// Hook is the kernel hook: "" lets the loader choose, else "tp_btf" or
	// "tracepoint".
	Hook string
	// Cookies refuses a hook whose events carry no socket cookie (the
	// classic tracepoint): the cookie is what joins an event to a socket
	// a listing saw.
	Cookies bool
	// Owners resolves each event's owners, from BPF iterator snapshots or,
	// where the kernel refuses the iterator, from /proc.
	Owners bool
	// Filter drops the events it does not match; its owner parts need
	// Owners.
	Filter Filter
	// NetNS chooses the network namespaces as Options.NetNS does: every
	// one as root by default, else the caller's.
	NetNS []string
}

// ErrEventsBroken is returned by Events.Next when events keep failing to
// decode: the stream is not usable.
var ErrEventsBroken = errors.New("the event stream keeps failing")

// maxBadEvents in a row make the stream broken; fewer are skipped and
// counted (Events.Bad).
const maxBadEvents = 1000
