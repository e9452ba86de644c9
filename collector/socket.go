package collector

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// Family is the address family of a socket.
type Family uint8

// Address families, numbered as the tools' -4 and -6 flags.
const (
	FamilyIPv4 Family = 4
	FamilyIPv6 Family = 6
)

// String returns "ipv4" or "ipv6", the JSON spelling.
func (f Family) String() string {
	switch f {
	case FamilyIPv4:
		return "ipv4"
	case FamilyIPv6:
		return "ipv6"
	}
	return fmt.Sprintf("family(%d)", uint8(f))
}

// State is a TCP state, numbered as the Linux kernel numbers them
// (include/net/tcp_states.h), so a StateSet is the sock_diag state mask.
type State uint8

// TCP states.
const (
	StateEstablished State = 1
	StateSynSent     State = 2
	StateSynRecv     State = 3
	StateFinWait1    State = 4
	StateFinWait2    State = 5
	StateTimeWait    State = 6
	StateClose       State = 7
	StateCloseWait   State = 8
	StateLastAck     State = 9
	StateListen      State = 10
	StateClosing     State = 11
	StateNewSynRecv  State = 12
)

var stateNames = [...]string{
	StateEstablished: "ESTABLISHED",
	StateSynSent:     "SYN_SENT",
	StateSynRecv:     "SYN_RECV",
	StateFinWait1:    "FIN_WAIT1",
	StateFinWait2:    "FIN_WAIT2",
	StateTimeWait:    "TIME_WAIT",
	StateClose:       "CLOSE",
	StateCloseWait:   "CLOSE_WAIT",
	StateLastAck:     "LAST_ACK",
	StateListen:      "LISTEN",
	StateClosing:     "CLOSING",
	StateNewSynRecv:  "NEW_SYN_RECV",
}

// ssNames are the names ss(8) accepts for single states.
var ssNames = map[string]State{
	"established": StateEstablished,
	"syn-sent":    StateSynSent,
	"syn-recv":    StateSynRecv,
	"fin-wait-1":  StateFinWait1,
	"fin-wait-2":  StateFinWait2,
	"time-wait":   StateTimeWait,
	"closed":      StateClose,
	"close-wait":  StateCloseWait,
	"last-ack":    StateLastAck,
	"listening":   StateListen,
	"listen":      StateListen,
	"closing":     StateClosing,
}

// String returns the state's name as tables print it, e.g. "CLOSE_WAIT".
func (s State) String() string {
	if int(s) < len(stateNames) && stateNames[s] != "" {
		return stateNames[s]
	}
	return fmt.Sprintf("STATE_%d", uint8(s))
}

// Label returns the state's name as metric labels spell it, e.g. "close_wait".
func (s State) Label() string { return strings.ToLower(s.String()) }

// AllStates lists every TCP state a socket table can show, in kernel order.
var AllStates = []State{
	StateEstablished, StateSynSent, StateSynRecv, StateFinWait1, StateFinWait2,
	StateTimeWait, StateClose, StateCloseWait, StateLastAck, StateListen, StateClosing,
}

// StateSet is a set of TCP states as a bit mask (1 << state), the same
// layout as sock_diag's idiag_states.
type StateSet uint32

// Has reports whether s holds state st.
func (s StateSet) Has(st State) bool { return s&(1<<st) != 0 }

// With returns s with st added.
func (s StateSet) With(st State) StateSet { return s | 1<<st }

// States lists the members of s in kernel order.
func (s StateSet) States() []State {
	var out []State
	for _, st := range AllStates {
		if s.Has(st) {
			out = append(out, st)
		}
	}
	return out
}

// String lists the members in ss spelling, e.g. "close-wait,last-ack".
func (s StateSet) String() string {
	var names []string
	for _, st := range s.States() {
		for n, v := range ssNames {
			if v == st && n != "listen" {
				names = append(names, n)
			}
		}
	}
	return strings.Join(names, ",")
}

// Named state sets.
var (
	StatesAll       = setOf(AllStates...)
	StatesCloseWait = setOf(StateCloseWait)
	// StatesConnected is every state except listening and closed, as ss defines it.
	StatesConnected = StatesAll &^ setOf(StateListen, StateClose)
	// StatesSynchronized is connected except syn-sent, as ss defines it.
	StatesSynchronized = StatesConnected &^ setOf(StateSynSent)
	// StatesBucket holds the states ss keeps as minisockets.
	StatesBucket = setOf(StateSynRecv, StateTimeWait)
	// StatesBig is every state that is not a minisocket.
	StatesBig = StatesAll &^ StatesBucket
)

func setOf(states ...State) StateSet {
	var s StateSet
	for _, st := range states {
		s = s.With(st)
	}
	return s
}

// ParseStates parses a comma-separated list of ss(8) state names
// ("close-wait,last-ack") and the ss groups all, connected, synchronized,
// bucket and big. Names are case-insensitive; "_" may stand for "-".
func ParseStates(list string) (StateSet, error) {
	var set StateSet
	for _, raw := range strings.Split(list, ",") {
		name := strings.ReplaceAll(strings.ToLower(strings.TrimSpace(raw)), "_", "-")
		switch name {
		case "":
			return 0, fmt.Errorf("empty state name in %q", list)
		case "all":
			set |= StatesAll
		case "connected":
			set |= StatesConnected
		case "synchronized":
			set |= StatesSynchronized
		case "bucket":
			set |= StatesBucket
		case "big":
			set |= StatesBig
		default:
			st, ok := ssNames[name]
			if !ok {
				return 0, fmt.Errorf("unknown state %q (want ss names such as close-wait, established, time-wait, all)", strings.TrimSpace(raw))
			}
			set = set.With(st)
		}
	}
	return set, nil
}

// Cause is a stable name for why a socket sits in CLOSE_WAIT.
type Cause string

// Causes, in the order Classify reports them: most telling first.
const (
	// CauseNotAccepted: no fd at all; the socket waits in a listener's
	// accept queue, so the accept loop is stalled.
	CauseNotAccepted Cause = "not-accepted"
	// CauseInherited: two or more processes hold the fd, usually through
	// fork; one closing it does not close the connection.
	CauseInherited Cause = "inherited"
	// CausePooledClient: the local side made the connection (Origin is
	// OriginConnected); a client pool kept a connection the server closed.
	CausePooledClient Cause = "pooled-client"
	// CauseEOFNotClosed: Recv-Q 0; the application read the EOF and still
	// did not close.
	CauseEOFNotClosed Cause = "eof-not-closed"
	// CauseFINNotRead: Recv-Q 1; nothing read since the FIN arrived.
	CauseFINNotRead Cause = "fin-not-read"
	// CauseUnreadData: Recv-Q > 1; data and the FIN are unread.
	CauseUnreadData Cause = "unread-data"
	// CauseClosedNotReleased: the kernel closed the connection (reset,
	// timeout, ss -K) and a process still holds its fd (state CLOSE).
	CauseClosedNotReleased Cause = "closed-not-released"
	// CausePeerUnresponsive: keepalive's audit only; data or keepalive
	// probes go unanswered now, so the peer may be gone.
	CausePeerUnresponsive Cause = "peer-unresponsive"
)

// AllCauses lists every cause, most telling first.
var AllCauses = []Cause{
	CauseNotAccepted, CauseInherited, CausePooledClient,
	CauseEOFNotClosed, CauseFINNotRead, CauseUnreadData, CauseClosedNotReleased,
	CausePeerUnresponsive,
}

// Owner is one holder of a socket: a process and one of its fds. FD is -1
// where the OS does not say which handle (Windows).
type Owner struct {
	PID  int    `json:"pid"`
	Comm string `json:"comm"`
	FD   int    `json:"fd"`
	// Proc is more about the process, when asked for (Options.Processes)
	// and still readable; shared by the owners of one process.
	Proc *Process `json:"-"`
}

// sortOwners puts owners in pid, then fd order.
func sortOwners(owners []Owner) {
	slices.SortFunc(owners, func(a, b Owner) int {
		return cmp.Or(cmp.Compare(a.PID, b.PID), cmp.Compare(a.FD, b.FD))
	})
}

// Keepalive holds a socket's keepalive and user-timeout settings, as the
// eBPF source reads them from the kernel socket.
type Keepalive struct {
	Enabled     bool          // SO_KEEPALIVE
	Idle        time.Duration // TCP_KEEPIDLE, or the sysctl default
	Interval    time.Duration // TCP_KEEPINTVL, or the sysctl default
	Probes      int           // TCP_KEEPCNT, or the sysctl default
	UserTimeout time.Duration // TCP_USER_TIMEOUT, 0 when unset
	// Own says which timers the socket sets itself (KeepaliveOwn* bits);
	// the others are its namespace's sysctl defaults.
	Own uint8
}

// Keepalive.Own bits.
const (
	KeepaliveOwnIdle uint8 = 1 << iota
	KeepaliveOwnInterval
	KeepaliveOwnProbes
	// KeepaliveOwnAll is every timer the socket's own.
	KeepaliveOwnAll = KeepaliveOwnIdle | KeepaliveOwnInterval | KeepaliveOwnProbes
)

// Origin is how a connection was made.
type Origin uint8

const (
	// OriginUnknown: the source cannot tell.
	OriginUnknown Origin = iota
	// OriginAccepted: a listener's child. Sources know it from a listener
	// on the local address now, or (ebpf) from the socket itself, which
	// keeps its listener's backlog even after the listener is gone.
	OriginAccepted
	// OriginConnected: made by connect(). The ebpf source reads it from the
	// socket; the others infer it only for an ephemeral local port
	// (net.ipv4.ip_local_port_range) with no listener on it.
	OriginConnected
)

// Socket is one TCP socket as a source saw it. Small fields are grouped
// to keep it compact: a listing holds tens of thousands.
type Socket struct {
	Family Family
	State  State
	// AgeKnown, AgeExact: see Age.
	AgeKnown bool
	AgeExact bool
	// Inbound is set when the local address:port belongs to a listener on
	// this host, that is, the remote side connected to us.
	Inbound bool
	// Origin is how the connection was made, as far as the source can
	// tell; see Origin.
	Origin Origin
	// QueuesUnknown: the source cannot read RecvQ and SendQ (Windows,
	// macOS through lsof); they are 0 and mean nothing.
	QueuesUnknown bool
	// UIDUnknown, InodeUnknown: the OS has no such value for the socket
	// (Windows) or the source cannot read it.
	UIDUnknown   bool
	InodeUnknown bool
	// IdleKnown: see Idle.
	IdleKnown bool
	// Unanswered counts the retransmissions or keepalive probes the peer
	// has not answered yet (tcp_info's retransmits and probes); 0 when
	// none or unknown (procfs).
	Unanswered uint8

	RecvQ  uint32
	SendQ  uint32
	UID    uint32
	Local  netip.AddrPort
	Remote netip.AddrPort
	Inode  uint64 // 0: no struct socket yet (still in an accept queue)
	Cookie uint64 // kernel socket cookie; 0 when the source cannot read it
	NetNS  uint64 // inode of the network namespace; 0 when unknown

	// Age is the best estimate of the time spent in the current state;
	// meaningful only when AgeKnown. When AgeExact is false it is a lower
	// bound, and AgeMax, when non-zero, an upper bound. AgeMax may be set
	// without AgeKnown: Windows gives when a connection was created, not
	// when it entered its state.
	Age    time.Duration
	AgeMax time.Duration
	// Idle is the time since the peer last sent anything (the lesser of
	// tcp_info's last_data_recv and last_ack_recv), what keepalive counts
	// from; meaningful only when IdleKnown.
	Idle time.Duration
	// SockErr is the socket's pending error (errno), which says why the
	// kernel closed a CLOSE socket; 0 when none or unknown. Only the ebpf
	// source reads it: SockErrUnknown marks a CLOSE socket the others
	// found through /proc.
	SockErr        uint32
	SockErrUnknown bool

	// Timer is the kernel timer running on the socket ("on", "keepalive",
	// "timewait", "persist", "probe"), empty when none; TimerLeft is the
	// time until it fires.
	Timer     string
	TimerLeft time.Duration

	Owners []Owner
	// Listener, for a socket still in an accept queue (no fd yet), are
	// the holders of the listening socket it waits on: the processes
	// whose accept loop should take it.
	Listener  []Owner
	Causes    []Cause
	Keepalive *Keepalive // nil unless the source reads it
}

// Holders returns the processes to blame for s: its owners, or for a
// socket in an accept queue, the listener's.
func (s *Socket) Holders() []Owner {
	if len(s.Owners) > 0 {
		return s.Owners
	}
	return s.Listener
}

// Snapshot is the result of one collection.
type Snapshot struct {
	Host     string
	Time     time.Time
	Source   string // name of the source that produced it: ebpf, netlink, procfs
	Warnings []string
	// Fallbacks are the sources that failed before Source, where Source
	// shows as much (ebpf -> netlink), and the like that cost only time
	// (pinned iterators not used): worth a note, not a warning.
	Fallbacks []string
	// Choice, when auto passed over a source that works because another
	// is quicker here, says why (-v prints it).
	Choice  string
	Sockets []Socket
	// NetNSNames name the network namespaces that have one, by inode:
	// "host", or the name under /run/netns.
	NetNSNames map[uint64]string

	listeners []listener     // every listener the source saw
	nets      []netNamespace // the namespaces listed; nil the caller's
}

// Notes are the fallbacks, then the warnings: what JSON and check report.
func (s *Snapshot) Notes() []string {
	return append(slices.Clone(s.Fallbacks), s.Warnings...)
}

// Warnf appends a warning to the snapshot.
func (s *Snapshot) Warnf(format string, args ...any) {
	s.Warnings = append(s.Warnings, fmt.Sprintf(format, args...))
}
